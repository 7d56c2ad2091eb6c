"""Counting confirmed tracks per label and across lines (``~count_lines``); numpy, no rospy.

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
import collections
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.tracking import TrackArrays, TrackState

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
    """Counts of one camera since the node started; :meth:`update` once per tracked frame.

    What it keeps per followed track is in rows of arrays (one row per track id, one column
    per line), so a frame costs array operations over all tracks and lines at once.
    """

    def __init__(self, lines: Sequence[CountLine] = ()) -> None:
        """Starts with every count at zero."""
        self.lines = list(lines)
        count = len(self.lines)
        self._p0 = np.array([line.p0 for line in self.lines], np.float64).reshape(-1, 2)
        self._p1 = np.array([line.p1 for line in self.lines], np.float64).reshape(-1, 2)
        self._dx, self._dy = self._p1[:, 0] - self._p0[:, 0], self._p1[:, 1] - self._p0[:, 1]
        self._totals: Dict[str, int] = {}           # label -> unique confirmed tracks
        self._ids = np.zeros(0, np.int64)           # the followed tracks' ids, ascending
        # Per row and line: the last side off the line (+1.0, -1.0; 0.0: none yet) and the
        # centre that had it; per row, line and direction (forward, backward): whether it was
        # counted.
        self._side = np.zeros((0, count))
        self._point = np.zeros((0, count, 2), np.float64)
        self._crossed = np.zeros((0, count, 2), bool)
        self._forward = np.zeros(count, np.int64)
        self._backward = np.zeros(count, np.int64)

    def update(self, tracks: Sequence[TrackState], ended: Sequence[TrackState] = (),
               labels: Sequence[str] = ()) -> Counts:
        """Takes the confirmed tracks of a frame (and those that ended) -> the counts.

        Args:
            tracks: the confirmed tracks matched in the frame.
            ended: tracks that ended: what was kept about them is dropped.
            labels: per track, the label to count it under (default: the track's own, e.g.
                a secondary classifier's).
        """
        return self.update_arrays(TrackArrays.of(tracks), [t.id for t in ended], labels)

    def update_arrays(self, tracks: TrackArrays, ended_ids: Sequence[int] = (),
                      labels: Sequence[str] = ()) -> Counts:
        """:meth:`update` with the tracks as columns and the ended ones by id."""
        names = list(labels) if labels else tracks.labels
        if len(names) < len(tracks):   # as zip would: tracks without a label are not counted
            tracks = tracks.take(np.arange(len(names)))
        in_frame = collections.Counter(names[:len(tracks)])   # keys in order of appearance
        rows = self._rows_of(tracks.ids, names, tracks.origins)
        if self.lines and len(rows):
            self._follow(rows, tracks.centres())
        if ended_ids:
            self._forget(ended_ids)
        for label in in_frame:
            self._totals.setdefault(label, 0)
        known = list(self._totals)
        return Counts(known, [in_frame.get(k, 0) for k in known], [self._totals[k] for k in known],
                      [line.name for line in self.lines], self._forward.tolist(),
                      self._backward.tolist())

    def _rows_of(self, ids: np.ndarray, names: Sequence[str], origins: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` (the rows are kept in id order); a track seen for the first
        time gets one, followed from its origin, and is counted under its label."""
        rows = np.searchsorted(self._ids, ids)
        known = rows < len(self._ids)
        known[known] = self._ids[rows[known]] == ids[known]
        if known.all():
            return rows
        new: Dict[int, int] = {}   # id -> its first index in this frame
        for i in np.flatnonzero(~known).tolist():
            new.setdefault(int(ids[i]), i)
        for i in new.values():
            self._totals[names[i]] = self._totals.get(names[i], 0) + 1
        first = np.array(list(new.values()), np.int64)
        # A track is followed from its first box's centre: its side of each line, if on one.
        start = self._sides(origins[first])
        point = np.broadcast_to(origins[first][:, None, :], start.shape + (2,))
        ids_now = np.concatenate([self._ids, ids[first]])
        order = np.argsort(ids_now, kind="stable")
        self._ids = ids_now[order]
        self._side = np.concatenate([self._side, start])[order]
        self._point = np.concatenate([self._point, point])[order]
        self._crossed = np.concatenate([self._crossed,
                                        np.zeros((len(first), len(self.lines), 2), bool)])[order]
        return np.searchsorted(self._ids, ids)

    def _sides(self, points: np.ndarray) -> np.ndarray:
        """[N, L] :meth:`CountLine.side` of each point [N, 2] for each line (as floats)."""
        cross = (self._dx * (points[:, 1, None] - self._p0[:, 1])
                 - self._dy * (points[:, 0, None] - self._p0[:, 0]))
        return np.sign(cross)

    def _follow(self, rows: np.ndarray, centres: np.ndarray) -> None:
        """Counts the crossings of every line by the tracks' centres since their last sides."""
        last, point = self._side[rows], self._point[rows]
        side = self._sides(centres)
        on = side != 0.0
        if on.all():
            self._side[rows], self._point[rows] = side, centres[:, None, :]
        else:   # a centre on a line keeps its last side
            self._side[rows] = np.where(on, side, last)
            self._point[rows] = np.where(on[..., None], centres[:, None, :], point)
        track, line = np.nonzero(last * side < 0.0)   # from one side to the other
        if not len(track):
            return
        # Those whose step from the last centre spans the line (see CountLine.spans).
        a, b = point[track, line], centres[track]
        dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
        p0, p1 = self._p0[line], self._p1[line]
        turn0 = dx * (p0[:, 1] - a[:, 1]) - dy * (p0[:, 0] - a[:, 0])
        turn1 = dx * (p1[:, 1] - a[:, 1]) - dy * (p1[:, 0] - a[:, 0])
        spans = turn0 * turn1 <= 0.0
        track, line = track[spans], line[spans]
        direction = (last[track, line] < 0).astype(np.int64)   # +1 -> -1 is forward (0)
        row = rows[track]
        new = ~self._crossed[row, line, direction]
        self._crossed[row[new], line[new], direction[new]] = True
        np.add.at(self._forward, line[new & (direction == 0)], 1)
        np.add.at(self._backward, line[new & (direction == 1)], 1)

    def _forget(self, ended_ids: Sequence[int]) -> None:
        """Drops what was kept about tracks that ended (ids are never reused)."""
        keep = ~np.isin(self._ids, np.asarray(ended_ids, np.int64))
        if not keep.all():
            self._ids, self._side = self._ids[keep], self._side[keep]
            self._point, self._crossed = self._point[keep], self._crossed[keep]
