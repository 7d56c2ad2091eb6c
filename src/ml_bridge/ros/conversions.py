"""Pure, paired conversions between ROS messages and numpy arrays; no master needed.

``tensor_to_array`` / ``array_to_tensor`` move bytes with ``np.frombuffer`` / ``tobytes``
(no per-element Python work on the ``data`` path); ``image_to_array`` / ``array_to_image``
(from :mod:`ml_bridge.ros.image_conversions`) wrap cv_bridge. Every failure, whatever a
message or array holds, is one exception, :class:`ConversionError`, that says what was wrong.
"""
import math
import operator
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ml_bridge.core.errors import ConversionError, InputError
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS, SUPPORTED_DTYPES, check_dtype_name
from ml_bridge.msg import Tensor
from ml_bridge.ros.image_conversions import (
    IMAGE_ENCODINGS,
    array_to_image,
    image_to_array,
    message_bytes,
)

__all__ = ["IMAGE_ENCODINGS", "ConversionError", "array_to_image", "array_to_tensor",
           "arrays_to_tensors", "check_tensor_count", "declared_elements", "image_to_array",
           "tensor_to_array", "tensors_to_arrays"]

#: dtype name -> (numpy dtype, its little-endian form on the wire); "" is float32. Looked up
#: per message, so the hot path builds no dtype objects.
_WIRE: Dict[str, Tuple[np.dtype, np.dtype]] = {
    n: (np.dtype(n), np.dtype(n).newbyteorder("<")) for n in SUPPORTED_DTYPES}
_WIRE[""] = _WIRE["float32"]
#: The same by numpy dtype (native byte order), for outputs: numpy's ``dtype.name`` costs more
#: than the rest of a small tensor's conversion.
_BY_DTYPE: Dict[np.dtype, Tuple[str, np.dtype]] = {
    np.dtype(n): (n, np.dtype(n).newbyteorder("<")) for n in SUPPORTED_DTYPES}


def _dtypes(name: str) -> Tuple[np.dtype, np.dtype]:
    try:
        return _WIRE[name]
    except (KeyError, TypeError):  # TypeError: a hand-built message's unhashable dtype
        # raises the InputError that lists the supported dtypes
        check_dtype_name(name if isinstance(name, str) else repr(name))
        raise


def _label(msg: Tensor) -> str:
    return f"tensor '{msg.name}'" if msg.name else "tensor"


#: A shape's dimensions are uint32 on the wire.
_UINT32_MAX = 0xFFFFFFFF


def _shape(msg: Tensor) -> Tuple[int, ...]:
    """``msg.shape`` checked: a hand-built message can hold -1 (numpy's "any size"), 2.5 or None."""
    try:
        dims = msg.shape
    except AttributeError as err:
        raise ConversionError(f"expected an ml_bridge/Tensor, got an object of type {type(msg).__name__}: "
                              f"{err}") from err
    try:
        shape = tuple(map(operator.index, dims))  # refuses floats, which int() would truncate
    except TypeError as err:
        raise ConversionError(f"{_label(msg)}: shape {dims!r} must be a list of integers") from err
    if shape and (min(shape) < 0 or max(shape) > _UINT32_MAX):
        raise ConversionError(f"{_label(msg)}: shape {list(shape)} has a dimension outside "
                              f"0..{_UINT32_MAX} (uint32); give every dimension's size")
    return shape


def tensor_to_array(msg: Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """The numpy array a Tensor message carries (``data`` if present, else ``values``).

    Raises:
        ConversionError: unknown dtype, byte count or value count that does not match the
            shape, too many elements, values an integer dtype cannot hold (non-integral,
            out of range, or not 0/1 for bool), or, in a hand-built message, fields that
            cannot be sent (not a Tensor, a negative or non-integer dimension, ``data`` that
            is not bytes, ``values`` that are not a flat list of numbers).
    """
    shape = _shape(msg)  # first: it says so if msg is not a Tensor at all
    try:
        dtype, wire = _dtypes(msg.dtype)
    except InputError as err:
        raise ConversionError(f"{_label(msg)}: {err}") from err
    count = math.prod(shape) if shape else -1
    if count > max_elements:
        label = _label(msg)
        raise ConversionError(f"{label}: shape {list(shape)} has {count} elements, more than the "
                              f"limit of {max_elements}")
    raw = msg.data
    if type(raw) is not bytes:  # a received message holds bytes
        raw = message_bytes(raw, f"{_label(msg)} data")
    if len(raw):
        if len(raw) != count * dtype.itemsize:  # no shape given, or a wrong byte count
            label = _label(msg)
            if count >= 0:
                raise ConversionError(f"{label}: {len(raw)} bytes of data, but shape {list(shape)} "
                                      f"of {dtype.name} needs {count * dtype.itemsize}")
            if len(raw) % dtype.itemsize:
                raise ConversionError(f"{label}: {len(raw)} bytes is not a whole number of "
                                      f"{dtype.name} elements ({dtype.itemsize} bytes each)")
            shape = (len(raw) // dtype.itemsize,)
        if dtype.kind == "b" and raw and int(np.frombuffer(raw, np.uint8).max()) > 1:
            raise ConversionError(f"{_label(msg)}: bool data bytes must be 0 or 1")
        array = np.frombuffer(raw, dtype=wire).reshape(shape)
        return array if wire.isnative else array.astype(dtype)
    label = _label(msg)
    try:
        values = np.asarray(msg.values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConversionError(f"{label}: values must be a list of numbers: {err}") from err
    if values.ndim != 1:
        raise ConversionError(f"{label}: values must be a flat list of numbers (float64[]), not "
                              f"nested {values.ndim} deep; the shape field gives the dimensions")
    if count < 0:
        shape = (values.size,)
    elif values.size != count:
        if values.size == 0 and count > 0:
            raise ConversionError(f"{label}: has neither data nor values for shape {list(shape)}")
        raise ConversionError(f"{label}: {values.size} values, but shape {list(shape)} needs {count}")
    if values.size > max_elements:
        raise ConversionError(f"{label}: {values.size} values, more than the limit of {max_elements}")
    if dtype.kind in "iub":
        _check_integral(values, dtype, label)
    return values.reshape(shape).astype(dtype)


def _check_integral(values: np.ndarray, dtype: np.dtype, label: str) -> None:
    """Refuses values an integer dtype cannot hold: numpy's cast would wrap them silently."""
    if not np.all(np.isfinite(values) & (values == np.round(values))):
        raise ConversionError(f"{label}: values must be whole numbers for dtype {dtype.name}")
    if not values.size:
        return
    if dtype.kind == "b":
        low, high, shown = 0.0, 2.0, "0 or 1"
    else:  # powers of two are exact in float64, so the bounds are exact too
        bits = 8 * dtype.itemsize
        low = -(2.0 ** (bits - 1)) if dtype.kind == "i" else 0.0
        high = 2.0 ** (bits - 1) if dtype.kind == "i" else 2.0 ** bits
        shown = f"{int(low)}..{int(high) - 1}"
    lo, hi = float(values.min()), float(values.max())
    if lo < low or hi >= high:
        bad = lo if lo < low else hi
        raise ConversionError(f"{label}: value {bad:g} is out of range for dtype {dtype.name} "
                              f"({shown})")


def declared_elements(msg: Tensor) -> int:
    """Elements a Tensor says it carries (shape, else data or values length), without converting."""
    shape = _shape(msg)
    if shape:
        return math.prod(shape)
    try:
        n_data, n_values = len(msg.data), len(msg.values)
    except TypeError:  # no length: tensor_to_array names the field and why
        return 0
    if n_data:
        wire = _WIRE.get(msg.dtype) if isinstance(msg.dtype, str) else None
        return n_data // (wire[0].itemsize if wire is not None else 1)
    return n_values


def check_tensor_count(count: int, n_inputs: int, what: str = "request") -> None:
    """Raises ConversionError unless ``count`` tensors are the model's ``n_inputs``."""
    if count != n_inputs:
        raise ConversionError(f"{what} has {count} input tensor(s); the model takes {n_inputs}")


def tensors_to_arrays(msgs: Sequence[Tensor], n_inputs: Optional[int] = None,
                      max_elements: int = DEFAULT_MAX_ELEMENTS, what: str = "request") -> List[np.ndarray]:
    """The arrays of several Tensors, after checking their number and total size first.

    The count and the declared element counts are checked before any tensor is converted, so
    a request with millions of tensors or a huge declared shape costs nothing more here.

    Args:
        msgs: The tensors, e.g. a request's ``inputs``.
        n_inputs: How many tensors there must be (None: any number).
        max_elements: Limit on the elements of all tensors together.
        what: How messages name the tensors' owner ("request", "sample inputs", ...).

    Raises:
        ConversionError: a wrong number of tensors, too many elements, or a bad tensor.
    """
    if not isinstance(msgs, (list, tuple)):
        try:
            msgs = list(msgs)
        except TypeError as err:
            raise ConversionError(f"{what}: expected a list of Tensors, got an object of type "
                                  f"{type(msgs).__name__}") from err
    if n_inputs is not None:
        check_tensor_count(len(msgs), n_inputs, what)
    total = 0
    for msg in msgs:
        total += declared_elements(msg)
        if total > max_elements:
            raise ConversionError(f"{what} declares more than {max_elements} elements, the limit "
                                  "(parameter ~max_elements)")
    return [tensor_to_array(msg, max_elements) for msg in msgs]


def array_to_tensor(array: np.ndarray, name: str = "", use_values: bool = False) -> Tensor:
    """A Tensor message carrying ``array``: raw little-endian bytes, or ``values`` if asked."""
    array = np.asarray(array)
    known = _BY_DTYPE.get(array.dtype)
    if known is None:  # another byte order, or a dtype that does not travel
        try:
            dtype, wire = _dtypes(array.dtype.name)
        except InputError as err:
            raise ConversionError(f"output '{name}': {err}") from err
        known = (dtype.name, wire)
    dtype_name, wire = known
    msg = Tensor(name, dtype_name, list(array.shape), b"", [])
    if use_values:
        msg.values = array.astype(np.float64).ravel().tolist()
    else:
        msg.data = np.ascontiguousarray(array, dtype=wire).tobytes()
    return msg


def arrays_to_tensors(arrays: Sequence[np.ndarray], names: Sequence[str],
                      use_values: bool) -> "list[Tensor]":
    """Several outputs at once, named after the model's output specs where known."""
    return [array_to_tensor(a, names[i] if i < len(names) else "", use_values)
            for i, a in enumerate(arrays)]
