"""Overlay drawing: boxes where the boxes are, labels legible and inside the frame."""
import itertools
from typing import Tuple

import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.draw import (
    TEXT_BOX,
    canvas,
    class_colour,
    draw_boxes,
    draw_label,
    draw_lines,
    style_for,
)

GROUND = 120  # a mid grey: neither the text's black nor its white


def _frame(height: int = 480, width: int = 640) -> np.ndarray:
    return np.full((height, width, 3), GROUND, np.uint8)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return np.any(np.atleast_3d(before) != np.atleast_3d(after), axis=2)


def test_boxes_are_drawn_where_the_boxes_are() -> None:
    frame = _frame()
    out = draw_boxes(canvas(frame), [(100, 150, 300, 350)], ["car"], [0.87], class_ids=[2])
    colour = class_colour(2)
    thick = style_for(frame.shape).line_thickness
    for y, x in ((250, 100), (250, 300), (150, 200), (350, 200)):  # on each side of the outline
        assert tuple(out[y, x]) == colour, (y, x)
    changed = _changed(frame, out)
    outline = np.zeros_like(changed)
    outline[150 - thick:351 + thick, 100 - thick:301 + thick] = True
    outline[150 + thick + 1:350 - thick, 100 + thick + 1:300 - thick] = False
    label = np.zeros_like(changed)
    label[110:150, 100:300] = True  # above the box's top-left corner
    assert not changed[~(outline | label)].any()  # nothing inside or elsewhere outside
    # The label: a filled box in the class's colour with dark text on it.
    patch = out[110:150, 100:300][changed[110:150, 100:300]]
    assert (patch == colour).all(axis=1).sum() > 100
    assert (patch.max(axis=1) < 60).sum() > 20, "no text on the label's box"
    assert (frame == GROUND).all()  # canvas drew on a copy


def test_label_keeps_inside_the_frame_at_the_edges() -> None:
    middle = draw_boxes(canvas(_frame()), [(300, 200, 400, 300)], ["bicycle"], [0.5], [7], [1])
    corner = draw_boxes(canvas(_frame()), [(600, 0, 639, 60)], ["bicycle"], [0.5], [7], [1])
    rows, cols = np.nonzero(_changed(_frame(), middle)[:200])  # the label alone, above the box
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    # At the top right corner it moves left and down, whole: the same pixels as in the middle.
    label = middle[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    np.testing.assert_array_equal(corner[0:height, 640 - width:], label)


def test_track_id_and_score_are_part_of_the_label() -> None:
    plain = draw_boxes(canvas(_frame()), [(100, 150, 300, 350)], ["car"], [0.87])
    tracked = draw_boxes(canvas(_frame()), [(100, 150, 300, 350)], ["car"], [0.87], [42])
    assert _changed(plain, tracked)[100:150].sum() > 20  # "#42 car 0.87" is longer


def test_a_box_partly_outside_is_clipped_one_wholly_outside_is_not_drawn() -> None:
    frame = _frame(64, 64)
    out = draw_boxes(canvas(frame), [(-10, -10, 20, 20), (70, 70, 90, 90)], ["a", "b"],
                     [0.9, 0.9], class_ids=[0, 1])
    assert tuple(out[10, 20]) == class_colour(0)
    assert not _changed(frame, out)[30:, 30:].any()


@pytest.mark.parametrize("ground", [0, GROUND, 150, 255])
def test_boxes_on_mono_frames_show_on_any_grey(ground: int) -> None:
    gray = np.full((120, 160), ground, np.uint8)
    out = draw_boxes(canvas(gray), [(20, 40, 100, 100)], ["x"], [1.0], class_ids=[3])
    assert out.ndim == 2 and out[70, 20] == 255 and out[70, 19] == out[70, 21] == 0
    assert out[70, 60] == ground


@pytest.mark.parametrize("call, cause", [
    (lambda img: draw_boxes(img, [(0, 0, 5, 5)], [], [0.5]), "1 boxes but 0 labels"),
    (lambda img: draw_boxes(img, [(0, 0, float("nan"), 5)], ["a"], [0.5]), "finite"),
    (lambda img: draw_boxes(img, [(0, 0, 5)], ["a"], [0.5]), "x1, y1, x2, y2"),
    (lambda img: draw_lines(img, [("door", ((0, 0), (5, 5)))], []), "1 lines but 0 counts"),
    (lambda img: draw_label(img[:, ::2], "x"), "canvas"),
])
def test_bad_input_names_the_cause(call: object, cause: str) -> None:
    with pytest.raises(InputError, match=cause):
        call(canvas(_frame(32, 32)))  # type: ignore[operator]


def test_canvas_refuses_what_is_not_an_8_bit_image() -> None:
    with pytest.raises(InputError, match="uint8"):
        canvas(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("size", [(480, 640), (64, 64)])
def test_top_label_sits_at_the_top_left_with_readable_text(size: Tuple[int, int]) -> None:
    frame = _frame(*size)
    out = draw_label(canvas(frame), "person 0.93")
    rows, cols = np.nonzero(_changed(frame, out))
    assert rows.min() == 0 and cols.min() == 0
    assert rows.max() < size[0] // 3  # a line of text, not a banner over the frame
    patch = out[:rows.max() + 1, :cols.max() + 1]
    assert (patch == TEXT_BOX).all(axis=2).sum() > patch.shape[0] * patch.shape[1] // 3
    assert (patch.min(axis=2) > 200).sum() > 10, "no white text on the dark box"


def test_label_lines_stack_downwards() -> None:
    one = draw_label(canvas(_frame()), "car: 2")
    two = draw_label(canvas(_frame()), "car: 2\nperson: 1")
    assert _changed(_frame(), two).any(axis=1).sum() > 1.8 * _changed(_frame(), one).any(axis=1).sum()


def test_count_lines_are_drawn_with_their_counts() -> None:
    frame = _frame()
    out = draw_lines(canvas(frame), [("door", ((320, 0), (320, 479)))], [(4, 1)])
    assert tuple(out[50, 320]) == (255, 255, 0)
    assert not _changed(frame, out)[:, :300].any()
    light = np.full((100, 100), 230, np.uint8)  # yellow's luma is about as light: a casing
    mono = draw_lines(canvas(light), [("door", ((50, 0), (50, 99)))], [(0, 0)])
    assert mono[20, 50] == 255 and mono[20, 49] < 100 and mono[20, 51] < 100
    near_middle = out[240:280, 320:460]
    assert (near_middle.min(axis=2) > 200).sum() > 10  # the text "door >4 <1"


def test_class_colours_are_distinct() -> None:
    colours = [np.array(class_colour(i), float) for i in range(20)]
    closest = min(np.abs(a - b).sum() for a, b in itertools.combinations(colours, 2))
    assert closest > 40
    assert class_colour(None, "car") == class_colour(None, "car") != class_colour(None, "cat")
