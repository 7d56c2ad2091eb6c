"""The exceptions ml_bridge raises for problems a user can cause.

Every message names the cause and, where there is one, the fix.
"""


class MLBridgeError(Exception):
    """Base class of every error ml_bridge raises on purpose."""


class InputError(MLBridgeError):
    """A request does not fit the model (dtype, rank, dimension, size, encoding)."""


class ConversionError(InputError):
    """A message or array could not be converted: names the field and what was wrong.

    Raised by ``ml_bridge.ros.conversions`` (which re-exports it) for every failure.
    """


class ModelLoadError(MLBridgeError):
    """A model could not be loaded (unknown name, missing file, wrong tensor names)."""


class BackendError(MLBridgeError):
    """An unknown or unusable backend was asked for."""


class DatasetError(MLBridgeError):
    """A dataset is unknown, empty, malformed or outside the data root."""


class TrainingError(MLBridgeError):
    """Training settings are invalid, or the model cannot be trained."""


class CheckpointError(MLBridgeError):
    """A checkpoint is missing, corrupt, or refused because it could execute code."""


class ModelCallError(MLBridgeError):
    """The framework raised while running the model; the message carries its words."""
