"""Message <-> numpy conversions and the generated interface classes (no master needed)."""
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

from ml_bridge.ros.conversions import (
    ConversionError,
    array_to_image,
    array_to_tensor,
    image_to_array,
    tensor_to_array,
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


def test_element_limit_is_checked_before_allocating() -> None:
    with pytest.raises(ConversionError, match="limit of 10"):
        tensor_to_array(Tensor(shape=[11], values=[0.0] * 11), max_elements=10)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_image_encodings_convert_to_rgb_or_mono(encoding: str) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    source = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "mono8": gray,
              "rgba8": np.dstack([rgb, np.full((6, 7), 255, np.uint8)]),
              "bgra8": np.dstack([rgb[:, :, ::-1], np.full((6, 7), 255, np.uint8)]),
              "mono16": gray.astype(np.uint16) * 257}[encoding]
    out = image_to_array(wire(array_to_image(np.ascontiguousarray(source), encoding)))
    expected = gray if encoding.startswith("mono") else rgb
    np.testing.assert_array_equal(out, expected)


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
