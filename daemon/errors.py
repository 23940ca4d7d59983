"""One small error hierarchy.

Library code raises these; only the CLIs turn them into one line and an exit code.
"""


class CoronaError(Exception):
    """Base of every error this project raises on purpose."""


class AudioError(CoronaError):
    """An audio file could not be read or is not usable; the message names the file."""


class ConfigError(CoronaError):
    """The configuration is invalid; the message names the key path."""


class ModelError(CoronaError):
    """A model file or its metadata is missing, corrupt, or disagrees with the feature settings."""


class CaptureError(CoronaError):
    """The audio input device could not be opened or failed while running."""


class PublishError(CoronaError):
    """The MQTT broker could not be reached or refused the client."""


class DataError(CoronaError):
    """A labelled data set is unusable (empty, one class only, bad manifest)."""


MESSAGE_LIMIT = 300
"""Characters of a foreign message kept in one error line (a runtime may quote a whole file)."""


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A foreign message (a runtime's, a child process's) made fit for one terminal or log line.

    Runtimes quote what they read from a file (tensor names, bytes they could not decode), and a
    model from elsewhere is whatever its supplier made it: control characters and escape
    sequences are shown escaped (`\\x1b`), never passed to a terminal, and only the first line
    is kept, cut at `limit` characters.
    """
    lines = [line.strip() for line in text.strip().splitlines()]
    first = lines[0] if lines else ""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in first)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."
