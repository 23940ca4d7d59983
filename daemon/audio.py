"""The stable name `daemon.audio` of the design's Python API; the code is `daemon.listen.audio`.

Scripts written against the design (`daemon.audio.load`, `daemon.audio.metadata`,
`daemon.audio.AudioError`) keep working; the project itself imports `daemon.listen.audio`.
"""

from daemon.errors import AudioError
from daemon.listen.audio import AudioMetadata, load, metadata, stream

__all__ = ["AudioError", "AudioMetadata", "load", "metadata", "stream"]
