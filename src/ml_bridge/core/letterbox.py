"""Fitting a frame to a detector's input: letterbox (aspect kept, grey padding) or stretch,
and the transform that takes boxes back; numpy and OpenCV only (no rospy, no framework).

:func:`ml_bridge.core.detection.map_to_frame` applies the transform to decoded boxes.
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from numpy.typing import ArrayLike

from ml_bridge.core.errors import InputError

#: The grey that pads a letterboxed image (the value YOLO exports are trained with).
PAD_VALUE = 114


@dataclass(frozen=True)
class FrameTransform:
    """How a frame was fitted to the model's input: input = frame x scale + pad.

    Attributes:
        scale_x, scale_y: input pixels per frame pixel.
        pad_x, pad_y: input pixels of padding left of and above the frame's image.
        frame_width, frame_height: the frame's size, the limits boxes are clipped to.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    frame_width: int
    frame_height: int


def stretch_transform(frame_size: Tuple[int, int], input_size: Tuple[int, int]) -> FrameTransform:
    """The transform of a plain resize of a (height, width) frame to (height, width)."""
    (fh, fw), (ih, iw) = frame_size, input_size
    return FrameTransform(iw / fw, ih / fh, 0.0, 0.0, fw, fh)


def letterbox(image: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, FrameTransform]:
    """Resizes keeping the aspect ratio and pads with grey 114 to ``size`` (height, width),
    the image centred.

    Returns:
        The padded image (same dtype and channels as ``image``) and the transform that
        :func:`~ml_bridge.core.detection.map_to_frame` undoes.
    """
    import cv2

    from ml_bridge.core.vision import resize

    height, width = int(size[0]), int(size[1])
    fh, fw = image.shape[:2]
    if fh < 1 or fw < 1:
        raise InputError(f"cannot letterbox an empty image of shape {list(image.shape)}")
    scale = min(height / fh, width / fw)
    new_w, new_h = max(1, min(width, round(fw * scale))), max(1, min(height, round(fh * scale)))
    small = resize(image, (new_h, new_w))
    left, top = (width - new_w) // 2, (height - new_h) // 2
    padded = cv2.copyMakeBorder(np.ascontiguousarray(small), top, height - new_h - top, left,
                                width - new_w - left, cv2.BORDER_CONSTANT,
                                value=(PAD_VALUE,) * 4)
    if padded.ndim < image.ndim:  # OpenCV drops a single-channel axis
        padded = padded[:, :, None]
    # The rounded size sets the scale, so mapping back is exact at the image's edges.
    return padded, FrameTransform(new_w / fw, new_h / fh, float(left), float(top), fw, fh)


def clip_boxes(boxes: ArrayLike, width: float, height: float) -> np.ndarray:
    """[K, 4] x1 y1 x2 y2 clipped to [0, width] x [0, height]."""
    limits = np.array([width, height, width, height], np.float32)
    return np.clip(np.asarray(boxes, np.float32), 0.0, limits).astype(np.float32)
