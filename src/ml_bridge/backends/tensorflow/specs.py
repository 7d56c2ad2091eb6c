"""Input and output specs of TensorFlow models that do not declare them.

Keras models: inputs from ``model.inputs`` (functional and Sequential models) or the shapes a
subclassed model was built with; outputs from one call on a zero batch (which also traces the
compiled call at load rather than on the first request). Graph tensors (frozen GraphDefs,
SavedModel signatures): from their dtype and static shape, a free dimension as -1.
"""
from typing import Any, Callable, List, Tuple

import keras
import numpy as np
import tensorflow as tf

from ml_bridge.core.errors import ModelLoadError
from ml_bridge.core.spec import SUPPORTED_DTYPES, ArraySpec


def first_line(err: BaseException) -> str:
    """The first line of an error's message ("" if it has none)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def tensor_spec(name: str, dtype: tf.DType, shape: tf.TensorShape, what: str) -> ArraySpec:
    np_name = np.dtype(dtype.as_numpy_dtype).name if dtype.is_numpy_compatible else dtype.name
    if np_name not in SUPPORTED_DTYPES:
        raise ModelLoadError(f"{what} '{name}' is {dtype.name}; ml_bridge carries only "
                             f"{', '.join(SUPPORTED_DTYPES)}")
    if shape.rank is None:
        if what == "input":
            raise ModelLoadError(f"input '{name}' has no known rank; freeze the graph with a "
                                 "shaped placeholder, e.g. [None, 64]")
        return ArraySpec(name, np_name, (-1,))  # unknown rank: shown as [-1]
    return ArraySpec(name, np_name, tuple(-1 if d is None else int(d) for d in shape.as_list()))


def shape_of(shape: Any) -> Tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape)


def input_specs(model: keras.Model, source: str) -> List[ArraySpec]:
    inputs = getattr(model, "inputs", None)  # functional and Sequential models
    if inputs:
        return [ArraySpec(str(getattr(t, "name", "") or f"input_{i}"), str(t.dtype),
                           shape_of(t.shape)) for i, t in enumerate(inputs)]
    # A subclassed model built by build(shape) or by a first call records its input shapes.
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) == 1:
        shape = next(iter(shapes.values()))
        if isinstance(shape, (tuple, list)) and all(isinstance(d, (int, type(None)))
                                                   for d in shape):
            return [ArraySpec("input", "float32", (-1,) + shape_of(shape[1:]))]
    raise ModelLoadError(f"cannot tell the input shape of {source}: define it with keras.Input "
                         "(functional or Sequential), or build a subclassed model with "
                         "model.build((None, ...)) before returning it")


def zero_batch(specs: List[ArraySpec]) -> List[tf.Tensor]:
    """A zero batch of one row (free dimensions of size 1) per input."""
    return [tf.zeros([1 if d < 0 else d for d in s.shape], dtype=s.dtype) for s in specs]


def output_specs(model: keras.Model, inputs: List[ArraySpec],
                  call: Callable[..., List[tf.Tensor]]) -> List[ArraySpec]:
    # One call on a zero batch gives shapes and dtypes for every kind of model, and traces
    # the compiled call now rather than on the first request.
    zeros = zero_batch(inputs)
    try:
        outs = call(*zeros)
    except Exception as err:
        raise ModelLoadError(f"the model fails on a zero input shaped "
                             f"{[z.shape.as_list() for z in zeros]}: {type(err).__name__}: "
                             f"{first_line(err)}") from err
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    symbolic = getattr(model, "outputs", None) or []
    specs = []
    for i, out in enumerate(outs):
        shape = (shape_of(symbolic[i].shape) if len(symbolic) == len(outs)
                 else (-1,) + tuple(out.shape[1:]))
        specs.append(ArraySpec(names[i], out.dtype.name, shape))
    return specs
