"""Training a KerasModel with ``model.fit``, driven by ml_bridge's neutral callbacks.

The neutral callbacks ride on ``model.fit`` through :class:`_Forward`, a Keras callback. A
stop request is polled after every batch; when it is true, :class:`_Stop` is raised from the
batch hook, which leaves Keras's epoch loop at once: the rest of the epoch, its validation
pass and its ``on_epoch_end`` never run (``model.stop_training`` would wait for all three).
"""
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig

if TYPE_CHECKING:
    from .model import KerasModel


class _Stop(Exception):
    """Raised from a batch hook to leave model.fit at once."""


def _floats(logs: Optional[dict]) -> Logs:
    out: Logs = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(np.asarray(value))
        except (TypeError, ValueError):
            continue  # non-scalar entries (rare custom metrics) are not progress numbers
    return out


class _Forward(keras.callbacks.Callback):
    """Forwards Keras's hooks to a neutral Callback and polls its stop request."""

    def __init__(self, callbacks: Callback, keep_partial: bool) -> None:
        super().__init__()
        self.callbacks = callbacks
        self.keep_partial = keep_partial
        self.history: List[Logs] = []
        self.batches = 0
        self.snapshot: Optional[List[np.ndarray]] = None

    def _poll(self) -> None:
        if self.callbacks.should_stop():
            raise _Stop()

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        if self.keep_partial:
            self.snapshot = self.model.get_weights()
        self.callbacks.on_train_begin(_floats(logs))

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self.callbacks.on_train_end(_floats(logs))

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._poll()
        self.callbacks.on_epoch_begin(epoch, _floats(logs))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        if self.keep_partial:  # only then: a copy of every weight per epoch is not free
            self.snapshot = self.model.get_weights()
        epoch_logs = _floats(logs)
        self.history.append(epoch_logs)
        self.callbacks.on_epoch_end(epoch, epoch_logs)

    def on_train_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None:
        self._poll()
        self.callbacks.on_batch_begin(batch, _floats(logs))

    def on_train_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self.batches += 1
        self.callbacks.on_batch_end(batch, _floats(logs))
        self._poll()

    def on_test_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        self._poll()  # a stop must not wait for the validation pass either


def _optimizer(model: "KerasModel", learning_rate: float) -> Any:
    spec = model.optimizer
    if spec is None:
        return keras.optimizers.Adam(learning_rate=learning_rate)
    if isinstance(spec, keras.optimizers.Optimizer):
        # A fresh copy: an optimizer instance is bound to the variables it first trained.
        optimizer = type(spec).from_config(spec.get_config())
        optimizer.learning_rate = learning_rate
        return optimizer
    if isinstance(spec, str):
        return keras.optimizers.get({"class_name": spec,
                                     "config": {"learning_rate": learning_rate}})
    if callable(spec):
        return spec(learning_rate)
    raise TrainingError(f"optimizer {spec!r} is neither a keras Optimizer, a name nor a "
                        "callable(learning_rate)")


def _dense_metrics(model: "KerasModel") -> List[Any]:
    """Per-pixel metrics: accuracy over pixels and mean IoU from the epoch's confusion matrix
    (Keras accumulates it over the epoch and resets it at the next; the arg-max over the
    class axis makes it work on logits and on probabilities alike)."""
    spec = model.outputs[0].shape
    classes = spec[-1] if spec[-1] > 0 else len(model.labels)
    return [keras.metrics.SparseCategoricalAccuracy(name="pixel_accuracy"),
            keras.metrics.MeanIoU(num_classes=classes, sparse_y_pred=False, name="mean_iou")]


def _loss_and_metrics(model: "KerasModel", dense: bool) -> Tuple[Any, Any]:
    n_out = len(model.outputs)
    if model.loss is not None:
        loss = model.loss
    elif model.is_classifier:
        first = keras.losses.SparseCategoricalCrossentropy(
            from_logits=not model.outputs_probabilities)
        loss = first if n_out == 1 else [first] + ["mse"] * (n_out - 1)
    else:
        loss = "mse" if n_out == 1 else ["mse"] * n_out
    if model.metrics:
        metrics: Any = list(model.metrics)
    elif dense:
        first_metrics = _dense_metrics(model)
        metrics = first_metrics if n_out == 1 else [first_metrics] + [[]] * (n_out - 1)
    elif model.is_classifier:
        metrics = ["accuracy"] if n_out == 1 else [["accuracy"]] + [[]] * (n_out - 1)
    else:
        metrics = None
    return loss, metrics


def _one_or_list(arrays: List[np.ndarray]) -> Any:
    return arrays[0] if len(arrays) == 1 else arrays


def fit(model: "KerasModel", train: Dataset, validation: Optional[Dataset], config: TrainConfig,
        callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
    """Trains ``model`` in place on this thread (call it with the model's context restored).

    Compiles with the model's optimizer, loss and metrics (default: Adam; sparse categorical
    cross-entropy on logits plus accuracy for classifiers, else mean squared error) and runs
    ``model.fit`` with ``verbose=0``. Hooks get 0-based epochs and logs of floats (``loss``,
    ``accuracy``, ``val_loss``, ``val_accuracy``; for targets with a class per pixel
    ``pixel_accuracy`` and ``mean_iou`` instead of ``accuracy``, and their ``val_`` twins).
    ``callbacks.should_stop()`` is polled after every batch; on a stop ``on_train_end`` still
    runs (for native callbacks too) and, with ``config.keep_partial``, the weights go back to
    the end of the last completed epoch (or to the start if none completed). Without
    keep_partial a stopped model holds the weights of the interrupted batch: callers should
    drop it.

    Raises:
        TrainingError: invalid config, or Keras/TensorFlow failed while training.
        DatasetError: the data does not fit the model (raised before any training).
    """
    config.validate()
    for native in native_callbacks:
        if not isinstance(native, keras.callbacks.Callback):
            raise TrainingError(f"native callback {native!r} is a {type(native).__name__}, not a "
                                "keras.callbacks.Callback (Keras 3)")
    x, y = model.prepare(train)
    validation_data = None
    if validation is not None:
        vx, vy = model.prepare(validation)
        validation_data = (_one_or_list(vx), _one_or_list(vy))
    learning_rate = config.learning_rate or model.default_learning_rate
    batch_size = config.batch_size or model.default_batch_size
    keras_model = model.model
    # Per-pixel targets ([N, H, W] class ids, checked against the output by prepare).
    dense = model.is_classifier and y[0].ndim == 3
    loss, metrics = _loss_and_metrics(model, dense)
    with tf.device(model.device):
        # No XLA: its compile time dominates the short runs a robot does, and it retraces.
        keras_model.compile(optimizer=_optimizer(model, learning_rate), loss=loss,
                            metrics=metrics, jit_compile=False)
        forward = _Forward(callbacks, config.keep_partial)
        stopped = False
        try:
            keras_model.fit(_one_or_list(x), _one_or_list(y), batch_size=batch_size,
                            epochs=config.epochs, validation_data=validation_data,
                            shuffle=True, verbose=0,
                            callbacks=[forward, *native_callbacks])
        except _Stop:
            stopped = True
        except (tf.errors.OpError, ValueError, TypeError) as err:
            raise TrainingError(f"training {model.source} failed: {type(err).__name__}: "
                                f"{str(err).strip()[:2000]}") from err
    if stopped:
        last = forward.history[-1] if forward.history else {}
        callbacks.on_train_end(dict(last))
        for native in native_callbacks:  # Keras skips on_train_end when fit raises
            native.on_train_end(dict(last))
        if config.keep_partial and forward.snapshot is not None:
            keras_model.set_weights(forward.snapshot)
    else:
        stopped = len(forward.history) < config.epochs  # a native callback stopped it
    return FitResult(epochs_completed=len(forward.history), stopped=stopped,
                     history=list(forward.history))
