"""The conversions' error contract: whatever a hand-built message or array holds, every failure
is one ConversionError that names the cause (no IndexError, KeyError, TypeError, ValueError,
AttributeError, and no silently wrong or empty result)."""
import re
from typing import Any, Dict, Optional

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.msg import Tensor
from sensor_msgs.msg import Image

from ml_bridge.ros.conversions import (
    ConversionError,
    array_to_image,
    image_to_array,
    tensor_to_array,
    tensors_to_arrays,
)


def image(**fields: Any) -> Image:
    """A 2 x 2 mono8 image with ``fields`` replaced, built without genpy's checks (as a caller can)."""
    msg = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(range(4)))
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize("array, encoding, words", [
    (None, None, "got None"),
    (1, "rgba8", "got shape []"),  # cv_bridge's test_numpy_types case
    (np.uint8(7), None, "got shape []"),
    (np.zeros(5, np.uint8), None, "got shape [5]"),
    (np.zeros((2, 2, 3, 1), np.uint8), None, "got shape [2, 2, 3, 1]"),
    (np.zeros((0, 5), np.uint8), "mono8", "H, W > 0; got shape [0, 5]"),
    (np.zeros((5, 0, 3), np.uint8), None, "H, W > 0; got shape [5, 0, 3]"),
    ([[1], [1, 2]], None, "list is not an image array"),
    (np.zeros((2, 2), bool), None, "dtype bool"),
    (np.zeros((2, 2), np.int64), "mono8", "dtype int64"),
    (np.zeros((2, 2), np.float16), None, "dtype float16"),
    (np.zeros((2, 2), object), None, "dtype object"),
    (np.zeros((2, 2), np.uint8), 5, "encoding must be a str such as 'rgb8', not 5"),
    (np.zeros((2, 2), np.uint8), "rgb8", "as rgb8"),
    (np.zeros((2, 2, 5), np.uint8), "8UC5", "1 to 4 channels"),
    (np.zeros((2, 2), np.uint8), "bayer_nope", "Unrecognized image encoding"),
    (np.broadcast_to(np.uint8(0), (1 << 33, 1)), None, "too large for an Image"),  # no memory used
])
def test_array_to_image_refuses_with_a_conversion_error(array: Any, encoding: Optional[str],
                                                         words: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(words)):
        array_to_image(array, encoding)


def test_an_h_x_w_x_1_array_is_mono8_by_default() -> None:
    array = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    msg = array_to_image(array)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", 2, 3, 3)
    np.testing.assert_array_equal(image_to_array(msg), array[:, :, 0])


@pytest.mark.parametrize("msg, words", [
    (None, "expected a sensor_msgs/Image, got an object of type NoneType"),
    (Tensor(), "expected a sensor_msgs/Image, got an object of type Tensor"),
    (image(encoding=None), "image encoding None is not supported"),
    (image(encoding=["mono8"]), "image encoding ['mono8'] is not supported"),
    (image(encoding="bayer_rggb8"), "image encoding 'bayer_rggb8' is not supported"),
    (image(width=-3), "image width -3 is outside 0..4294967295"),  # returned an empty array
    (image(width=-1, step=-1), "image width -1"),
    (image(height=-2, step=-2), "image height -2"),
    (image(width=2.0), "image width is 2.0 (float)"),
    (image(step=None), "image step is None"),
    (image(width=1 << 40), "image width 1099511627776 is outside"),
    (image(is_bigendian=-1), "is_bigendian -1 is outside 0..255"),
    (image(height=(1 << 32) - 1, width=(1 << 32) - 1, step=(1 << 32) - 1),  # huge, 4 bytes of data
     "image data has 4 bytes, but step 4294967295 x height 4294967295"),
    (image(step=1), "image data has 4 bytes, but step 1 x height 2 = 2"),
    (image(width=3, step=2), "step 2 is less than width 3 x 1 bytes"),
    (image(data="abcd"), "image data is a str, but uint8[] data is bytes"),
    (image(encoding="rgba8", width=1, step=4, data="1234" * 2), "image data is a str"),
    (image(data=[0, 1, 2, 300]), "image data must be bytes or ints 0..255"),
    (image(data=[0, 1, 2, 3.5]), "image data must be bytes or ints 0..255"),
    (image(data=None), "image data is of type NoneType"),
    (image(data=np.zeros(4, np.int64)), "8-byte items"),
])
def test_image_to_array_refuses_with_a_conversion_error(msg: Any, words: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(words)):
        image_to_array(msg)


@pytest.mark.parametrize("encoding, step, data", [
    ("mono8", 2, [0, 1, 2, 3]), ("mono8", 2, (0, 1, 2, 3)), ("mono8", 3, [0, 1, 9, 2, 3, 9]),
    ("mono8", 2, np.arange(4, dtype=np.uint8)), ("mono8", 2, memoryview(bytes(range(4)))),
    ("rgb8", 6, list(range(12))), ("bgra8", 8, list(range(16))), ("8UC1", 2, [0, 1, 2, 3]),
])
def test_data_as_a_list_or_buffer_reads_as_its_bytes(encoding: str, step: int, data: Any) -> None:
    """genpy sends a list or tuple of ints as those bytes; it reads the same as bytes."""
    as_bytes = bytes(np.asarray(data, np.uint8).tobytes())
    expected = image_to_array(image(encoding=encoding, step=step, data=as_bytes))
    np.testing.assert_array_equal(image_to_array(image(encoding=encoding, step=step, data=data)),
                                  expected)


@pytest.mark.parametrize("flag", [1, 2, 255, True])
def test_any_nonzero_is_bigendian_reads_big_endian_bytes(flag: Any) -> None:
    """cv_bridge swaps bytes for is_bigendian == 1 only and read 2 as little-endian values."""
    words = np.array([[256, 512], [4096, 65535]], np.uint16)
    little = image(encoding="mono16", step=4, is_bigendian=0, data=words.astype("<u2").tobytes())
    big = image(encoding="mono16", step=4, is_bigendian=flag, data=words.astype(">u2").tobytes())
    expected = image_to_array(little)
    assert expected.tolist() == [[1, 2], [16, 255]]
    np.testing.assert_array_equal(image_to_array(big), expected)


@pytest.mark.parametrize("fields, words", [
    (dict(shape=[-1, 4], data=bytes(16)), "tensor 'x': shape [-1, 4] has a dimension outside 0..4294967295"),
    (dict(shape=[-2, -2], data=bytes(16)), "shape [-2, -2] has a dimension outside"),
    (dict(shape=[-2, -2], values=[1.0] * 4), "shape [-2, -2] has a dimension outside"),
    (dict(shape=[1 << 40, 0]), "shape [1099511627776, 0] has a dimension outside"),
    (dict(shape=[2.5], values=[1.0, 2.0]), "shape [2.5] must be a list of integers"),
    (dict(shape=["a"], values=[1.0]), "shape ['a'] must be a list of integers"),
    (dict(shape=3, values=[1.0]), "shape 3 must be a list of integers"),
    (dict(dtype=["float32"], values=[1.0]), "tensor 'x': unknown dtype '['float32']'"),
    (dict(data="abcd"), "tensor 'x' data is a str, but uint8[] data is bytes"),
    (dict(data=[0, 0, 128, 300]), "data must be bytes or ints 0..255"),
    (dict(data=5), "data is of type int; it must be bytes"),
    (dict(values=["a"]), "values must be a list of numbers"),
    (dict(values=[[1.0], [2.0, 3.0]]), "values must be a list of numbers"),
    (dict(values=[[1.0], [2.0]]), "values must be a flat list of numbers"),
])
def test_tensor_to_array_refuses_with_a_conversion_error(fields: Dict[str, Any], words: str) -> None:
    msg = Tensor(name="x")
    for name, value in fields.items():
        setattr(msg, name, value)
    with pytest.raises(ConversionError, match=re.escape(words)):
        tensor_to_array(msg)
    with pytest.raises(ConversionError):  # the declared-size screen before any conversion too
        tensors_to_arrays([msg], 1)


@pytest.mark.parametrize("msgs, words", [
    (None, "request: expected a list of Tensors, got an object of type NoneType"),
    ([None], "expected an ml_bridge/Tensor, got an object of type NoneType"),
    ([Tensor(values=[1.0]), Image()], "expected an ml_bridge/Tensor, got an object of type Image"),
])
def test_tensors_to_arrays_refuses_what_is_not_tensors(msgs: Any, words: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(words)):
        tensors_to_arrays(msgs)


def test_data_as_a_list_of_ints_reads_as_its_bytes() -> None:
    as_list = Tensor(dtype="float32", data=list(np.array([1.5, -2], np.float32).tobytes()))
    assert tensor_to_array(as_list).tolist() == [1.5, -2.0]
