"""``objects`` with ``~track``: classify each confirmed track once, then every
``~reclassify_every`` frames; no rospy, no framework.

Where the detections carry the ids of an upstream tracker (a ``detect`` node with ``~track``
puts each box's track id in its Detection2D ``header.seq``, see docs/guides/tracking.md), those
ids are the tracks: nothing is tracked again (:meth:`Tracker.update_given`). Otherwise the
boxes are tracked here, by IoU alone (the detections say no class). Once a stream has seen
ids carried, it keeps reading them.

Between two classifications a confirmed track keeps its label, class and score: its box is
neither cropped nor run through the model, so the secondary stage's cost grows with new
objects, not with frames. Boxes without a confirmed track (tentative, or not tracked
upstream) are classified on every frame. Counts and rows use the classifier's labels.
"""
from dataclasses import dataclass, field, replace
from typing import Any, Dict, FrozenSet, List, Mapping, Optional

import numpy as np

from ml_bridge.core.params import Param
from ml_bridge.pipelines.boxes import Detections, ObjectResult
from ml_bridge.pipelines.track_stage import TRACK_OUTPUTS, Tracking, TrackingState, draw_counts
from ml_bridge.pipelines.tracking import TrackedFrame, Tracker, TrackState

__all__ = ["RECLASSIFY_EVERY", "TRACK_OUTPUTS", "Classified", "ObjectTracking", "Plan"]

#: The objects pipeline's own tracking parameter (the others: :data:`TRACK_PARAMS`).
RECLASSIFY_EVERY = Param("reclassify_every", "int", 0, "with `~track`: a confirmed track is "
                         "classified again after this many frames (`0`: once)", low=0,
                         note="frames")


@dataclass
class Classified:
    """A track's classification and the frames it has been kept since."""

    class_id: int
    score: float
    label: str
    frames: int = 0


@dataclass
class ObjectTracksState:
    """One stream's tracks and their classifications."""

    tracking: TrackingState
    labels: Dict[int, Classified] = field(default_factory=dict)
    given: bool = False     # the detections carry track ids (read from then on)


@dataclass
class Plan:
    """One detections message's tracking: per box, the classification it keeps (None: the
    box is classified now)."""

    state: ObjectTracksState
    frame: TrackedFrame
    kept: List[Optional[Classified]]


class ObjectTracking:
    """The ``~track`` part of the objects pipeline."""

    def __init__(self, params: Mapping[str, Any], reclassify_every: int = 0) -> None:
        """Reads :data:`TRACK_PARAMS` from the node's parameters.

        Raises:
            InputError: a tracking parameter is invalid.
        """
        self.stage = Tracking(params)
        self.every = reclassify_every

    @property
    def enabled(self) -> bool:
        """``~track``."""
        return self.stage.enabled

    def new_state(self) -> Optional[ObjectTracksState]:
        """A stream's fresh tracks; None without ``~track``."""
        tracking = self.stage.new_state()
        return None if tracking is None else ObjectTracksState(tracking)

    def plan(self, state: ObjectTracksState, detections: Detections) -> Plan:
        """Tracks the message's boxes; says which keep their track's classification."""
        corners = np.array([[b.x_center - b.width / 2.0, b.y_center - b.height / 2.0,
                             b.x_center + b.width / 2.0, b.y_center + b.height / 2.0]
                            for b in detections.boxes], np.float64).reshape(-1, 4)
        count = len(corners)
        if detections.track_ids is not None and not state.given:
            # From now on the upstream tracker's ids: tracks of our own would collide.
            state.given = True
            state.tracking = TrackingState(Tracker(self.stage.settings), state.tracking.counter)
        tracker = state.tracking.tracker
        if state.given:
            ids = detections.track_ids or [0] * count
            frame = tracker.update_given(detections.stamp_ns, ids, corners, [0] * count,
                                         [0.0] * count, [""] * count)
        else:
            frame = tracker.update(detections.stamp_ns, corners, [0] * count, [0.0] * count,
                                   [""] * count)
        kept: List[Optional[Classified]] = []
        for track_id in frame.track_ids:
            entry = state.labels.get(track_id) if track_id > 0 else None
            if entry is not None:
                entry.frames += 1
                if self.every and entry.frames >= self.every:
                    entry = None    # due again
            kept.append(entry)
        return Plan(state, frame, kept)

    def finish(self, plan: Plan, objects: List[ObjectResult], rows: List[Dict[str, Any]],
               wanted: FrozenSet[str], outputs: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Keeps the new classifications of confirmed tracks; adds the wanted ``tracks`` and
        ``counts`` to ``outputs`` and the count lines to its ``overlay``; returns the rows
        with the track keys."""
        state, frame = plan.state, plan.frame
        for obj, track_id, kept in zip(objects, frame.track_ids, plan.kept):
            if track_id > 0 and kept is None and obj.class_id >= 0:
                state.labels[track_id] = Classified(obj.class_id, obj.score, obj.label)
        shown = [self._shown(t, state) for t in frame.tracks]
        ended = [self._shown(t, state) for t in frame.ended]
        step = self.stage.count(state.tracking, frame.replace(tracks=shown))
        ids = [frame.track_ids[row["detection_index"]] for row in rows]
        outputs.update(self.stage.outputs(replace(step, frame=frame.replace(shown, ended)),
                                          wanted))
        if "overlay" in outputs:
            draw_counts(outputs["overlay"], self.stage.lines, step.counts)
        for track in frame.ended:
            state.labels.pop(track.id, None)
        return self.stage.rows(rows, step, ids, ended)

    @staticmethod
    def _shown(track: TrackState, state: ObjectTracksState) -> TrackState:
        """The track with its classification's label, class and score."""
        entry = state.labels.get(track.id)
        if entry is None:
            return track
        return replace(track, class_id=entry.class_id, score=entry.score, label=entry.label)
