"""The stable name `daemon.features` of the design's Python API; the code is
`daemon.analyse.features` (`daemon.features.row_means` keeps working for scripts)."""

from daemon.analyse.features import TRANSFORMS, apply_transform, row_means

__all__ = ["TRANSFORMS", "apply_transform", "row_means"]
