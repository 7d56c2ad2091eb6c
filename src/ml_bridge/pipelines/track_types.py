"""The tracker's types (ROS-free, numpy only): one track as published (:class:`TrackState`),
the live tracks as columns (:class:`TrackArrays`) and what a frame did (:class:`TrackedFrame`).

The tracker works on columns so that a frame costs a fixed number of array operations
whatever the number of tracks; a :class:`TrackState` per track is built only where one is
published (``~tracks``, ended tracks, rule rows of ended tracks).
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

TENTATIVE, CONFIRMED, ENDED = 0, 1, 2  # the values of ml_bridge/Track's state constants
# The columns of TrackArrays.ints and TrackArrays.floats.
ID, STATE, CLASS_ID, FIRST_NS, LAST_NS, HITS = range(6)
SCORE, BOX, ORIGIN = 0, slice(1, 5), slice(5, 7)


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


class TrackArrays:
    """Tracks as rows of two arrays, the tracker's working form.

    Attributes:
        ints: [N, 6] int64: id, state, class id, first and last seen (ns), hits (the columns
            ID, STATE, CLASS_ID, FIRST_NS, LAST_NS, HITS).
        floats: [N, 7] float64: score, box x1 y1 x2 y2, origin x y (SCORE, BOX, ORIGIN).
        labels: per row.
    """

    # Never changed in place once built (the tracker builds new ones each frame): a frame's
    # ``seen`` may share them with the tracker's live tracks.
    __slots__ = ("ints", "floats", "labels")

    def __init__(self, ints: np.ndarray, floats: np.ndarray, labels: List[str]) -> None:
        """Takes the arrays as they are (see the class)."""
        self.ints, self.floats, self.labels = ints, floats, labels

    @classmethod
    def empty(cls) -> "TrackArrays":
        """No tracks."""
        return cls(np.zeros((0, 6), np.int64), np.zeros((0, 7)), [])

    @classmethod
    def of(cls, tracks: Sequence[TrackState]) -> "TrackArrays":
        """The rows of ``tracks``."""
        if not tracks:
            return cls.empty()
        ints = np.array([(t.id, t.state, t.class_id, t.first_seen_ns, t.last_seen_ns, t.hits)
                         for t in tracks], np.int64)
        floats = np.array([(t.score,) + tuple(t.box) + tuple(t.origin) for t in tracks],
                          np.float64)
        return cls(ints, floats, [t.label for t in tracks])

    def __len__(self) -> int:
        return len(self.ints)

    @property
    def ids(self) -> np.ndarray:
        """[N] the ids (a view)."""
        return self.ints[:, ID]

    @property
    def states(self) -> np.ndarray:
        """[N] the states (a view)."""
        return self.ints[:, STATE]

    @property
    def boxes(self) -> np.ndarray:
        """[N, 4] the last matched boxes (a view)."""
        return self.floats[:, BOX]

    @property
    def origins(self) -> np.ndarray:
        """[N, 2] the centres of the first boxes (a view)."""
        return self.floats[:, ORIGIN]

    def centres(self) -> np.ndarray:
        """[N, 2] the centres of the last matched boxes."""
        return (self.floats[:, 1:3] + self.floats[:, 3:5]) / 2.0

    def durations(self) -> List[float]:
        """Per row, ``last_seen - first_seen`` in seconds."""
        return ((self.ints[:, LAST_NS] - self.ints[:, FIRST_NS]) / 1e9).tolist()

    def take(self, index: np.ndarray) -> "TrackArrays":
        """The rows ``index`` (positions, or a mask), in that order."""
        rows = np.flatnonzero(index) if index.dtype == bool else index
        labels = self.labels
        return TrackArrays(self.ints[rows], self.floats[rows], [labels[i] for i in rows.tolist()])

    def concat(self, other: "TrackArrays") -> "TrackArrays":
        """These rows, then ``other``'s."""
        return TrackArrays(np.concatenate([self.ints, other.ints]),
                           np.concatenate([self.floats, other.floats]), self.labels + other.labels)

    def to_states(self, state: Optional[int] = None) -> List[TrackState]:
        """Every row as a :class:`TrackState` (``state`` overrides their state)."""
        return [TrackState(i[ID], i[STATE] if state is None else state, i[CLASS_ID], label,
                           f[SCORE], (f[1], f[2], f[3], f[4]), (f[5], f[6]), i[FIRST_NS],
                           i[LAST_NS], i[HITS])
                for i, f, label in zip(self.ints.tolist(), self.floats.tolist(), self.labels)]


class TrackedFrame:
    """What one frame did to the tracks.

    Attributes:
        track_ids: per detection, in input order, the id of its confirmed track (0: its track
            is tentative).
        tracks: the confirmed tracks matched in this frame, in detection order (built on
            first use from :attr:`seen` when the tracker gave columns).
        ended: the confirmed tracks that ended since the previous frame (state ENDED).
        restarted: the frame's stamp went backwards and tracking started over.
        seen: the same tracks as columns, or None when ``tracks`` was given as a list.
    """

    def __init__(self, track_ids: List[int], tracks: Optional[List[TrackState]] = None,
                 ended: Optional[List[TrackState]] = None, restarted: bool = False,
                 seen: Optional[TrackArrays] = None) -> None:
        """Either ``tracks`` or ``seen``; with ``tracks`` given, ``seen`` is ignored."""
        self.track_ids = track_ids
        self._tracks = tracks
        self.seen = None if tracks is not None else (
            TrackArrays.empty() if seen is None else seen)
        self.ended: List[TrackState] = [] if ended is None else ended
        self.restarted = restarted

    @property
    def tracks(self) -> List[TrackState]:
        """The confirmed tracks matched in this frame (see the class)."""
        if self._tracks is None:
            assert self.seen is not None
            self._tracks = self.seen.to_states()
        return self._tracks

    def arrays(self) -> TrackArrays:
        """:attr:`tracks` as columns."""
        return self.seen if self.seen is not None else TrackArrays.of(self.tracks)

    def replace(self, tracks: Optional[List[TrackState]] = None,
                ended: Optional[List[TrackState]] = None) -> "TrackedFrame":
        """A copy with other ``tracks`` and/or ``ended`` (e.g. relabelled by a classifier)."""
        return TrackedFrame(self.track_ids, self.tracks if tracks is None else tracks,
                            self.ended if ended is None else ended, self.restarted)

    def __repr__(self) -> str:
        return (f"TrackedFrame(track_ids={self.track_ids!r}, tracks={self.tracks!r}, "
                f"ended={self.ended!r}, restarted={self.restarted!r})")


