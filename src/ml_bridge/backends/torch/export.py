"""TorchScript files: what :func:`~ml_bridge.backends.torch.loading.load_model` serves from a path.

A TorchScript file cannot carry Python objects, so labels and input specs travel in an extra
file ``ml_bridge.json`` inside it (written by :func:`save_torchscript`)::

    {"inputs": [{"name": "pixels", "dtype": "float32", "shape": [-1, 64]}],
     "labels": ["0", "1"], "outputs_probabilities": false}

Every entry is optional; what is missing is inferred (see :mod:`.specs`).
"""
import json
import os
from typing import Any, Dict, List, Sequence

import torch

from ml_bridge.backends.torch.model import TorchModel
from ml_bridge.backends.torch.specs import as_specs, infer_inputs, infer_outputs
from ml_bridge.core.errors import ModelLoadError
from ml_bridge.core.spec import ArraySpec

#: Name of the metadata file inside a TorchScript archive.
META_FILE = "ml_bridge.json"


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


def _spec(item: Any, path: str) -> ArraySpec:
    try:
        return ArraySpec(str(item.get("name", "")), str(item.get("dtype", "float32")),
                          tuple(int(d) for d in item["shape"]))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{path}: {META_FILE} input {item!r} needs 'shape' (a list of "
                             f"ints) and optional 'name' and 'dtype'") from err


__all__: List[str] = ["META_FILE", "load_torchscript", "save_torchscript"]
