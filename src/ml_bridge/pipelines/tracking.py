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

TENTATIVE, CONFIRMED, ENDED = 0, 1, 2  # the values of ml_bridge/Track's state constants
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


@dataclass(frozen=True)
class TrackState:
    """One track as a frame left it (a copy: later frames do not change it).

    Attributes:
        id: unique per node run; 0 while tentative.
        state: TENTATIVE, CONFIRMED or ENDED.
        box: the last matched box, x1 y1 x2 y2 in frame pixels.
        origin: the centre of its first box (where line counting starts from).
        first_seen_ns, last_seen_ns: stamps of its first and last matched frames.
        hits: matched frames.
    """

    id: int
    state: int
    class_id: int
    label: str
    score: float
    box: Tuple[float, float, float, float]
    origin: Tuple[float, float]
    first_seen_ns: int
    last_seen_ns: int
    hits: int

    @property
    def duration(self) -> float:
        """``last_seen - first_seen`` in seconds."""
        return (self.last_seen_ns - self.first_seen_ns) / 1e9

    @property
    def centre(self) -> Tuple[float, float]:
        """The centre of the last matched box."""
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0


@dataclass
class TrackedFrame:
    """What one frame did to the tracks.

    Attributes:
        track_ids: per detection, in input order, the id of its confirmed track (0: its track
            is tentative).
        tracks: the confirmed tracks matched in this frame, in detection order.
        ended: the confirmed tracks that ended since the previous frame (state ENDED).
        restarted: the frame's stamp went backwards and tracking started over.
    """

    track_ids: List[int]
    tracks: List[TrackState]
    ended: List[TrackState]
    restarted: bool = False


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [M, 4] with every box of ``b`` [K, 4] (x1 y1 x2 y2) -> [M, K];
    0 where a box has no area."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(ious: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """The pairs (row, column) of an optimal assignment over ``ious`` whose IoU is at least
    ``threshold``: the assignment maximises the summed IoU of such pairs; pairs below it
    weigh nothing and are left out."""
    if ious.size == 0:
        return []
    gain = np.where(ious >= threshold, ious, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if gain[r, c] > 0.0]


class Tracker:
    """The tracks of one camera; :meth:`update` once per processed frame, in stamp order."""

    def __init__(self, settings: Optional[TrackSettings] = None) -> None:
        """Starts with no tracks."""
        self.settings = settings or TrackSettings()
        self._live: List[TrackState] = []
        self._last_ns: Optional[int] = None
        self.restarts = 0   # times the stamps went backwards

    @property
    def live(self) -> List[TrackState]:
        """The tracks not ended yet, tentative ones included."""
        return list(self._live)

    def _advance(self, stamp_ns: int) -> Tuple[List[TrackState], bool, List[TrackState]]:
        """Moves on to a frame stamped ``stamp_ns``: the confirmed tracks that ended (all of
        them when the stamps went backwards), whether they did, and the tracks still alive."""
        ended: List[TrackState] = []
        restarted = self._last_ns is not None and stamp_ns < self._last_ns
        if restarted:
            ended = [replace(t, state=ENDED) for t in self._live if t.state == CONFIRMED]
            self._live = []
            self.restarts += 1
        self._last_ns = stamp_ns
        max_age_ns = int(round(self.settings.max_age * 1e9))
        alive: List[TrackState] = []
        for track in self._live:
            if stamp_ns - track.last_seen_ns <= max_age_ns:
                alive.append(track)
            elif track.state == CONFIRMED:
                ended.append(replace(track, state=ENDED))
        return ended, restarted, alive

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
        # A box that is not finite (a detector's NaN) is never tracked: it gets id 0.
        finite = np.isfinite(boxes).all(axis=1)
        ious = iou_matrix(np.array([t.box for t in alive]), np.where(finite[:, None], boxes, 0.0))
        if ious.size:
            track_classes = np.array([t.class_id for t in alive])[:, None]
            ious[(track_classes != np.asarray(class_ids)[None, :]) | ~finite[None, :]] = 0.0
        owner: List[Optional[int]] = [None] * count
        for row, col in match(ious, self.settings.iou):
            owner[col] = row
        self._live = [t for i, t in enumerate(alive) if i not in owner]
        track_ids: List[int] = []
        seen: List[TrackState] = []
        for i in range(count):
            if not finite[i]:
                track_ids.append(0)
                continue
            box = (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3]))
            matched = owner[i]
            if matched is None:
                track = TrackState(0, TENTATIVE, int(class_ids[i]), str(labels[i]),
                                   float(scores[i]), box,
                                   ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0),
                                   stamp_ns, stamp_ns, 1)
            else:
                old = alive[matched]
                track = replace(old, label=str(labels[i]), score=float(scores[i]), box=box,
                                last_seen_ns=stamp_ns, hits=old.hits + 1)
            if track.state == TENTATIVE and track.hits >= self.settings.min_hits:
                track = replace(track, id=_IDS.next(), state=CONFIRMED)
            self._live.append(track)
            track_ids.append(track.id)
            if track.state == CONFIRMED:
                seen.append(track)
        return TrackedFrame(track_ids, seen, ended, restarted)

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
        live = {t.id: t for t in alive}
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
        self._live = list(live.values())
        return TrackedFrame(track_ids, seen, ended, restarted)
