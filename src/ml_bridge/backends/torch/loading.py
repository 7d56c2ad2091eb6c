"""``load_model(source, options)``: built-ins, ``package.module:callable`` factories, TorchScript.

TorchScript files and their metadata are read by :mod:`.export`.
"""
import os
from typing import List, Sequence

import torch

from ml_bridge.backends.torch.builtins import BUILTINS
from ml_bridge.backends.torch.core import parse_device
from ml_bridge.backends.torch.export import load_torchscript
from ml_bridge.backends.torch.model import TorchModel
from ml_bridge.backends.torch.specs import infer_inputs, infer_outputs
from ml_bridge.core.errors import ModelLoadError
from ml_bridge.core.factory import import_factory
from ml_bridge.core.model import ModelBundle, ModelOptions

#: Suffixes taken as model files even when the file is missing (to say so clearly).
FILE_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")


def accepted_forms() -> str:
    """What ``model`` may be, for error messages."""
    return (f"a built-in ({', '.join(sorted(BUILTINS))}), a factory 'package.module:callable' "
            "returning a torch.nn.Module or an ml_bridge.core.model.ModelBundle, or a "
            "TorchScript file (.pt)")


def load_model(source: str, options: ModelOptions) -> TorchModel:
    """Loads a built-in, a factory's model or a TorchScript file onto ``options.device``.

    ``options.labels``, when given, replace the model's own labels (and make it a classifier,
    unless it is a detector: then they name its box classes).

    Raises:
        ModelLoadError: unknown name, missing or non-TorchScript file, failing factory,
            unusable device, or labels that do not match the model's classes.
    """
    device = parse_device(options.device)
    name = source.strip()
    if name in BUILTINS:
        model = BUILTINS.get(name)(device)
        if options.labels:
            model.labels = [str(label) for label in options.labels]
            model.is_classifier = model.box_grid is None  # a detector's labels name its boxes
    elif name.endswith(FILE_SUFFIXES) or os.sep in name or os.path.isfile(name):
        model = load_torchscript(name, device, options.labels)
    elif ":" in name:
        model = load_factory(name, device, options.labels)
    else:
        raise ModelLoadError(f"unknown torch model '{source}'; use {accepted_forms()}")
    _check_labels(model)
    return model


def load_factory(source: str, device: torch.device, labels: Sequence[str] = ()) -> TorchModel:
    """Calls ``package.module:callable`` (no arguments) and wraps what it returns.

    The callable returns an nn.Module or a ModelBundle; input specs come from the module's
    ``input_spec`` attribute or are inferred from its first layer (see :mod:`.specs`).
    """
    target = import_factory(source)
    try:
        made = target()
    except Exception as err:
        raise ModelLoadError(f"factory '{source}' raised {type(err).__name__}: {err}") from err
    bundle = made if isinstance(made, ModelBundle) else ModelBundle(model=made)
    module = bundle.model
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory '{source}' returned {type(module).__name__}; the torch "
                             "backend needs a torch.nn.Module or a ModelBundle holding one")
    module = module.to(device).eval()
    labels = list(labels or bundle.labels)
    inputs = infer_inputs(module, source)
    outputs = infer_outputs(module, inputs, device, labels, source)
    return TorchModel(module, source, device, inputs, outputs, labels=labels,
                      outputs_probabilities=bundle.outputs_probabilities,
                      preprocess_image=bundle.preprocess_image, batch_size=bundle.batch_size,
                      learning_rate=bundle.learning_rate, loss=bundle.loss,
                      optimizer=bundle.optimizer, image_format=bundle.image_format)


def _check_labels(model: TorchModel) -> None:
    if not model.labels or not model.outputs:
        return
    # Classes are dimension 1 of scores [N, C] or per-pixel [N, C, h, w] only: a detector's
    # [N, 4 + C, A] or [N, A, 5 + C] holds box values beside its class scores.
    classes = model.n_classes() if len(model.outputs[0].shape) in (2, 4) else -1
    if classes >= 0 and classes != len(model.labels):
        raise ModelLoadError(f"{model.source}: {len(model.labels)} labels given, but output 0 "
                             f"({model.outputs[0].describe()}) has {classes} classes")


__all__: List[str] = ["load_model", "load_factory"]
