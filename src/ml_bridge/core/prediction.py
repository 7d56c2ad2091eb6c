"""What the server answers: a call's outputs with the model that produced them, and ``~info``.

Re-exported by :mod:`ml_bridge.core.server`, where callers import them from.
"""
from dataclasses import dataclass
from typing import List

import numpy as np

from ml_bridge.core.model import ModelStamp
from ml_bridge.core.spec import ArraySpec


@dataclass
class ModelOutput:
    """Outputs of one predict call and the model that produced them."""

    outputs: List[np.ndarray]
    model: ModelStamp        # labels, output names, version: of the model that ran
    inference_ms: float

    @property
    def model_version(self) -> int:
        """Version of the model that produced the outputs."""
        return self.model.version


#: Deprecated alias of :class:`ModelOutput`, for code written before the rename; the name is
#: also that of the message published on ``~predictions`` (``ml_bridge.msg.Prediction``),
#: which this is not.
Prediction = ModelOutput


@dataclass
class ModelInfo:
    """What ``~info`` reports."""

    backend: str
    framework_version: str
    device: str
    model: str
    model_version: int
    inputs: List[ArraySpec]
    outputs: List[ArraySpec]
    labels: List[str]
    training: bool
