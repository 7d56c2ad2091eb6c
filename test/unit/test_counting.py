"""Counting per label and across ~count_lines (pipelines/counting.py) on scripted tracks."""
from typing import List, Sequence, Tuple

import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.counting import Counter, CountLine, Counts, parse_count_lines
from ml_bridge.pipelines.tracking import Tracker, TrackSettings

BASE_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 100_000_000
# Drawn from top to bottom at x = 100: forward is left to right.
DOOR = CountLine("door", (100.0, 0.0), (100.0, 200.0))


def run(tracker: Tracker, counter: Counter, path: Sequence[List[Tuple[float, float, int]]],
        start: int = 0) -> Counts:
    """Feeds frames of (centre x, centre y, class id) detections; the last frame's counts."""
    counts = Counts()
    for i, dets in enumerate(path):
        boxes = np.array([[x - 8, y - 8, x + 8, y + 8] for x, y, _ in dets], np.float32)
        classes = [c for _, _, c in dets]
        out = tracker.update(BASE_NS + (start + i) * STEP_NS, boxes, classes, [0.8] * len(dets),
                             ["car" if c == 0 else "person" for c in classes])
        counts = counter.update(out.tracks, out.ended)
    return counts


def test_side_follows_the_contract() -> None:
    assert DOOR.side((50.0, 100.0)) == 1 and DOOR.side((150.0, 100.0)) == -1
    assert DOOR.side((100.0, 42.0)) == 0


def test_every_crossing_is_counted_once_per_direction() -> None:
    tracker, counter = Tracker(TrackSettings(min_hits=1)), Counter([DOOR])
    right = [[(80.0 + 5 * i, 100.0, 0)] for i in range(9)]        # 80 -> 120: forward
    left = [[(120.0 - 5 * i, 100.0, 0)] for i in range(9)]        # and back: backward
    counts = run(tracker, counter, right + left + right + left)   # back and forth twice
    assert (counts.lines, counts.forward, counts.backward) == (["door"], [1], [1])
    other = run(Tracker(TrackSettings(min_hits=1)), counter, right, start=100)
    assert (other.forward, other.backward) == ([2], [1])          # another track counts again


def test_a_centre_on_the_line_is_counted_when_it_reaches_the_other_side() -> None:
    tracker, counter = Tracker(TrackSettings(min_hits=1)), Counter([DOOR])
    path = [[(95.0, 100.0, 0)], [(100.0, 100.0, 0)], [(100.0, 100.0, 0)], [(104.0, 100.0, 0)]]
    counts = run(tracker, counter, path[:3])
    assert counts.forward == [0]
    assert run(tracker, counter, path[3:], start=3).forward == [1]


def test_a_crossing_beyond_the_ends_of_the_line_is_not_counted() -> None:
    tracker, counter = Tracker(TrackSettings(min_hits=1)), Counter([DOOR])
    below = [[(80.0 + 5 * i, 260.0, 0)] for i in range(9)]        # under the door's bottom
    assert run(tracker, counter, below).forward == [0]


def test_a_crossing_made_while_tentative_counts_once_confirmed() -> None:
    tracker, counter = Tracker(TrackSettings(min_hits=3)), Counter([DOOR])
    path = [[(94.0 + 5 * i, 100.0, 0)] for i in range(4)]         # crosses between frames 1, 2
    counts = run(tracker, counter, path)
    assert counts.forward == [1] and counts.backward == [0]


def test_in_frame_and_total_per_label() -> None:
    tracker, counter = Tracker(TrackSettings(min_hits=2, max_age=0.15)), Counter()
    cars = [[(30.0, 30.0, 0), (150.0, 30.0, 0), (90.0, 150.0, 1)] for _ in range(3)]
    counts = run(tracker, counter, cars)
    assert (counts.labels, counts.in_frame, counts.total) == (["car", "person"], [2, 1], [2, 1])
    gone = run(tracker, counter, [[(30.0, 30.0, 0)]] * 3, start=3)   # two left, ended
    assert (gone.labels, gone.in_frame, gone.total) == (["car", "person"], [1, 0], [2, 1])
    assert gone.of("car") == (1, 2) and gone.of("bike") == (0, 0)


@pytest.mark.parametrize("value, message", [
    ({"name": "a"}, "must be a list"),
    ([["a", [[0, 0], [1, 1]]]], r"~count_lines\[0\] must be a dict"),
    ([{"name": "", "points": [[0, 0], [1, 1]]}], "name must be a non-empty string"),
    ([{"name": "a", "points": [[0, 0]]}], "'a': points must be two points"),
    ([{"name": "a", "points": [[0, 0], [1, float("nan")]]}], "finite"),
    ([{"name": "a", "points": [[0, 0], [True, 1]]}], "two points"),
    ([{"name": "a", "points": [[3, 4], [3, 4]]}], "the same"),
    ([{"name": "a", "points": [[0, 0], [1, 1]], "colour": 1}], "unknown field 'colour'"),
    ([{"name": "a", "points": [[0, 0], [1, 1]]}, {"name": "a", "points": [[0, 0], [2, 1]]}],
     r"\[1\] 'a': another line has this name"),
])
def test_bad_count_lines_are_refused_naming_the_line(value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_count_lines(value)


def test_count_lines_parse() -> None:
    assert parse_count_lines(None) == [] and parse_count_lines([]) == []
    assert parse_count_lines([{"name": "door", "points": [[100, 0], [100, 200.0]]}]) == [DOOR]
