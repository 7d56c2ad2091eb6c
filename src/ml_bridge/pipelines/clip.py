"""The ``clip`` pipeline: the last T frames of a stream -> one clip -> ``~predictions`` (and
``~overlay``: the last frame with the top label, only while someone subscribes).

Every frame of a stream enters its window in stamp order, preprocessed once when it arrives
and written into a preallocated ring buffer; a clip is copied out of the ring, oldest frame
first, only when a prediction is due. The rules, per frame (``s`` its stamp, ``p`` the
previous accepted frame's):

- ``s < p`` by at most ``~max_gap``: out of order, dropped (counted as ``out_of_order``).
  A frame with the *same* stamp is kept: unstamped publishers (every stamp 0) and clocks
  coarser than the frame rate would otherwise lose every frame.
- ``|s - p| > ~max_gap``: the window is emptied first (counted as ``gaps``). Backwards too:
  a clock that jumps back (a bag that loops, a simulator reset) starts a new window instead
  of having every later frame dropped as out of order.
- a frame whose preprocessing fails empties the window as well, so a clip never skips it.

Once the window holds ``~clip_length`` frames a prediction is due, then one every
``~clip_stride`` frames. Results carry the last frame (its header), ``window_start`` (the
first frame's stamp) and ``first_header`` (its header). Scores are probabilities (softmax of
logits), as in ``classify``.
"""
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Tuple

import numpy as np

from ml_bridge.core.errors import InputError, MLBridgeError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.params import Param, Schema
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines.base import Frame, Pipeline, Request, Result, image_format
from ml_bridge.pipelines.classify import classify, rows_of, top_label_overlay

#: ``~max_gap`` default: seconds between two frames beyond which the window restarts.
DEFAULT_MAX_GAP = 1.0


@dataclass
class ClipState:
    """One stream's window: a ring of preprocessed frames and their stamps.

    ``ring`` is [C, T, H, W] (channels first) or [T, H, W, C]; slot ``head`` is where the
    next frame goes, which is also the oldest frame's slot once the window is full.
    """

    ring: np.ndarray
    stamps: np.ndarray
    headers: List[Any]                  # each frame's header, untouched (not its image)
    head: int = 0
    count: int = 0                      # frames in the window (at most T)
    full: int = 0                       # frames that ended a full window so far
    last_stamp: Optional[float] = None  # the previous accepted frame's stamp
    last_frame: Optional[Frame] = None
    out_of_order: int = 0               # frames dropped: older than the previous one
    gaps: int = 0                       # windows emptied by a jump in stamps > max_gap

    def clear(self) -> None:
        """Empties the window; the buffers and counters stay."""
        self.head = self.count = self.full = 0
        self.last_stamp = None
        self.last_frame = None


class ClipPipeline(Pipeline[ClipState]):
    """A window of the last ``~clip_length`` frames per stream -> the model -> classes."""

    name = "clip"
    outputs = ("predictions", "overlay")
    keeps_every_frame = True   # a clip of non-consecutive frames shows a motion that never was
    every_request = False      # when behind, the newest due window runs (older ones: skipped)
    parameters = Schema(
        "clip",
        Param("clip_stride", "int", 1, "once the window is full, predict every this many frames",
              low=1, note="1 = on every frame"),
        Param("max_gap", "float", DEFAULT_MAX_GAP, "if two consecutive frames are further apart "
              "than this, the window is emptied first", low=0, above=True, note="seconds"),
    )

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads the image format (``~clip_length`` among it) and :attr:`parameters`.

        Raises:
            InputError: a parameter is invalid, the clip length cannot be told, or the model's
                input is not a clip of that format.
        """
        super().__init__(model, params)
        self.fmt = image_format(model, self.params)
        self.length = self.fmt.clip_length
        if self.length < 1:
            raise InputError(f"cannot tell how many frames a clip of {model.describe()} holds; "
                             "set ~clip_length (e.g. 16)")
        self.stride: int = self.settings["clip_stride"]
        self.max_gap: float = self.settings["max_gap"]
        _check_input(model, self.fmt.channels_first, self.fmt.channels, self.length)
        # The time axis of the ring (and of a clip without its batch dimension).
        self._time_axis = 1 if self.fmt.channels_first else 0

    def queue_size(self) -> int:
        """A whole window of frames may wait for the stream (every frame counts)."""
        return self.length

    def new_state(self) -> ClipState:
        shape = self.fmt.input_shape()
        assert len(shape) == 4  # a clip format: [C, T, H, W] or [T, H, W, C]
        return ClipState(np.zeros(shape, np.float32), np.zeros(self.length, np.float64),
                         [None] * self.length)

    def restart(self, state: ClipState) -> ClipState:
        """After lost frames: the same buffers and counters, an empty window."""
        state.clear()
        return state

    def counters(self, state: ClipState) -> Dict[str, int]:
        """``out_of_order`` and ``gaps`` of the stream, for diagnostics."""
        return {"out_of_order": state.out_of_order, "gaps": state.gaps}

    def accept(self, frame: Frame, state: ClipState) -> bool:
        """Puts the frame into the window (see the module docstring); True when a clip is due.

        Raises:
            InputError: the frame cannot be preprocessed (the window is emptied first).
        """
        stamp = float(frame.stamp)
        last = state.last_stamp
        if last is not None and last - self.max_gap <= stamp < last:
            state.out_of_order += 1
            return False
        try:
            pixels = self.fmt.frame_hwc(frame.image)
        except MLBridgeError:
            state.clear()
            raise
        if last is not None and abs(stamp - last) > self.max_gap:
            state.gaps += 1
            state.clear()
        slot = state.head
        if self.fmt.channels_first:
            state.ring[:, slot] = pixels.transpose(2, 0, 1)
        else:
            state.ring[slot] = pixels
        state.stamps[slot] = stamp
        state.headers[slot] = frame.header
        state.head = (slot + 1) % self.length
        state.count = min(state.count + 1, self.length)
        state.last_stamp = stamp
        state.last_frame = frame
        if state.count < self.length:
            return False
        # The first full window is due, then one every `stride` frames after it.
        due = state.full % self.stride == 0
        state.full += 1
        return due

    def request(self, state: ClipState) -> Optional[Request]:
        """The window as one clip [1, C, T, H, W] or [1, T, H, W, C], oldest frame first."""
        if state.count < self.length or state.last_frame is None:
            return None
        oldest = state.head  # full: the next slot to write holds the oldest frame
        newer = self.length - oldest
        window = np.empty((1,) + state.ring.shape, np.float32)
        clip = window[0]
        clip[self._along_time(0, newer)] = state.ring[self._along_time(oldest, self.length)]
        clip[self._along_time(newer, self.length)] = state.ring[self._along_time(0, oldest)]
        return Request([window], state.last_frame,
                       {"window_start": float(state.stamps[oldest]),
                        "first_header": state.headers[oldest]})

    def postprocess(self, request: Request, prediction: Prediction,
                    wanted: FrozenSet[str]) -> Result:
        classes = classify(prediction)
        outputs: Dict[str, Any] = {"predictions": classes}
        if "overlay" in wanted:  # on the window's last frame, the one whose header goes out
            outputs["overlay"] = top_label_overlay(request.frame.image, classes)
        return Result(request.frame, prediction.model, prediction.inference_ms,
                      outputs, raw=prediction.outputs,
                      window_start=request.extra["window_start"], rows=rows_of(classes),
                      first_header=request.extra["first_header"])

    def _along_time(self, start: int, stop: int) -> Tuple[slice, ...]:
        """Index of frames ``start:stop`` of a ring or clip (no batch dimension)."""
        return (slice(None),) * self._time_axis + (slice(start, stop),)


def _check_input(model: BackendModel, channels_first: bool, channels: int, length: int) -> None:
    """Refuses a model whose single input is not a clip of ``length`` frames in this layout."""
    if len(model.inputs) != 1 or not model.inputs[0].shape:
        return  # nothing declared: the model call itself will tell
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 5:
        raise InputError(f"the clip pipeline feeds clips [N, C, T, H, W] or [N, T, H, W, C], "
                         f"but {model.describe()} takes {list(shape)}; serve a clip model or "
                         "use pipeline:=classify for one frame at a time")
    t, c = (shape[2], shape[1]) if channels_first else (shape[1], shape[4])
    layout = "[N, C, T, H, W]" if channels_first else "[N, T, H, W, C]"
    if c > 0 and c != channels:
        raise InputError(f"{model.describe()} takes {list(shape)}, which in the layout "
                         f"{layout} has {c} channels, but the format gives {channels}; set "
                         "~channels_first (the layout) or ~color (gray: 1 channel)")
    if t > 0 and t != length:
        raise InputError(f"{model.describe()} takes clips of {t} frames ({list(shape)}), but "
                         f"~clip_length is {length}; set ~clip_length to {t} or leave it unset")
