"""The segment pipeline (pipelines/segment.py, pipelines/masks.py) against plain references:
preprocessing, class maps, nearest upscale, overlays, classes present, output layouts and
containers, parameters."""
import math
import re
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pytest
from test_core_server import LinearModel

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.core.params import ParameterError
from ml_bridge.core.server import ModelOutput
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.synthetic import SHAPE_LABELS, render_scene
from ml_bridge.core.vision import ImageFormat
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, PredictFn, Result
from ml_bridge.pipelines.masks import (
    PALETTE,
    blur_outside,
    class_argmax,
    class_colours,
    class_scores_nchw,
    classes_present,
    color_blend,
    mask_from_scores,
    upscale_mask,
)
from ml_bridge.pipelines.segment import SegmentPipeline

LABELS = ["background", "dark", "mid", "light"]
SIZE = (12, 16)  # the fake model's input (H, W); its scores are at half that


class FakeSegmenter(LinearModel):
    """Class per pixel by brightness: scores -10 * |gray - c / (C - 1)| of the normalized input,
    at half the input's resolution (every other pixel), in either layout.

    ``container``: ``plain`` (one output), ``dict`` (``aux`` then ``out``, as torchvision) or
    ``tuple`` (the first output counts, the second is noise).
    """

    def __init__(self, channels_first: bool = True, out_first: bool = True,
                 container: str = "plain", probabilities: bool = False,
                 labels: Sequence[str] = LABELS) -> None:
        super().__init__("fake_seg")
        self.classes = len(LABELS)
        self.out_first = out_first
        self.container = container
        shape = (-1, 3) + SIZE if channels_first else (-1,) + SIZE + (3,)
        self.inputs = [ArraySpec("image", "float32", shape)]
        names = {"plain": ["scores"], "dict": ["aux", "out"], "tuple": ["logits", "extra"]}
        self.outputs = [ArraySpec(n, "float32", (-1, -1, -1, -1)) for n in names[container]]
        self.labels = list(labels)
        self.is_classifier = bool(labels)
        self.outputs_probabilities = probabilities
        self.image_format = ImageFormat(SIZE, (0.5, 0.4, 0.3), (0.5, 0.5, 0.5), "rgb",
                                        channels_first)
        self.calls: List[np.ndarray] = []
        self.returned: List[np.ndarray] = []

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        self.calls.append(inputs[0])
        x = inputs[0] if self.inputs[0].shape[1] == 3 else inputs[0].transpose(0, 3, 1, 2)
        scores = reference_scores(x, self.classes, self.outputs_probabilities)  # N, C, h, w
        main = scores if self.out_first else np.ascontiguousarray(scores.transpose(0, 2, 3, 1))
        other = np.random.default_rng(0).normal(size=main.shape).astype(np.float32)
        self.returned = {"plain": [main], "dict": [other, main], "tuple": [main, other]}[self.container]
        return self.returned


def reference_scores(x: np.ndarray, classes: int, probabilities: bool) -> np.ndarray:
    """What FakeSegmenter computes from NCHW input, written with loops over classes."""
    gray = x.mean(axis=1)[:, ::2, ::2]  # N, h, w at half resolution
    span = float(gray.max() - gray.min()) or 1.0
    level = (gray - gray.min()) / span
    scores = np.stack([-10.0 * np.abs(level - c / (classes - 1)) for c in range(classes)], 1)
    if probabilities:
        scores = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    return scores.astype(np.float32)


def stamp_of(model: FakeSegmenter) -> ModelStamp:
    return ModelStamp.of(model, 3)


def predict_with(model: FakeSegmenter) -> PredictFn:
    return lambda inputs: ModelOutput(model.predict(inputs), stamp_of(model), 1.5)


def run(pipeline: SegmentPipeline, model: FakeSegmenter, image: np.ndarray,
        wanted: Optional[FrozenSet[str]] = None) -> Result:
    result = pipeline.run(Frame(image, 4.0, header="h"), predict_with(model), wanted=wanted)
    assert result is not None
    return result


def textured(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A scene of shapes on a textured background, with grain: a blur changes almost every pixel."""
    rng = np.random.default_rng(seed)
    image, _ = render_scene(rng, height, width)
    return np.clip(image + rng.normal(0.0, 12.0, image.shape), 0, 255).astype(np.uint8)


def nearest_reference(small: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Every output pixel (y, x) is small[floor(y * h / H), floor(x * w / W)], by loops."""
    height, width = size
    h, w = small.shape[:2]
    out = np.zeros((height, width) + small.shape[2:], small.dtype)
    for y in range(height):
        for x in range(width):
            out[y, x] = small[math.floor(y * h / height), math.floor(x * w / width)]
    return out


def expected_mask(model: FakeSegmenter, image: np.ndarray, min_score: float = 0.0) -> np.ndarray:
    """The frame-sized mask for ``image``: per-pixel softmax and arg-max by loops, then upscale."""
    x = model.calls[-1] if model.inputs[0].shape[1] == 3 else model.calls[-1].transpose(0, 3, 1, 2)
    scores = reference_scores(x, model.classes, False)[0]
    small = np.zeros(scores.shape[1:], np.uint8)
    for y in range(small.shape[0]):
        for x_ in range(small.shape[1]):
            exps = [math.exp(float(s)) for s in scores[:, y, x_]]
            probs = [e / sum(exps) for e in exps]
            best = max(range(len(probs)), key=lambda c: probs[c])
            small[y, x_] = best if probs[best] >= min_score else 0
    return nearest_reference(small, (image.shape[0], image.shape[1]))


# --- preprocessing ------------------------------------------------------------------------

@pytest.mark.parametrize("channels_first", [True, False])
def test_request_is_resized_normalized_in_the_layout_batch_of_one(channels_first: bool) -> None:
    model = FakeSegmenter(channels_first=not channels_first)  # the parameters override it
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.2]
    pipeline = SegmentPipeline(model, {"input_size": [12, 16], "mean": mean, "std": std,
                                       "color": "bgr", "channels_first": channels_first})
    image = textured(48, 64)  # 4x the input size: area resizing = 4 x 4 block means
    state = pipeline.new_state()
    assert pipeline.accept(Frame(image), state)
    request = pipeline.request(state)
    assert request is not None and pipeline.request(state) is None  # taken once
    (tensor,) = request.inputs
    blocks = image.reshape(12, 4, 16, 4, 3).astype(np.float64).mean(axis=(1, 3))
    expected = np.zeros((12, 16, 3))
    for c, (src, m, sd) in enumerate(zip((2, 1, 0), mean, std)):
        expected[:, :, c] = (blocks[:, :, src] / 255.0 - m) / sd  # bgr: channel 0 is blue
    if channels_first:
        expected = expected.transpose(2, 0, 1)
    assert tensor.dtype == np.float32 and tensor.shape == (1,) + expected.shape
    np.testing.assert_allclose(tensor[0], expected, atol=0.02)  # uint8 rounding of the resize
    fmt = ImageFormat((12, 16), (0.1, 0.2, 0.3), (0.5, 0.25, 0.2), "bgr", channels_first)
    np.testing.assert_array_equal(tensor[0], fmt.frame(image))


# --- pure functions -----------------------------------------------------------------------

@pytest.mark.parametrize("min_score", [0.0, 0.5, 0.7])
def test_mask_from_scores_is_the_arg_max_of_the_softmax_logits_or_probabilities(min_score: float) -> None:
    logits = np.random.default_rng(1).normal(0, 1.5, (1, 5, 6, 7)).astype(np.float32)
    expected = np.zeros((1, 6, 7), np.uint8)
    probs = np.zeros_like(logits)
    for y in range(6):
        for x in range(7):
            exps = [math.exp(float(v)) for v in logits[0, :, y, x]]
            probs[0, :, y, x] = [e / sum(exps) for e in exps]
            best = int(np.argmax(probs[0, :, y, x]))
            expected[0, y, x] = best if probs[0, best, y, x] >= min_score else 0
    got = mask_from_scores(logits, probabilities=False, min_score=min_score)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(mask_from_scores(probs, True, min_score), expected)
    if min_score > 0:
        assert (expected == 0).sum() > (mask_from_scores(logits, False) == 0).sum()


@pytest.mark.parametrize("classes", [1, 2, 4, 16, 17, 40])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_argmax_is_numpys_including_ties(classes: int, dtype: type) -> None:
    # whole numbers in a small range: many pixels have equal top scores (lower id wins)
    scores: np.ndarray = np.random.default_rng(classes).integers(-3, 3, (2, classes, 9, 11)).astype(dtype)
    got = class_argmax(scores)
    assert got.dtype == np.uint8 and got.shape == (2, 9, 11)
    np.testing.assert_array_equal(got, scores.argmax(axis=1))
    channels_last = np.ascontiguousarray(scores.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(class_argmax(channels_last), got)  # a strided view


def test_class_colours_are_the_palette_lookup() -> None:
    mask = np.random.default_rng(8).integers(0, 256, (37, 53), dtype=np.uint8)
    np.testing.assert_array_equal(class_colours(mask, PALETTE), PALETTE.take(mask, axis=0))
    gray = cv2.cvtColor(PALETTE[None], cv2.COLOR_RGB2GRAY)[0]
    np.testing.assert_array_equal(class_colours(mask, gray), gray.take(mask))
    np.testing.assert_array_equal(class_colours(mask[:, ::2], PALETTE), PALETTE.take(mask[:, ::2], axis=0))
    wide = mask.astype(np.int64)  # not a uint8 mask: numpy's lookup
    np.testing.assert_array_equal(class_colours(wide, PALETTE), PALETTE.take(mask, axis=0))


def test_class_axis_comes_from_the_labels_else_from_the_layout() -> None:
    nchw = np.random.default_rng(2).normal(size=(1, 4, 5, 6)).astype(np.float32)
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    for hint in (True, False):  # 4 labels: the axis of 4 wins over the hint
        np.testing.assert_array_equal(class_scores_nchw(nchw, 4, hint), nchw)
        np.testing.assert_array_equal(class_scores_nchw(nhwc, 4, hint), nchw)
    # No labels: the layout decides.
    np.testing.assert_array_equal(class_scores_nchw(nhwc, 0, False), nchw)
    assert class_scores_nchw(nchw, 0, True) is nchw
    # Both axes hold 4: ambiguous, the layout decides.
    square = np.zeros((1, 4, 3, 4), np.float32)
    assert class_scores_nchw(square, 4, True).shape == (1, 4, 3, 4)
    assert class_scores_nchw(square, 4, False).shape == (1, 4, 4, 3)
    with pytest.raises(InputError, match=r"per-pixel class scores .* returned \[1, 10\]"):
        class_scores_nchw(np.zeros((1, 10), np.float32), 10, True)
    with pytest.raises(InputError, match="has 3 labels but its output .* no axis of 3"):
        class_scores_nchw(nchw, 3, True)


@pytest.mark.parametrize("small_size, size", [((5, 7), (5, 7)), ((8, 8), (64, 64)),
                                              ((37, 53), (120, 161)), ((13, 17), (29, 23)),
                                              ((16, 16), (48, 20)), ((11, 14), (64, 86)),
                                              ((14, 17), (100, 134))])  # where cv2's rounds off
def test_upscale_is_the_floor_nearest_neighbour(small_size: Tuple[int, int],
                                                size: Tuple[int, int]) -> None:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, small_size, dtype=np.uint8)
    np.testing.assert_array_equal(upscale_mask(small, size), nearest_reference(small, size))
    colour = rng.integers(0, 256, small_size + (3,), dtype=np.uint8)
    np.testing.assert_array_equal(upscale_mask(colour, size), nearest_reference(colour, size))


def test_classes_present_are_exact_fractions_largest_first() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[:3, :] = 2           # 30 pixels
    mask[5:, :4] = 7          # 20
    mask[9, 9] = 1            # 1
    mask[9, 8] = 3            # 1: ties keep the lower id first
    classes = classes_present(mask, ["bg", "a", "b", "c"])
    assert classes.class_ids == [0, 2, 7, 1, 3]
    assert classes.scores == [0.48, 0.30, 0.20, 0.01, 0.01]
    assert classes.labels == ["bg", "b", "", "a", "c"]  # no label for 7


@pytest.mark.parametrize("size", [(480, 640), (100, 37)])
def test_classes_present_of_a_small_mask_count_its_upscale(size: Tuple[int, int]) -> None:
    small = np.random.default_rng(4).integers(0, 5, (13, 11), dtype=np.uint8)
    full = nearest_reference(small, size)
    counts = np.bincount(full.ravel())
    got = classes_present(small, LABELS, size)
    assert got == classes_present(full, LABELS)
    assert sorted(got.class_ids, key=lambda c: (-counts[c], c)) == got.class_ids
    assert got.scores == [counts[c] / full.size for c in got.class_ids]


@pytest.mark.parametrize("mono", [False, True])
@pytest.mark.parametrize("kernel", [5, 21])
def test_blur_outside_keeps_the_class_pixels_and_blurs_the_rest(mono: bool, kernel: int) -> None:
    image = textured(96, 128, seed=5)
    if mono:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    keep = np.zeros((96, 128), bool)
    keep[20:60, 30:90] = True
    out = blur_outside(image, keep, kernel)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[keep], image[keep])
    changed = (out != image).reshape(96, 128, -1).any(axis=2)
    assert changed[~keep].mean() > 0.9
    # As soft as a Gaussian blur of that size: far nearer to it than the frame is.
    gauss = cv2.GaussianBlur(image, (kernel, kernel), 0).astype(np.float64)[~keep]
    assert np.abs(out[~keep] - gauss).mean() < 0.2 * np.abs(image[~keep] - gauss).mean()
    np.testing.assert_array_equal(blur_outside(image, keep, 1), image)


@pytest.mark.parametrize("mono", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_color_blend_mixes_class_colours_and_leaves_the_background(mono: bool, alpha: float) -> None:
    image = textured(40, 50, seed=6)
    if mono:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = np.random.default_rng(7).integers(0, 4, (40, 50), dtype=np.uint8)
    out = color_blend(image, mask, alpha, PALETTE)
    assert out.shape == image.shape and out.dtype == np.uint8
    expected = image.astype(np.float64)
    for y in range(40):
        for x in range(50):
            c = mask[y, x]
            if c:
                colour = PALETTE[c].astype(np.float64)
                if mono:
                    colour = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
                expected[y, x] = (1 - alpha) * image[y, x] + alpha * colour
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0  # rounding


def test_palette_is_fixed_and_distinct() -> None:
    assert PALETTE.shape == (256, 3) and PALETTE.dtype == np.uint8
    assert len(np.unique(PALETTE[1:], axis=0)) == 255 and not PALETTE[0].any()


# --- the pipeline -------------------------------------------------------------------------

@pytest.mark.parametrize("channels_first", [True, False])
def test_run_end_to_end_gives_mask_overlay_and_classes_present(channels_first: bool) -> None:
    model = FakeSegmenter(channels_first, out_first=channels_first)
    pipeline = make_pipeline("segment", model, {"overlay_alpha": 0.4})
    assert isinstance(pipeline, SegmentPipeline)
    image = textured(48, 64, seed=8)
    result = run(pipeline, model, image)
    assert set(result.outputs) == {"mask", "overlay", "predictions"}
    mask = result.outputs["mask"]
    assert mask.dtype == np.uint8 and mask.shape == (48, 64)
    np.testing.assert_array_equal(mask, expected_mask(model, image))
    assert len(np.unique(mask)) >= 3  # a test that can fail: several classes on the frame
    np.testing.assert_array_equal(result.outputs["overlay"], color_blend(image, mask, 0.4))
    classes = result.outputs["predictions"]
    assert classes == classes_present(mask, LABELS)
    assert result.rows == [{"class_id": c, "score": s, "label": lab} for c, s, lab
                           in zip(classes.class_ids, classes.scores, classes.labels)]
    assert (result.frame.header, result.model.version, result.inference_ms) == ("h", 3, 1.5)
    assert result.raw is model.returned  # the model's outputs as they came


def test_both_output_layouts_give_the_same_mask() -> None:
    image = textured(30, 50, seed=9)
    masks = []
    for out_first in (True, False):
        model = FakeSegmenter(out_first=out_first)
        masks.append(run(SegmentPipeline(model), model, image).outputs["mask"])
    np.testing.assert_array_equal(masks[0], masks[1])
    # Without labels the input layout tells the output layout.
    for first in (True, False):
        model = FakeSegmenter(first, out_first=first, labels=())
        np.testing.assert_array_equal(run(SegmentPipeline(model), model, image).outputs["mask"],
                                      masks[0])


@pytest.mark.parametrize("container", ["dict", "tuple"])
def test_dict_output_reads_out_and_tuple_output_the_first(container: str) -> None:
    image = textured(30, 40, seed=10)
    model = FakeSegmenter(container=container)
    got = run(SegmentPipeline(model), model, image).outputs["mask"]
    np.testing.assert_array_equal(got, expected_mask(model, image))


@pytest.mark.parametrize("min_score", [0.0, 0.8])
def test_logits_and_probabilities_give_the_same_mask_with_min_score(min_score: float) -> None:
    image = textured(30, 40, seed=11)
    masks = []
    for probabilities in (False, True):
        model = FakeSegmenter(probabilities=probabilities)
        pipeline = SegmentPipeline(model, {"min_score": min_score})
        masks.append(run(pipeline, model, image).outputs["mask"])
    np.testing.assert_array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks[0], expected_mask(model, image, min_score))


def test_min_score_turns_unsure_pixels_into_class_0() -> None:
    image = textured(30, 40, seed=12)
    model = FakeSegmenter()
    sure = run(SegmentPipeline(model), model, image).outputs["mask"]
    unsure = run(SegmentPipeline(model, {"min_score": "0.9"}), model, image).outputs["mask"]
    assert (unsure == 0).sum() > (sure == 0).sum()
    assert ((unsure == sure) | (unsure == 0)).all()


@pytest.mark.parametrize("wanted", [{"mask"}, {"overlay"}, {"predictions"}, {"mask", "predictions"}])
def test_only_the_wanted_outputs_are_computed(wanted: set) -> None:
    model = FakeSegmenter()
    result = run(SegmentPipeline(model), model, textured(seed=13), frozenset(wanted))
    assert set(result.outputs) == wanted
    assert bool(result.rows) == ("predictions" in wanted)
    assert len(result.raw) == 1


@pytest.mark.parametrize("overlay_class, class_id", [("mid", 2), ("2", 2), (2, 2), (0, 0)])
def test_overlay_class_keeps_that_class_sharp(overlay_class: Any, class_id: int) -> None:
    model = FakeSegmenter()
    pipeline = SegmentPipeline(model, {"overlay_class": overlay_class, "blur_kernel": 9})
    assert pipeline.overlay_class == class_id
    image = textured(48, 64, seed=14)
    result = run(pipeline, model, image)
    mask, overlay = result.outputs["mask"], result.outputs["overlay"]
    keep = mask == class_id
    assert 0 < keep.sum() < keep.size
    np.testing.assert_array_equal(overlay, blur_outside(image, keep, 9))
    np.testing.assert_array_equal(overlay[keep], image[keep])
    assert (overlay[~keep] != image[~keep]).any(axis=1).mean() > 0.8


def test_mono_frames_get_a_mono_overlay() -> None:
    model = FakeSegmenter()
    image = cv2.cvtColor(textured(48, 64, seed=15), cv2.COLOR_RGB2GRAY)
    for params in ({}, {"overlay_class": "light"}):
        result = run(SegmentPipeline(model, params), model, image)
        assert result.outputs["overlay"].shape == (48, 64)
        assert result.outputs["mask"].shape == (48, 64)


@pytest.mark.parametrize("params, message", [
    ({"blur_kernel": 4}, "~blur_kernel must be an odd integer >= 1 (pixels), got 4; try 5"),
    ({"blur_kernel": 0}, "~blur_kernel must be an odd integer >= 1 (pixels), got 0"),
    ({"blur_kernel": "3.5"}, "~blur_kernel must be an odd integer >= 1 (pixels), got '3.5'"),
    ({"blur_kernel": 20.5}, "~blur_kernel must be an odd integer >= 1 (pixels), got 20.5"),
    ({"blur_kernel": "wide"}, "~blur_kernel must be an odd integer >= 1 (pixels), got 'wide'"),
    ({"overlay_alpha": 1.5}, "~overlay_alpha must be at most 1, got 1.5"),
    ({"overlay_alpha": -0.1}, "~overlay_alpha must be a number >= 0 and <= 1, got -0.1"),
    ({"min_score": 2}, "~min_score must be at most 1 (a probability), got 2"),
    ({"min_score": "often"}, "~min_score must be a number >= 0 and <= 1 (a probability), got 'often'"),
    ({"overlay_class": "dog"}, "~overlay_class must be a label of the model or a class id, got 'dog'; "
                               "the model's labels are 0: background, 1: dark, 2: mid, 3: light"),
    ({"overlay_class": 4}, "~overlay_class must be a class id 0 to 3 or a label, got 4; the model's "
                           "labels are 0: background"),
])
def test_invalid_parameters_are_refused_with_the_fix(params: Dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape("parameter " + message)):
        SegmentPipeline(FakeSegmenter(), params)


def test_a_model_that_is_no_segmenter_is_refused_per_frame() -> None:
    model = FakeSegmenter()
    pipeline = SegmentPipeline(model)

    def flat(inputs: List[np.ndarray]) -> ModelOutput:
        return ModelOutput([np.zeros((1, 4), np.float32)], stamp_of(model), 1.0)

    with pytest.raises(InputError, match=r"pipeline:=classify"):
        pipeline.run(Frame(textured()), flat)
    with pytest.raises(InputError, match="at most 256"):
        SegmentPipeline(FakeSegmenter(labels=[str(i) for i in range(300)]))


def test_shape_labels_name_the_overlay_class() -> None:
    model = FakeSegmenter(labels=SHAPE_LABELS)
    assert SegmentPipeline(model, {"overlay_class": "circle"}).overlay_class == 1
    assert SegmentPipeline(model, {"overlay_class": ""}).overlay_class is None
