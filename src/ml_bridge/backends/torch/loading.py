"""``load_model(source, options)``: built-ins, ``package.module:callable`` factories, TorchScript.

A TorchScript file cannot carry Python objects, so labels and input specs travel in an extra
file ``ml_bridge.json`` inside it (written by :func:`save_torchscript`)::

    {"inputs": [{"name": "pixels", "dtype": "float32", "shape": [-1, 64]}],
     "labels": ["0", "1"], "outputs_probabilities": false}

Every entry is optional; what is missing is inferred (see :mod:`.specs`).
"""
import json
import os
import re
from typing import Any, Dict, List, Sequence

import torch

from ml_bridge.backends.torch.builtins import BUILTINS
from ml_bridge.backends.torch.core import parse_device
from ml_bridge.backends.torch.model import TorchModel
from ml_bridge.backends.torch.specs import as_specs, infer_inputs, infer_outputs
from ml_bridge.core.errors import ModelLoadError
from ml_bridge.core.factory import import_factory
from ml_bridge.core.model import ModelBundle, ModelOptions
from ml_bridge.core.spec import TensorSpec

#: Name of the metadata file inside a TorchScript archive.
META_FILE = "ml_bridge.json"
#: Suffixes taken as model files even when the file is missing (to say so clearly).
FILE_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def accepted_forms() -> str:
    """What ``model`` may be, for error messages."""
    return (f"a built-in ({', '.join(sorted(BUILTINS))}), a factory 'package.module:callable' "
            "returning a torch.nn.Module or an ml_bridge.core.model.ModelBundle, or a "
            "TorchScript file (.pt)")


def load_model(source: str, options: ModelOptions) -> TorchModel:
    """Loads a built-in, a factory's model or a TorchScript file onto ``options.device``.

    ``options.labels``, when given, replace the model's own labels (and make it a classifier).

    Raises:
        ModelLoadError: unknown name, missing or non-TorchScript file, failing factory,
            unusable device, or labels that do not match the model's classes.
    """
    device = parse_device(options.device)
    name = source.strip()
    if name in BUILTINS:
        model = BUILTINS[name](device)
        if options.labels:
            model.labels = [str(label) for label in options.labels]
            model.is_classifier = True
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


def load_torchscript(path: str, device: torch.device, labels: Sequence[str] = ()) -> TorchModel:
    """Loads a TorchScript file with torch.jit.load (no pickled Python code is run)."""
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise ModelLoadError(f"model file {path} does not exist (looked for {full}); give an "
                             "absolute path: a node's working directory is usually ~/.ros")
    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(full, map_location=device, _extra_files=extra)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"{full} is not a TorchScript file ({first}). Save the model with "
            "torch.jit.save(torch.jit.script(model), path); a state dict or a pickled "
            "nn.Module cannot be served as a file: serve it through a 'package.module:callable' "
            "factory and load the weights as a checkpoint") from err
    meta = _read_meta(extra[META_FILE], full)
    module = module.eval()
    inputs = (as_specs([_spec(s, full) for s in meta["inputs"]], f"{full}: {META_FILE} inputs")
              if meta.get("inputs") else infer_inputs(module, full))
    labels = list(labels or meta.get("labels", ()))
    outputs = infer_outputs(module, inputs, device, labels, full)
    return TorchModel(module, full, device, inputs, outputs, labels=labels,
                      outputs_probabilities=bool(meta.get("outputs_probabilities", False)))


def save_torchscript(model: TorchModel, path: str) -> None:
    """Writes ``model`` as a TorchScript file that :func:`load_model` serves as it is.

    The module is scripted (unless it already is TorchScript) and the input specs, labels
    and ``outputs_probabilities`` go into the ``ml_bridge.json`` extra file.
    """
    module = model.module if model.is_script else torch.jit.script(model.module)
    meta = {"inputs": [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)}
                       for s in model.inputs],
            "labels": list(model.labels),
            "outputs_probabilities": model.outputs_probabilities}
    torch.jit.save(module, path, _extra_files={META_FILE: json.dumps(meta)})


def _read_meta(raw: Any, path: str) -> Dict[str, Any]:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if not text.strip():
        return {}
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise ModelLoadError(f"{path}: its {META_FILE} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{path}: its {META_FILE} must hold a JSON object")
    return meta


def _spec(item: Any, path: str) -> TensorSpec:
    try:
        return TensorSpec(str(item.get("name", "")), str(item.get("dtype", "float32")),
                          tuple(int(d) for d in item["shape"]))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{path}: {META_FILE} input {item!r} needs 'shape' (a list of "
                             f"ints) and optional 'name' and 'dtype'") from err


def _check_labels(model: TorchModel) -> None:
    if not model.labels or not model.outputs:
        return
    classes = model.n_classes() if len(model.outputs[0].shape) >= 2 else -1
    if classes >= 0 and classes != len(model.labels):
        raise ModelLoadError(f"{model.source}: {len(model.labels)} labels given, but output 0 "
                             f"({model.outputs[0].describe()}) has {classes} classes")


__all__: List[str] = ["load_model", "load_factory", "load_torchscript", "save_torchscript"]
