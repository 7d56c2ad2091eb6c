"""The PyTorch backend: what :mod:`ml_bridge.core.registry` loads for ``backend:=torch``.

Modules (named as in the TensorFlow backend): ``core`` (context capture, devices),
``model`` (TorchModel), ``trainer`` (the training loop), ``builtins`` (built-in models),
``specs`` (spec inference) and ``loading`` (load_model).
"""
from typing import List

import torch

from ml_bridge.backends.torch.core import TorchContext, devices, parse_device
from ml_bridge.backends.torch.loading import load_model, save_torchscript
from ml_bridge.backends.torch.model import TorchModel


def framework_version() -> str:
    """torch's version string, e.g. "2.3.1+cpu"."""
    return str(torch.__version__)


def set_threads(threads: int) -> None:
    """Runs torch's CPU operators on ``threads`` threads (intra-op) in this process."""
    torch.set_num_threads(threads)


__all__: List[str] = ["TorchContext", "TorchModel", "devices", "framework_version",
                      "load_model", "parse_device", "save_torchscript", "set_threads"]
