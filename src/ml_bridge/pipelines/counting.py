"""Counting confirmed tracks per label and across lines (``~count_lines``); numpy-free, no rospy.

A count line is ``{name, points: [[x1, y1], [x2, y2]]}`` in frame pixels (x right, y down).
With p0, p1 its points and c a box centre, ``side(c) = sign((p1.x - p0.x) * (c.y - p0.y) -
(p1.y - p0.y) * (c.x - p0.x))``. A track crosses a line when its centre goes from one side to
the other and the step between the two centres passes between the line's two points;
``forward`` counts crossings from side +1 to side -1 (for a line drawn from top to bottom:
left to right), ``backward`` the others. Each track counts at most once per line and
direction, however often it goes back and forth. A centre exactly on the line has no side:
the crossing is counted when it reaches the other side.

A track is followed from the centre of its first box (:attr:`TrackState.origin`), so an object
that crossed while its track was still tentative is counted when the track is confirmed.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Set, Tuple

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.tracking import TrackState

Point = Tuple[float, float]


@dataclass(frozen=True)
class CountLine:
    """One of ``~count_lines``."""

    name: str
    p0: Point
    p1: Point

    def side(self, c: Point) -> int:
        """+1, -1, or 0 on the line (see the module docstring)."""
        cross = ((self.p1[0] - self.p0[0]) * (c[1] - self.p0[1])
                 - (self.p1[1] - self.p0[1]) * (c[0] - self.p0[0]))
        return (cross > 0) - (cross < 0)

    def spans(self, a: Point, b: Point) -> bool:
        """True when the step from ``a`` to ``b`` (on opposite sides) passes between p0 and p1:
        the line's points are not both on the same side of the step."""
        def turn(p: Point) -> float:
            return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

        return turn(self.p0) * turn(self.p1) <= 0.0


def parse_count_lines(value: Any) -> List[CountLine]:
    """Validates ``~count_lines``: a list of ``{name, points: [[x1, y1], [x2, y2]]}`` (None or
    empty: no lines).

    Raises:
        InputError: naming the line (index and name) and what is wrong with it.
    """
    if value is None or value == "" or value == []:
        return []
    example = "e.g. [{name: door, points: [[320, 0], [320, 480]]}]"
    if not isinstance(value, (list, tuple)):
        raise InputError(f"~count_lines must be a list of {{name, points}}, {example}; "
                         f"got {type(value).__name__} {value!r}")
    lines: List[CountLine] = []
    for index, item in enumerate(value):
        where = f"~count_lines[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"{where} must be a dict {{name, points}}, {example}; got {item!r}")
        unknown = [k for k in item if k not in ("name", "points")]
        if unknown:
            raise InputError(f"{where}: unknown field {unknown[0]!r}; a line has name and points")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: name must be a non-empty string, got {name!r}")
        where = f"{where} '{name}'"
        if any(line.name == name for line in lines):
            raise InputError(f"{where}: another line has this name; give each line its own")
        points = item.get("points")
        if points is None or not _is_segment(points):
            raise InputError(f"{where}: points must be two points [[x1, y1], [x2, y2]] of "
                             f"finite frame pixels, got {points!r}")
        p0 = (float(points[0][0]), float(points[0][1]))
        p1 = (float(points[1][0]), float(points[1][1]))
        if p0 == p1:
            raise InputError(f"{where}: its two points are the same, {list(p0)}; a line needs "
                             "two different points")
        lines.append(CountLine(name, p0, p1))
    return lines


def _is_segment(points: Any) -> bool:
    if not isinstance(points, (list, tuple)) or len(points) != 2:
        return False
    for point in points:
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            return False
        for v in point:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                return False
    return True


@dataclass
class Counts:
    """One frame's counts, as ``ml_bridge/Counts`` carries them."""

    labels: List[str] = field(default_factory=list)
    in_frame: List[int] = field(default_factory=list)
    total: List[int] = field(default_factory=list)
    lines: List[str] = field(default_factory=list)
    forward: List[int] = field(default_factory=list)
    backward: List[int] = field(default_factory=list)

    def of(self, label: str) -> Tuple[int, int]:
        """(in_frame, total) of ``label``; (0, 0) for a label not seen."""
        if label in self.labels:
            i = self.labels.index(label)
            return self.in_frame[i], self.total[i]
        return 0, 0


class Counter:
    """Counts of one camera since the node started; :meth:`update` once per tracked frame."""

    def __init__(self, lines: Sequence[CountLine] = ()) -> None:
        """Starts with every count at zero."""
        self.lines = list(lines)
        self._totals: Dict[str, int] = {}           # label -> unique confirmed tracks
        self._counted: Set[int] = set()             # track ids in the totals
        self._forward = [0] * len(self.lines)
        self._backward = [0] * len(self.lines)
        # (track id, line index) -> (last side off the line, the centre that had it)
        self._sides: Dict[Tuple[int, int], Tuple[int, Point]] = {}
        self._crossed: Set[Tuple[int, int, int]] = set()   # (track id, line, direction)

    def update(self, tracks: Sequence[TrackState], ended: Sequence[TrackState] = (),
               labels: Sequence[str] = ()) -> Counts:
        """Takes the confirmed tracks of a frame (and those that ended) -> the counts.

        Args:
            tracks: the confirmed tracks matched in the frame.
            ended: tracks that ended: what was kept about them is dropped.
            labels: per track, the label to count it under (default: the track's own, e.g.
                a secondary classifier's).
        """
        names = list(labels) if labels else [t.label for t in tracks]
        in_frame: Dict[str, int] = {}
        for track, label in zip(tracks, names):
            in_frame[label] = in_frame.get(label, 0) + 1
            if track.id not in self._counted:
                self._counted.add(track.id)
                self._totals[label] = self._totals.get(label, 0) + 1
            for index, line in enumerate(self.lines):
                self._follow(track, index, line)
        for track in ended:
            self._counted.discard(track.id)   # ids are never reused: the set stays small
            for index in range(len(self.lines)):
                self._sides.pop((track.id, index), None)
                self._crossed.discard((track.id, index, 1))
                self._crossed.discard((track.id, index, -1))
        for label in in_frame:
            self._totals.setdefault(label, 0)
        known = list(self._totals)
        return Counts(known, [in_frame.get(k, 0) for k in known], [self._totals[k] for k in known],
                      [line.name for line in self.lines], list(self._forward), list(self._backward))

    def _follow(self, track: TrackState, index: int, line: CountLine) -> None:
        """Counts a crossing of ``line`` by ``track``'s centre since its last side."""
        key = (track.id, index)
        if key not in self._sides:
            start = line.side(track.origin)
            if start:
                self._sides[key] = (start, track.origin)
        centre = track.centre
        side = line.side(centre)
        if not side:
            return
        last = self._sides.get(key)
        self._sides[key] = (side, centre)
        if last is None or last[0] == side or not line.spans(last[1], centre):
            return
        direction = 1 if last[0] > 0 else -1     # +1 -> -1 is forward
        if (track.id, index, direction) in self._crossed:
            return
        self._crossed.add((track.id, index, direction))
        if direction == 1:
            self._forward[index] += 1
        else:
            self._backward[index] += 1
