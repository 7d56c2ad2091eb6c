"""Pure, paired conversions between ROS messages and numpy arrays; no master needed.

``tensor_to_array`` / ``array_to_tensor`` move bytes with ``np.frombuffer`` / ``tobytes``
(no per-element Python work on the ``data`` path); ``image_to_array`` / ``array_to_image``
wrap cv_bridge. Every failure is one exception, :class:`ConversionError`, that says what
was wrong.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import Image

from ml_bridge.core.errors import InputError
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS, SUPPORTED_DTYPES, check_dtype_name
from ml_bridge.msg import Tensor

#: Encodings the image topic accepts, and what they are converted to for the model.
IMAGE_ENCODINGS = {"mono8": "mono8", "mono16": "mono8", "8UC1": "mono8", "rgb8": "rgb8",
                   "bgr8": "rgb8", "rgba8": "rgb8", "bgra8": "rgb8", "8UC3": "rgb8"}
#: Channel-agnostic encodings read as the colour encoding OpenCV gives such images: cv_bridge
#: refuses to convert them to any colour encoding ("[8UC3] is not a color format"), and
#: ``cv2_to_imgmsg`` of a plain OpenCV image (BGR, or one channel) labels it this way.
_PLAIN_ENCODINGS = {"8UC1": "mono8", "8UC3": "bgr8"}
#: Channels of the 8-bit encodings: :func:`array_to_image` writes arrays in them as they are.
_CHANNELS_8BIT = {"mono8": 1, "8UC1": 1, "rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4}
#: Bytes per pixel of each encoding read.
_PIXEL_BYTES = {**_CHANNELS_8BIT, "mono16": 2}
#: Encodings whose bytes are already what :func:`image_to_array` returns.
_AS_IS = ("mono8", "rgb8")
_bridge = CvBridge()
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
    except KeyError:
        check_dtype_name(name)  # raises the InputError that lists the supported dtypes
        raise


class ConversionError(InputError):
    """A message could not be converted: names the field and what was wrong."""


def _label(msg: Tensor) -> str:
    return f"tensor '{msg.name}'" if msg.name else "tensor"


def tensor_to_array(msg: Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """The numpy array a Tensor message carries (``data`` if present, else ``values``).

    Raises:
        ConversionError: unknown dtype, byte count or value count that does not match the
            shape, too many elements, or values an integer dtype cannot hold (non-integral,
            out of range, or not 0/1 for bool).
    """
    try:
        dtype, wire = _dtypes(msg.dtype)
    except InputError as err:
        raise ConversionError(f"{_label(msg)}: {err}") from err
    shape = tuple(map(int, msg.shape))
    count = math.prod(shape) if shape else -1
    if count > max_elements:
        label = _label(msg)
        raise ConversionError(f"{label}: shape {list(shape)} has {count} elements, more than the "
                              f"limit of {max_elements}")
    data = msg.data
    if len(data):
        raw = data if isinstance(data, (bytes, bytearray)) else bytes(bytearray(data))
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
    values = np.asarray(msg.values, dtype=np.float64)
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
    if len(msg.shape):
        return math.prod(int(d) for d in msg.shape)
    if len(msg.data):
        wire = _WIRE.get(msg.dtype)
        return len(msg.data) // (wire[0].itemsize if wire is not None else 1)
    return len(msg.values)


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


def image_to_array(msg: Image) -> np.ndarray:
    """H x W uint8 (mono encodings) or H x W x 3 uint8 RGB (colour encodings).

    ``8UC1`` is read as mono8 and ``8UC3`` as bgr8 (OpenCV's channel order).

    Raises:
        ConversionError: unsupported encoding, or a data size that does not match the header.
    """
    target = IMAGE_ENCODINGS.get(msg.encoding)
    if target is None:
        raise ConversionError(f"image encoding '{msg.encoding}' is not supported; use one of "
                              f"{', '.join(sorted(IMAGE_ENCODINGS))}")
    if msg.height == 0 or msg.width == 0:
        raise ConversionError(f"image is empty ({msg.width} x {msg.height})")
    if len(msg.data) != msg.step * msg.height:
        raise ConversionError(f"image data has {len(msg.data)} bytes, but step {msg.step} x height "
                              f"{msg.height} = {msg.step * msg.height}")
    row = msg.width * _PIXEL_BYTES[msg.encoding]
    if msg.encoding in _AS_IS and msg.step >= row:
        # Already what is returned: a view of the message's bytes, rows of ``step`` bytes
        # (cv_bridge copies the image and costs as much again in encoding look-ups).
        image = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :row]
        return image if msg.encoding == "mono8" else image.reshape(msg.height, msg.width, 3)
    if msg.step < row:
        raise ConversionError(f"image step {msg.step} is less than width {msg.width} x "
                              f"{_PIXEL_BYTES[msg.encoding]} bytes of {msg.encoding}")
    data = msg.data
    if msg.step > row:  # padded rows: cv_bridge reads rows of width x pixel bytes
        data = np.frombuffer(data, np.uint8).reshape(msg.height, msg.step)[:, :row].tobytes()
    encoding = _PLAIN_ENCODINGS.get(msg.encoding, msg.encoding)
    if data is not msg.data or encoding != msg.encoding:  # relabelled: no copy of the data
        msg = Image(header=msg.header, height=msg.height, width=msg.width, encoding=encoding,
                    is_bigendian=msg.is_bigendian, step=row, data=data)
    try:
        return np.asarray(_bridge.imgmsg_to_cv2(msg, desired_encoding=target))
    except (CvBridgeError, TypeError, ValueError) as err:
        raise ConversionError(f"cannot convert a {msg.encoding} image "
                              f"({msg.width} x {msg.height}, step {msg.step}): {err}") from err


def array_to_image(array: np.ndarray, encoding: Optional[str] = None) -> Image:
    """An Image message from H x W (mono8) or H x W x 3 (rgb8) uint8, or the given encoding."""
    array = np.asarray(array)
    if encoding is None:
        encoding = "mono8" if array.ndim == 2 else "rgb8"
    channels = _CHANNELS_8BIT.get(encoding)
    if (channels is not None and array.dtype == np.uint8 and array.ndim in (2, 3)
            and (array.shape[2:] or (1,)) == (channels,)):
        # The message as cv_bridge builds it, without its encoding look-ups (a third of the
        # cost of publishing a mask): the bytes in C order, rows of width x channels bytes.
        height, width = array.shape[:2]
        return Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                     step=width * channels, data=np.ascontiguousarray(array).tobytes())
    try:
        return _bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    except (CvBridgeError, TypeError, ValueError) as err:
        raise ConversionError(f"cannot encode an array of shape {list(array.shape)} and dtype "
                              f"{array.dtype} as {encoding}: {err}") from err
