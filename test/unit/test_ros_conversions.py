"""Message <-> numpy conversions and the generated interface classes (no master needed)."""
import math
import re
from typing import List

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from io import BytesIO

import genpy
from ml_bridge.msg import (
    Event,
    ObjectPrediction,
    ObjectPredictions,
    Prediction,
    Sample,
    Tensor,
    TensorSpec,
    TrainFeedback,
    TrainGoal,
    TrainResult,
)
from ml_bridge.srv import GetInfoResponse, PredictRequest, PredictResponse
from sensor_msgs.msg import Image

from ml_bridge.ros.conversions import (
    ConversionError,
    array_to_image,
    array_to_tensor,
    image_to_array,
    tensor_to_array,
    tensors_to_arrays,
)


def wire(msg: genpy.Message) -> genpy.Message:
    """Serialize and deserialize, as a message crossing the network does."""
    buf = BytesIO()
    msg.serialize(buf)
    out = type(msg)()
    out.deserialize(buf.getvalue())
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64", "uint8", "bool", "float16"])
def test_data_round_trip_over_the_wire(dtype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    msg = wire(array_to_tensor(array, name="x"))
    assert msg.name == "x" and msg.dtype == dtype and list(msg.shape) == [3, 4, 5]
    assert len(msg.values) == 0
    back = tensor_to_array(msg)
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, array)


def test_values_round_trip_and_default_dtype() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    msg = wire(array_to_tensor(array, use_values=True))
    assert len(msg.data) == 0 and len(msg.values) == 12
    np.testing.assert_allclose(tensor_to_array(msg), array, rtol=1e-7)
    # a hand-written command-line tensor: dtype "" = float32, empty shape = 1-D
    flat = tensor_to_array(Tensor(values=[1.0, 2.5, 3.0]))
    assert flat.dtype == np.float32 and flat.shape == (3,)


def test_data_is_little_endian_bytes() -> None:
    msg = array_to_tensor(np.array([1], dtype=np.int32))
    assert bytes(msg.data) == b"\x01\x00\x00\x00"


@pytest.mark.parametrize("msg, words", [
    (Tensor(dtype="complex64", shape=[1], data=bytes(8)), "unknown dtype"),
    (Tensor(shape=[2, 3], data=bytes(20)), "20 bytes of data, but shape [2, 3] of float32 needs 24"),
    (Tensor(data=bytes(7)), "not a whole number"),
    (Tensor(shape=[2, 2], values=[1.0, 2.0, 3.0]), "3 values, but shape [2, 2] needs 4"),
    (Tensor(shape=[2, 2]), "neither data nor values"),
    (Tensor(dtype="int64", values=[1.5]), "whole numbers"),
    (Tensor(shape=[1 << 20, 1 << 20], data=bytes(4)), "more than the limit"),
])
def test_bad_tensors_are_named(msg: Tensor, words: str) -> None:
    with pytest.raises(ConversionError, match=words.replace("[", r"\[").replace("]", r"\]")):
        tensor_to_array(msg)


@pytest.mark.parametrize("dtype, values, words", [
    ("uint8", [1.0, 300.0], "value 300 is out of range for dtype uint8 (0..255)"),
    ("uint8", [-1.0], "value -1 is out of range for dtype uint8"),
    ("int8", [128.0], "value 128 is out of range for dtype int8 (-128..127)"),
    ("uint16", [65536.0], "out of range for dtype uint16 (0..65535)"),
    ("int32", [2.0 ** 31], "out of range for dtype int32"),
    ("int64", [1e30], "value 1e+30 is out of range for dtype int64"),
    ("int64", [2.0 ** 63], "out of range for dtype int64"),  # = INT64_MAX as a float64
    ("bool", [0.0, 2.0], "value 2 is out of range for dtype bool (0 or 1)"),
    ("bool", [-1.0], "out of range for dtype bool"),
    ("int32", [math.inf], "whole numbers"),
    ("uint8", [0.5], "whole numbers"),
])
def test_integer_values_never_wrap(dtype: str, values: List[float], words: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(words)):
        tensor_to_array(Tensor(name="ids", dtype=dtype, values=values))


@pytest.mark.parametrize("dtype, values, expected", [
    ("uint8", [0.0, 255.0], [0, 255]), ("int8", [-128.0, 127.0], [-128, 127]),
    ("int64", [-(2.0 ** 63), 2.0 ** 62], [-(2 ** 63), 2 ** 62]), ("bool", [0.0, 1.0], [False, True]),
    ("uint16", [65535.0], [65535]), ("int32", [], []),
])
def test_integer_values_at_the_limits_are_kept_exactly(dtype: str, values: List[float],
                                                       expected: List[int]) -> None:
    array = tensor_to_array(Tensor(dtype=dtype, values=values))
    assert array.dtype == np.dtype(dtype) and array.tolist() == expected


def test_bool_data_bytes_other_than_0_and_1_are_refused() -> None:
    with pytest.raises(ConversionError, match="bool data bytes must be 0 or 1"):
        tensor_to_array(Tensor(dtype="bool", shape=[3], data=b"\x00\x01\x02"))


def test_the_number_of_tensors_is_checked_before_any_is_converted() -> None:
    bad = Tensor(dtype="complex64", values=[1.0])  # would fail if it were converted
    with pytest.raises(ConversionError, match=r"request has 3 input tensor\(s\); the model takes 1"):
        tensors_to_arrays([bad] * 3, n_inputs=1)
    flood = [Tensor()] * 5_000_000  # 5 M empty tensors: refused by counting, not converting
    with pytest.raises(ConversionError, match="has 5000000 input tensor"):
        tensors_to_arrays(flood, n_inputs=1)


@pytest.mark.parametrize("msgs", [
    [Tensor(shape=[6], data=bytes(24)), Tensor(shape=[5], values=[0.0] * 5)],
    [Tensor(data=bytes(40)), Tensor(values=[0.0] * 2)],  # sizes from data / values lengths
    [Tensor(shape=[1 << 30, 1 << 30], data=bytes(4)), Tensor(dtype="nope")],
])
def test_declared_elements_of_all_tensors_are_checked_before_any_is_converted(
        msgs: List[Tensor]) -> None:
    with pytest.raises(ConversionError, match=r"request declares more than 10 elements.*~max_elements"):
        tensors_to_arrays(msgs, n_inputs=2, max_elements=10)


def test_tensors_to_arrays_converts_what_passes() -> None:
    arrays = tensors_to_arrays([Tensor(shape=[2], values=[1.0, 2.0]),
                                array_to_tensor(np.arange(3, dtype=np.int64))], n_inputs=2)
    assert [a.tolist() for a in arrays] == [[1.0, 2.0], [0, 1, 2]]
    assert tensors_to_arrays([Tensor(values=[1.0])] * 3) != []  # no count given: any number


def test_element_limit_is_checked_before_allocating() -> None:
    with pytest.raises(ConversionError, match="limit of 10"):
        tensor_to_array(Tensor(shape=[11], values=[0.0] * 11), max_elements=10)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16",
                                      "8UC1", "8UC3"])
def test_image_encodings_convert_to_rgb_or_mono(encoding: str) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    source = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": gray,
              "rgba8": np.dstack([rgb, np.full((6, 7), 255, np.uint8)]),
              "bgra8": np.dstack([rgb[:, :, ::-1], np.full((6, 7), 255, np.uint8)]),
              "mono16": gray.astype(np.uint16) * 257,
              "8UC1": gray, "8UC3": rgb[:, :, ::-1]}[encoding]  # 8UC3: OpenCV's BGR order
    out = image_to_array(wire(array_to_image(np.ascontiguousarray(source), encoding)))
    expected = gray if encoding.startswith("mono") or encoding == "8UC1" else rgb
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("encoding", ["rgb8", "mono8", "bgr8", "mono16"])
def test_rows_padded_beyond_the_width_are_read_by_their_step(encoding: str) -> None:
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    source = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": rgb[:, :, :1],
              "mono16": (rgb[:, :, :1].astype(np.uint16) * 257).view(np.uint8)}[encoding]
    row = 7 * source.shape[2]
    padded = np.full((5, row + 3), 99, np.uint8)  # e.g. rows aligned to 4 bytes
    padded[:, :row] = np.ascontiguousarray(source).reshape(5, -1)
    msg = wire(Image(height=5, width=7, encoding=encoding, step=row + 3, data=padded.tobytes()))
    out = image_to_array(msg)
    np.testing.assert_array_equal(out, rgb[:, :, 0] if encoding.startswith("mono") else rgb)
    if encoding in ("rgb8", "mono8"):  # a view of the message's bytes, read-only like them
        assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8)) and not out.flags.writeable


def test_images_built_from_arrays_match_what_cv_bridge_builds() -> None:
    from cv_bridge import CvBridge

    rng = np.random.default_rng(3)
    for array, encoding in ((rng.integers(0, 256, (4, 5), dtype=np.uint8), "mono8"),
                            (rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), "rgb8"),
                            (rng.integers(0, 256, (4, 5, 3), dtype=np.uint8), "bgr8"),
                            (rng.integers(0, 256, (4, 5, 4), dtype=np.uint8), "bgra8")):
        ours = array_to_image(array, encoding)
        theirs = CvBridge().cv2_to_imgmsg(array, encoding=encoding)
        assert (ours.height, ours.width, ours.encoding, ours.is_bigendian, ours.step, ours.data) \
            == (theirs.height, theirs.width, theirs.encoding, theirs.is_bigendian, theirs.step,
                theirs.data)
    with pytest.raises(ConversionError, match="rgb8"):
        array_to_image(np.zeros((4, 5), np.uint8), "rgb8")  # one channel is not rgb8


def test_unsupported_encoding_and_bad_sizes_are_refused() -> None:
    img = array_to_image(np.zeros((4, 4), np.uint8))
    img.encoding = "bayer_rggb8"
    with pytest.raises(ConversionError, match="not supported"):
        image_to_array(img)
    short = array_to_image(np.zeros((4, 4, 3), np.uint8))
    short.data = bytes(short.data)[:-1]
    with pytest.raises(ConversionError, match="step"):
        image_to_array(short)


def test_generated_classes_have_the_contract_fields() -> None:
    assert Tensor.__slots__ == ["name", "dtype", "shape", "data", "values"]
    assert Tensor._slot_types == ["string", "string", "uint32[]", "uint8[]", "float64[]"]
    assert TensorSpec._slot_types == ["string", "string", "int32[]"]
    assert Sample.__slots__ == ["dataset", "inputs", "targets"]
    assert Prediction.__slots__ == ["header", "model_version", "class_ids", "scores", "labels",
                                    "outputs", "inference_ms", "window_start"]
    assert ObjectPrediction.__slots__ == ["roi", "detection_index", "class_id", "score", "label"]
    assert ObjectPredictions.__slots__ == ["header", "model_version", "objects", "inference_ms"]
    assert Event.__slots__ == ["header", "rule", "bag", "keys", "values"]
    assert PredictRequest.__slots__ == ["inputs"]
    assert PredictResponse.__slots__ == ["success", "message", "model_version", "outputs",
                                         "class_ids", "scores", "labels"]
    assert GetInfoResponse.__slots__ == ["backend", "framework_version", "device", "model",
                                         "model_version", "inputs", "outputs", "labels", "training"]
    assert TrainGoal.__slots__ == ["epochs", "batch_size", "learning_rate", "dataset",
                                   "validation_split", "keep_partial"]
    assert TrainResult.__slots__ == ["epochs_completed", "loss", "metric_names", "metric_values",
                                     "model_version", "checkpoint", "message"]
    assert TrainFeedback.__slots__ == ["epoch", "epochs", "loss", "metric_names", "metric_values"]
