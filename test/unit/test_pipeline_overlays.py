"""``~overlay`` of classify, clip and objects: the top label, the boxes where the boxes are,
computed only when wanted, on a copy, and published in the frame's encoding and size."""
from typing import List, Optional

import numpy as np
import pytest
from std_msgs.msg import Header
from test_core_server import LinearModel
from test_pipeline_clip import STAMP as CLIP_STAMP
from test_pipeline_clip import T, clip_model, flat
from test_pipeline_objects import Model, box_of, colour_model, frame_at, scene

from ml_bridge.core.model import ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.vision import ImageFormat
from ml_bridge.pipelines import classify as classify_module
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.classify import ClassifyPipeline
from ml_bridge.pipelines.clip import ClipPipeline
from ml_bridge.pipelines.draw import canvas, class_colour, draw_label, label_score
from ml_bridge.pipelines.objects import Box, Detections, ObjectsPipeline
from ml_bridge.ros.conversions import image_to_array
from ml_bridge.ros.sinks import SinkOptions, overlay_message

LABELS = ("cat", "dog", "bird")
STAMP = ModelStamp(3, LABELS, ("scores",), False, True)
LOGITS = np.array([[0.5, 2.5, -1.0]], np.float32)  # "dog" on top
BOTH = frozenset({"predictions", "overlay"})


def classifier() -> LinearModel:
    model = LinearModel()
    model.inputs = [TensorSpec("image", "float32", (-1, 3, 4, 4))]
    model.outputs = [TensorSpec("scores", "float32", (-1, 3))]
    model.labels = list(LABELS)
    model.image_format = ImageFormat((4, 4))
    return model


def predict(_inputs: List[np.ndarray]) -> Prediction:
    return Prediction([LOGITS], STAMP, 1.0)


def picture(height: int = 480, width: int = 640, mono: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    image = rng.integers(60, 200, (height, width) if mono else (height, width, 3), np.uint8)
    image.flags.writeable = False  # as a frame read from a message's bytes
    return image


def classify_result(image: np.ndarray, wanted: frozenset = BOTH) -> Result:
    result = ClassifyPipeline(classifier()).run(Frame(image), predict, wanted=wanted)
    assert result is not None
    return result


@pytest.mark.parametrize("mono", [False, True])
def test_classify_overlay_shows_the_top_label_on_a_copy_of_the_frame(mono: bool) -> None:
    image = picture(mono=mono)
    result = classify_result(image)
    classes = result.outputs["predictions"]
    assert classes.labels == ["dog"]
    overlay = result.outputs["overlay"]
    assert overlay.shape == image.shape and overlay is not image
    expected = draw_label(canvas(image), label_score("dog", classes.scores[0]))
    np.testing.assert_array_equal(overlay, expected)
    wrong = draw_label(canvas(image), label_score("cat", classes.scores[0]))
    assert not np.array_equal(overlay, wrong)
    # Only the label's corner differs from the frame.
    changed = np.argwhere(np.atleast_3d(overlay != image).any(axis=2))
    assert changed.size and changed[:, 0].max() < 480 // 3 and changed[:, 1].min() == 0


def test_no_overlay_is_drawn_when_nobody_wants_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise AssertionError("an overlay was drawn that nobody wants")

    monkeypatch.setattr(classify_module, "canvas", refuse)
    result = classify_result(picture(), frozenset({"predictions"}))
    assert "overlay" not in result.outputs and result.outputs["predictions"].labels == ["dog"]


def test_classify_and_clip_declare_the_overlay_output() -> None:
    assert "overlay" in ClassifyPipeline.outputs and "overlay" in ClipPipeline.outputs
    assert "overlay" in ObjectsPipeline.outputs


def test_clip_overlay_is_the_last_frame_with_the_top_label() -> None:
    pipeline = ClipPipeline(clip_model())
    state = pipeline.new_state()
    frames = [Frame(flat(40 * i), 1.0 + 0.1 * i, f"h{i}", "mono8") for i in range(T)]
    results = [pipeline.run(f, lambda _i: Prediction([LOGITS], CLIP_STAMP, 1.0), state, BOTH)
               for f in frames]
    last = results[-1]
    assert last is not None and last.outputs["predictions"].labels == ["b"]
    expected = draw_label(canvas(frames[-1].image), label_score("b", last.outputs["predictions"].scores[0]))
    np.testing.assert_array_equal(last.outputs["overlay"], expected)
    assert (frames[-1].image == 40 * (T - 1)).all()  # the frame itself untouched


def objects_result(detections: Detections, image: Optional[np.ndarray],
                   wanted: frozenset = frozenset({"objects", "overlay"})) -> Result:
    pipeline = ObjectsPipeline(colour_model())
    state = pipeline.new_state()
    if image is not None:
        pipeline.accept(frame_at(detections.stamp_ns, image), state)
    assert pipeline.accept_detections(detections, state)
    request = pipeline.request(state)
    assert request is not None
    model = Model()
    return pipeline.postprocess(request, model(request.inputs) if request.inputs else
                                Prediction([], ModelStamp(4), 0.0), wanted)


def test_objects_overlay_draws_each_box_where_it_is_with_its_class_colour() -> None:
    image = scene([("red", (20, 40, 60, 100)), ("blue", (100, 60, 150, 110))], 160, 200)
    red, blue = box_of(20, 40, 60, 100), box_of(100, 60, 150, 110)
    refused = Box(50, 50, 0, 0)
    result = objects_result(Detections(5, [red, refused, blue]), image)
    assert [o.label for o in result.outputs["objects"]] == ["red", "", "blue"]
    overlay = result.outputs["overlay"]
    assert overlay.shape == image.shape
    # On each outline: the class's colour; well inside, and away from boxes and labels: as it was.
    for (y, x), class_id in (((70, 20), 0), ((100, 40), 0), ((85, 150), 2), ((110, 125), 2)):
        assert tuple(overlay[y, x]) == class_colour(class_id), (y, x)
    for y, x in ((70, 40), (85, 125), (150, 5), (20, 180), (140, 90)):
        assert tuple(overlay[y, x]) == tuple(image[y, x]), (y, x)
    # The labels sit above the boxes' top-left corners, drawn over the grey ground.
    assert (overlay[25:40, 20:60] != 128).any(axis=2).sum() > 50
    assert (image == scene([("red", (20, 40, 60, 100)), ("blue", (100, 60, 150, 110))],
                           160, 200)).all()


def test_objects_overlay_only_when_wanted_and_only_with_a_frame() -> None:
    image = scene([("green", (10, 10, 30, 30))], 60, 80)
    plain = objects_result(Detections(5, [box_of(10, 10, 30, 30)]), image, frozenset({"objects"}))
    assert "overlay" not in plain.outputs
    given = Detections(9, [Box(10, 20, 8, 4)], header="detector",
                       crops_given=[scene([("green", (0, 0, 8, 8))], 8, 8)])
    alone = objects_result(given, None)
    assert "overlay" not in alone.outputs and alone.outputs["objects"][0].label == "green"


@pytest.mark.parametrize("encoding, mono", [("rgb8", False), ("bgr8", False), ("mono8", True)])
def test_overlay_goes_out_in_the_frames_encoding_and_size(encoding: str, mono: bool) -> None:
    image = picture(48, 64, mono)  # as image_to_array gives it: RGB, or mono
    pipeline = ClassifyPipeline(classifier())
    result = pipeline.run(Frame(image, 2.0, Header(frame_id="cam"), encoding), predict, wanted=BOTH)
    assert result is not None
    msg = overlay_message(result, result.outputs["overlay"], SinkOptions())
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (encoding, 48, 64, "cam")
    np.testing.assert_array_equal(image_to_array(msg), result.outputs["overlay"])
