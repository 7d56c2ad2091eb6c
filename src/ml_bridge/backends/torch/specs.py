"""Input and output specs of a torch module that does not declare them.

Order of precedence for the inputs:

1. an ``input_spec`` attribute on the module (a ArraySpec or a sequence of them), or for a
   TorchScript file the ``inputs`` of its ``ml_bridge.json`` extra file;
2. the first layer in registration order (``module.modules()``) that fixes the feature size:
   ``Linear`` -> float32 [-1, in_features], ``ConvNd`` -> float32 [-1, in_channels, -1...],
   ``Embedding`` -> int64 [-1, -1];
3. otherwise float32 [-1, -1]: rank 2, every size accepted.

Outputs come from an ``output_spec`` attribute, or from running the module once on a batch of
one zero sample when every input size is known; otherwise a classifier gets float32
[-1, classes] and other models none (unknown).
"""
import inspect
from typing import Any, List, Optional, Sequence

import numpy as np
import torch

from ml_bridge.backends.torch.model import from_numpy, outputs_to_list
from ml_bridge.core.errors import MLBridgeError, ModelLoadError
from ml_bridge.core.spec import SUPPORTED_DTYPES, ArraySpec

_CONV_RANK = {"Conv1d": 1, "Conv2d": 2, "Conv3d": 3}


def as_specs(value: Any, what: str) -> List[ArraySpec]:
    """A ArraySpec or sequence of TensorSpecs as a list; ModelLoadError for anything else."""
    items = [value] if isinstance(value, ArraySpec) else list(value)
    for spec in items:
        if not isinstance(spec, ArraySpec):
            raise ModelLoadError(f"{what} must be a ArraySpec or a list of TensorSpecs, got "
                                 f"{type(spec).__name__}")
        if spec.dtype not in SUPPORTED_DTYPES:
            raise ModelLoadError(f"{what}: dtype '{spec.dtype}' of '{spec.name}' is not one of "
                                 f"{', '.join(SUPPORTED_DTYPES)}")
    return items


def _kind(layer: torch.nn.Module) -> str:
    # TorchScript modules are all RecursiveScriptModule; original_name keeps the class name.
    name = getattr(layer, "original_name", None)
    return str(name) if isinstance(name, str) and name else type(layer).__name__


def count_inputs(module: torch.nn.Module) -> int:
    """Number of required positional inputs of ``forward``."""
    if isinstance(module, torch.jit.ScriptModule):
        args = module.forward.schema.arguments[1:]  # type: ignore[attr-defined]
        return sum(1 for a in args if a.default_value is None)
    params = inspect.signature(module.forward).parameters.values()
    return sum(1 for p in params if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def first_layer_spec(module: torch.nn.Module) -> Optional[ArraySpec]:
    """The input spec implied by the first Linear, ConvNd or Embedding layer, if any."""
    for layer in module.modules():
        kind = _kind(layer)
        features = getattr(layer, "in_features", None)
        channels = getattr(layer, "in_channels", None)
        if kind == "Linear" and isinstance(features, int):
            return ArraySpec("input", "float32", (-1, features))
        if kind in _CONV_RANK and isinstance(channels, int):
            spatial = (-1,) * _CONV_RANK[kind]
            return ArraySpec("input", "float32", (-1, channels) + spatial)
        if kind == "Embedding":
            return ArraySpec("input", "int64", (-1, -1))
    return None


def infer_inputs(module: torch.nn.Module, source: str) -> List[ArraySpec]:
    """Input specs of ``module`` (see the module docstring for the rules).

    Raises:
        ModelLoadError: ``forward`` takes several inputs and no ``input_spec`` names them.
    """
    declared = getattr(module, "input_spec", None)
    if declared is not None:
        return as_specs(declared, f"{source}: input_spec")
    count = count_inputs(module)
    if count != 1:
        raise ModelLoadError(
            f"{source}: forward takes {count} inputs, so their shapes cannot be guessed; give "
            "the module an `input_spec` attribute (a list of ml_bridge.core.spec.ArraySpec), "
            "or for a TorchScript file an `inputs` entry in its ml_bridge.json extra file")
    return [first_layer_spec(module) or ArraySpec("input", "float32", (-1, -1))]


def infer_outputs(module: torch.nn.Module, inputs: Sequence[ArraySpec], device: torch.device,
                  labels: Sequence[str], source: str) -> List[ArraySpec]:
    """Output specs: declared, found by one run on zeros, or the classifier default.

    Raises:
        ModelLoadError: the module fails on a zero sample of its input specs.
    """
    declared = getattr(module, "output_spec", None)
    if declared is not None:
        return as_specs(declared, f"{source}: output_spec")
    if not all(d >= 0 for spec in inputs for d in spec.shape[1:]):
        return [ArraySpec("scores", "float32", (-1, len(labels)))] if labels else []
    zeros = [np.zeros((1,) + tuple(spec.shape[1:]), dtype=spec.dtype) for spec in inputs]
    try:
        with torch.inference_mode():
            result = module(*[from_numpy(z, device) for z in zeros])
            tensors = outputs_to_list(result)
    except MLBridgeError as err:
        raise ModelLoadError(f"{source}: {err}") from err
    except Exception as err:  # the module's own error on the inferred shapes
        wanted = ", ".join(s.describe() for s in inputs)
        raise ModelLoadError(
            f"{source} fails on a zero sample shaped like its inputs ({wanted}): "
            f"{type(err).__name__}: {err}. If those specs are wrong, give the module an "
            "`input_spec` attribute") from err
    names = (list(result.keys()) if isinstance(result, dict)
             else ["output"] if len(tensors) == 1 else [f"output_{i}" for i in range(len(tensors))])
    return [ArraySpec(str(name), _dtype_name(t.dtype), (-1,) + tuple(t.shape[1:]))
            for name, t in zip(names, tensors)]


def _dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).replace("torch.", "")
    return name if name in SUPPORTED_DTYPES else "float32"
