"""The ``shapes`` scenes and dataset, the moving-scene source and the segmentation metrics."""
import itertools
import math

import cv2
import numpy as np
import pytest

from ml_bridge.core import synthetic
from ml_bridge.core.datasets import BUILTIN_DATASETS
from ml_bridge.core.errors import DatasetError, InputError
from ml_bridge.core.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from ml_bridge.core.synthetic import (
    CIRCLE,
    SHAPE_LABELS,
    SQUARE,
    TRIANGLE,
    draw_shape,
    moving_scenes,
    render_scene,
    shapes,
    shapes_frames,
    shapes_heldout,
    textured_background,
)
from ml_bridge.core.vision import ImageFormat

IMAGENET = ImageFormat((64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def test_scenes_and_frames_are_the_same_every_time() -> None:
    first = render_scene(np.random.default_rng(7), 48, 80)
    again = render_scene(np.random.default_rng(7), 48, 80)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # Rendered afresh (the cache bypassed), the held-out split is identical.
    frames, masks = shapes_frames(True)
    fresh_frames, fresh_masks = shapes_frames.__wrapped__(True)
    assert np.array_equal(frames, fresh_frames) and np.array_equal(masks, fresh_masks)


def test_heldout_frames_are_never_training_frames() -> None:
    train, _ = shapes_frames(False)
    heldout, _ = shapes_frames(True)
    seen = {frame.tobytes() for frame in train}
    assert not any(frame.tobytes() in seen for frame in heldout)
    assert len(train) >= 1500 and len(heldout) >= 200


def test_frames_are_rgb_64_and_cannot_be_changed_by_a_caller() -> None:
    frames, masks = shapes_frames(False)
    assert frames.shape[1:] == (64, 64, 3) and frames.dtype == np.uint8
    assert masks.shape == frames.shape[:3] and masks.dtype == np.uint8
    with pytest.raises(ValueError):
        masks[0, 0, 0] = 1


def test_every_class_is_present_and_every_frame_holds_a_shape() -> None:
    _, masks = shapes_frames(False)
    assert set(np.unique(masks).tolist()) == set(range(len(SHAPE_LABELS)))
    assert (masks.reshape(len(masks), -1).max(axis=1) > 0).all()
    # No class is a rarity: each shape covers at least 2 % of all pixels.
    share = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert (share[1:] > 0.02).all(), share


def test_training_frames_hold_shapes_up_to_half_the_frame_and_grey_backgrounds() -> None:
    frames, masks = shapes_frames(False)
    # Objects close to the camera: one class covers 40 % of the frame in some frames.
    counts = np.stack([np.bincount(m.ravel(), minlength=4) for m in masks]) / masks[0].size
    assert (counts[:, 1:].max(axis=1) >= 0.4).mean() >= 0.05
    # Grey ground (concrete, asphalt): the background's channels agree in some frames.
    spread = [float(np.ptp(f[m == 0].astype(np.int16), axis=1).mean()) for f, m in zip(frames, masks)]
    assert (np.array(spread) < 4.0).mean() >= 0.1


def test_every_shape_of_a_scene_keeps_most_of_itself_visible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A shape hidden but for a sliver leaves pixels whose class nothing in the frame shows:
    # noise in the labels the segmenter trains and is scored on.
    footprints = []

    def recording(image: np.ndarray, mask: np.ndarray, kind: int, *args: object,
                  **kwargs: object) -> None:
        alone = np.zeros_like(mask)
        draw_shape(image.copy(), alone, kind, *args, **kwargs)  # type: ignore[arg-type]
        footprints.append((kind, alone == kind))
        draw_shape(image, mask, kind, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(synthetic, "draw_shape", recording)
    rng = np.random.default_rng(5)
    visible = []
    for i in range(600):  # square frames and the larger canvases squeezed into training frames
        footprints.clear()
        _, mask = render_scene(rng, *[(64, 64), (64, 96), (128, 100), (150, 192)][i % 4],
                               max_shapes=4)
        visible += [float((mask[where] == kind).mean()) for kind, where in footprints if where.any()]
    assert min(visible) >= 0.7, sorted(visible)[:5]


@pytest.mark.parametrize("kind", [CIRCLE, SQUARE, TRIANGLE])
def test_a_shape_is_drawn_where_its_mask_says(kind: int) -> None:
    background = textured_background(np.random.default_rng(kind), 64, 64)
    image = background.copy()
    mask = np.zeros((64, 64), np.uint8)
    draw_shape(image, mask, kind, (30.5, 33.0), 24.0, (255, 0, 255), angle=0.4)
    inside = mask == kind
    assert set(np.unique(mask).tolist()) == {0, kind}
    # The requested size: a circle of diameter 24, a square of side 24, or a triangle on a
    # circle of diameter 24 * 1.4 (edges add a pixel or so all round).
    area = {CIRCLE: math.pi * 12 ** 2, SQUARE: 24 ** 2,
            TRIANGLE: 3 * math.sqrt(3) / 4 * (0.7 * 24) ** 2}[kind]
    assert abs(inside.sum() - area) < 0.2 * area
    # Inside the mask the fill colour (its edge is anti-aliased); away from the edge the
    # background is untouched.
    kernel = np.ones((3, 3), np.uint8)
    core = cv2.erode(inside.astype(np.uint8), kernel).astype(bool)
    assert (image[core] == (255, 0, 255)).all()
    near = cv2.dilate(inside.astype(np.uint8), kernel).astype(bool)
    assert np.array_equal(image[~near], background[~near])


def test_scene_masks_agree_with_the_pixels() -> None:
    # Pixels of a shape sit away from the background colour around them: a shape's pixels
    # differ much more from the mean of a ring of background just outside the shapes than
    # that ring's own pixels do. The ring, not the whole background: a colour-textured
    # background can span as wide a range across the frame as a shape's contrast.
    frames, masks = shapes_frames(True)
    for frame, mask in zip(frames[:20], masks[:20]):
        shapes_at = (mask > 0).astype(np.uint8)
        inner = cv2.erode(shapes_at, np.ones((3, 3), np.uint8)).astype(bool)
        outer = (cv2.dilate(shapes_at, np.ones((9, 9), np.uint8))
                 > cv2.dilate(shapes_at, np.ones((5, 5), np.uint8)))
        if not inner.any() or not outer.any():
            continue
        background = frame[outer].astype(np.float64).mean(axis=0)
        shape_gap = np.abs(frame[inner] - background).sum(axis=1).mean()
        background_gap = np.abs(frame[outer] - background).sum(axis=1).mean()
        assert shape_gap > background_gap + 40, (shape_gap, background_gap)


@pytest.mark.parametrize("fmt, shape", [
    (IMAGENET, (3, 64, 64)),
    (ImageFormat((64, 64), channels_first=False), (64, 64, 3)),
    (ImageFormat((32, 48), mean=(0.5,), std=(0.5,), color="gray"), (1, 32, 48)),
])
def test_the_dataset_is_made_in_the_models_format(fmt: ImageFormat, shape: tuple) -> None:
    data = shapes_heldout(fmt)
    frames, masks = shapes_frames(True)
    assert data.inputs[0].shape == (len(frames),) + shape and data.inputs[0].dtype == np.float32
    assert data.targets[0].shape == (len(frames),) + fmt.size
    assert data.targets[0].dtype == np.int64
    # Exactly what the image pipelines feed the model for the same frame.
    assert np.array_equal(data.inputs[0][3], fmt.frame(frames[3]))
    if fmt.size == (64, 64):
        assert np.array_equal(data.targets[0], masks)
    else:  # masks resized nearest-neighbour: still class ids, no blends between classes
        assert set(np.unique(data.targets[0]).tolist()) <= {0, 1, 2, 3}


def test_the_builtin_is_registered_and_defaults_to_64_nhwc() -> None:
    assert BUILTIN_DATASETS.get("shapes") is shapes
    data = shapes(None)
    assert data.name == "shapes" and data.inputs[0].shape[1:] == (64, 64, 3)
    assert float(data.inputs[0].min()) >= 0.0 and float(data.inputs[0].max()) <= 1.0


def test_a_clip_model_is_refused() -> None:
    with pytest.raises(DatasetError, match="single frames.*16-frame clips"):
        shapes(ImageFormat((64, 64), clip_length=16))


@pytest.mark.parametrize("height, width", [(240, 320), (64, 64)])
def test_moving_scenes_move_smoothly(height: int, width: int) -> None:
    frames = list(itertools.islice(moving_scenes(height, width, seed=3), 30))
    assert all(f.shape == (height, width, 3) and f.dtype == np.uint8 for f in frames)
    steps = [float(np.abs(a.astype(int) - b).mean()) for a, b in zip(frames, frames[1:])]
    assert min(steps) > 0  # something moves in every frame ...
    assert max(steps) < 12  # ... but a little at a time
    again = list(itertools.islice(moving_scenes(height, width, seed=3), 30))
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))


def test_confusion_matrix_and_metrics_by_hand() -> None:
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(pred, target, 4)
    # Rows: target class; columns: predicted class.
    expected = np.array([[1, 1, 0, 0],
                         [0, 2, 0, 0],
                         [1, 0, 1, 0],
                         [0, 0, 0, 0]])
    assert np.array_equal(confusion, expected)
    assert pixel_accuracy(confusion) == pytest.approx(4 / 6)
    # IoU: class 0 1/(2+2-1)=1/3, class 1 2/(2+3-2)=2/3, class 2 1/(2+1-1)=1/2; class 3 is in
    # neither, so it is left out of the mean.
    ious = iou_per_class(confusion)
    assert ious[:3] == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(ious[3])
    assert mean_iou(confusion) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_a_class_only_predicted_counts_with_iou_zero() -> None:
    confusion = confusion_matrix(np.array([3, 0]), np.array([0, 0]), 4)
    assert mean_iou(confusion) == pytest.approx((1 / 2 + 0.0) / 2)


def test_confusion_matrix_refuses_mismatched_or_foreign_ids() -> None:
    with pytest.raises(InputError, match="same shape"):
        confusion_matrix(np.zeros(3, int), np.zeros(4, int), 4)
    with pytest.raises(InputError, match=r"targets hold class ids in \[0, 4\], outside \[0, 4\)"):
        confusion_matrix(np.zeros(2, int), np.array([0, 4]), 4)
