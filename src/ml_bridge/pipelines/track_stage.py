"""The tracking step that ``detect`` and ``objects`` share (``~track``); no rospy, no framework.

A pipeline with ``~track: true`` hands each processed frame's boxes to :meth:`Tracking.step`
and gets back the frame's tracks and counts, then adds:

- the outputs ``tracks`` (a :class:`TrackList`: the confirmed tracks seen in the frame, then
  the tracks that ended since the previous frame) and ``counts`` (a
  :class:`~ml_bridge.pipelines.counting.Counts`), each only while wanted;
- the rule keys ``track_id``, ``track_duration``, ``track_ended``, ``count`` and ``total`` on
  the rows of boxes whose track is confirmed, and one row per ended track
  (:meth:`Tracking.rows`).

The tracker runs on every processed frame whatever is wanted (the tracks must not miss
frames someone else asked for). A pipeline keeps this state when it restarts its own
(``Pipeline.restart``): tracks end by the frames' stamps, never because nobody listened a while.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence

import numpy as np

from ml_bridge.core.detection import Boxes
from ml_bridge.core.params import Param, Schema
from ml_bridge.pipelines.counting import Counter, CountLine, Counts, parse_count_lines
from ml_bridge.pipelines.draw import draw_label, draw_lines
from ml_bridge.pipelines.tracking import (
    DEFAULT_IOU,
    DEFAULT_MAX_AGE,
    DEFAULT_MIN_HITS,
    TrackedFrame,
    Tracker,
    TrackSettings,
    TrackState,
)

#: The outputs tracking adds to a pipeline.
TRACK_OUTPUTS = ("tracks", "counts")
#: The parameters of tracking, the same for every pipeline that tracks (read by
#: :class:`Tracking`; declared once, as the image format's are).
TRACK_PARAMS = Schema(
    "tracking",
    Param("track", "bool", False, "give each box a persistent track id; publish `~tracks` and "
          "`~counts`"),
    Param("track_iou", "float", DEFAULT_IOU, "the least IoU of a box with its track's last "
          "box (same class) for them to match", low=0.0, above=True, high=1.0),
    Param("track_min_hits", "int", DEFAULT_MIN_HITS, "matched frames that confirm a track "
          "(only confirmed tracks are published)", low=1),
    Param("track_max_age", "float", DEFAULT_MAX_AGE, "a track ends when unmatched for longer "
          "than this", low=0.0, note="seconds of frame stamps"),
    Param("count_lines", "any", [], "lines whose crossings by the tracks' box centres are "
          "counted per direction in `~counts`", accepts="a list of {name, points: [[x1, y1], "
          "[x2, y2]]} in frame pixels", convert=parse_count_lines),
)


@dataclass
class TrackList:
    """The ``tracks`` output of one frame: confirmed tracks seen, then ended ones."""

    tracks: List[TrackState] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)   # per track, the label it is shown with


class TrackedBoxes(Boxes):
    """A frame's boxes with, per box, the id of its confirmed track (0: none): what a
    tracking ``detect`` publishes as ``~detections`` (each Detection2D's ``header.seq``)."""

    def __init__(self, found: Boxes, track_ids: Sequence[int]) -> None:
        super().__init__(found.boxes, found.scores, found.class_ids)
        self.track_ids = [int(i) for i in track_ids]


@dataclass
class TrackingState:
    """One stream's tracker and counter."""

    tracker: Tracker
    counter: Counter


@dataclass
class TrackStep:
    """What one frame did: the tracker's answer and the counts after it."""

    frame: TrackedFrame
    counts: Counts


class Tracking:
    """A pipeline's tracking settings."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        """Reads :data:`TRACK_PARAMS` from the node's parameters.

        Raises:
            InputError: a value is invalid (``~count_lines``: naming the line and the fix).
        """
        settings = TRACK_PARAMS.read(params)
        self.enabled: bool = settings["track"]
        self.settings = TrackSettings(settings["track_iou"], settings["track_min_hits"],
                                      settings["track_max_age"])
        self.lines: List[CountLine] = list(settings["count_lines"])

    def new_state(self) -> Optional[TrackingState]:
        """A fresh tracker and counter; None without ``~track``."""
        if not self.enabled:
            return None
        return TrackingState(Tracker(self.settings), Counter(self.lines))

    def step(self, state: TrackingState, stamp_ns: int, boxes: np.ndarray,
             class_ids: Sequence[int], scores: Sequence[float], labels: Sequence[str]) -> TrackStep:
        """Tracks one frame's boxes (x1 y1 x2 y2, frame pixels) and counts them by their
        labels."""
        frame = state.tracker.update(stamp_ns, boxes, class_ids, scores, labels)
        return self.count(state, frame)

    @staticmethod
    def count(state: TrackingState, frame: TrackedFrame) -> TrackStep:
        """Counts a tracked frame, each track under its label."""
        return TrackStep(frame, state.counter.update_arrays(frame.arrays(),
                                                           [t.id for t in frame.ended]))

    def outputs(self, step: TrackStep, wanted: FrozenSet[str],
                labels: Optional[Mapping[int, str]] = None) -> Dict[str, Any]:
        """The wanted ``tracks`` and ``counts``; ``labels`` overrides a track's label by id
        (a secondary classifier's)."""
        out: Dict[str, Any] = {}
        if "tracks" in wanted:
            shown = step.frame.tracks + step.frame.ended
            names = [(labels or {}).get(t.id, t.label) for t in shown]
            out["tracks"] = TrackList(shown, names)
        if "counts" in wanted:
            out["counts"] = step.counts
        return out

    def finish(self, step: TrackStep, rows: List[Dict[str, Any]], wanted: FrozenSet[str],
               outputs: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Adds the wanted ``tracks`` and ``counts`` to ``outputs`` and the count lines and
        counts to its ``overlay``; returns the rows with the track keys (:meth:`rows`)."""
        outputs.update(self.outputs(step, wanted))
        if "overlay" in outputs:
            draw_counts(outputs["overlay"], self.lines, step.counts)
        return self.rows(rows, step)

    @staticmethod
    def rows(rows: List[Dict[str, Any]], step: TrackStep, track_ids: Optional[Sequence[int]] = None,
             ended: Optional[Sequence[TrackState]] = None) -> List[Dict[str, Any]]:
        """The rule rows with the track keys: per box row of a confirmed track
        ``track_id``, ``track_duration``, ``track_ended`` (false), ``count`` and ``total`` of
        its label; then one row per ended track (``track_ended`` true). Rows of boxes whose
        track is tentative stay as they were.

        Args:
            rows: the pipeline's rows.
            step: the frame's tracking.
            track_ids: per row, its box's track id (default: the frame's, in box order).
            ended: the ended tracks as the rows show them (default: the frame's).
        """
        seen = step.frame.arrays()
        durations = seen.durations()
        by_id = {track_id: i for i, track_id in enumerate(seen.ids.tolist())}
        ids = step.frame.track_ids if track_ids is None else track_ids
        out: List[Dict[str, Any]] = []
        for row, track_id in zip(rows, ids):
            i = by_id.get(track_id)
            out.append(dict(row) if i is None else _track_row(
                row, track_id, durations[i], seen.labels[i], False, step.counts))
        for track in step.frame.ended if ended is None else ended:
            base = {"label": track.label, "class_id": track.class_id, "score": track.score}
            out.append(_track_row(base, track.id, track.duration, track.label, True, step.counts))
        return out


def draw_counts(image: np.ndarray, lines: Sequence[CountLine], counts: Counts) -> np.ndarray:
    """Draws on an overlay (in place) each count line with its crossings and, at the top
    left, ``<label> <in frame> / <total>`` per label."""
    if lines:
        draw_lines(image, [(line.name, (line.p0, line.p1)) for line in lines],
                   list(zip(counts.forward, counts.backward)))
    text = "\n".join(f"{label} {now} / {total}"
                     for label, now, total in zip(counts.labels, counts.in_frame, counts.total))
    if text:
        draw_label(image, text)
    return image


def _track_row(row: Mapping[str, Any], track_id: int, duration: float, label: str, ended: bool,
               counts: Counts) -> Dict[str, Any]:
    in_frame, total = counts.of(str(row.get("label", label)))
    out = dict(row)
    out.update({"track_id": track_id, "track_duration": duration, "track_ended": ended,
                "count": in_frame, "total": total})
    return out
