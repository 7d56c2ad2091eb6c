"""The built-in ``motion`` clips and ``shape_crops`` crops: deterministic, held-out sets
apart, labels that mean what they say, balanced classes, and the model's layout honoured."""
import subprocess
import sys
from typing import Tuple

import cv2
import numpy as np
import pytest

from ml_bridge.core.datasets import BUILTIN_DATASETS
from ml_bridge.core.errors import DatasetError, InputError
from ml_bridge.core.synthetic_crops import (
    CROP_LABELS,
    CROP_SIZE,
    crop_images,
    crop_samples,
    shape_crops,
    shape_crops_heldout,
)
from ml_bridge.core.synthetic_motion import (
    CLIP_LENGTH,
    MOTION_LABELS,
    motion,
    motion_clips,
    motion_frames,
    motion_heldout,
)
from ml_bridge.core.vision import ImageFormat

#: A channel sum only the blob's core reaches: the module keeps the background under 3 x 185
#: and the blob's core over 568 (see synthetic_motion._render).
BLOB_FLOOR = 560
#: (dx, dy) of each motion label in image coordinates (y grows downwards).
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def blob_centre(frame: np.ndarray) -> Tuple[float, float]:
    """(x, y) of the pixels brighter than any background pixel can be."""
    ys, xs = np.nonzero(frame.astype(np.int32).sum(axis=2) > BLOB_FLOOR)
    assert len(xs) > 0, "no blob in the frame"
    return float(xs.mean()), float(ys.mean())


def assert_moves(frames: np.ndarray, label: int, min_travel: float) -> None:
    """The blob's centre moves along the label's direction, mostly, by at least min_travel."""
    (x0, y0), (x1, y1) = blob_centre(frames[0]), blob_centre(frames[-1])
    dx, dy = DIRECTIONS[MOTION_LABELS[label]]
    along = (x1 - x0) * dx + (y1 - y0) * dy
    across = abs((x1 - x0) * dy) + abs((y1 - y0) * dx)
    assert along >= min_travel, (MOTION_LABELS[label], (x0, y0), (x1, y1))
    assert across <= 0.3 * along, (MOTION_LABELS[label], (x0, y0), (x1, y1))


def test_the_dataset_resolver_knows_the_datasets() -> None:
    # A fresh interpreter: the names are known before any dataset module is imported.
    code = ("import sys\n"
            "from ml_bridge.core.datasets import BUILTIN_DATASETS\n"
            "print(' '.join(sorted(BUILTIN_DATASETS)), 'ml_bridge.core.synthetic_motion' in sys.modules)")
    names = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True).stdout.split()
    assert {"motion", "shape_crops"} <= set(names) and names[-1] == "False"
    assert BUILTIN_DATASETS.get("motion") is motion
    assert BUILTIN_DATASETS.get("shape_crops") is shape_crops


# -- motion ------------------------------------------------------------------------------------
def test_motion_clips_are_the_same_from_every_build() -> None:
    clips, labels = motion_clips(True)
    fresh_clips, fresh_labels = motion_clips.__wrapped__(True)  # not the cached arrays
    assert clips.shape == (len(labels), CLIP_LENGTH, 64, 64, 3) and clips.dtype == np.uint8
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(fresh_clips, clips)
    np.testing.assert_array_equal(fresh_labels, labels)


def test_motion_heldout_clips_are_not_in_the_training_set() -> None:
    train, _ = motion_clips(False)
    heldout, _ = motion_clips(True)
    seen = {clip.tobytes() for clip in train}
    assert not any(clip.tobytes() in seen for clip in heldout)
    # Not even the same backgrounds: a first frame shared would mean a shared seed.
    first = {clip[0, :8].tobytes() for clip in train}
    assert not any(clip[0, :8].tobytes() in first for clip in heldout)


@pytest.mark.parametrize("heldout", [False, True])
def test_every_motion_clip_moves_in_its_labelled_direction(heldout: bool) -> None:
    clips, labels = motion_clips(heldout)
    for clip, label in zip(clips, labels):
        assert_moves(clip, int(label), min_travel=10.0)


@pytest.mark.parametrize("heldout", [False, True])
def test_motion_classes_are_balanced(heldout: bool) -> None:
    _, labels = motion_clips(heldout)
    counts = np.bincount(labels, minlength=len(MOTION_LABELS))
    assert len(counts) == len(MOTION_LABELS) and len(set(counts.tolist())) == 1
    assert counts[0] >= 50


def test_motion_frames_show_one_motion_for_the_whole_sequence() -> None:
    frames = motion_frames(MOTION_LABELS.index("up"), 40, seed=3, height=48, width=80)
    assert len(frames) == 40 and frames[0].shape == (48, 80, 3) and frames[0].dtype == np.uint8
    stacked = np.stack(frames)
    for start in range(0, 40 - CLIP_LENGTH + 1, 8):  # every window a clip pipeline sees
        assert_moves(stacked[start:start + CLIP_LENGTH], MOTION_LABELS.index("up"),
                     min_travel=5.0)
    again = motion_frames(MOTION_LABELS.index("up"), 40, seed=3, height=48, width=80)
    np.testing.assert_array_equal(np.stack(again), stacked)
    other = motion_frames(MOTION_LABELS.index("up"), 40, seed=4, height=48, width=80)
    assert not np.array_equal(np.stack(other), stacked)


def test_motion_frames_refuses_an_unknown_label() -> None:
    with pytest.raises(DatasetError, match="0..3"):
        motion_frames(4, 40, seed=0)


def test_motion_dataset_uses_the_models_layout_and_size() -> None:
    first = ImageFormat((16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                        channels_first=True, clip_length=CLIP_LENGTH)
    last = ImageFormat((16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                       channels_first=False, clip_length=CLIP_LENGTH)
    ncthw, nthwc = motion_heldout(first), motion_heldout(last)
    n = len(motion_clips(True)[1])
    assert ncthw.inputs[0].shape == (n, 3, CLIP_LENGTH, 16, 16)
    assert nthwc.inputs[0].shape == (n, CLIP_LENGTH, 16, 16, 3)
    assert ncthw.inputs[0].dtype == np.float32
    np.testing.assert_array_equal(ncthw.inputs[0].transpose(0, 2, 3, 4, 1), nthwc.inputs[0])
    # Frame t of the tensor is frame t of the clip, through the format.
    clips, labels = motion_clips(True)
    np.testing.assert_allclose(nthwc.inputs[0][5, 7], last.frame(clips[5, 7]))
    np.testing.assert_array_equal(ncthw.targets[0], labels)
    assert ncthw.targets[0].dtype == np.int64


def test_motion_dataset_refuses_a_model_with_another_clip_length() -> None:
    with pytest.raises(DatasetError, match="16-frame"):
        motion(ImageFormat((16, 16), clip_length=8))


# -- shape crops -------------------------------------------------------------------------------
def test_crops_are_the_same_from_every_build() -> None:
    crops, labels = crop_images(True)
    fresh = crop_samples.__wrapped__(True)
    assert crops.shape == (len(labels), CROP_SIZE, CROP_SIZE, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(fresh[0], crops)
    np.testing.assert_array_equal(fresh[2], labels)


def test_crop_heldout_set_is_not_in_the_training_set() -> None:
    seen = {crop.tobytes() for crop in crop_images(False)[0]}
    assert not any(crop.tobytes() in seen for crop in crop_images(True)[0])


@pytest.mark.parametrize("heldout", [False, True])
def test_each_crop_holds_one_shape_of_its_label(heldout: bool) -> None:
    crops, masks, labels = crop_samples(heldout)
    for mask, label in zip(masks, labels):
        kinds = set(np.unique(mask).tolist()) - {0}
        assert kinds == {int(label) + 1}
        count, _ = cv2.connectedComponents((mask > 0).astype(np.uint8))
        assert count == 2  # background + one shape
        # The shape fills a good part of the box, as in a detector's crop, but not all of it.
        assert 0.15 < float((mask > 0).mean()) < 0.95


@pytest.mark.parametrize("heldout", [False, True])
def test_crop_classes_are_balanced(heldout: bool) -> None:
    labels = crop_images(heldout)[1]
    counts = np.bincount(labels, minlength=len(CROP_LABELS))
    assert len(counts) == len(CROP_LABELS) and len(set(counts.tolist())) == 1
    assert labels.dtype == np.int64


def test_crop_dataset_uses_the_models_layout_and_size() -> None:
    first = shape_crops_heldout(ImageFormat((24, 24), channels_first=True))
    last = shape_crops_heldout(ImageFormat((24, 24), channels_first=False))
    n = len(crop_images(True)[1])
    assert first.inputs[0].shape == (n, 3, 24, 24)
    assert last.inputs[0].shape == (n, 24, 24, 3)
    np.testing.assert_array_equal(first.inputs[0].transpose(0, 2, 3, 1), last.inputs[0])
    np.testing.assert_array_equal(first.targets[0], crop_images(True)[1])


def test_datasets_refuse_a_model_without_an_image_format() -> None:
    with pytest.raises(InputError, match="no image format"):
        shape_crops(None)
    with pytest.raises(InputError, match="no image format"):
        motion(None)
