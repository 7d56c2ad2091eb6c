"""KerasModel: a Keras 3 model served eagerly through one compiled call, trainable."""
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from ml_bridge.core.box_targets import CenterGrid, check_boxes
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import (
    CheckpointError,
    DatasetError,
    InputError,
    ModelLoadError,
    TrainingError,
)
from ml_bridge.core.model import BackendModel, ImagePreprocess
from ml_bridge.core.spec import ArraySpec, validate_inputs
from ml_bridge.core.targets import canonical_targets
from ml_bridge.core.training import Callback, FitResult, TrainConfig
from ml_bridge.core.vision import ImageFormat

from . import trainer
from .core import capture
from .loading import check_weights_file
from .specs import first_line, input_specs, output_specs, zero_batch


class KerasModel(BackendModel):
    """A Keras 3 model (functional, Sequential or subclassed) in eager mode.

    Predictions go through one ``tf.function`` traced once, at load, for a batch of any size:
    ``model.predict`` builds a dataset and a step loop on every call (milliseconds); one
    concrete-function call costs about a quarter of a millisecond for digits_mlp on a CPU.
    """

    backend = "tensorflow"
    checkpoint_suffix = ".weights.h5"

    def __init__(self, model: keras.Model, source: str, device: str = "/CPU:0",
                 labels: Sequence[str] = (), outputs_probabilities: bool = False,
                 preprocess_image: Optional[ImagePreprocess] = None, loss: Any = None,
                 optimizer: Any = None, metrics: Sequence[Any] = (), batch_size: int = 32,
                 learning_rate: float = 1e-3, rebuild: Optional[Callable[[], Any]] = None,
                 specs: Optional[Sequence[List[ArraySpec]]] = None,
                 image_format: Optional[ImageFormat] = None,
                 box_grid: Optional[CenterGrid] = None) -> None:
        """Wraps ``model``; build it, and call this, inside ``tf.device(device)``.

        Args:
            model: a built ``keras.Model`` (Keras 3).
            source: what the user asked for, for logs.
            device: TensorFlow device, e.g. "/CPU:0" or "/GPU:0".
            labels: class labels; non-empty makes it a classifier (output 0 = class scores).
            outputs_probabilities: output 0 already holds probabilities (softmax applied).
            preprocess_image: image -> model inputs, for image topics.
            loss: Keras loss for training; None = cross-entropy (classifier) or MSE.
            optimizer: Keras optimizer instance, name or ``callable(learning_rate)``;
                None = Adam.
            metrics: Keras metrics; empty = accuracy for classifiers.
            batch_size: default training batch size.
            learning_rate: default learning rate.
            rebuild: returns a fresh model of the same architecture (used by :meth:`clone`
                when ``keras.models.clone_model`` cannot copy a subclassed model).
            specs: (inputs, outputs) when already known (clones), to skip probing.
            image_format: what a vision model takes per frame (pipelines and the built-in
                image datasets use it); None for models that take no images.
            box_grid: for a detector trained on boxes, the grid its targets are encoded on
                (its labels then name box classes: it is not a classifier).

        Raises:
            ModelLoadError: not a Keras 3 model, or its input shapes cannot be told.
        """
        if not isinstance(model, keras.Model):
            raise ModelLoadError(
                f"{source} gave a {type(model).__module__}.{type(model).__name__}, not a Keras 3 "
                "keras.Model (tf_keras / Keras 2 models: export a SavedModel and load that)")
        if not tf.executing_eagerly():
            raise ModelLoadError("Keras 3 models need eager execution, but it is disabled "
                                 "(tf.compat.v1.disable_eager_execution was called)")
        self.model = model
        self.source = source
        self.device = device
        self.labels = [str(label) for label in labels]
        self.box_grid = box_grid
        self.is_classifier = bool(self.labels) and box_grid is None
        self.outputs_probabilities = bool(outputs_probabilities)
        self.preprocess_image = preprocess_image
        self.loss = loss
        self.optimizer = optimizer
        self.metrics = list(metrics)
        self.default_batch_size = int(batch_size)
        self.default_learning_rate = float(learning_rate)
        self._rebuild = rebuild
        self.image_format = image_format
        if specs is None:
            self.inputs = input_specs(model, source)
            self._call = self._compile_call()
            self.outputs = output_specs(model, self.inputs, self._call)
        else:
            self.inputs, self.outputs = list(specs[0]), list(specs[1])
            self._call = self._compile_call()
        # Scores [N, C] and per-pixel [N, h, w, C] end in their classes; a detector's
        # [N, 4 + C, A] or [N, A, 5 + C] does not: its layout is read by the detect pipeline.
        if self.is_classifier and len(self.outputs[0].shape) in (2, 4) and \
                self.outputs[0].shape[-1] not in (-1, len(self.labels)):
            raise ModelLoadError(f"{source} has {len(self.labels)} labels but its output 0 is "
                                 f"{self.outputs[0].describe()}: one label per class is needed")

    def _compile_call(self) -> Callable[..., List[tf.Tensor]]:
        model = self.model
        single = len(self.inputs) == 1
        signature = [tf.TensorSpec([None if d < 0 else d for d in s.shape], tf.as_dtype(s.dtype))
                     for s in self.inputs]

        def call(*xs: tf.Tensor) -> List[tf.Tensor]:
            out = model(xs[0] if single else list(xs), training=False)
            return list(tf.nest.flatten(out))

        # A fixed signature with a free batch dimension: one trace serves every batch size.
        # The concrete function skips tf.function's per-call argument matching (~35% faster).
        self._function = tf.function(call, input_signature=signature)
        return self._function.get_concrete_function()  # type: ignore[no-any-return]

    def capture_context(self) -> Context:
        """This thread's TensorFlow state plus the model's device scope."""
        return capture(device=self.device)

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        """Runs the compiled call on validated inputs; numpy outputs, batch first."""
        return [t.numpy() for t in self._call(*[tf.constant(a) for a in inputs])]

    def clone(self) -> "KerasModel":
        """A copy with its own variables and the same weights, on the same device."""
        weights = self.model.get_weights()
        with tf.device(self.device):
            try:
                copy = keras.models.clone_model(self.model)
                copy.set_weights(weights)
            except Exception as err:  # subclassed models often cannot be cloned from config
                if self._rebuild is None:
                    raise TrainingError(f"cannot copy {self.source} for training: "
                                        f"keras.models.clone_model failed ({err})") from err
                copy = _unwrap(self._rebuild())
                if len(copy.weights) != len(weights):  # variables are made on the first call
                    zeros = zero_batch(self.inputs)
                    copy(zeros[0] if len(zeros) == 1 else zeros, training=False)
                copy.set_weights(weights)
        return KerasModel(copy, self.source, self.device, self.labels, self.outputs_probabilities,
                          self.preprocess_image, self.loss, self.optimizer, self.metrics,
                          self.default_batch_size, self.default_learning_rate, self._rebuild,
                          specs=(self.inputs, self.outputs), image_format=self.image_format,
                          box_grid=self.box_grid)

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        """Trains in place; see :func:`ml_bridge.backends.tensorflow.trainer.fit`.

        Args:
            train: training data.
            validation: validation data, or None.
            config: epochs, batch size, learning rate, keep_partial.
            callbacks: the neutral callbacks (progress, stop requests).
            native_callbacks: ``keras.callbacks.Callback`` objects passed to ``model.fit``.
        """
        return trainer.fit(self, train, validation, config, callbacks, native_callbacks)

    def check_targets(self, dataset: Dataset) -> None:
        """Raises DatasetError if the dataset's inputs or targets do not fit this model."""
        self.prepare(dataset)

    def prepare(self, dataset: Dataset) -> Tuple[List[np.ndarray], List[np.ndarray]]:
        """Validated inputs and targets in the dtypes and shapes training feeds to Keras.

        Classifier targets are class ids in [0, n_classes), shaped [N] or [N, 1] (or [N, H, W],
        a class per pixel, when output 0 holds per-pixel scores [N, H, W, C]), of an integer
        dtype or whole-valued floats (as ``values`` in a Tensor message arrive); they become
        int64 [N] (or [N, H, W]). Other targets must match the output's shape after the batch
        dimension.

        Raises:
            DatasetError: naming the array and what is wrong with it.
        """
        dataset.check()
        try:
            inputs = validate_inputs(dataset.inputs, self.inputs, max_elements=sys.maxsize)
        except InputError as err:
            raise DatasetError(f"dataset '{dataset.name}' does not fit the model: {err}") from err
        if len(dataset.targets) != len(self.outputs):
            raise DatasetError(f"dataset '{dataset.name}' has {len(dataset.targets)} target "
                               f"array(s); the model has {len(self.outputs)} output(s)")
        first = dataset.targets[0]
        if self.box_grid is not None:  # a detector: boxes [N, K, 5], encoded by the trainer
            return inputs, [check_boxes(f"dataset '{dataset.name}' target 0", first,
                                        self.box_grid.classes)]
        if self.is_classifier and first.ndim == 3:  # the layout is ours: [N, H, W, C] scores
            self._check_dense(f"dataset '{dataset.name}' target 0", first, inputs)
        targets = canonical_targets(dataset.name, dataset.targets, self.outputs,
                                    self.n_classes() if self.is_classifier else 0)
        return inputs, targets

    def _check_dense(self, where: str, target: np.ndarray, inputs: List[np.ndarray]) -> None:
        """Per-pixel targets [N, H, W] need per-pixel scores [N, H, W, C] of the same H x W."""
        out = tuple(self.outputs[0].shape)
        if len(out) == 4 and min(out[1:3]) < 0:  # free spatial size: run one sample to see
            out = (-1,) + tuple(self.predict([a[:1] for a in inputs])[0].shape[1:])
        if len(out) != 4:
            raise DatasetError(f"{where} has shape {list(target.shape)}, a class per pixel, but "
                               f"the model's output 0 is {list(out)}, not per-pixel class scores "
                               "[N, H, W, C]")
        if tuple(target.shape[1:]) != tuple(out[1:3]):
            raise DatasetError(f"{where} is {target.shape[1]} x {target.shape[2]} class ids per "
                               f"pixel, but the model's output 0 is {out[1]} x {out[2]} per "
                               f"pixel ({list(out)}); resize the masks (nearest-neighbour) to "
                               "the output's size")

    def save_checkpoint(self, path: str) -> None:
        """Writes the weights (Keras ``.weights.h5``) to ``path``.

        Raises:
            CheckpointError: the path does not end in ``.weights.h5`` or cannot be written.
        """
        if not path.endswith(self.checkpoint_suffix):
            raise CheckpointError(f"cannot save {path}: Keras weight files must end in "
                                  f"'{self.checkpoint_suffix}'")
        try:
            self.model.save_weights(path)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot save {path}: {err}") from err

    def load_checkpoint(self, path: str) -> None:
        """Loads ``.weights.h5`` weights; the model is unchanged if that fails.

        Only HDF5 arrays are read: nothing in the file is unpickled or executed.

        Raises:
            CheckpointError: missing, not HDF5 (e.g. a pickle), corrupt, or not this model's.
        """
        check_weights_file(path, self.checkpoint_suffix, len(self.model.weights))
        before = self.model.get_weights()
        try:
            self.model.load_weights(path)
        except Exception as err:  # h5py and Keras raise many types for one cause: a bad file
            self.model.set_weights(before)  # a failed load may have assigned some layers
            raise CheckpointError(f"cannot load checkpoint {path}: {type(err).__name__}: "
                                  f"{first_line(err)}") from err

    def weights_finite(self) -> bool:
        """False if any floating-point weight (variables and non-trainable state) is NaN or inf."""
        return all(bool(np.isfinite(w).all()) for w in self.model.get_weights()
                   if np.issubdtype(np.asarray(w).dtype, np.inexact))

    def framework_version(self) -> str:
        """TensorFlow's version, e.g. "2.21.0"."""
        return str(tf.__version__)

    def describe(self) -> str:
        """Source, Keras model name, parameter count and device."""
        params = self.model.count_params()
        return f"{self.source} (keras {self.model.name}, {params} parameters, {self.device})"


def _unwrap(built: Any) -> Any:
    """The keras.Model of a factory's result (a model or a ModelBundle)."""
    return getattr(built, "model", built)
