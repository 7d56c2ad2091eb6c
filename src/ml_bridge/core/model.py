"""The interface every backend's model implements. Framework-neutral.

A BackendModel is only ever called with its backend's context restored, and never by two
predictions at once (:mod:`ml_bridge.core.execution`: on the model thread, or on a caller's thread
holding the model lock); training runs on a *copy* (:meth:`BackendModel.clone`), so the
served model keeps answering meanwhile.
"""
import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ml_bridge.core.box_targets import CenterGrid
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.training import Callback, FitResult, TrainConfig
from ml_bridge.core.vision import ImageFormat

#: Turns an image (H x W uint8 gray, or H x W x 3 uint8 RGB) into the model's inputs (batch 1).
ImagePreprocess = Callable[[np.ndarray], List[np.ndarray]]


@dataclass
class ModelOptions:
    """How to build a model: what the launch arguments and Python callers pass."""

    device: str = "cpu"
    input_tensor: str = ""       # frozen GraphDef: input tensor name, e.g. "x:0"
    output_tensor: str = ""      # frozen GraphDef: output tensor name
    labels: Sequence[str] = ()   # overrides the model's own labels
    extra: Dict[str, str] = field(default_factory=dict)


@dataclass
class ModelBundle:
    """What a ``package.module:callable`` factory may return instead of a bare model.

    Only ``model`` is required; the rest default to the backend's choices (cross-entropy and
    Adam for classifiers, mean squared error otherwise).
    """

    model: Any                                   # torch.nn.Module or keras.Model
    labels: Sequence[str] = ()                   # makes it a classifier
    loss: Any = None                             # torch: callable(out, target); keras: loss
    optimizer: Any = None                        # torch: callable(params, lr) -> Optimizer
    metrics: Sequence[Any] = ()                  # keras metrics; torch: accuracy if labels
    preprocess_image: Optional[ImagePreprocess] = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    outputs_probabilities: bool = False
    image_format: Optional[ImageFormat] = None   # vision models: what the pipelines feed it
    box_grid: Optional[CenterGrid] = None        # detectors trained on boxes (BackendModel's)


@dataclass(frozen=True)
class ModelStamp:
    """What a result needs to know about the model that produced it.

    Taken once per swap and handed out with every output on the model thread, so a result
    is never labelled with the labels or version of a model swapped in after it ran.
    """

    version: int
    labels: Tuple[str, ...] = ()
    output_names: Tuple[str, ...] = ()
    outputs_probabilities: bool = False
    is_classifier: bool = False

    @classmethod
    def of(cls, model: "BackendModel", version: int) -> "ModelStamp":
        """The stamp of ``model`` served as ``version``."""
        return cls(version, tuple(model.labels), tuple(s.name for s in model.output_specs),
                   bool(model.outputs_probabilities), bool(model.is_classifier))

    def label(self, class_id: int) -> str:
        """The label of ``class_id`` ("" when the model has none for it)."""
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else ""


class BackendModel(abc.ABC):
    """One loaded model of one framework."""

    #: "torch" or "tensorflow".
    backend: str = ""
    #: What was asked for (built-in name, factory path or file).
    source: str = ""
    #: Resolved device string, e.g. "cpu", "cuda:0", "/device:CPU:0".
    device: str = "cpu"
    #: What the model takes and returns: one spec per array, in order (``inputs`` and
    #: ``outputs``, their former names, still work).
    input_specs: List[ArraySpec]
    output_specs: List[ArraySpec]
    #: Class labels of a classifier; empty for other models.
    labels: List[str]
    #: True when output 0 is per-class scores: the node adds class ids, scores and labels.
    is_classifier: bool = False
    #: True when output 0 already holds probabilities (no softmax needed for scores).
    outputs_probabilities: bool = False
    #: Image preprocessing for image topics, or None if the model takes no images.
    preprocess_image: Optional[ImagePreprocess] = None
    #: What a vision model takes per frame (size, mean/std, colour, layout, clip length);
    #: the image pipelines and the built-in image datasets use it. None: not a vision model.
    image_format: Optional[ImageFormat] = None
    default_batch_size: int = 32
    default_learning_rate: float = 1e-3
    #: A detector trained on box targets ([K, 5] per frame): the grid its targets are encoded
    #: on and its output laid out by (the built-in detectors); None for every other model.
    box_grid: Optional[CenterGrid] = None
    #: File name suffix of this backend's checkpoints, e.g. ".pt" or ".weights.h5".
    checkpoint_suffix: str = ".ckpt"

    @abc.abstractmethod
    def capture_context(self) -> Context:
        """Captures this thread's framework state that the model needs (call in main)."""

    @abc.abstractmethod
    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        """Runs inference on validated inputs; returns numpy outputs with the batch first."""

    @property
    def trainable(self) -> bool:
        """False for models that cannot be trained (frozen graphs, SavedModels)."""
        return True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for former, name in (("inputs", "input_specs"), ("outputs", "output_specs")):
            declared = cls.__dict__.get(former)
            if declared is not None and not isinstance(declared, property):
                setattr(cls, name, declared)  # a subclass written with the former name
                delattr(cls, former)  # so that the property (and its setter) applies again

    @property
    def inputs(self) -> List[ArraySpec]:
        """Deprecated name of :attr:`input_specs`: ``inputs`` names the arrays elsewhere."""
        return self.input_specs

    @inputs.setter
    def inputs(self, specs: List[ArraySpec]) -> None:
        self.input_specs = specs

    @property
    def outputs(self) -> List[ArraySpec]:
        """Deprecated name of :attr:`output_specs`: ``outputs`` names the arrays elsewhere."""
        return self.output_specs

    @outputs.setter
    def outputs(self, specs: List[ArraySpec]) -> None:
        self.output_specs = specs

    @abc.abstractmethod
    def clone(self) -> "BackendModel":
        """An independent copy with the same weights, to train while this one serves."""

    @abc.abstractmethod
    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        """Trains in place on this thread.

        ``native_callbacks`` are the framework's own callback objects (keras.callbacks.Callback);
        a backend without such a type raises TrainingError if any are given.

        Calls ``callbacks`` hooks with logs holding ``loss``, ``accuracy`` for classifiers and
        ``val_loss``/``val_accuracy`` with validation data; polls ``callbacks.should_stop()``
        after every batch and returns (stopped=True) at once when it is true, without calling
        ``on_epoch_end`` for the partial epoch. When ``config.keep_partial`` is true and it
        stops, the weights are those at the end of the last completed epoch.
        """

    @abc.abstractmethod
    def check_targets(self, dataset: Dataset) -> None:
        """Raises DatasetError if the dataset's inputs or targets do not fit this model.

        Backends check targets with :func:`ml_bridge.core.targets.canonical_targets`, and only
        add what depends on their layout (per-pixel scores channels first or last).
        """

    def n_classes(self) -> int:
        """Number of classes of a classifier's output 0: one per label unless a backend knows."""
        return len(self.labels)

    @abc.abstractmethod
    def save_checkpoint(self, path: str) -> None:
        """Writes the weights to ``path`` (the caller makes it atomic)."""

    @abc.abstractmethod
    def load_checkpoint(self, path: str) -> None:
        """Loads weights from ``path`` without executing code from it.

        Raises:
            CheckpointError: the file is corrupt, does not fit, or carries code.
        """

    def weights_finite(self) -> bool:
        """False if any weight is NaN or infinite (a diverged run); call with the context restored.

        ModelServer checks it before swapping in trained weights and after loading a
        checkpoint. The default, for models whose weights cannot be read, says True.
        """
        return True

    def framework_version(self) -> str:
        """Version of the framework, e.g. "2.13.0"."""
        return ""

    def describe(self) -> str:
        """One line for logs and ``~info``."""
        return self.source
