"""Image operations shared by the backends and the pipelines (numpy and OpenCV only).

:class:`ImageFormat` says what a vision model takes: input size, colour order, per-channel
mean and std (applied to pixel / 255) and layout. The same object turns frames into tensors
for training (built-in datasets) and for serving (the image pipelines), so the two never
disagree.
"""
import functools
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.core.params import Param, Schema

COLORS = ("rgb", "bgr", "gray")

#: The image format's ``~`` parameters (every image pipeline's): each one given overrides the
#: model's own format, field by field.
IMAGE_PARAMS = Schema(
    "preprocessing",
    Param("input_size", "ints", None, "the size the frame is resized to (area averaging to "
          "shrink, bilinear to enlarge)", count=2, low=1, note="[height, width]"),
    Param("mean", "floats", None, "per channel, applied to pixel / 255: "
          "`(pixel / 255 - mean) / std`", note="one value, or one per channel"),
    Param("std", "floats", None, "per channel, divides `pixel / 255 - mean`",
          note="one value, or one per channel"),
    Param("color", "str", None, "the channel order the model expects", choices=COLORS),
    Param("channels_first", "bool", None, "`true` for NCHW (torch's usual layout), `false` for "
          "NHWC (Keras's)"),
    Param("clip_length", "int", 0, "clip models: frames per clip", low=0,
          note="0 = the model's T"),
)
#: Parameter -> the ImageFormat field it overrides.
_FIELDS = {"input_size": "size", "mean": "mean", "std": "std", "color": "color",
           "channels_first": "channels_first", "clip_length": "clip_length"}


def to_gray(image: np.ndarray) -> np.ndarray:
    """H x W uint8 gray from H x W gray or H x W x 3 RGB."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    raise InputError(f"expected a gray (H x W) or RGB (H x W x 3) image, got shape "
                     f"{list(image.shape)}")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 RGB from H x W gray or H x W x 3 RGB."""
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    raise InputError(f"expected a gray (H x W) or RGB (H x W x 3) image, got shape "
                     f"{list(image.shape)}")


def resize(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Resizes to (height, width): area averaging to shrink, bilinear to enlarge.

    A large shrink first halves the image (exact 2 x 2 means, OpenCV's fast path) while both
    sides stay even and at least twice the target, then averages areas for the rest: a box
    filter as wide as the whole shrink, like one area resize (which it matches to a grey level
    on average on camera-like images; the boxes differ by under a halved pixel) at under half
    its cost.
    """
    import cv2

    height, width = size
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if not (height <= image.shape[0] and width <= image.shape[1]):
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    while (image.shape[0] >= 2 * height and image.shape[1] >= 2 * width
           and image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0):
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                           interpolation=cv2.INTER_AREA)
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class ImageFormat:
    """What a vision model takes for one frame.

    Attributes:
        size: (height, width) the frame is resized to.
        mean: per-channel mean subtracted from pixel / 255 (one value per channel).
        std: per-channel std that divides the result.
        color: channel order of the tensor: ``rgb``, ``bgr`` or ``gray`` (one channel).
        channels_first: NCHW (torch's convention) instead of NHWC (Keras's).
        clip_length: frames per clip for clip models (0: not a clip model).
    """

    size: Tuple[int, int]
    mean: Tuple[float, ...] = (0.0, 0.0, 0.0)
    std: Tuple[float, ...] = (1.0, 1.0, 1.0)
    color: str = "rgb"
    channels_first: bool = True
    clip_length: int = 0

    @property
    def channels(self) -> int:
        """Channels of the tensor: 1 for gray, else 3."""
        return 1 if self.color == "gray" else 3

    def check(self) -> "ImageFormat":
        """Returns self if consistent; raises InputError naming the bad field otherwise."""
        if len(self.size) != 2 or min(self.size) < 1:
            raise InputError(f"input_size must be [height, width] of positive sizes, got "
                             f"{list(self.size)}")
        if self.color not in COLORS:
            raise InputError(f"color must be one of {', '.join(COLORS)}, got '{self.color}'")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise InputError(f"{name} needs 1 or {self.channels} values for color "
                                 f"'{self.color}', got {list(values)}")
        if any(not s > 0 for s in self.std):
            raise InputError(f"std values must be > 0, got {list(self.std)}")
        if self.clip_length < 0:
            raise InputError(f"clip_length must be >= 0, got {self.clip_length}")
        return self

    def with_overrides(self, params: Mapping[str, Any]) -> "ImageFormat":
        """A copy with the fields :data:`IMAGE_PARAMS` gives in ``params`` (the node's ``~``
        parameters); a parameter not given (or ``~clip_length`` 0) leaves the field as it is.

        Raises:
            InputError: a parameter is invalid, or the result is not a consistent format.
        """
        changes: Dict[str, Any] = {}
        for name, value in IMAGE_PARAMS.read(params).items():
            if value is not None and not (name == "clip_length" and value == 0):
                changes[_FIELDS[name]] = tuple(value) if isinstance(value, list) else value
        return replace(self, **changes).check()

    def frame(self, image: np.ndarray) -> np.ndarray:
        """One frame (H x W gray or H x W x 3 RGB, uint8) -> float32 [C, H, W] or [H, W, C]."""
        return self._tensor(image, self.channels_first)

    def frame_hwc(self, image: np.ndarray) -> np.ndarray:
        """The frame resized, colour-converted and normalized, float32 H x W x C."""
        return self._tensor(image, False)

    def _tensor(self, image: np.ndarray, channels_first: bool) -> np.ndarray:
        if image.dtype != np.uint8:
            raise InputError(f"frames must be uint8, got {image.dtype}")
        small = resize(image, self.size)
        if self.color == "gray":
            small = to_gray(small)[:, :, None]
        else:
            small = to_rgb(small)
            if self.color == "bgr":
                small = small[:, :, ::-1]
        return normalize(small, self.mean, self.std, channels_first)

    def batch(self, images: Union[Sequence[np.ndarray], np.ndarray]) -> np.ndarray:
        """Several frames (a list, or an [N, H, W(, 3)] array) -> float32 [N, C, H, W] or
        [N, H, W, C]."""
        return np.stack([self.frame(im) for im in images])

    def clip(self, frames: Union[Sequence[np.ndarray], np.ndarray]) -> np.ndarray:
        """T frames -> one clip, float32 [C, T, H, W] (channels first) or [T, H, W, C]."""
        stacked = np.stack([self.frame_hwc(f) for f in frames])  # T, H, W, C
        return np.ascontiguousarray(stacked.transpose(3, 0, 1, 2)) if self.channels_first \
            else stacked

    def input_shape(self) -> Tuple[int, ...]:
        """Shape of one sample (no batch dimension) this format produces."""
        h, w = self.size
        c = self.channels
        if self.clip_length:
            t = self.clip_length
            return (c, t, h, w) if self.channels_first else (t, h, w, c)
        return (c, h, w) if self.channels_first else (h, w, c)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float],
              channels_first: bool = False) -> np.ndarray:
    """uint8 H x W x C -> float32 (pixel / 255 - mean) / std per channel, H x W x C (or C x H x W
    with ``channels_first``), written once into the result.

    The per-channel factors run along whole rows: numpy's broadcast of a length-3 last axis
    runs inner loops of 3, several times slower.
    """
    height, width, channels = image.shape
    scale, offset = _channel_factors(tuple(mean), tuple(std), channels)
    if channels_first:
        out = np.empty((channels, height, width), np.float32)
        np.multiply(image.transpose(2, 0, 1), scale[:, None, None], out=out)
        if offset.any():
            out -= offset[:, None, None]
        return out
    row_scale, row_offset = _channel_factors(tuple(mean), tuple(std), channels, width)
    out = np.empty((height, width * channels), np.float32)
    np.multiply(image.reshape(height, width * channels), row_scale, out=out)
    if offset.any():
        out -= row_offset
    return out.reshape(height, width, channels)


@functools.lru_cache(maxsize=64)
def _channel_factors(mean: Tuple[float, ...], std: Tuple[float, ...], channels: int,
                     repeat: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Per channel: 1 / (255 std) and mean / std, float32 (one value is repeated), the
    channels repeated ``repeat`` times (a whole row of an H x W x C image)."""
    m = np.broadcast_to(np.asarray(mean, np.float32), (channels,))
    s = np.broadcast_to(np.asarray(std, np.float32), (channels,))
    scale = np.tile((1.0 / (255.0 * s)).astype(np.float32), repeat)
    offset = np.tile((m / s).astype(np.float32), repeat)
    scale.flags.writeable = False  # cached and shared
    offset.flags.writeable = False
    return scale, offset


def digits_input(image: np.ndarray) -> List[np.ndarray]:
    """The digits_mlp image preprocessing: gray, 8 x 8, pixel / 255 -> float32 [1, 64]."""
    small = resize(to_gray(image), (8, 8)).astype(np.float32) / 255.0
    return [small.reshape(1, 64)]


def rgb_input(image: np.ndarray, size: Tuple[int, int], channels_first: bool) -> List[np.ndarray]:
    """RGB resized to ``size``, pixel / 255 -> float32 [1, H, W, 3] (or [1, 3, H, W])."""
    fmt = ImageFormat(size, channels_first=channels_first)
    return [fmt.frame(image)[None]]


def image_format_of(fmt: Optional[ImageFormat], what: str) -> ImageFormat:
    """``fmt`` or an InputError saying that ``what`` takes no images."""
    if fmt is None:
        raise InputError(f"{what} has no image format (it does not take images); serve a "
                         "vision model or set ~input_size")
    return fmt
