"""The objects pipeline (pipelines/objects.py): square crops, one batch per frame, results in
detection order, stamp matching (detections before or after their frame), given crops."""
import logging
import threading
from types import SimpleNamespace
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from test_core_server import LinearModel

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.vision import ImageFormat
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.objects import (
    NO_ROI,
    Box,
    Detections,
    ObjectsPipeline,
    ObjectsState,
    square_crop,
)
from ml_bridge.pipelines.stream import Stream

TIMEOUT = 10.0
COLOURS = ("red", "green", "blue")
STAMP = ModelStamp(4, COLOURS, ("scores",), False, True)
#: Pure colours: the fake model's class of a crop is its strongest channel.
PURE = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def colour_model() -> LinearModel:
    """A classifier of 4 x 4 RGB crops into 3 classes (only the specs and format matter)."""
    model = LinearModel()
    model.inputs = [TensorSpec("image", "float32", (-1, 3, 4, 4))]
    model.outputs = [TensorSpec("scores", "float32", (-1, 3))]
    model.labels = list(COLOURS)
    model.image_format = ImageFormat((4, 4))
    return model


class Model:
    """A predict function: per crop, the mean of each channel as the class scores (the
    strongest colour wins); records the batch shape of every call."""

    def __init__(self) -> None:
        self.calls: List[Tuple[int, ...]] = []
        self.lock = threading.Lock()

    def __call__(self, inputs: List[np.ndarray]) -> Prediction:
        with self.lock:
            self.calls.append(inputs[0].shape)
        scores = inputs[0].mean(axis=(2, 3)) * 10.0  # [N, 3, 4, 4] -> [N, 3] logits
        return Prediction([scores.astype(np.float32)], STAMP, 1.5)


def scene(boxes: Sequence[Tuple[str, Tuple[int, int, int, int]]], height: int = 60,
          width: int = 80) -> np.ndarray:
    """A gray frame with a solid rectangle (x0, y0, x1, y1) of each named colour."""
    image = np.full((height, width, 3), 128, np.uint8)
    for colour, (x0, y0, x1, y1) in boxes:
        image[y0:y1, x0:x1] = PURE[colour]
    return image


def box_of(x0: int, y0: int, x1: int, y1: int) -> Box:
    return Box((x0 + x1) / 2.0, (y0 + y1) / 2.0, float(x1 - x0), float(y1 - y0))


def frame_at(ns: int, image: Optional[np.ndarray] = None, frame_id: str = "cam") -> Frame:
    """A frame whose header stamp is ``ns`` exactly (secs, nsecs as a ROS header has)."""
    header = SimpleNamespace(stamp=SimpleNamespace(secs=ns // 10**9, nsecs=ns % 10**9),
                             frame_id=frame_id)
    return Frame(scene([]) if image is None else image, ns / 1e9, header)


def run_due(pipeline: ObjectsPipeline, state: ObjectsState, model: Model,
            due: bool) -> Optional[Result]:
    """What the stream engine does after an event: the request if due, its result."""
    if not due:
        return None
    request = pipeline.request(state)
    assert request is not None
    return pipeline.postprocess(request, model(request.inputs), frozenset({"objects"}))


# -- geometry ----------------------------------------------------------------------------------
@pytest.mark.parametrize("box, expected", [
    (Box(50, 40, 20, 10), (40, 30, 20, 20)),      # inside: the short side widened
    (Box(50, 40, 6, 30), (35, 25, 30, 30)),       # tall box: the width widened
    (Box(50.4, 40.6, 21, 21), (40, 30, 21, 21)),  # fractional: whole pixels about the centre
    (Box(5, 40, 20, 10), (0, 30, 15, 20)),        # left border: clamped
    (Box(95, 40, 20, 10), (85, 30, 15, 20)),      # right border
    (Box(50, 3, 10, 20), (40, 0, 20, 13)),        # top border
    (Box(50, 78, 10, 20), (40, 68, 20, 12)),      # bottom border
    (Box(2, 2, 30, 30), (0, 0, 17, 17)),          # a corner
    (Box(50, 40, 300, 200), (0, 0, 100, 80)),     # larger than the frame: the frame
])
def test_square_crops_are_widened_about_the_centre_and_clamped_to_the_frame(
        box: Box, expected: Tuple[int, int, int, int]) -> None:
    assert square_crop(box, 100, 80) == expected


@pytest.mark.parametrize("box, reason", [
    (Box(50, 40, 0, 10), "no area"),
    (Box(50, 40, 10, -3), "no area"),
    (Box(50, 40, float("nan"), 10), "not finite"),
    (Box(float("inf"), 40, 10, 10), "not finite"),
    (Box(-50, 40, 10, 10), "outside"),
    (Box(50, 200, 10, 10), "outside"),
])
def test_boxes_that_cannot_be_cut_are_refused_with_the_reason(box: Box, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        square_crop(box, 100, 80)


# -- one batch, order, refusals ---------------------------------------------------------------
def test_all_crops_of_a_frame_run_in_one_call_and_come_back_in_detection_order() -> None:
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    order = ["blue", "red", "green", "green", "red", "blue"]
    rects = [(c, (3 + 12 * i, 10, 13 + 12 * i, 20)) for i, c in enumerate(order)]
    state = pipeline.new_state()
    assert not pipeline.accept(frame_at(7, scene(rects)), state)
    dets = Detections(7, [box_of(*r) for _, r in rects])
    result = run_due(pipeline, state, model, pipeline.accept_detections(dets, state))
    assert result is not None
    assert model.calls == [(6, 3, 4, 4)]  # one model call for the six crops
    objects = result.outputs["objects"]
    assert [o.label for o in objects] == order
    assert [o.detection_index for o in objects] == list(range(6))
    assert [o.roi for o in objects] == [(3 + 12 * i, 10, 10, 10) for i in range(6)]
    assert all(0.9 < o.score <= 1.0 for o in objects)  # softmax probabilities
    assert [r["label"] for r in result.rows] == order
    assert result.model_version == 4 and result.frame.header.frame_id == "cam"


def test_a_refused_box_keeps_its_place_with_class_minus_one_and_the_rest_is_classified(
        caplog: pytest.LogCaptureFixture) -> None:
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    state = pipeline.new_state()
    pipeline.accept(frame_at(1, scene([("red", (0, 0, 10, 10)), ("blue", (40, 40, 50, 50))])),
                    state)
    dets = Detections(1, [box_of(0, 0, 10, 10), Box(20, 20, 0, 10), box_of(40, 40, 50, 50)])
    with caplog.at_level(logging.WARNING, logger="ml_bridge.pipelines.objects"):
        result = run_due(pipeline, state, model, pipeline.accept_detections(dets, state))
    assert result is not None
    assert model.calls == [(2, 3, 4, 4)]  # the refused box is not in the batch
    objects = result.outputs["objects"]
    assert [(o.class_id, o.label) for o in objects] == [(0, "red"), (-1, ""), (2, "blue")]
    assert objects[1].roi == NO_ROI and objects[1].score == 0.0
    assert [r["detection_index"] for r in result.rows] == [0, 2]  # rules see classified ones
    assert pipeline.counters(state)["objects_refused"] == 1
    assert "detection 1" in caplog.text and "no area" in caplog.text


def test_detections_without_boxes_publish_an_empty_list_without_a_model_call() -> None:
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    results: List[Result] = []
    stream = Stream("cam", pipeline, model, results.append, served=lambda: STAMP)
    try:
        stream.push(frame_at(5))
        stream.push_detections(Detections(5, []))
        assert stream.wait_idle(TIMEOUT)
    finally:
        stream.close()
    assert model.calls == [] and stream.stats.requests == 0
    assert len(results) == 1 and results[0].outputs["objects"] == []
    assert results[0].model_version == 4 and results[0].frame.stamp == 5e-9


# -- matching ----------------------------------------------------------------------------------
def test_detections_match_the_frame_of_the_same_stamp_to_the_nanosecond() -> None:
    pipeline = ObjectsPipeline(colour_model())
    state = pipeline.new_state()
    base = 1_700_000_000_123_456_789  # a float in seconds cannot tell these apart
    for ns in (base - 1, base, base + 1):
        pipeline.accept(frame_at(ns, frame_id=str(ns - base)), state)
    assert pipeline.accept_detections(Detections(base, [Box(5, 5, 4, 4)]), state)
    request = pipeline.request(state)
    assert request is not None and request.frame.header.frame_id == "0"


def test_detections_before_their_frame_wait_for_it() -> None:
    pipeline = ObjectsPipeline(colour_model())
    state = pipeline.new_state()
    pipeline.accept(frame_at(10), state)
    assert not pipeline.accept_detections(Detections(20, [Box(5, 5, 4, 4)]), state)
    assert not pipeline.accept_detections(Detections(30, [Box(5, 5, 4, 4)]), state)
    assert pipeline.accept(frame_at(20), state)  # the frame comes: due
    request = pipeline.request(state)
    assert request is not None and request.frame.stamp == 20e-9
    assert pipeline.request(state) is None
    assert pipeline.accept(frame_at(30), state)
    assert pipeline.counters(state) == {"detections_unmatched": 0, "detections_expired": 0,
                                        "detections_other_frame": 0, "objects_refused": 0}


def test_unmatched_and_expired_detections_are_counted_and_dropped() -> None:
    pipeline = ObjectsPipeline(colour_model(), {"sync_queue": 2})
    state = pipeline.new_state()
    for ns in (1, 2, 3):
        pipeline.accept(frame_at(ns), state)  # frame 1 leaves the ring of 2
    assert not pipeline.accept_detections(Detections(1, [Box(5, 5, 4, 4)]), state)
    assert pipeline.counters(state)["detections_unmatched"] == 1  # its frame has gone
    # Pending for frame 5, but frame 6 comes first: frame 5 was lost.
    assert not pipeline.accept_detections(Detections(5, [Box(5, 5, 4, 4)]), state)
    assert not pipeline.accept(frame_at(6), state)
    # More pending than sync_queue: the oldest expires.
    for ns in (7, 8, 9):
        assert not pipeline.accept_detections(Detections(ns, [Box(5, 5, 4, 4)]), state)
    counters = pipeline.counters(state)
    assert counters["detections_expired"] == 2 and counters["detections_unmatched"] == 1
    assert not pipeline.accept(frame_at(7), state)  # 7 expired: nothing is due
    assert pipeline.accept(frame_at(8), state)


def test_two_cameras_sharing_one_detections_topic_take_only_their_own_boxes() -> None:
    """Synchronised cameras: same stamps; each detections message reaches both streams."""
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    rects = {"left": ("red", (10, 10, 20, 20)), "right": ("blue", (50, 30, 60, 40))}
    states = {cam: pipeline.new_state() for cam in rects}
    labels: dict = {cam: [] for cam in rects}
    for ns in range(1, 7):
        dets = [Detections(ns, [box_of(*rect)], header=SimpleNamespace(frame_id=cam))
                for cam, (_, rect) in rects.items()]
        for cam, state in states.items():
            frame = frame_at(ns, scene([rects[cam]]), frame_id=cam)
            events: List[Any] = [frame, *dets]
            if ns % 2:  # detections before their frame, too (pending)
                events.reverse()
            for event in events:
                due = pipeline.accept(event, state) if isinstance(event, Frame) else \
                    pipeline.accept_detections(event, state)
                while due:
                    result = run_due(pipeline, state, model, True)
                    assert result is not None and result.frame.header.frame_id == cam
                    labels[cam].append([o.label for o in result.outputs["objects"]])
                    due = bool(state.due)
    assert labels == {"left": [["red"]] * 6, "right": [["blue"]] * 6}
    for state in states.values():
        assert pipeline.counters(state)["detections_other_frame"] == 6
        assert pipeline.counters(state)["detections_expired"] == 0
    # A detector that leaves frame_id empty is matched by stamp alone.
    state = states["left"]
    assert pipeline.accept_detections(Detections(6, [box_of(10, 10, 20, 20)]), state)
    assert pipeline.accept_detections(
        Detections(6, [box_of(10, 10, 20, 20)], header=SimpleNamespace(frame_id="")), state)


def test_given_crops_are_classified_without_a_frame_with_the_detections_header() -> None:
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    state = pipeline.new_state()
    crops: List[Optional[np.ndarray]] = [scene([("green", (0, 0, 8, 8))], 8, 8),
                                         scene([("blue", (0, 0, 5, 5))], 5, 5)]
    dets = Detections(99, [Box(10, 20, 8, 4), Box(3, 3, 0, 0)], header="detector", crops_given=crops)
    result = run_due(pipeline, state, model, pipeline.accept_detections(dets, state))
    assert result is not None
    assert [o.label for o in result.outputs["objects"]] == ["green", "blue"]
    # roi: the square about the box (no frame to clamp to); an empty box: none.
    assert [o.roi for o in result.outputs["objects"]] == [(6, 16, 8, 8), NO_ROI]
    assert result.frame.header == "detector" and model.calls == [(2, 3, 4, 4)]


def test_a_stream_matches_detections_and_frames_in_either_order() -> None:
    pipeline = ObjectsPipeline(colour_model())
    model = Model()
    results: List[Result] = []
    stream = Stream("cam", pipeline, model, results.append)
    rect = ("red", (10, 10, 20, 20))
    try:
        for ns in range(1, 7):
            dets = Detections(ns, [box_of(*rect[1])] * ns)
            if ns % 2:
                stream.push_detections(dets)
            stream.push(frame_at(ns, scene([rect])))
            if not ns % 2:
                stream.push_detections(dets)
        assert stream.wait_idle(TIMEOUT)
    finally:
        stream.close()
    assert [len(r.outputs["objects"]) for r in results] == [1, 2, 3, 4, 5, 6]
    assert model.calls == [(n, 3, 4, 4) for n in range(1, 7)]  # one call per frame
    assert all(o.label == "red" for r in results for o in r.outputs["objects"])


# -- parameters --------------------------------------------------------------------------------
def test_sync_queue_sets_the_subscriber_queue_and_is_registered_as_objects() -> None:
    assert ObjectsPipeline(colour_model()).queue_size() == 10
    pipeline = make_pipeline("objects", colour_model(), {"sync_queue": "3"})
    assert isinstance(pipeline, ObjectsPipeline) and pipeline.queue_size() == 3
    assert pipeline.keeps_every_frame and pipeline.every_request
    assert tuple(pipeline.inputs) == ("image", "detections")


@pytest.mark.parametrize("params, model_shape, message", [
    ({"sync_queue": 0}, (-1, 3), r"~sync_queue must be an integer >= 1 \(frames\), got 0"),
    ({"sync_queue": "many"}, (-1, 3), r"~sync_queue must be an integer >= 1 \(frames\), got 'many'"),
    ({"sync_queue": 2.5}, (-1, 3), r"~sync_queue must be an integer >= 1 \(frames\), got 2.5"),
    ({}, (-1, 3, 4, 4), "serve a crop classifier"),
])
def test_invalid_parameters_or_models_are_refused_with_the_fix(
        params: Any, model_shape: Tuple[int, ...], message: str) -> None:
    model = colour_model()
    model.outputs = [TensorSpec("scores", "float32", model_shape)]
    with pytest.raises(InputError, match=message):
        ObjectsPipeline(model, params)
