"""Drawing for ``~overlay`` (numpy and OpenCV only): boxes with labels, a top label, count lines.

Every function draws in place on an H x W x 3 RGB or H x W mono uint8 image and returns it.
That image must be the pipeline's own copy, never the frame the caller owns: start from
:func:`canvas`. Sizes follow the image's shorter side (:func:`style_for`): text is legible
on 640 x 480 and still fits a 64 x 64 frame. Text sits on a filled box in a colour of its
own, so it reads on any ground, and is always kept inside the image.
"""
import math
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.boxes import NO_ROI, Box, ObjectResult

#: An RGB colour.
Colour = Tuple[int, int, int]
#: A count line's end points, (x, y) in frame pixels.
Segment = Tuple[Tuple[float, float], Tuple[float, float]]

FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Background of :func:`draw_label` and of count lines' text.
TEXT_BOX = (32, 32, 32)
#: The colour of count lines.
LINE_COLOUR = (255, 255, 0)


def _box_palette(count: int = 256) -> List[Colour]:
    """Bright colours, hue stepping by the golden ratio from orange; every other one darker."""
    ids = np.arange(count)
    hue = np.round((0.08 + ids * 0.6180339887) % 1.0 * 180).astype(np.uint8) % 180
    val = np.where(ids % 2 == 1, 200, 255).astype(np.uint8)
    hsv = np.stack([hue, np.full(count, 230, np.uint8), val], axis=-1)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
    return [(int(r), int(g), int(b)) for r, g, b in rgb]


_BOX_PALETTE = _box_palette()


@dataclass(frozen=True)
class Style:
    """Sizes for one image size (pixels, except the font scale)."""

    font_scale: float
    text_thickness: int
    line_thickness: int
    pad: int


def style_for(shape: Tuple[int, ...]) -> Style:
    """Sizes for an image of ``shape`` (H, W[, C]), from its shorter side.

    At 480 pixels the text is about 14 pixels high with 2-pixel box lines; below 200 pixels
    the font stops shrinking (smaller Hershey text is unreadable) and lines are 1 pixel.
    """
    short = max(1, min(shape[0], shape[1]))
    scale = max(0.25, short / 800.0)
    return Style(font_scale=scale, text_thickness=1 if scale < 0.8 else 2,
                 line_thickness=max(1, int(round(short / 240.0))), pad=max(1, int(round(short / 160.0))))


def canvas(image: np.ndarray) -> np.ndarray:
    """A writable, contiguous copy of a frame's image to draw on (the frame stays untouched).

    Raises:
        InputError: not an H x W or H x W x 3 uint8 image.
    """
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(f"an overlay is drawn on H x W or H x W x 3 uint8 images, got "
                         f"{image.dtype} {list(image.shape)}")
    return np.array(image, dtype=np.uint8, order="C", copy=True)


def class_colour(class_id: Optional[int] = None, label: str = "") -> Colour:
    """A distinct colour per class: by class id, else by label (stable across runs).

    Hues step by the golden ratio, so any two ids, not only neighbours, differ clearly.
    """
    if class_id is None or class_id < 0:
        class_id = zlib.crc32(label.encode("utf-8"))
    return _BOX_PALETTE[class_id % len(_BOX_PALETTE)]


def _ink(image: np.ndarray, colour: Colour) -> Tuple[int, ...]:
    """``colour`` as OpenCV draws it on ``image``: RGB, or its luma on a mono image."""
    if image.ndim == 2:
        return (_luma(colour),)
    return colour


def _luma(colour: Colour) -> int:
    return int(round(0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]))


def _text_colour(background: Colour) -> Colour:
    """Black on light backgrounds, white on dark ones."""
    return (0, 0, 0) if _luma(background) >= 128 else (255, 255, 255)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or not image.flags.writeable or not image.flags.c_contiguous \
            or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(f"drawing needs a writable, contiguous H x W or H x W x 3 uint8 "
                         f"image, got {image.dtype} {list(image.shape)}; draw on canvas(frame)")


def text_box(image: np.ndarray, text: str, x: float, y: float, background: Colour,
             style: Optional[Style] = None, below: bool = False) -> Tuple[int, int, int, int]:
    """Draws ``text`` on a filled box whose bottom-left corner is (x, y) (top-left with
    ``below``), moved as little as needed to lie inside the image.

    Returns:
        The box drawn, (x0, y0, x1, y1) in pixels, x1 and y1 exclusive.
    """
    _check_image(image)
    style = style or style_for(image.shape)
    (width, height), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.text_thickness)
    box_w, box_h = width + 2 * style.pad, height + baseline + 2 * style.pad
    rows, cols = image.shape[:2]
    x0 = int(min(max(0, round(x)), max(0, cols - box_w)))
    y0 = int(round(y)) if below else int(round(y)) - box_h
    y0 = min(max(0, y0), max(0, rows - box_h))
    x1, y1 = min(cols, x0 + box_w), min(rows, y0 + box_h)
    cv2.rectangle(image, (x0, y0), (x1 - 1, y1 - 1), _ink(image, background), cv2.FILLED)
    cv2.putText(image, text, (x0 + style.pad, y0 + style.pad + height), FONT, style.font_scale,
                _ink(image, _text_colour(background)), style.text_thickness, cv2.LINE_AA)
    return x0, y0, x1, y1


def box_text(label: str, score: Optional[float], track_id: Optional[int] = None,
             class_id: Optional[int] = None) -> str:
    """What a box's label reads: ``#<track> <label> <score>`` (an unnamed class by its id)."""
    name = label or ("" if class_id is None else f"class {class_id}")
    parts = [f"#{track_id}"] if track_id is not None else []
    if name:
        parts.append(name)
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def draw_boxes(image: np.ndarray, boxes: Sequence[Sequence[float]], labels: Sequence[str],
               scores: Sequence[float], track_ids: Optional[Sequence[Optional[int]]] = None,
               class_ids: Optional[Sequence[int]] = None) -> np.ndarray:
    """Draws each box with its label, score (and track id) in its class's colour (on a mono
    image: white boxes on a black casing, labels on a dark box).

    Args:
        image: what to draw on, in place (a :func:`canvas`).
        boxes: x1, y1, x2, y2 per box in the image's pixels; a box reaching out of the image is
            drawn clipped to it, one entirely outside is not drawn.
        labels: per box; "" shows the class id when ``class_ids`` is given.
        scores: per box.
        track_ids: per box, its track's id (None: not tracked).
        class_ids: per box, picks the colour; None: the colour follows the label.

    Returns:
        ``image``.

    Raises:
        InputError: the lists differ in length, a box is not 4 finite numbers, or the image
            cannot be drawn on.
    """
    _check_image(image)
    count = len(boxes)
    for name, values in (("labels", labels), ("scores", scores), ("track_ids", track_ids),
                         ("class_ids", class_ids)):
        if values is not None and len(values) != count:
            raise InputError(f"draw_boxes: {count} boxes but {len(values)} {name}; give one per box")
    style = style_for(image.shape)
    rows, cols = image.shape[:2]
    for i, box in enumerate(boxes):
        coords = [float(v) for v in box]
        if len(coords) != 4 or not all(math.isfinite(v) for v in coords):
            raise InputError(f"draw_boxes: box {i} is {list(box)}; a box is x1, y1, x2, y2 "
                             "as finite frame pixels")
        x1, y1, x2, y2 = coords
        left, top = max(0, int(round(min(x1, x2)))), max(0, int(round(min(y1, y2))))
        right, bottom = min(cols - 1, int(round(max(x1, x2)))), min(rows - 1, int(round(max(y1, y2))))
        if right < left or bottom < top:
            continue  # entirely outside the image: nothing of it to show
        class_id = None if class_ids is None else int(class_ids[i])
        colour = class_colour(class_id, labels[i])
        if image.ndim == 2:
            # A class colour's luma may be the ground's own grey: white on a black casing
            # shows on any grey; the label gets the dark box of draw_label.
            cv2.rectangle(image, (left, top), (right, bottom), (0,), style.line_thickness + 2)
            colour = TEXT_BOX
            cv2.rectangle(image, (left, top), (right, bottom), (255,), style.line_thickness)
        else:
            cv2.rectangle(image, (left, top), (right, bottom), colour, style.line_thickness)
        track = None if track_ids is None else track_ids[i]
        text = box_text(labels[i], scores[i], track, class_id)
        if text:
            # Above the box's top-left corner; inside its top when there is no room above.
            text_box(image, text, left, top, colour, style, below=False)
    return image


def draw_label(image: np.ndarray, text: str) -> np.ndarray:
    """Writes ``text`` at the image's top-left corner on a dark box, one box per line of it
    (e.g. the top label and score; the counts per label).

    Returns:
        ``image``.
    """
    _check_image(image)
    style = style_for(image.shape)
    y = 0
    for line in text.split("\n"):
        if line:
            y = text_box(image, line, 0, y, TEXT_BOX, style, below=True)[3]
    return image


def label_score(label: str, score: float, class_id: Optional[int] = None) -> str:
    """The text of a top label: ``<label> <score>`` (an unnamed class by its id)."""
    return box_text(label, score, None, class_id)


def draw_lines(image: np.ndarray, lines: Sequence[Tuple[str, Segment]],
               counts: Sequence[Tuple[int, int]]) -> np.ndarray:
    """Draws each count line (yellow on a dark casing; white on mono images) with its name and
    its crossings, ``<name> >F <B`` (forward, backward) at the line's middle.

    Args:
        image: what to draw on, in place (a :func:`canvas`).
        lines: (name, ((x1, y1), (x2, y2))) in frame pixels, as ``~count_lines`` gives them.
        counts: (forward, backward) per line.

    Returns:
        ``image``.

    Raises:
        InputError: the lists differ in length or a point is not finite.
    """
    _check_image(image)
    if len(lines) != len(counts):
        raise InputError(f"draw_lines: {len(lines)} lines but {len(counts)} counts; give one "
                         "(forward, backward) per line")
    style = style_for(image.shape)
    for (name, ((x1, y1), (x2, y2))), (forward, backward) in zip(lines, counts):
        points = [float(v) for v in (x1, y1, x2, y2)]
        if not all(math.isfinite(v) for v in points):
            raise InputError(f"draw_lines: line '{name}' has a point that is not finite: {points}")
        start = (int(round(points[0])), int(round(points[1])))
        end = (int(round(points[2])), int(round(points[3])))
        # A dark casing: the line shows on light ground too (and on mono images, in white).
        cv2.line(image, start, end, _ink(image, (0, 0, 0)), style.line_thickness + 2)
        core = (255, 255, 255) if image.ndim == 2 else LINE_COLOUR
        cv2.line(image, start, end, _ink(image, core), style.line_thickness)
        middle_x, middle_y = (points[0] + points[2]) / 2.0, (points[1] + points[3]) / 2.0
        text_box(image, f"{name} >{forward} <{backward}", middle_x, middle_y, TEXT_BOX, style,
                 below=True)
    return image


def boxes_overlay(image: np.ndarray, boxes: List[Box], objects: List[ObjectResult],
                  track_ids: Optional[List[int]] = None) -> np.ndarray:
    """A copy of the frame with each classified object's box (the detector's, not the square
    crop), label and score (and confirmed track id, per box); refused objects are left out."""
    shown = [(box, o) for box, o in zip(boxes, objects) if o.class_id >= 0 and o.roi != NO_ROI]
    corners = [(b.x_center - b.width / 2.0, b.y_center - b.height / 2.0,
                b.x_center + b.width / 2.0, b.y_center + b.height / 2.0) for b, _ in shown]
    tracks = None if track_ids is None else [track_ids[o.detection_index] or None for _, o in shown]
    return draw_boxes(canvas(image), corners, [o.label for _, o in shown],
                      [o.score for _, o in shown], tracks, [o.class_id for _, o in shown])
