"""The built-in ``motion`` dataset: clips of a bright blob moving over a textured background.

Every clip holds :data:`CLIP_LENGTH` frames of 64 x 64 rgb in which one soft, bright disc
travels in a straight line to the left, right, up or down (image coordinates: x grows to the
right, y downwards), with a little drift across its path. Size, colour, speed and start
position vary from clip to clip; the background is a still texture under a slow brightness
drift and fresh sensor noise in every frame, so only the blob's motion tells the classes
apart. Clips come from fixed seeds (the held-out set from another one), so nothing is
downloaded and every process sees the same data.
"""
import functools
from typing import List, Optional, Tuple

import numpy as np

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.synthetic import textured_background
from ml_bridge.core.vision import ImageFormat, image_format_of

#: Class labels; a label's index is its class id.
MOTION_LABELS = ["left", "right", "up", "down"]
#: Frames per clip.
CLIP_LENGTH = 16
#: Frame size (height, width) of the dataset's clips.
FRAME_SIZE = (64, 64)
#: Clips per class in the training set and in the held-out set.
TRAIN_PER_CLASS = 200
HELDOUT_PER_CLASS = 50
_SEEDS = {False: 7101, True: 7919}
#: Unit step (dx, dy) of each class, in the order of MOTION_LABELS.
_STEPS = np.array([(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0)], np.float32)
#: Blob speed in pixels per frame (at 64 x 64; scaled with the frame), before capping to
#: stay in the frame.
_SPEED = (1.0, 2.6)
#: Blob radius in pixels (at 64 x 64; scaled with the frame).
_RADIUS = (3.0, 7.0)
#: Amplitude of the per-frame sensor noise, in grey levels (uniform in -9..9).
_NOISE = 9


def _blob_path(rng: np.random.Generator, label: int, n_frames: int, height: int, width: int,
               radius: float, scale: float) -> np.ndarray:
    """Blob centres [n_frames, 2] as (x, y): a straight run in the label's direction.

    The speed is capped so the whole blob stays inside the frame for the whole sequence,
    which is what keeps every window of a long sequence showing the same motion.
    """
    step = _STEPS[label]
    along = width if step[0] else height
    across = height if step[0] else width
    margin = radius + 1.0
    room = along - 2.0 * margin
    speed = min(float(rng.uniform(*_SPEED)) * scale, room / max(n_frames - 1, 1))
    travel = speed * (n_frames - 1)
    start = float(rng.uniform(margin, margin + max(room - travel, 0.0)))
    # A slight drift across the path (at most a quarter of the speed) keeps it from being
    # a perfectly axis-aligned line, as a real object's track never is.
    drift = float(rng.uniform(-0.25, 0.25)) * speed
    side_room = across - 2.0 * margin - abs(drift) * (n_frames - 1)
    side = float(rng.uniform(margin, margin + max(side_room, 0.0)))
    if drift < 0:
        side += abs(drift) * (n_frames - 1)
    t = np.arange(n_frames, dtype=np.float32)
    pos_along = start + speed * t
    if step[0] < 0 or step[1] < 0:  # left / up: run the same path backwards in space
        pos_along = along - pos_along
    pos_across = side + drift * t
    if step[0]:
        return np.stack([pos_along, pos_across], axis=1)
    return np.stack([pos_across, pos_along], axis=1)


def _render(rng: np.random.Generator, label: int, n_frames: int, height: int,
            width: int) -> np.ndarray:
    """One sequence of ``label``'s motion: uint8 [n_frames, height, width, 3]."""
    scale = min(height, width) / 64.0
    radius = float(rng.uniform(*_RADIUS)) * scale
    centres = _blob_path(rng, label, n_frames, height, width, radius, scale)
    # The texture is dimmed and the blob kept light in every channel, so the blob's core is
    # brighter (channel sum) than any background pixel whatever the texture, lighting and
    # noise. Frames are drawn channels first: numpy broadcasts over a long last axis far
    # faster than over an axis of 3.
    background = textured_background(rng, height, width).transpose(2, 0, 1).astype(np.float32)
    background *= float(rng.uniform(0.4, 0.6))
    colour = rng.uniform(170.0, 250.0, 3).astype(np.float32)
    colour[rng.integers(3)] = 255.0
    # Slow lighting change over the sequence.
    gain = np.linspace(1.0, 1.0 + float(rng.uniform(-0.15, 0.15)), n_frames, dtype=np.float32)
    frames = background[None] * gain[:, None, None, None]  # T, 3, H, W
    # The blob is blended only inside the box its whole path covers: most pixels never see it.
    low = np.maximum(np.floor(centres.min(axis=0) - radius - 1.0), 0).astype(int)
    high = np.minimum(np.ceil(centres.max(axis=0) + radius + 2.0), (width, height)).astype(int)
    ys = np.arange(low[1], high[1], dtype=np.float32)[None, :, None]
    xs = np.arange(low[0], high[0], dtype=np.float32)[None, None, :]
    dist = np.sqrt((xs - centres[:, 0, None, None]) ** 2 + (ys - centres[:, 1, None, None]) ** 2)
    alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)[:, None]  # anti-aliased disc edge
    box = frames[:, :, low[1]:high[1], low[0]:high[0]]
    box += alpha * (colour[None, :, None, None] - box)
    # Fresh grey sensor noise in every frame (uniform, std about 5 grey levels).
    frames += rng.integers(-_NOISE, _NOISE + 1, (n_frames, 1, height, width), dtype=np.int8)
    frames += 0.5  # round, not truncate, in the cast below
    pixels = np.clip(frames, 0.0, 255.0, out=frames).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


@functools.lru_cache(maxsize=2)
def motion_clips(heldout: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """The clips of the training set (or the held-out set) and their class ids.

    Returns:
        clips uint8 [N, 16, 64, 64, 3] and labels int64 [N] (balanced, shuffled). Cached:
        treat the arrays as read-only.
    """
    per_class = HELDOUT_PER_CLASS if heldout else TRAIN_PER_CLASS
    rng = np.random.default_rng(_SEEDS[heldout])
    labels = rng.permutation(np.repeat(np.arange(len(MOTION_LABELS)), per_class))
    height, width = FRAME_SIZE
    clips = np.empty((len(labels), CLIP_LENGTH, height, width, 3), np.uint8)
    for i, label in enumerate(labels):
        clips[i] = _render(rng, int(label), CLIP_LENGTH, height, width)
    clips.flags.writeable = False
    labels.flags.writeable = False
    return clips, labels.astype(np.int64)


def motion_frames(label: int, n_frames: int, seed: int, height: int = 64,
                  width: int = 64) -> List[np.ndarray]:
    """A sequence of one motion for publishers and tests, e.g. 40 frames for a camera.

    Args:
        label: Class id (index into MOTION_LABELS).
        n_frames: Frames in the sequence; the blob is slower the longer it is, so it stays
            in view throughout.
        seed: Seed of this sequence.
        height: Frame height.
        width: Frame width.

    Returns:
        ``n_frames`` uint8 rgb frames (height x width x 3).
    """
    if not 0 <= label < len(MOTION_LABELS):
        raise DatasetError(f"motion label {label} is not a class id; use 0..{len(MOTION_LABELS) - 1}"
                           f" ({', '.join(MOTION_LABELS)})")
    if n_frames < 2:
        raise DatasetError(f"a motion needs at least 2 frames, got {n_frames}")
    frames = _render(np.random.default_rng(seed), label, n_frames, height, width)
    return list(frames)


def _dataset(name: str, fmt: Optional[ImageFormat], heldout: bool) -> Dataset:
    fmt = image_format_of(fmt, f"the model trained on '{name}'")
    if fmt.clip_length not in (0, CLIP_LENGTH):
        raise DatasetError(f"dataset '{name}' has {CLIP_LENGTH}-frame clips, but the model "
                           f"takes {fmt.clip_length}-frame clips; use a model with clip length "
                           f"{CLIP_LENGTH}")
    clips, labels = motion_clips(heldout)
    inputs = np.stack([fmt.clip(clip) for clip in clips])
    return Dataset(name, [inputs], [np.array(labels, np.int64)])


def motion(fmt: Optional[ImageFormat]) -> Dataset:
    """The built-in ``motion`` training set, as clips in ``fmt`` ([N, C, T, H, W] channels
    first, else [N, T, H, W, C]) with int64 class ids [N]."""
    return _dataset("motion", fmt, heldout=False)


def motion_heldout(fmt: Optional[ImageFormat]) -> Dataset:
    """The held-out clips of ``motion`` (never trained on), in ``fmt``."""
    return _dataset("motion:heldout", fmt, heldout=True)
