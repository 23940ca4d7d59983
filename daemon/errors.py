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
