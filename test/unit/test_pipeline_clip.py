"""The clip pipeline (pipelines/clip.py): windows, stride, gaps, order, layouts, scores."""
import threading
from typing import Any, List, Optional, Tuple

import backends
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
from ml_bridge.pipelines.clip import ClipPipeline, ClipState
from ml_bridge.pipelines.stream import Stream

TIMEOUT = 10.0
T = 4
STAMP = ModelStamp(2, ("a", "b", "c"), ("scores",), False, True)


def clip_model(channels_first: bool = True, length: int = T, fmt: bool = True,
               shape: Optional[Tuple[int, ...]] = None) -> LinearModel:
    """A model whose input is a clip of ``length`` 6 x 8 gray frames (only specs matter)."""
    model = LinearModel()
    spec = (-1, 1, length, 6, 8) if channels_first else (-1, length, 6, 8, 1)
    model.inputs = [TensorSpec("clip", "float32", shape or spec)]
    model.image_format = ImageFormat((6, 8), (0.0,), (1.0,), "gray", channels_first,
                                     length) if fmt else None
    return model


def flat(value: int) -> np.ndarray:
    """A frame whose every pixel is ``value``: the clip tells which frames it holds."""
    return np.full((6, 8), value, np.uint8)


def frame_values(window: np.ndarray, channels_first: bool) -> List[int]:
    """The pixel value of each frame of a [1, C, T, H, W] or [1, T, H, W, C] clip, in order."""
    clip = window[0, 0] if channels_first else window[0, ..., 0]  # T, H, W
    return [int(round(float(f.mean()) * 255)) for f in clip]


def feed(pipeline: ClipPipeline, frames: List[Frame],
         state: Optional[ClipState] = None) -> List[Tuple[int, Any]]:
    """Accepts every frame; (index of the frame that made a window due, its request)."""
    state = pipeline.new_state() if state is None else state
    due = []
    for i, f in enumerate(frames):
        if pipeline.accept(f, state):
            due.append((i, pipeline.request(state)))
    return due


@pytest.mark.parametrize("channels_first", [True, False])
@pytest.mark.parametrize("stride", [1, 3])
def test_windows_hold_the_last_frames_in_order_one_every_stride(channels_first: bool,
                                                               stride: int) -> None:
    pipeline = ClipPipeline(clip_model(channels_first), {"clip_stride": stride})
    frames = [Frame(flat(10 + i), 100.0 + 0.1 * i, header=f"h{i}") for i in range(15)]
    due = feed(pipeline, frames)
    # The first window is full at frame T-1; then one every `stride` frames.
    assert [i for i, _ in due] == list(range(T - 1, 15, stride))
    for i, request in due:
        window = request.inputs[0]
        assert window.shape == ((1, 1, T, 6, 8) if channels_first else (1, T, 6, 8, 1))
        assert frame_values(window, channels_first) == [10 + j for j in range(i - T + 1, i + 1)]
        assert request.frame.header == f"h{i}"                     # ends on the due frame
        assert request.extra["window_start"] == frames[i - T + 1].stamp


def test_clip_length_stride_and_gap_come_from_the_parameters_and_the_model() -> None:
    assert ClipPipeline(clip_model()).queue_size() == T  # the model's T by default
    assert ClipPipeline(clip_model(fmt=False)).length == T  # read off a 5-D input spec
    pipeline = ClipPipeline(clip_model(fmt=False, shape=(-1, 1, -1, 6, 8)),
                            {"clip_length": "6", "clip_stride": "2", "max_gap": "0.5"})
    assert (pipeline.length, pipeline.stride, pipeline.max_gap) == (6, 2, 0.5)
    assert pipeline.queue_size() == 6  # the subscriber holds a whole window
    assert ClipPipeline.keeps_every_frame and not ClipPipeline.every_request
    assert isinstance(make_pipeline("clip", clip_model()), ClipPipeline)


@pytest.mark.parametrize("params, model, message", [
    ({"input_size": [6, 8]}, clip_model(fmt=False, shape=(-1, 1, -1, 6, 8)),
     "cannot tell how many frames a clip of linear holds; set ~clip_length"),
    ({"clip_stride": 0}, clip_model(), r"~clip_stride must be an integer >= 1 \(1 = on every "
     r"frame\), got 0"),
    ({"clip_stride": "two"}, clip_model(), r"~clip_stride must be an integer >= 1 .*, got 'two'"),
    ({"clip_stride": 2.5}, clip_model(), r"~clip_stride must be an integer >= 1 .*, got 2.5"),
    ({"max_gap": 0}, clip_model(), r"~max_gap must be a number > 0 \(seconds\), got 0"),
    ({"clip_length": 4.5}, clip_model(), r"~clip_length must be an integer >= 0 .*, got 4.5"),
    ({"clip_length": 8}, clip_model(), r"takes clips of 4 frames .* set ~clip_length to 4"),
    ({}, clip_model(shape=(-1, 1, 6, 8)), r"feeds clips \[N, C, T, H, W\] or \[N, T, H, W, C\]"),
    ({"channels_first": False}, clip_model(), "set ~channels_first"),
])
def test_invalid_parameters_or_models_are_refused_with_the_fix(params: dict, model: LinearModel,
                                                               message: str) -> None:
    with pytest.raises(InputError, match=message):
        ClipPipeline(model, params)


def test_a_gap_longer_than_max_gap_empties_the_window() -> None:
    pipeline = ClipPipeline(clip_model(), {"max_gap": 0.5})
    stamps = [1.0, 1.1, 1.2, 1.6,         # a gap of exactly max_gap keeps the window
              3.0, 3.1, 3.2, 3.3, 3.4]    # 1.4 s later: a new window, due after T frames
    frames = [Frame(flat(i), s) for i, s in enumerate(stamps)]
    state = pipeline.new_state()
    due = feed(pipeline, frames, state)
    assert [i for i, _ in due] == [3, 7, 8]
    assert frame_values(due[1][1].inputs[0], True) == [4, 5, 6, 7]  # nothing from before it
    assert due[1][1].extra["window_start"] == 3.0
    assert pipeline.counters(state) == {"out_of_order": 0, "gaps": 1}


def test_a_clock_that_jumps_back_further_than_max_gap_starts_a_new_window() -> None:
    # A looping bag or a reset simulator: without this, every later frame would be dropped.
    pipeline = ClipPipeline(clip_model())
    stamps = [50.0, 50.1, 50.2, 50.3, 2.0, 2.1, 2.2, 2.3]
    state = pipeline.new_state()
    due = feed(pipeline, [Frame(flat(i), s) for i, s in enumerate(stamps)], state)
    assert [i for i, _ in due] == [3, 7]
    assert due[1][1].extra["window_start"] == 2.0
    assert pipeline.counters(state) == {"out_of_order": 0, "gaps": 1}


def test_a_frame_older_than_the_previous_is_dropped_and_counted() -> None:
    pipeline = ClipPipeline(clip_model())
    stamps = [1.0, 1.1, 1.05, 1.2, 1.2, 1.3]  # 1.05 is late; an equal stamp is kept
    state = pipeline.new_state()
    due = feed(pipeline, [Frame(flat(i), s) for i, s in enumerate(stamps)], state)
    assert [i for i, _ in due] == [4, 5]
    assert frame_values(due[0][1].inputs[0], True) == [0, 1, 3, 4]
    assert pipeline.counters(state) == {"out_of_order": 1, "gaps": 0}


def test_a_frame_that_cannot_be_preprocessed_empties_the_window() -> None:
    pipeline = ClipPipeline(clip_model())
    state = pipeline.new_state()
    feed(pipeline, [Frame(flat(i), 0.1 * i) for i in range(3)], state)
    with pytest.raises(InputError, match="frames must be uint8"):
        pipeline.accept(Frame(np.zeros((6, 8), np.float32), 0.3), state)
    due = feed(pipeline, [Frame(flat(i), 0.4 + 0.1 * i) for i in range(4)], state)
    assert [i for i, _ in due] == [3]  # a clip never skips the refused frame


@pytest.mark.parametrize("channels_first", [True, False])
def test_each_frame_is_preprocessed_once_and_windows_are_copied_from_the_ring(
        channels_first: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = ImageFormat((6, 8), (0.4, 0.5, 0.6), (0.2, 0.3, 0.25), "bgr", channels_first, T)
    model = clip_model(channels_first)
    model.inputs = [TensorSpec("clip", "float32", (-1,) + fmt.input_shape())]
    model.image_format = fmt
    pipeline = ClipPipeline(model)
    calls: List[int] = []
    original = ImageFormat.frame_hwc

    def counted(self: ImageFormat, image: np.ndarray) -> np.ndarray:
        calls.append(1)
        return original(self, image)

    monkeypatch.setattr(ImageFormat, "frame_hwc", counted)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(11)]
    due = feed(pipeline, [Frame(im, 0.1 * i) for i, im in enumerate(images)])
    assert len(calls) == len(images)  # once per frame, not once per window
    assert len(due) == len(images) - T + 1  # windows ending at every slot of the ring
    monkeypatch.undo()
    for i, request in due:
        expected = fmt.clip(images[i - T + 1:i + 1])[None]
        np.testing.assert_allclose(request.inputs[0], expected, rtol=1e-6, atol=1e-6)
    # A due window is a copy: later frames overwrite the ring, not an earlier request.
    first = due[0][1].inputs[0]
    np.testing.assert_allclose(first, fmt.clip(images[:T])[None], rtol=1e-6, atol=1e-6)


def test_results_carry_probabilities_the_last_header_and_window_start() -> None:
    pipeline = ClipPipeline(clip_model())
    logits = np.array([[1.0, 3.0, -2.0]], np.float32)
    seen: List[np.ndarray] = []

    def predict(inputs: List[np.ndarray]) -> Prediction:
        seen.append(inputs[0])
        return Prediction([logits], STAMP, 1.5)

    state = pipeline.new_state()
    results = [pipeline.run(Frame(flat(i), 7.0 + i * 0.25, header=f"h{i}"), predict, state)
               for i in range(T + 1)]
    assert results[:T - 1] == [None] * (T - 1)
    last = results[-1]
    assert isinstance(last, Result) and len(seen) == 2
    assert last.frame.header == f"h{T}" and last.window_start == 7.25
    assert last.first_header == "h1"  # ROS takes window_start from it, to the nanosecond
    classes = last.outputs["predictions"]
    expected = np.exp(3.0) / np.exp(logits[0].astype(np.float64)).sum()  # softmax, not 3.0
    assert classes.class_ids == [1] and classes.labels == ["b"]
    np.testing.assert_allclose(classes.scores, [expected], rtol=1e-6)
    assert last.rows == [{"class_id": 1, "score": classes.scores[0], "label": "b"}]
    assert last.model_version == 2 and last.inference_ms == 1.5
    # A model that outputs probabilities: its value is the score as it is.
    probs = ModelStamp(2, ("a", "b", "c"), ("p",), True, True)
    request = pipeline.request(state)
    assert request is not None
    out = pipeline.postprocess(request, Prediction([np.array([[0.2, 0.7, 0.1]])], probs, 1.0),
                               frozenset({"predictions"}))
    np.testing.assert_allclose(out.outputs["predictions"].scores, [0.7])


class HeldModel:
    """A predict function that can be held on an event, recording the windows it saw."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()
        self.windows: List[List[int]] = []

    def __call__(self, inputs: List[np.ndarray]) -> Prediction:
        self.entered.set()
        assert self.release.wait(TIMEOUT)
        self.windows.append(frame_values(inputs[0], True))
        return Prediction([np.zeros((1, 3), np.float32)], STAMP, 0.1)


def test_a_stream_that_falls_behind_drops_frames_restarts_the_window_and_says_so() -> None:
    pipeline = ClipPipeline(clip_model())
    model = HeldModel()
    results: List[Result] = []
    stream = Stream("cam", pipeline, model, results.append, queue_limit=T)
    try:
        model.release.clear()
        for i in range(T):
            stream.push(Frame(flat(i), 0.1 * i))
        assert model.entered.wait(TIMEOUT)   # the first window is in the model, held there
        for i in range(T, T + 6):            # 4..9 while the model is busy: 4 and 5 drop
            stream.push(Frame(flat(i), 0.1 * i))
        model.release.set()
        assert stream.wait_idle(TIMEOUT)
        stream.push(Frame(flat(99), 0.85))   # older than frame 9: dropped by the pipeline
        assert stream.wait_idle(TIMEOUT)
        counters = stream.counters()
        assert counters["frames_dropped"] == 2
        assert counters["out_of_order"] == 1 and counters["gaps"] == 0
        # The window restarted after the lost frames: never a clip across them.
        assert model.windows == [[0, 1, 2, 3], [6, 7, 8, 9]]
        assert len(results) == 2
    finally:
        stream.close()


def test_the_published_window_start_is_the_first_frames_stamp_to_the_nanosecond() -> None:
    import rospy
    from std_msgs.msg import Header

    from ml_bridge.ros.sinks import SinkOptions, prediction_message

    pipeline = ClipPipeline(clip_model())
    # A real camera stamp: as a float it would come back 48 ns off.
    stamps = [rospy.Time(1700000000, 300000001 + 33000000 * i) for i in range(T)]
    state = pipeline.new_state()
    result = None
    for i, stamp in enumerate(stamps):
        frame = Frame(flat(i), stamp.to_sec(), Header(seq=i, stamp=stamp, frame_id="cam"))
        result = pipeline.run(frame, lambda x: Prediction([np.zeros((1, 3), np.float32)], STAMP,
                                                          1.0), state)
    assert result is not None
    msg = prediction_message(result, result.outputs["predictions"], SinkOptions())
    assert msg.window_start == stamps[0] and msg.header.stamp == stamps[-1]
    assert rospy.Time.from_sec(stamps[0].to_sec()) != stamps[0]  # why the header is kept


@pytest.mark.parametrize("backend", backends.ALL)
def test_order_proof_held_out_motions_are_recognised_and_reversed_frames_flip_them(
        backend: str) -> None:
    from trained import trained

    from ml_bridge.core.synthetic_motion import MOTION_LABELS, motion_clips

    server, _ = trained(backend, "motion_clip", "motion")
    pipeline = ClipPipeline(server.model)
    clips, labels = motion_clips(heldout=True)
    assert pipeline.length == clips.shape[1]

    def through_pipeline(reverse: bool) -> np.ndarray:
        # One stream: clip after clip, each after a gap that empties the window, so every
        # clip's last frame closes a window holding exactly that clip's frames.
        state = pipeline.new_state()
        predicted = []
        for n, clip in enumerate(clips):
            frames = clip[::-1] if reverse else clip
            for i, image in enumerate(frames):
                result = pipeline.run(Frame(image, 10.0 * n + 0.04 * i), server.predict, state)
                assert (result is None) == (i < len(frames) - 1)
            assert result is not None
            predicted.append(result.outputs["predictions"].class_ids[0])
        return np.array(predicted)

    forward = through_pipeline(reverse=False)
    accuracy = float(np.mean(forward == labels))
    assert accuracy >= 0.9, f"held-out accuracy through the pipeline {accuracy:.3f}"
    # Played backwards, a blob moving left moves right: a window that kept its frames in
    # order must say so; one that lost the order cannot.
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    flipped = np.array([MOTION_LABELS.index(opposite[MOTION_LABELS[y]]) for y in labels])
    flip_rate = float(np.mean(through_pipeline(reverse=True) == flipped))
    assert flip_rate >= 0.9, f"reversed clips predicted as the opposite motion: {flip_rate:.3f}"
