"""Image messages <-> numpy arrays, re-exported by :mod:`ml_bridge.ros.conversions`.

Every failure is one :class:`ConversionError` naming the field and what was wrong, whatever a
hand-built message or array holds: the fields are checked here, so cv_bridge is only given
what it converts (it raises IndexError, KeyError or ZeroDivisionError on the rest, and reads a
non-0/1 ``is_bigendian`` into wrong values).
"""
from typing import Any, Optional, Union

import numpy as np
from cv_bridge import CvBridge, CvBridgeError
from sensor_msgs.msg import Image

from ml_bridge.core.errors import ConversionError

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
#: The dtypes cv_bridge has an OpenCV depth for; its look-up raises KeyError for the others.
_CV_DTYPES = ("float32", "float64", "int16", "int32", "int8", "uint16", "uint8")
#: height, width and step are uint32 fields.
_UINT32_MAX = 0xFFFFFFFF
_bridge = CvBridge()

ImageBytes = Union[bytes, bytearray, memoryview]


def _uint(field: str, value: Any, bits: int = 32) -> int:
    """``value`` of an unsigned integer field, checked: a hand-built message can hold anything."""
    if type(value) is not int:  # a received message holds ints: one test on the hot path
        if not isinstance(value, (int, np.integer)):
            raise ConversionError(f"image {field} is {value!r} ({type(value).__name__}); it must be "
                                  f"an integer 0..{(1 << bits) - 1}")
        value = int(value)
    if value < 0 or value >> bits:
        raise ConversionError(f"image {field} {value} is outside 0..{(1 << bits) - 1}, the range of "
                              f"its uint{bits} field")
    return value


def message_bytes(data: Any, field: str) -> ImageBytes:
    """A uint8[] field's ``data`` as bytes, without a copy.

    A list or tuple of ints is packed, as genpy sends it; ``field`` names the field in the
    error ("image data", "tensor 'x' data").
    """
    if type(data) is bytes or type(data) is bytearray:  # a received message holds bytes
        return data
    if isinstance(data, (list, tuple)):
        try:
            return bytes(data)
        except (TypeError, ValueError) as err:
            raise ConversionError(f"{field} must be bytes or ints 0..255: {err}") from err
    if isinstance(data, str):  # genpy cannot send it either: struct packs only bytes as uint8[]
        raise ConversionError(f"{field} is a str, but uint8[] data is bytes: pass bytes "
                              "(e.g. text.encode())")
    try:
        view = memoryview(data)
    except TypeError as err:
        raise ConversionError(f"{field} is of type {type(data).__name__}; it must be bytes") from err
    if view.itemsize != 1 or view.ndim != 1 or not view.c_contiguous:
        raise ConversionError(f"{field} is a {type(data).__name__} of {view.ndim} dimension(s) of "
                              f"{view.itemsize}-byte items; it must be a flat run of bytes")
    return view


def image_to_array(msg: Image) -> np.ndarray:
    """H x W uint8 (mono encodings) or H x W x 3 uint8 RGB (colour encodings).

    ``8UC1`` is read as mono8 and ``8UC3`` as bgr8 (OpenCV's channel order). ``mono8`` and
    ``rgb8`` come back as a view of the message's bytes.

    Raises:
        ConversionError: not an Image, an unsupported encoding, a field out of its range
            (e.g. a negative width), ``data`` that is not bytes, or sizes that do not agree
            (``step`` x ``height`` bytes of ``data``, ``step`` >= ``width`` x pixel bytes).
    """
    try:
        encoding, big, data, header = msg.encoding, msg.is_bigendian, msg.data, msg.header
        height, width, step = msg.height, msg.width, msg.step
    except AttributeError as err:
        raise ConversionError(f"expected a sensor_msgs/Image, got an object of type {type(msg).__name__}: "
                              f"{err}") from err
    target = IMAGE_ENCODINGS.get(encoding) if isinstance(encoding, str) else None
    if target is None:
        raise ConversionError(f"image encoding {encoding!r} is not supported; use one of "
                              f"{', '.join(sorted(IMAGE_ENCODINGS))}")
    height, width, step = _uint("height", height), _uint("width", width), _uint("step", step)
    big = _uint("is_bigendian", big, 8)
    data = message_bytes(data, "image data")
    if height == 0 or width == 0:
        raise ConversionError(f"image is empty ({width} x {height})")
    if len(data) != step * height:
        raise ConversionError(f"image data has {len(data)} bytes, but step {step} x height "
                              f"{height} = {step * height}")
    pixel = _PIXEL_BYTES[encoding]
    row = width * pixel
    if step < row:
        raise ConversionError(f"image step {step} is less than width {width} x {pixel} bytes of "
                              f"{encoding}")
    if encoding in _AS_IS:
        # Already what is returned: a view of the message's bytes, rows of ``step`` bytes
        # (cv_bridge copies the image and costs as much again in encoding look-ups).
        image = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row]
        return image if pixel == 1 else image.reshape(height, width, 3)
    if step > row:  # padded rows: cv_bridge reads rows of width x pixel bytes
        data = np.frombuffer(data, np.uint8).reshape(height, step)[:, :row].tobytes()
    # A new message (no copy of the data): the encoding OpenCV's name stands for, the checked
    # sizes, and is_bigendian as 0/1, since cv_bridge swaps bytes only for exactly 1.
    plain = Image(header=header, height=height, width=width, step=row, data=data,
                  encoding=_PLAIN_ENCODINGS.get(encoding, encoding), is_bigendian=1 if big else 0)
    try:
        return np.asarray(_bridge.imgmsg_to_cv2(plain, desired_encoding=target))
    except (CvBridgeError, TypeError, ValueError) as err:
        raise ConversionError(f"cannot convert a {encoding} image ({width} x {height}, step "
                              f"{step}): {err}") from err


def array_to_image(array: np.ndarray, encoding: Optional[str] = None) -> Image:
    """An Image message from H x W (mono8) or H x W x 3 (rgb8) uint8, or the given encoding.

    Without an encoding, H x W and H x W x 1 arrays are mono8 and the others rgb8.

    Raises:
        ConversionError: not an H x W or H x W x C array with H, W > 0 (None, a scalar, 1-D,
            4-D, empty), too large for an Image, a dtype cv_bridge has no encoding for (bool,
            int64, float16, ...), or an encoding that is unknown or does not fit the array.
    """
    if not isinstance(array, np.ndarray):
        if array is None:
            raise ConversionError("array_to_image got None instead of an H x W or H x W x C array")
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as err:
            raise ConversionError(f"a {type(array).__name__} is not an image array: {err}") from err
    if array.ndim not in (2, 3) or not (array.shape[0] and array.shape[1]):
        raise ConversionError(f"an image is an H x W or H x W x C array with H, W > 0; got shape "
                              f"{list(array.shape)} ({array.dtype})")
    if array.shape[0] > _UINT32_MAX or array.size // array.shape[0] * array.itemsize > _UINT32_MAX:
        raise ConversionError(f"an array of shape {list(array.shape)} ({array.dtype}) is too large "
                              f"for an Image: its height and row bytes must fit in uint32")
    if encoding is None:
        encoding = "mono8" if array.shape[2:] in ((), (1,)) else "rgb8"
    elif not isinstance(encoding, str):
        raise ConversionError(f"image encoding must be a str such as 'rgb8', not {encoding!r}")
    channels = _CHANNELS_8BIT.get(encoding)
    if channels is not None and array.dtype == np.uint8 and (array.shape[2:] or (1,)) == (channels,):
        # The message as cv_bridge builds it, without its encoding look-ups (a third of the
        # cost of publishing a mask): the bytes in C order, rows of width x channels bytes.
        height, width = array.shape[:2]
        return Image(height=height, width=width, encoding=encoding, is_bigendian=0,
                     step=width * channels, data=np.ascontiguousarray(array).tobytes())
    if array.dtype.name not in _CV_DTYPES:
        raise ConversionError(f"cannot encode an array of dtype {array.dtype} as an image; use "
                              f"one of {', '.join(_CV_DTYPES)} (e.g. uint8)")
    try:
        return _bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    except (CvBridgeError, TypeError, ValueError, KeyError) as err:
        detail = ("cv_bridge names OpenCV types of 1 to 4 channels only" if isinstance(err, KeyError)
                  else str(err))
        raise ConversionError(f"cannot encode an array of shape {list(array.shape)} and dtype "
                              f"{array.dtype} as {encoding}: {detail}") from err
