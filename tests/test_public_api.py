"""The design's Python API names stay importable after the move into stage subpackages, and
they are the very objects the project uses (aliases, not second implementations)."""

import daemon.analyse.features
import daemon.analyse.model
import daemon.listen.audio
from daemon import audio, features, model
from daemon.errors import AudioError


def test_design_names_are_the_implementations() -> None:
    assert features.row_means is daemon.analyse.features.row_means
    assert audio.load is daemon.listen.audio.load
    assert audio.metadata is daemon.listen.audio.metadata
    assert audio.AudioError is AudioError
    assert model.Model is daemon.analyse.model.Model
