"""The stream engine (pipelines/stream.py), the pipeline registry and classify, without ROS."""
import threading
from typing import Any, FrozenSet, List, Optional

import numpy as np
import pytest

from ml_bridge.core.errors import InputError, ModelCallError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import ModelOutput
from ml_bridge.pipelines import PIPELINES, make_pipeline, pipeline_class
from ml_bridge.pipelines.base import Frame, Pipeline, Request, Result
from ml_bridge.pipelines.classify import classify
from ml_bridge.pipelines.stream import Stream

TIMEOUT = 10.0
STAMP = ModelStamp(3, ("a", "b"), ("scores",), False, True)


class Recorder(Pipeline[List[float]]):
    """Keeps the stamps of accepted frames; due every ``every`` frames; refuses stamp < 0."""

    name = "recorder"
    outputs = ("predictions",)

    def __init__(self, keeps_every_frame: bool = False, every: int = 1,
                 every_request: bool = False) -> None:
        self.keeps_every_frame = keeps_every_frame
        self.every_request = every_request
        self.every = every

    def new_state(self) -> List[float]:
        return []

    def accept(self, frame: Frame, state: List[float]) -> bool:
        if frame.stamp < 0:
            raise InputError("negative stamp")
        state.append(frame.stamp)
        return len(state) % self.every == 0

    def request(self, state: List[float]) -> Optional[Request]:
        return Request([np.array([state[-1]])], Frame(np.zeros((1, 1), np.uint8), state[-1]),
                       {"seen": list(state)})

    def postprocess(self, request: Request, prediction: ModelOutput,
                    wanted: FrozenSet[str]) -> Result:
        return Result(request.frame, prediction.model, prediction.inference_ms,
                      {"predictions": request.extra["seen"]})


class Model:
    """A predict function that can be held on an event, recording the inputs it saw."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.calls: List[float] = []

    def __call__(self, inputs: List[np.ndarray]) -> ModelOutput:
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        if float(inputs[0][0]) == 666:
            raise ModelCallError("the model raised")
        self.calls.append(float(inputs[0][0]))
        return ModelOutput([inputs[0]], STAMP, 0.1)


def frame(stamp: float) -> Frame:
    return Frame(np.zeros((2, 2), np.uint8), stamp)


def make(pipeline: Pipeline[Any], model: Model, wanted: Optional[FrozenSet[str]] = None,
         limit: int = 64) -> "tuple[Stream, List[Result]]":
    results: List[Result] = []
    stream = Stream("cam", pipeline, model, results.append,
                    None if wanted is None else (lambda: wanted), queue_limit=limit)
    return stream, results


def test_latest_frame_wins_while_the_model_is_busy() -> None:
    model = Model()
    stream, results = make(Recorder(), model)
    try:
        model.release.clear()
        stream.push(frame(1))
        assert model.entered.wait(TIMEOUT)  # frame 1 is in the model
        for stamp in (2, 3, 4):
            stream.push(frame(stamp))       # 2 and 3 are superseded by 4
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        assert model.calls == [1, 4]
        assert stream.stats.frames == 4 and stream.stats.frames_replaced == 2
        assert [r.frame.stamp for r in results] == [1, 4]
        assert all(r.model_version == 3 for r in results)
    finally:
        stream.close()


def test_every_frame_pipelines_see_all_frames_in_order_and_run_the_latest_due() -> None:
    model = Model()
    stream, results = make(Recorder(keeps_every_frame=True, every=2), model)
    try:
        model.release.clear()
        stream.push(frame(1))
        stream.push(frame(2))               # due: runs, and holds the model
        assert model.entered.wait(TIMEOUT)
        for stamp in (3, 4, 5, 6, 7):       # 4 and 6 are due; only 6 runs, 4 is skipped
            stream.push(frame(stamp))
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        assert model.calls == [2, 6]
        assert results[-1].outputs["predictions"] == [1, 2, 3, 4, 5, 6]  # ends on the due frame
        assert stream.stats.skipped == 1 and stream.stats.frames_replaced == 0
    finally:
        stream.close()


def test_every_request_pipelines_run_every_due_request() -> None:
    model = Model()
    stream, _ = make(Recorder(keeps_every_frame=True, every_request=True), model)
    try:
        model.release.clear()
        stream.push(frame(1))
        assert model.entered.wait(TIMEOUT)
        for stamp in (2, 3):
            stream.push(frame(stamp))
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        assert model.calls == [1, 2, 3] and stream.stats.skipped == 0
    finally:
        stream.close()


def test_a_full_queue_drops_the_oldest_counts_it_and_restarts_the_state() -> None:
    model = Model()
    stream, results = make(Recorder(keeps_every_frame=True, every=1), model, limit=2)
    try:
        model.release.clear()
        stream.push(frame(1))
        assert model.entered.wait(TIMEOUT)
        for stamp in (2, 3, 4, 5):          # the queue holds 2: frames 2 and 3 are dropped
            stream.push(frame(stamp))
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        assert stream.stats.frames_dropped == 2
        # The state restarted after the drop: the window never mixes 1 with 4 and 5.
        assert results[-1].outputs["predictions"] == [4, 5]
    finally:
        stream.close()


def test_nothing_is_computed_while_nobody_wants_an_output() -> None:
    model = Model()
    stream, results = make(Recorder(), model, wanted=frozenset())
    try:
        stream.push(frame(1))
        assert stream.wait_idle(TIMEOUT)
        assert model.calls == [] and results == [] and stream.stats.requests == 0
    finally:
        stream.close()


def test_bad_frames_and_model_errors_are_counted_and_the_stream_goes_on() -> None:
    model = Model()
    warnings: List[str] = []
    results: List[Result] = []
    stream = Stream("cam", Recorder(keeps_every_frame=True, every_request=True), model,
                    results.append, warn=warnings.append)
    try:
        for stamp in (-1, 666, 2):
            stream.push(frame(stamp))
        assert stream.wait_idle(TIMEOUT)
        assert model.calls == [2] and [r.frame.stamp for r in results] == [2]
        assert stream.stats.errors == 2
        assert "negative stamp" in warnings[0] and "the model raised" in warnings[1]
    finally:
        stream.close()


def test_the_registry_lists_the_pipelines_and_refuses_unknown_names() -> None:
    assert list(PIPELINES) == ["classify", "clip", "detect", "objects", "segment"]
    assert pipeline_class("classify").name == "classify"
    assert all(pipeline_class(name).name == name for name in PIPELINES)
    with pytest.raises(InputError,
                       match="unknown pipeline 'bogus'; valid pipelines: classify, clip, detect, obj"):
        pipeline_class("bogus")


def test_classify_labels_come_from_the_model_that_ran() -> None:
    logits = np.array([[0.0, 2.0], [3.0, 1.0]], np.float32)
    classes = classify(ModelOutput([logits], STAMP, 1.0))
    assert classes.class_ids == [1, 0] and classes.labels == ["b", "a"]
    expected = 1.0 / (1.0 + np.exp(-2.0))
    np.testing.assert_allclose(classes.scores, [expected, expected], rtol=1e-6)
    unlabelled = ModelStamp(1)
    assert classify(ModelOutput([logits], unlabelled, 1.0)).class_ids == []


def test_the_classify_pipeline_runs_a_frame_end_to_end() -> None:
    from test_core_server import LinearModel

    model = LinearModel()
    model.preprocess_image = lambda image: [np.full((1, 64), image.mean() / 255, np.float32)]
    pipeline = make_pipeline("classify", model)

    def predict(inputs: List[np.ndarray]) -> ModelOutput:
        return ModelOutput(model.predict(inputs), ModelStamp.of(model, 1), 0.5)

    header = object()
    result = pipeline.run(Frame(np.full((4, 4), 200, np.uint8), 1.5, header), predict)
    assert result is not None and result.frame.header is header
    expected = model.predict([np.full((1, 64), 200 / 255, np.float32)])[0].argmax()
    assert result.outputs["predictions"].class_ids == [int(expected)]
    assert result.rows[0]["label"] == f"digit {expected}"


def test_frames_are_converted_on_the_stream_thread_only_when_processed() -> None:
    model = Model()
    converted: List[Any] = []
    stream_thread: List[str] = []

    def convert(raw: float) -> Frame:
        if raw < 0:
            raise InputError("unsupported encoding")
        converted.append(raw)
        stream_thread.append(threading.current_thread().name)
        return frame(raw)

    results: List[Result] = []
    warnings: List[str] = []
    stream = Stream("cam", Recorder(), model, results.append, warn=warnings.append,
                    convert=convert)
    try:
        model.release.clear()
        stream.push(1.0)
        assert model.entered.wait(TIMEOUT)
        for raw in (2.0, 3.0, -1.0):         # 2 and 3 are replaced before they are converted
            stream.push(raw)
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        assert converted == [1.0] and stream.stats.frames_replaced == 2
        assert stream_thread == ["ml_bridge-stream-cam"]
        assert stream.stats.errors == 1 and "unsupported encoding" in warnings[0]
        stream.push(4.0)
        assert stream.wait_idle(TIMEOUT)
        assert converted == [1.0, 4.0] and [r.frame.stamp for r in results] == [1.0, 4.0]
    finally:
        stream.close()
