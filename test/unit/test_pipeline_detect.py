"""The detect pipeline (pipelines/detect.py) with a numpy fake detector: formats, letterbox,
thresholds, NMS, ~classes, outputs and rule rows."""
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pytest
from blob_detectors import COLOURS, blob_frame
from test_core_server import LinearModel

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.params import ParameterError
from ml_bridge.core.server import Prediction
from ml_bridge.core.spec import TensorSpec
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.detect import DetectPipeline

SIZE = 64


def blobs_v8(x: np.ndarray) -> List[np.ndarray]:
    """NCHW input in [0, 1] -> [N, 4 + 3, 8]: per colour the box of its saturated pixels."""
    out = np.zeros((x.shape[0], 7, 8), np.float32)
    for n in range(x.shape[0]):
        for c in range(3):
            mask = (x[n, c] > 0.5) & (x[n, (c + 1) % 3] < 0.3) & (x[n, (c + 2) % 3] < 0.3)
            ys, xs = np.nonzero(mask)
            if len(xs):
                x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
                out[n, :4, c] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
                out[n, 4 + c, c] = 0.9
    return [out]


class FakeDetector(LinearModel):
    """Runs ``produce`` on the input; outputs named ``names``; NCHW SIZE x SIZE RGB input."""

    def __init__(self, produce: Callable[[np.ndarray], List[np.ndarray]] = blobs_v8,
                 names: Sequence[str] = ("output0",), labels: Sequence[str] = COLOURS) -> None:
        super().__init__("fake_detector")
        self.produce = produce
        self.inputs = [TensorSpec("image", "float32", (-1, 3, SIZE, SIZE))]
        self.outputs = [TensorSpec(n, "float32", (-1, -1, -1)) for n in names]
        self.labels = list(labels)
        self.is_classifier = bool(labels)
        self.calls: List[np.ndarray] = []

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        self.calls.append(inputs[0])
        return self.produce(inputs[0])


def run(model: FakeDetector, image: np.ndarray, params: Optional[Dict] = None,
        wanted: Sequence[str] = ("detections", "predictions", "overlay")) -> Result:
    pipeline = make_pipeline("detect", model, params or {})
    stamp = ModelStamp.of(model, 2)
    result = pipeline.run(Frame(image, 1.0, header="h"),
                          lambda inputs: Prediction(model.predict(inputs), stamp, 1.0),
                          wanted=frozenset(wanted))
    assert result is not None
    return result


def test_letterboxed_boxes_come_back_in_frame_pixels():
    blobs = [("red", (40, 30, 100, 90)), ("blue", (200, 150, 300, 230))]
    model = FakeDetector()
    result = run(model, blob_frame(240, 320, blobs))
    found = result.outputs["detections"]
    # 320 x 240 -> 64 x 48 at a fifth, 8 grey rows above: a pixel of the model is 5 of the frame
    np.testing.assert_allclose(found.boxes, [[40, 30, 100, 90], [200, 150, 300, 230]], atol=5)
    assert found.class_ids.tolist() == [0, 2]
    assert model.calls[0][0, :, 0, 0] == pytest.approx([114 / 255] * 3)  # padded, not stretched
    predictions = result.outputs["predictions"]
    assert predictions.labels == ["red", "blue"] and predictions.scores == pytest.approx([0.9] * 2)
    assert result.rows[1]["label"] == "blue" and result.rows[1]["class_id"] == 2
    assert result.rows[1]["box"] == pytest.approx([200, 150, 300, 230], abs=5)
    overlay = result.outputs["overlay"]
    assert overlay.shape == (240, 320, 3) and not np.array_equal(overlay, blob_frame(240, 320, blobs))


def test_stretched_when_letterbox_is_off():
    blobs = [("green", (40, 30, 100, 90))]
    model = FakeDetector()
    result = run(model, blob_frame(240, 320, blobs), {"letterbox": False})
    np.testing.assert_allclose(result.outputs["detections"].boxes, [[40, 30, 100, 90]], atol=5)
    assert model.calls[0][0, 1].max() == pytest.approx(220 / 255)  # no grey band: whole frame


def test_score_threshold_classes_and_max_detections():
    blobs = [("red", (0, 0, 20, 20)), ("green", (30, 30, 50, 50)), ("blue", (5, 40, 25, 60))]
    image = blob_frame(64, 64, blobs)
    assert len(run(FakeDetector(), image).outputs["detections"]) == 3
    assert len(run(FakeDetector(), image, {"score_threshold": 0.95}).outputs["detections"]) == 0
    kept = run(FakeDetector(), image, {"classes": ["blue", "0"]}).outputs["detections"]
    assert sorted(kept.class_ids.tolist()) == [0, 2]
    assert len(run(FakeDetector(), image, {"max_detections": 2}).outputs["detections"]) == 2
    with pytest.raises(ParameterError, match="~classes.*'purple'.*0: red"):
        make_pipeline("detect", FakeDetector(), {"classes": ["purple"]})


def test_overlapping_boxes_of_one_class_are_suppressed_not_of_two():
    def two_boxes(x: np.ndarray) -> List[np.ndarray]:
        out = np.zeros((1, 7, 8), np.float32)
        out[0, :4, 0] = out[0, :4, 1] = out[0, :4, 2] = (32, 32, 20, 20)
        out[0, :4, 1] += (1, 0, 0, 0)
        out[0, 4, 0], out[0, 4, 1], out[0, 5, 2] = 0.8, 0.7, 0.6  # two red, one green
        return [out]
    found = run(FakeDetector(two_boxes), np.zeros((64, 64, 3), np.uint8)).outputs["detections"]
    assert found.class_ids.tolist() == [0, 1]
    assert found.scores.tolist() == pytest.approx([0.8, 0.6])


def test_decoded_boxes_format_is_told_by_the_output_names():
    def torchvision_style(x: np.ndarray) -> List[np.ndarray]:
        return [np.array([[[8, 8, 24, 16], [0, 0, 4, 4]]], np.float32),
                np.array([[0.7, 0.1]], np.float32), np.array([[1, 2]], np.int64)]
    model = FakeDetector(torchvision_style, names=("boxes", "scores", "labels"))
    pipeline = make_pipeline("detect", model)
    assert isinstance(pipeline, DetectPipeline)
    assert pipeline.format == "boxes" and not pipeline.letterbox
    found = run(model, np.zeros((128, 256, 3), np.uint8)).outputs["detections"]
    np.testing.assert_allclose(found.boxes, [[32, 16, 96, 32]])  # x * 4, y * 2
    assert found.class_ids.tolist() == [1]


def test_only_wanted_outputs_are_made():
    result = run(FakeDetector(), blob_frame(64, 64, [("red", (0, 0, 9, 9))]),
                 wanted=("predictions",))
    assert set(result.outputs) == {"predictions"} and len(result.rows) == 1


def test_a_model_that_is_no_detector_is_named():
    model = FakeDetector(lambda x: [np.zeros((1, 10), np.float32)], labels=())
    with pytest.raises(InputError, match=r"\[N, 4 \+ C, A\].*detect_format"):
        run(model, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="not decoded boxes"):
        run(FakeDetector(), np.zeros((64, 64, 3), np.uint8), {"detect_format": "boxes"})
    with pytest.raises(ParameterError, match="~detect_format"):
        make_pipeline("detect", FakeDetector(), {"detect_format": "ssd"})


def test_gray_frames_are_letterboxed_too():
    found = run(FakeDetector(), np.full((48, 64), 200, np.uint8)).outputs["detections"]
    assert len(found) == 0  # grey has no saturated colour; the point is that it runs


def test_two_cameras_in_one_joined_call_keep_their_own_boxes():
    from dataclasses import dataclass, field

    from ml_bridge.core.execution.batching import batch_key, run_requests

    @dataclass
    class Job:
        inputs: List[np.ndarray]
        rows: int = 0
        key: tuple = field(default_factory=tuple)

    model = FakeDetector()
    stamp = ModelStamp.of(model, 1)
    pipeline = make_pipeline("detect", model)
    cameras = {"left": [("red", (10, 10, 60, 50))], "right": [("blue", (100, 60, 150, 110))]}
    requests, jobs = [], []
    for blobs in cameras.values():
        request = pipeline.request({"frame": Frame(blob_frame(120, 160, blobs))})
        assert request is not None
        requests.append(request)
        rows, key = batch_key(request.inputs)
        jobs.append(Job(request.inputs, rows, key))
    answers = run_requests(lambda x: (model.predict(x), stamp, 1.0), jobs, max_batch=8)
    assert len(model.calls) == 1 and model.calls[0].shape[0] == 2  # one call for both cameras
    for (blobs, request, (_, answer, error)) in zip(cameras.values(), requests, answers):
        assert error is None and answer is not None and answer.batched_with == 2
        result = pipeline.postprocess(request, Prediction(answer.outputs, stamp, 1.0),
                                      frozenset({"detections"}))
        np.testing.assert_allclose(result.outputs["detections"].boxes, [blobs[0][1]], atol=3)


def test_labels_that_do_not_fit_the_declared_output_are_refused_at_start():
    model = FakeDetector(labels=("a", "b", "c", "d", "e"))
    model.outputs = [TensorSpec("output0", "float32", (-1, 7, 8))]
    with pytest.raises(InputError, match=r"C = 5 .*~labels gives 5 labels"):
        make_pipeline("detect", model)
    model.labels = list(COLOURS)
    make_pipeline("detect", model)  # 4 + 3 rows: fits
