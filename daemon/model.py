"""The stable name `daemon.model` of the design's Python API; the code is `daemon.analyse.model`
(`daemon.model.Model.load` and `Model.score` keep working for scripts)."""

from daemon.analyse.model import Model

__all__ = ["Model"]
