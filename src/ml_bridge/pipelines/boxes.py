"""Boxes, the detections that carry them, and the square crops cut from them (no rospy).

:class:`Detections` is one detector message, neutral of its ROS type
(:mod:`ml_bridge.ros.detections` decodes them); :func:`square_crop` turns a box into the
square region of a frame the objects pipeline classifies.
"""
import math
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from ml_bridge.core.errors import InputError

#: Region of interest: (x_offset, y_offset, width, height) in image pixels.
Roi = Tuple[int, int, int, int]
#: The roi of a refused box.
NO_ROI: Roi = (0, 0, 0, 0)


@dataclass(frozen=True)
class Box:
    """One detection's box, in pixels of the frame it was detected on."""

    x_center: float
    y_center: float
    width: float
    height: float


@dataclass
class Detections:
    """One detections message, neutral of its ROS type.

    Attributes:
        stamp_ns: the stamp of the frame the boxes belong to, in integer nanoseconds.
        boxes: the boxes in message order (the order of ``objects``).
        header: published with the result when no frame is needed (every crop given).
        crops_given: per box, an image of the object supplied with the detection (Detection2D
            ``source_img``; H x W or H x W x 3 RGB uint8) or None; None: no box has one.
        track_ids: per box, the id an upstream tracker gave it (0: no confirmed track);
            None: the detector tracks nothing.
    """

    stamp_ns: int
    boxes: List[Box]
    header: Any = None
    crops_given: Optional[List[Optional[np.ndarray]]] = None
    track_ids: Optional[List[int]] = None

    def self_contained(self) -> bool:
        """True when every box brings its own image: no frame is needed."""
        return bool(self.boxes) and self.crops_given is not None and \
            all(c is not None for c in self.crops_given)

    def given(self, index: int) -> Optional[np.ndarray]:
        """The image supplied for box ``index``, or None."""
        return self.crops_given[index] if self.crops_given is not None else None

    @property
    def frame_id(self) -> str:
        """The ``frame_id`` of the image the boxes were found on; "" when not told."""
        return str(getattr(self.header, "frame_id", "") or "")


@dataclass
class ObjectResult:
    """One classified (or refused) detection, as ``~objects`` publishes it."""

    detection_index: int
    roi: Roi                 # the square crop that was classified; NO_ROI when refused
    class_id: int            # -1: the box was refused
    score: float             # probability of class_id
    label: str


def square_crop(box: Box, frame_w: int, frame_h: int) -> Roi:
    """The square crop of ``box``: its shorter side widened to the longer about the centre,
    then clamped to the frame (so at a border, or for a box larger than the frame, the crop
    is the part of the square inside the frame).

    Returns:
        (x0, y0, width, height) in whole pixels.

    Raises:
        InputError: a size that is zero, negative or not finite, a non-finite centre, or a
            square entirely outside the frame.
    """
    values = (box.x_center, box.y_center, box.width, box.height)
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"box {_describe(box)} has a value that is not finite")
    if not (box.width > 0 and box.height > 0):
        raise InputError(f"box {_describe(box)} has no area (width and height must be > 0)")
    side = max(box.width, box.height)
    x0, x1 = _span(box.x_center, side, frame_w)
    y0, y1 = _span(box.y_center, side, frame_h)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {_describe(box)} lies outside the {frame_w} x {frame_h} frame")
    return x0, y0, x1 - x0, y1 - y0


def _span(center: float, side: float, limit: int) -> Tuple[int, int]:
    """Whole-pixel [start, stop) of ``side`` about ``center``, clamped to [0, limit]."""
    start = math.floor(center - side / 2.0 + 0.5)
    stop = start + max(1, math.floor(side + 0.5))
    return max(0, start), min(limit, stop)


def _describe(box: Box) -> str:
    return (f"(centre {box.x_center:g}, {box.y_center:g}, size {box.width:g} x "
            f"{box.height:g})")
