"""The ``objects`` pipeline: a detector's boxes on a frame -> square crops -> one batch -> a
class per object.

Events of a stream come in two kinds: frames and detections (:class:`Detections`, neutral of
any message type; :mod:`ml_bridge.ros.detections` decodes them). A detections message is
matched to the frame with the *same* stamp, compared as integer nanoseconds, and the same
``frame_id`` where both name one:

- detections whose ``frame_id`` differs from the camera's (the newest frame's, or the frame of
  their stamp) belong to another camera that shares the detections topic: they are never cut
  from this camera's frames (counted as ``detections_other_frame``). An empty ``frame_id`` on
  either side matches by stamp alone;
- the stream keeps its last ``~sync_queue`` frames (default 10); detections whose frame is
  among them are due at once;
- detections may arrive before their frame (a detector faster than the camera transport):
  they wait in a pending list (at most ``~sync_queue`` entries) and are due when the frame
  arrives. A pending entry expires when a later frame arrives first or the list overflows
  (counted as ``detections_expired``);
- detections whose frame has already gone (older than the newest frame, not in the ring) are
  dropped at once (counted as ``detections_unmatched``);
- detections that carry an image for every box (Detection2D ``source_img``) need no frame:
  they are due at once, with the detections' own header.

Each box becomes a square crop (:func:`square_crop`); the crops of one frame are resized with
the shared preprocessing and run as ONE batch, and the results are split back per detection in
input order. A box that cannot be cut (zero, negative or non-finite size, or entirely outside
the frame) is refused on its own: it keeps its place in ``objects`` with ``class_id`` -1,
score 0, an empty label and an empty roi, it is left out of the rule rows, it is counted
(``objects_refused``) and logged (throttled); the other boxes of the frame are classified as
usual. A frame whose detections hold no box publishes an empty list without a model call.

``~overlay`` (only while someone subscribes) is the matched frame with each classified
object's detector box, label and score (:func:`ml_bridge.pipelines.draw.draw_boxes`); refused
boxes are not drawn. Detections that need no frame (every crop given) have no overlay.
"""
import collections
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.params import Param, Schema
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Frame, Pipeline, Request, Result, image_format, main_output
from ml_bridge.pipelines.boxes import NO_ROI, Box, Detections, ObjectResult, Roi, square_crop
from ml_bridge.pipelines.classify import top_class
from ml_bridge.pipelines.draw import boxes_overlay
from ml_bridge.pipelines.objects_tracking import RECLASSIFY_EVERY, TRACK_OUTPUTS, Classified, ObjectTracking

# Box, Detections and square_crop are used from here by the ROS layer and the tests.
__all__ = ["NO_ROI", "Box", "Detections", "ObjectResult", "ObjectsPipeline", "ObjectsState", "Roi",
           "square_crop", "stamp_ns"]

log = logging.getLogger(__name__)

#: ``~sync_queue`` default: frames kept per stream for matching (and detections pending).
DEFAULT_SYNC_QUEUE = 10
#: Seconds between two log lines about refused boxes of one stream.
WARN_PERIOD = 10.0
# ROI fields are uint32: the bound for a crop given without a frame.
_UNBOUNDED = (1 << 32) - 1


def stamp_ns(frame: Frame) -> int:
    """The frame's stamp in integer nanoseconds: exact from a ROS header's secs and nsecs,
    else from ``frame.stamp`` in seconds."""
    stamp = getattr(frame.header, "stamp", None)
    secs, nsecs = getattr(stamp, "secs", None), getattr(stamp, "nsecs", None)
    if isinstance(secs, int) and isinstance(nsecs, int):
        return secs * 1_000_000_000 + nsecs
    return int(round(float(frame.stamp) * 1e9))


def same_frame(frame_id: str, detections: Detections) -> bool:
    """False only when both the image's and the detections' ``frame_id`` are set and differ:
    a detector that leaves ``frame_id`` empty is matched by stamp alone."""
    return not (frame_id and detections.frame_id and frame_id != detections.frame_id)


def _frame_id(frame: Frame) -> str:
    return str(getattr(frame.header, "frame_id", "") or "")


@dataclass
class ObjectsState:
    """One stream's frames, pending detections, due work and counters."""

    frames: "collections.OrderedDict[int, Frame]" = field(default_factory=collections.OrderedDict)
    pending: Deque[Detections] = field(default_factory=collections.deque)
    due: Deque[Tuple[Optional[Frame], Detections]] = field(default_factory=collections.deque)
    newest_ns: Optional[int] = None     # stamp of the newest frame seen
    frame_id: str = ""                  # frame_id of the newest frame seen ("" unknown)
    unmatched: int = 0                  # detections whose frame had gone when they came
    expired: int = 0                    # pending detections whose frame never came
    other_frame: int = 0                # detections of another camera (frame_id differs)
    refused: int = 0                    # boxes that could not be cut (see square_crop)
    refused_unlogged: int = 0           # refused since the last log line
    last_log: float = -math.inf         # time.monotonic() of the last log line
    tracks: Any = None                  # ~track: an ObjectTracksState (objects_tracking)


class ObjectsPipeline(Pipeline[ObjectsState]):
    """Detections matched to frames by stamp -> square crops -> one batch -> ``~objects``."""

    name = "objects"
    outputs: Sequence[str] = ("objects", "overlay")
    keeps_every_frame = True   # any frame may be the one a detections message names
    every_request = True       # one result per detections message
    inputs = ("image", "detections")
    parameters = Schema(
        "objects",
        Param("sync_queue", "int", DEFAULT_SYNC_QUEUE, "frames kept per camera for matching; also "
              "the image subscriber's queue and the number of detections that may wait for "
              "their frame", low=1, note="frames"),
        RECLASSIFY_EVERY,
    )

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads ``~sync_queue`` and the image format (the shared preprocessing).

        Raises:
            InputError: ``~sync_queue`` is not an integer >= 1, no image format can be
                told, or the model's output is not per-class scores [N, C].
        """
        super().__init__(model, params)
        self.sync_queue: int = self.settings["sync_queue"]
        self.fmt = image_format(model, self.params)
        self.tracking = ObjectTracking(self.params, self.settings["reclassify_every"])
        self.outputs = tuple(self.outputs) + (TRACK_OUTPUTS if self.tracking.enabled else ())
        if model.outputs and len(model.outputs[0].shape) not in (0, 2):
            raise InputError(f"the objects pipeline classifies crops and reads scores [N, C], "
                             f"but {model.describe()} outputs {list(model.outputs[0].shape)}; "
                             "serve a crop classifier")

    def queue_size(self) -> int:
        """The image subscriber holds ``~sync_queue`` frames: every frame may be matched."""
        return self.sync_queue

    def new_state(self) -> ObjectsState:
        return ObjectsState(tracks=self.tracking.new_state())

    def restart(self, state: ObjectsState) -> ObjectsState:
        """After lost events the kept frames still match by stamp: nothing is discarded."""
        return state

    def counters(self, state: ObjectsState) -> Dict[str, int]:
        """``detections_unmatched``, ``detections_expired``, ``detections_other_frame`` and
        ``objects_refused``."""
        return {"detections_unmatched": state.unmatched, "detections_expired": state.expired,
                "detections_other_frame": state.other_frame, "objects_refused": state.refused}

    def accept(self, frame: Frame, state: ObjectsState) -> bool:
        """Keeps the frame; pending detections of its stamp become due, older ones expire."""
        ns = stamp_ns(frame)
        state.frames[ns] = frame
        state.frames.move_to_end(ns)
        while len(state.frames) > self.sync_queue:
            state.frames.popitem(last=False)
        if state.newest_ns is None or ns > state.newest_ns:
            state.newest_ns = ns
            state.frame_id = _frame_id(frame)
        waiting: Deque[Detections] = collections.deque()
        for detections in state.pending:
            if detections.stamp_ns == ns and not same_frame(_frame_id(frame), detections):
                state.other_frame += 1
            elif detections.stamp_ns == ns:
                state.due.append((frame, detections))
            elif detections.stamp_ns < ns:  # frames come in order: its frame was lost
                state.expired += 1
            else:
                waiting.append(detections)
        state.pending = waiting
        return bool(state.due)

    def accept_detections(self, detections: Any, state: ObjectsState) -> bool:
        """Matches a :class:`Detections` to its frame, or keeps it pending (module docstring)."""
        if not isinstance(detections, Detections):
            raise InputError(f"the objects pipeline takes Detections, got {type(detections).__name__}")
        if not same_frame(state.frame_id, detections):
            # Boxes of another camera (one topic shared by several): never cut from ours.
            state.other_frame += 1
            return bool(state.due)
        if detections.self_contained():
            state.due.append((None, detections))
            return True
        frame = state.frames.get(detections.stamp_ns)
        if frame is not None and not same_frame(_frame_id(frame), detections):
            state.other_frame += 1
        elif frame is not None:
            state.due.append((frame, detections))
        elif state.newest_ns is not None and detections.stamp_ns <= state.newest_ns:
            state.unmatched += 1  # its frame is older than the ring holds, or never came
        else:
            state.pending.append(detections)
            if len(state.pending) > self.sync_queue:
                state.pending.popleft()
                state.expired += 1
        return bool(state.due)

    def request(self, state: ObjectsState) -> Optional[Request]:
        """All crops of the oldest due detections as one batch (no tensors: no box to run)."""
        if not state.due:
            return None
        frame, detections = state.due.popleft()
        plan = None if state.tracks is None else self.tracking.plan(state.tracks, detections)
        crops: List[np.ndarray] = []
        rois: List[Optional[Roi]] = []
        refused: List[str] = []
        for i, box in enumerate(detections.boxes):
            given = detections.given(i)
            width, height = (_UNBOUNDED, _UNBOUNDED) if frame is None else \
                (frame.image.shape[1], frame.image.shape[0])
            try:
                roi = square_crop(box, width, height)
            except InputError as err:
                if given is None:  # nothing to classify: refused, the rest goes on
                    rois.append(None)
                    refused.append(f"detection {i}: {err}")
                    continue
                roi = NO_ROI  # its own image is classified; the box tells nothing
            if plan is not None and plan.kept[i] is not None:
                rois.append(roi)  # its track keeps its label: no crop, no model
                continue
            if given is None:
                assert frame is not None  # only self-contained detections come without one
                x0, y0, w, h = roi
                given = frame.image[y0:y0 + h, x0:x0 + w]
            crops.append(given)
            rois.append(roi)
        if refused:
            self._log_refused(state, refused)
        if frame is None:
            frame = Frame(np.zeros((0, 0), np.uint8), detections.stamp_ns / 1e9, detections.header)
        inputs = [self.fmt.batch(crops)] if crops else []
        return Request(inputs, frame, {"rois": rois, "boxes": detections.boxes, "plan": plan})

    def postprocess(self, request: Request, prediction: Prediction,
                    wanted: FrozenSet[str]) -> Result:
        """Splits the batch back into one :class:`ObjectResult` per detection, in order."""
        rois: List[Optional[Roi]] = request.extra["rois"]
        ids: List[int] = []
        scores: List[float] = []
        if request.inputs:
            out = main_output(prediction.outputs, prediction.model.output_names)
            rows = request.inputs[0].shape[0]
            if out.ndim != 2 or out.shape[0] != rows:
                raise InputError(f"the objects pipeline needs scores [N, C] for {rows} crops, "
                                 f"the model returned {list(out.shape)}; serve a crop classifier")
            ids, scores = top_class(out, prediction.model.outputs_probabilities)
        objects: List[ObjectResult] = []
        rules: List[Dict[str, Any]] = []
        plan = request.extra["plan"]
        row = 0
        for i, roi in enumerate(rois):
            if roi is None:
                objects.append(ObjectResult(i, NO_ROI, -1, 0.0, ""))
                continue
            kept = None if plan is None else plan.kept[i]   # its track's classification
            if kept is None:
                kept = Classified(ids[row], scores[row], prediction.model.label(ids[row]))
                row += 1
            objects.append(ObjectResult(i, roi, kept.class_id, kept.score, kept.label))
            rules.append({"label": kept.label, "class_id": kept.class_id, "score": kept.score,
                          "detection_index": i})
        outputs: Dict[str, Any] = {"objects": objects}
        if "overlay" in wanted and request.frame.image.size:  # none without a frame
            outputs["overlay"] = boxes_overlay(request.frame.image, request.extra["boxes"],
                                               objects, plan and plan.frame.track_ids)
        if plan is not None:  # rows, tracks, counts, and the overlay's count lines
            rules = self.tracking.finish(plan, objects, rules, wanted, outputs)
        return Result(request.frame, prediction.model, prediction.inference_ms,
                      outputs, raw=prediction.outputs, rows=rules)

    @staticmethod
    def _log_refused(state: ObjectsState, refused: List[str]) -> None:
        """Counts refused boxes and logs them at most once per WARN_PERIOD per stream."""
        state.refused += len(refused)
        state.refused_unlogged += len(refused)
        now = time.monotonic()
        if now - state.last_log < WARN_PERIOD:
            return
        log.warning("objects: %d box(es) refused (no crop, class_id -1), e.g. %s",
                    state.refused_unlogged, refused[0])
        state.refused_unlogged = 0
        state.last_log = now
