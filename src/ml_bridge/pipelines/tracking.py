"""Multi-object tracking by IoU, one :class:`Tracker` per camera; numpy and scipy, no rospy.

Each frame's detections are matched to the camera's live tracks by IoU of the boxes, only
within a class, with an optimal assignment (``scipy.optimize.linear_sum_assignment``
maximising the summed IoU of the pairs at or above ``iou``). A detection left unmatched starts
a tentative track. Time is the frames' stamps, never the wall clock, so a bag played at 4x
tracks exactly as at 1x:

- a track is confirmed on its ``min_hits``-th matched frame and only then gets its id, from
  one counter of the process: ids are unique per node run across cameras, never reused, and
  tentative tracks use none;
- a track ends when it has gone unmatched for more than ``max_age`` seconds of stamps. A
  confirmed track is reported ENDED exactly once, in the first frame after it ended; a
  tentative one is dropped silently;
- a frame stamped earlier than the previous one (a bag that loops, a camera restarted) ends
  every live confirmed track (reported ENDED in that frame, with the durations they had) and
  tracking starts over from that frame.
"""
import itertools
import threading
from dataclasses import dataclass, replace
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.track_types import BOX, CLASS_ID, HITS, ID, LAST_NS, ORIGIN, SCORE, STATE

# Re-exported (``as``): the track types are imported from here.
from ml_bridge.pipelines.track_types import CONFIRMED as CONFIRMED
from ml_bridge.pipelines.track_types import ENDED as ENDED
from ml_bridge.pipelines.track_types import TENTATIVE as TENTATIVE
from ml_bridge.pipelines.track_types import TrackArrays as TrackArrays
from ml_bridge.pipelines.track_types import TrackedFrame as TrackedFrame
from ml_bridge.pipelines.track_types import TrackState as TrackState

#: ``~track_iou``, ``~track_min_hits``, ``~track_max_age`` defaults.
DEFAULT_IOU = 0.3
DEFAULT_MIN_HITS = 3
DEFAULT_MAX_AGE = 1.0


class _IdSource:
    """Track ids of this process: 1, 2, 3, ... across every tracker, thread-safe."""

    def __init__(self) -> None:
        self._counter: Iterator[int] = itertools.count(1)
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return next(self._counter)


_IDS = _IdSource()


@dataclass(frozen=True)
class TrackSettings:
    """``~track_iou``, ``~track_min_hits`` and ``~track_max_age`` (seconds of stamps)."""

    iou: float = DEFAULT_IOU
    min_hits: int = DEFAULT_MIN_HITS
    max_age: float = DEFAULT_MAX_AGE

    def __post_init__(self) -> None:
        if not 0.0 < self.iou <= 1.0:
            raise InputError(f"~track_iou must be in (0, 1], got {self.iou}")
        if self.min_hits < 1:
            raise InputError(f"~track_min_hits must be an integer >= 1, got {self.min_hits}")
        if not self.max_age >= 0.0:
            raise InputError(f"~track_max_age must be seconds >= 0, got {self.max_age}")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [M, 4] with every box of ``b`` [K, 4] (x1 y1 x2 y2) -> [M, K];
    0 where a box has no area."""
    ax1, ay1, ax2, ay2 = np.asarray(a, np.float64).reshape(-1, 4).T[:, :, None]
    bx1, by1, bx2, by2 = np.asarray(b, np.float64).reshape(-1, 4).T[:, None, :]
    width = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0.0)
    height = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0.0)
    inter = width * height
    area_a = np.maximum(ax2 - ax1, 0.0) * np.maximum(ay2 - ay1, 0.0)
    area_b = np.maximum(bx2 - bx1, 0.0) * np.maximum(by2 - by1, 0.0)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(ious: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """The pairs (row, column) of an optimal assignment over ``ious`` whose IoU is at least
    ``threshold``: the assignment maximises the summed IoU of such pairs; pairs below it
    weigh nothing and are left out."""
    rows, cols = assign(ious, threshold)
    return list(zip(rows.tolist(), cols.tolist()))


def assign(ious: np.ndarray, threshold: float) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`match` as two index arrays (rows, columns)."""
    if ious.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, cols = np.nonzero(ious >= threshold)
    return _assign_pairs(rows, cols, ious[rows, cols], ious.shape)


def _assign_pairs(rows: np.ndarray, cols: np.ndarray, gains: np.ndarray,
                  shape: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """The optimal assignment over the pairs (rows, cols) weighing ``gains`` > 0 (every other
    pair of the ``shape`` weighs nothing): (rows, columns) of the pairs it takes."""
    if not len(rows) or (np.bincount(rows).max() <= 1 and np.bincount(cols).max() <= 1):
        # No two pairs compete for a row or a column (objects apart: the usual case): every
        # pair is in any optimal assignment.
        return rows, cols
    gain = np.zeros(shape)
    gain[rows, cols] = gains
    rows, cols = linear_sum_assignment(gain, maximize=True)
    kept = gain[rows, cols] > 0.0
    return rows[kept], cols[kept]


def _overlaps(a: np.ndarray, b: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs (row of ``a``, row of ``b``) of boxes that overlap, and their IoU (the
    values of :func:`iou_matrix`, computed for those pairs only: most pairs are far apart)."""
    rows, cols = np.nonzero((a[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < a[:, None, 2])
                            & (a[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < a[:, None, 3]))
    return rows, cols, _pair_iou(a[rows], b[cols])


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a`` [P, 4] with the box of ``b`` [P, 4] in the same row, as
    :func:`iou_matrix` computes it."""
    width = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0)
    height = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0)
    inter = width * height
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Tracker:
    """The tracks of one camera; :meth:`update` once per processed frame, in stamp order."""

    def __init__(self, settings: Optional[TrackSettings] = None) -> None:
        """Starts with no tracks."""
        self.settings = settings or TrackSettings()
        self._live = TrackArrays.empty()
        self._last_ns: Optional[int] = None
        self.restarts = 0   # times the stamps went backwards

    @property
    def live(self) -> List[TrackState]:
        """The tracks not ended yet, tentative ones included."""
        return self._live.to_states()

    def _advance(self, stamp_ns: int) -> Tuple[List[TrackState], bool, TrackArrays]:
        """Moves on to a frame stamped ``stamp_ns``: the confirmed tracks that ended (all of
        them when the stamps went backwards), whether they did, and the tracks still alive."""
        live = self._live
        restarted = self._last_ns is not None and stamp_ns < self._last_ns
        if restarted:
            ended = live.take(live.states == CONFIRMED).to_states(ENDED)
            live = TrackArrays.empty()
            self.restarts += 1
        else:
            ended = []
        self._last_ns = stamp_ns
        ok = (stamp_ns - live.ints[:, LAST_NS]) <= int(round(self.settings.max_age * 1e9))
        if not ok.all():
            ended += live.take(~ok & (live.states == CONFIRMED)).to_states(ENDED)
            live = live.take(ok)
        return ended, restarted, live

    def update(self, stamp_ns: int, boxes: np.ndarray, class_ids: Sequence[int],
               scores: Sequence[float], labels: Sequence[str]) -> TrackedFrame:
        """Matches one frame's detections to the tracks.

        Args:
            stamp_ns: the frame's stamp in integer nanoseconds.
            boxes: [K, 4] x1 y1 x2 y2 in frame pixels.
            class_ids, scores, labels: per detection.

        Raises:
            InputError: the per-detection sequences differ in length from the boxes.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        count = len(boxes)
        if not len(class_ids) == len(scores) == len(labels) == count:
            raise InputError(f"tracking: {count} boxes but {len(class_ids)} class ids, "
                             f"{len(scores)} scores, {len(labels)} labels; give one per box")
        ended, restarted, alive = self._advance(stamp_ns)
        classes = np.asarray(class_ids, np.int64).reshape(-1)
        # A box that is not finite (a detector's NaN) is never tracked: it gets id 0.
        finite = np.isfinite(boxes).all(axis=1)
        every = bool(finite.all())   # the usual case skips the masking
        pairs, dets, ious = _overlaps(alive.boxes, boxes)
        keep = (ious >= self.settings.iou) & (alive.ints[pairs, CLASS_ID] == classes[dets])
        if not every:
            keep &= finite[dets]
        rows, cols = _assign_pairs(pairs[keep], dets[keep], ious[keep], (len(alive), count))
        owner = np.full(count, -1, np.int64)
        owner[cols] = rows
        tracked = np.flatnonzero(finite)      # the detections with a track, in input order
        own = owner if every else owner[tracked]
        old = own >= 0
        at, src = np.flatnonzero(old), own[old]
        # Every row as a new track, then the matched rows take their track's id, state, class,
        # first stamp, hits and origin.
        ints = np.empty((len(tracked), 6), np.int64)
        ints[:] = (0, TENTATIVE, 0, stamp_ns, stamp_ns, 1)
        ints[:, CLASS_ID] = classes if every else classes[tracked]
        ints[at] = alive.ints[src]
        ints[at, LAST_NS] = stamp_ns
        ints[at, HITS] += 1
        floats = np.empty((len(tracked), 7))
        floats[:, SCORE] = np.asarray(scores, np.float64).reshape(-1)[tracked]
        floats[:, BOX] = boxes if every else boxes[tracked]
        floats[:, ORIGIN] = (floats[:, 1:3] + floats[:, 3:5]) / 2.0
        floats[at, ORIGIN] = alive.floats[src, ORIGIN]
        # Ids are handed out in detection order (one counter for the whole process).
        for i in np.flatnonzero((ints[:, STATE] == TENTATIVE)
                                & (ints[:, HITS] >= self.settings.min_hits)).tolist():
            ints[i, ID], ints[i, STATE] = _IDS.next(), CONFIRMED
        seen = TrackArrays(ints, floats, list(map(str, labels)) if every
                           else [str(labels[i]) for i in tracked.tolist()])
        if len(rows) == len(alive):
            self._live = seen
        else:
            unmatched = np.ones(len(alive), bool)
            unmatched[rows] = False
            self._live = alive.take(unmatched).concat(seen)
        track_ids = np.zeros(count, np.int64)
        track_ids[tracked] = ints[:, ID]
        confirmed = ints[:, STATE] == CONFIRMED
        return TrackedFrame(track_ids.tolist(), None, ended, restarted,
                            seen if confirmed.all() else seen.take(confirmed))

    def update_given(self, stamp_ns: int, given_ids: Sequence[int], boxes: np.ndarray,
                     class_ids: Sequence[int], scores: Sequence[float],
                     labels: Sequence[str]) -> TrackedFrame:
        """Takes one frame whose boxes carry the ids of an upstream tracker (0: untracked):
        no matching; a given id is a confirmed track from its first frame on. Tracks end,
        and stamps going backwards restart, as in :meth:`update`.

        Raises:
            InputError: the per-detection sequences differ in length from the boxes.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        count = len(boxes)
        if not len(given_ids) == len(class_ids) == len(scores) == len(labels) == count:
            raise InputError(f"tracking: {count} boxes but {len(given_ids)} track ids, "
                             f"{len(class_ids)} class ids, {len(scores)} scores, {len(labels)} "
                             "labels; give one per box")
        ended, restarted, alive = self._advance(stamp_ns)
        live = {t.id: t for t in alive.to_states()}
        track_ids = [int(i) for i in given_ids]
        seen: List[TrackState] = []
        for i, track_id in enumerate(track_ids):
            if track_id <= 0 or not np.isfinite(boxes[i]).all():
                continue
            box = (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3]))
            old = live.get(track_id)
            if old is None:
                old = TrackState(track_id, CONFIRMED, int(class_ids[i]), "", 0.0, box,
                                 ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0),
                                 stamp_ns, stamp_ns, 0)
            live[track_id] = replace(old, class_id=int(class_ids[i]), label=str(labels[i]),
                                     score=float(scores[i]), box=box, last_seen_ns=stamp_ns,
                                     hits=old.hits + 1)
            seen.append(live[track_id])
        self._live = TrackArrays.of(list(live.values()))
        return TrackedFrame(track_ids, seen, ended, restarted)
