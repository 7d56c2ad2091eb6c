"""The pipeline interface: what happens between a frame and the model's tensors, and back.

A pipeline is framework-neutral and ROS-neutral. Per stream (one camera) it keeps a state
object; the stream engine (:mod:`ml_bridge.pipelines.stream`) feeds it events in arrival
order and runs the model when it says a request is due::

    state = pipeline.new_state()
    if pipeline.accept(frame, state):           # the frame enters the state
        request = pipeline.request(state)       # tensors for the model (or None)
        prediction = server.predict(request.inputs)
        result = pipeline.postprocess(request, prediction, wanted)

``wanted`` names the outputs someone listens to (``mask``, ``overlay``, ``predictions``, ...):
an output nobody wants is not computed. :meth:`Pipeline.run` does all of it for one frame,
for use from Python without ROS.
"""
import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, Generic, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel, ModelStamp
from ml_bridge.core.params import Schema
from ml_bridge.core.server import ModelOutput
from ml_bridge.core.vision import IMAGE_PARAMS, ImageFormat

S = TypeVar("S")
#: Runs the model on a request's inputs (ModelServer.predict, or a fake in tests).
PredictFn = Callable[[List[np.ndarray]], ModelOutput]


@dataclass
class Frame:
    """One camera frame, as the pipelines see it.

    Attributes:
        image: H x W (mono) or H x W x 3 RGB, uint8.
        stamp: the frame's time stamp in seconds (the ROS header's stamp).
        header: passed through untouched to every result (a std_msgs/Header in ROS).
        encoding: the source encoding, e.g. ``bgr8``: the overlay is published in it.
    """

    image: np.ndarray
    stamp: float = 0.0
    header: Any = None
    encoding: str = "rgb8"


@dataclass
class Request:
    """Tensors for one model call and what postprocessing needs to know about them."""

    inputs: List[np.ndarray]
    frame: Frame
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Classes:
    """Classifier results: one entry per batch row (or per class present, for masks)."""

    class_ids: List[int] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    labels: List[str] = field(default_factory=list)


@dataclass
class Result:
    """What a pipeline made of one request; the ROS layer publishes its ``outputs``.

    ``outputs`` maps an output name to its value: ``predictions`` -> :class:`Classes`,
    ``mask``/``overlay`` -> uint8 images, ``objects`` -> a list of object results. Only the
    outputs that were wanted are present. ``rows`` are what rules look at: one dict per class
    or object with ``label``, ``class_id`` and ``score``.
    """

    frame: Frame
    model: ModelStamp
    inference_ms: float
    outputs: Dict[str, Any] = field(default_factory=dict)
    raw: List[np.ndarray] = field(default_factory=list)
    window_start: Optional[float] = None
    rows: List[Dict[str, Any]] = field(default_factory=list)
    #: Clip windows: the first frame's header, passed through untouched like ``frame.header``
    #: (ROS takes ``window_start`` from its stamp: a float loses nanoseconds of a real stamp).
    first_header: Any = None

    @property
    def model_version(self) -> int:
        """Version of the model that produced the result."""
        return self.model.version


class Pipeline(abc.ABC, Generic[S]):
    """One vision task. Subclasses set the class attributes and implement the four methods.

    Class attributes:
        name: the ``pipeline`` launch argument that selects it.
        outputs: names of the outputs it can publish (topics under the stream's namespace).
        keeps_every_frame: True when every frame must reach :meth:`accept` (clip windows,
            detection matching); False when only the latest frame matters.
        every_request: True when every due request must run (one result per detection
            message); False when only the latest due request runs (the rest are counted as
            skipped).
        event_kinds: the kinds of event it takes: ``image``, and ``detections`` for objects
            (``inputs``, its former name, still works: set by a subclass, it is read as this).
        parameters: its own ``~`` parameters, read into :attr:`settings` when it is built;
            the image format's (:data:`ml_bridge.core.vision.IMAGE_PARAMS`) are every image
            pipeline's and are read by :func:`image_format`.
    """

    name: str = ""
    outputs: Sequence[str] = ("predictions",)
    keeps_every_frame: bool = False
    every_request: bool = False
    event_kinds: Sequence[str] = ("image",)
    parameters: Schema = Schema("pipeline")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("inputs")
        if declared is not None and not isinstance(declared, property):
            cls.event_kinds = tuple(declared)  # a subclass written with the former name

    @property
    def inputs(self) -> Sequence[str]:
        """Deprecated name of :attr:`event_kinds`: ``inputs`` names the model's arrays elsewhere."""
        return self.event_kinds

    def queue_size(self) -> int:
        """How many frames the image subscriber may queue: 1 when the latest frame wins."""
        return 1

    def __init__(self, model: BackendModel, params: Optional[Mapping[str, Any]] = None) -> None:
        """Reads the pipeline's parameters (the node's ``~`` parameters) and the model's defaults.

        Raises:
            InputError: a parameter is invalid, or the model does not suit the pipeline.
        """
        self.params: Mapping[str, Any] = dict(params or {})
        #: The values of :attr:`parameters`, checked.
        self.settings: Dict[str, Any] = self.parameters.read(self.params)
        self.model_source = model.describe()

    @abc.abstractmethod
    def new_state(self) -> S:
        """A fresh per-stream state."""

    def restart(self, state: S) -> S:
        """The state to go on with after the stream lost events (a full queue) or nobody
        listened: nothing of the old window may be used again. The default starts afresh; a
        pipeline may keep its buffers and counters."""
        return self.new_state()

    def counters(self, state: S) -> Dict[str, int]:
        """The pipeline's own per-stream counters for diagnostics (e.g. frames it dropped)."""
        return {}

    @abc.abstractmethod
    def accept(self, frame: Frame, state: S) -> bool:
        """Takes a frame into the state; True when a request is due."""

    def accept_detections(self, detections: Any, state: S) -> bool:
        """Takes a detections message (pipelines whose ``inputs`` include ``detections``)."""
        raise InputError(f"the '{self.name}' pipeline takes no detections")

    @abc.abstractmethod
    def request(self, state: S) -> Optional[Request]:
        """The request that is due, built from the state (None: nothing to run after all)."""

    @abc.abstractmethod
    def postprocess(self, request: Request, prediction: ModelOutput,
                    wanted: FrozenSet[str]) -> Result:
        """Turns the model's outputs for ``request`` into a result with the wanted outputs."""

    def run(self, frame: Frame, predict: PredictFn, state: Optional[S] = None,
            wanted: Optional[FrozenSet[str]] = None) -> Optional[Result]:
        """Everything for one frame, on this thread: accept, request, predict, postprocess.

        ``state`` carries over between calls (clip windows); None uses a fresh one.
        """
        state = self.new_state() if state is None else state
        if not self.accept(frame, state):
            return None
        request = self.request(state)
        if request is None:
            return None
        return self.postprocess(request, predict(request.inputs),
                                frozenset(self.outputs) if wanted is None else wanted)


def image_format(model: BackendModel, params: Mapping[str, Any]) -> ImageFormat:
    """The model's image format with the node's overrides (``~input_size``, ``~mean``, ...).

    A model without one (a file or factory model) gets one from its input spec: [N, C, H, W]
    or [N, H, W, C] with fixed sizes; otherwise ``~input_size`` must be given.

    Raises:
        InputError: no format can be told, or an override is invalid.
    """
    fmt = model.image_format
    if fmt is None:
        fmt = format_from_spec(model)
    if fmt is None:
        if IMAGE_PARAMS["input_size"].read(params.get("input_size")) is None:
            shape = model.inputs[0].shape if model.inputs else ()
            raise InputError(f"cannot tell what images {model.describe()} takes (input shape "
                             f"{list(shape)}); set ~input_size [H, W] (and ~channels_first, "
                             "~mean, ~std, ~color as the model needs)")
        fmt = ImageFormat((1, 1))
    return fmt.with_overrides(params)


def format_from_spec(model: BackendModel) -> Optional[ImageFormat]:
    """An image format read off a 4-D or 5-D input spec with fixed sizes, else None."""
    if len(model.inputs) != 1:
        return None
    shape = model.inputs[0].shape
    if len(shape) == 4:
        first = shape[1] in (1, 3)
        c, h, w = (shape[1], shape[2], shape[3]) if first else (shape[3], shape[1], shape[2])
        if h > 0 and w > 0 and c in (1, 3):
            return _plain_format((h, w), c, first)
    if len(shape) == 5:
        first = shape[1] in (1, 3)
        c, t, h, w = (shape[1:5] if first else (shape[4], shape[1], shape[2], shape[3]))
        if h > 0 and w > 0 and c in (1, 3):
            return _plain_format((h, w), c, first, max(t, 0))
    return None


def _plain_format(size: Tuple[int, int], channels: int, first: bool, clip: int = 0) -> ImageFormat:
    """Pixel / 255, no mean or std, with as many mean/std values as channels (gray: one)."""
    return ImageFormat(size, (0.0,) * channels, (1.0,) * channels,
                       "gray" if channels == 1 else "rgb", first, clip)


def softmax(scores: np.ndarray, axis: int) -> np.ndarray:
    """Softmax along ``axis`` in float32, stable (max subtracted)."""
    shifted = scores.astype(np.float32, copy=True)
    shifted -= shifted.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def main_output(outputs: List[np.ndarray], names: Sequence[str]) -> np.ndarray:
    """The output a pipeline reads: the one named ``out`` (torchvision's segmentation models
    return ``{"out": ..., "aux": ...}``), else the first."""
    if not outputs:
        raise InputError("the model returned no outputs")
    for i, name in enumerate(names):
        if name == "out" and i < len(outputs):
            return outputs[i]
    return outputs[0]
