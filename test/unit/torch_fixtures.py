"""Helpers shared by the test_torch_* modules (their fixtures live in conftest.py)."""
from typing import Dict

import torch

from ml_bridge.backends.torch import TorchModel, load_model
from ml_bridge.core.model import ModelOptions


def mlp() -> TorchModel:
    """A fresh built-in digits_mlp."""
    return load_model("digits_mlp", ModelOptions())


def state(model: TorchModel) -> Dict[str, torch.Tensor]:
    """A detached copy of the model's weights."""
    return {k: v.detach().clone() for k, v in model.module.state_dict().items()}


def same_state(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    """True when two weight dicts hold the same tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
