"""Training a KerasModel with ``model.fit``, driven by ml_bridge's neutral callbacks.

The neutral callbacks ride on ``model.fit`` through :class:`_Forward`, a Keras callback. A
stop request is polled after every batch; when it is true, :class:`_Stop` is raised from the
batch hook, which leaves Keras's epoch loop at once: the rest of the epoch, its validation
pass and its ``on_epoch_end`` never run (``model.stop_training`` would wait for all three).

Loss, metrics and keep_partial follow :mod:`ml_bridge.core.policy`; :func:`_loss_and_metrics`
translates the policy into Keras's losses and metrics.

What TensorFlow keeps, process-wide, of every run's traced step is released after the run
(:func:`released_traces`). Every goal trains a fresh copy of the served model, so Keras traces a
new train step each time, and two process-wide tables would keep them all, for good:

- the gradient registry: the optimizer sums gradients with ``ReplicaContext.all_reduce``,
  a ``tf.custom_gradient``; traced in graph mode, each one registers a ``CustomGradient-<n>``
  gradient function that is never unregistered and whose closure holds the whole traced
  train-step graph;
- the eager context's kernel cache: kernels instantiated for the run's functions and dataset
  ops stay cached after the functions themselves are gone.

Once a run is over nothing differentiates its step again, so both are dropped after each run.
"""
import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

from ml_bridge.backends.tensorflow.averaged import serving_callbacks
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.policy import (
    ACCURACY,
    CROSS_ENTROPY,
    MEAN_IOU,
    PIXEL_ACCURACY,
    OutputPolicy,
    PartialWeights,
    output_policies,
    per_pixel_targets,
)
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig

if TYPE_CHECKING:
    from .model import KerasModel

log = logging.getLogger(__name__)

_CUSTOM_GRADIENT = "CustomGradient-"

#: Seed of the training set's order (as the torch trainer's): the same goal gives the same weights.
SHUFFLE_SEED = 0


def _gradient_registry() -> Optional[Dict[str, Any]]:
    """TensorFlow's gradient function table (private), or None if this version has none."""
    table = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return table if isinstance(table, dict) else None


@contextmanager
def released_traces() -> Iterator[None]:
    """Around one training run: forgets the custom gradients it registered and cached kernels.

    Only registrations made while the run traced are removed, so it assumes nothing else in
    the process traces a ``tf.custom_gradient`` it will differentiate later, at the same time
    (ml_bridge's model thread only calls functions traced before the run).
    """
    registry = _gradient_registry()
    if registry is None:
        log.debug("no tf gradient registry in this TensorFlow: traced steps are not released")
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in list(registry):  # a copy: another thread may register meanwhile
                if name not in before and name.startswith(_CUSTOM_GRADIENT):
                    registry.pop(name, None)
        # Kernels are reference-counted: one running on another thread stays valid.
        context.context().clear_kernel_cache()


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

    def __init__(self, callbacks: Callback, partial: PartialWeights[List[np.ndarray]]) -> None:
        super().__init__()
        self.callbacks = callbacks
        self.partial = partial
        self.history: List[Logs] = []
        self.batches = 0

    def _poll(self) -> None:
        if self.callbacks.should_stop():
            raise _Stop()

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self.partial.begin()
        self.callbacks.on_train_begin(_floats(logs))

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        self.callbacks.on_train_end(_floats(logs))

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self._poll()
        self.callbacks.on_epoch_begin(epoch, _floats(logs))

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.partial.epoch_completed()
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


def _keras_loss(policy: OutputPolicy) -> Any:
    if policy.loss == CROSS_ENTROPY:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=policy.from_logits)
    return "mse"


def _keras_metric(name: str, model: "KerasModel") -> Any:
    """A metric of the policy in Keras. Per-pixel ones: Keras accumulates mean IoU's confusion
    matrix over the epoch and resets it at the next; the arg-max over the class axis makes both
    work on logits and on probabilities alike."""
    if name == PIXEL_ACCURACY:
        return keras.metrics.SparseCategoricalAccuracy(name=PIXEL_ACCURACY)
    if name == MEAN_IOU:
        spec = model.outputs[0].shape
        classes = spec[-1] if spec[-1] > 0 else len(model.labels)
        return keras.metrics.MeanIoU(num_classes=classes, sparse_y_pred=False, name=MEAN_IOU)
    if name == ACCURACY:
        return "accuracy"
    raise TrainingError(f"the tensorflow backend has no metric '{name}'")


def _loss_and_metrics(model: "KerasModel", dense: bool) -> Tuple[Any, Any]:
    """Keras's ``compile`` arguments: the model's own loss and metrics, else the policy's."""
    policies = output_policies(model.is_classifier, model.outputs_probabilities,
                               len(model.outputs), dense)
    losses = [_keras_loss(p) for p in policies]
    loss = model.loss if model.loss is not None else _one_or_list(losses)
    per_output = [[_keras_metric(name, model) for name in p.metrics] for p in policies]
    if model.box_grid is not None:  # a detector: map50, fresh for each run (it holds frames)
        from .detector import Map50

        metrics: Any = [Map50(model.box_grid)]
    elif model.metrics:
        metrics = list(model.metrics)
    elif any(per_output):
        metrics = _one_or_list(per_output)
    else:
        metrics = None
    return loss, metrics


def _one_or_list(items: List[Any]) -> Any:
    return items[0] if len(items) == 1 else items


def _shuffled_batches(x: List[np.ndarray], y: List[np.ndarray],
                      batch_size: int) -> tf.data.Dataset:
    """The training arrays in batches, shuffled anew every epoch from :data:`SHUFFLE_SEED`.

    Keras's own shuffle of arrays draws from TensorFlow's global seed, which nothing sets, so
    the same goal trained twice gave different weights (and held-out scores); with an op-level
    seed the order depends on the run alone.
    """
    data = tf.data.Dataset.from_tensor_slices(
        tuple(a[0] if len(a) == 1 else tuple(a) for a in (x, y)))
    return data.shuffle(len(x[0]), seed=SHUFFLE_SEED, reshuffle_each_iteration=True).batch(
        batch_size)


def fit(model: "KerasModel", train: Dataset, validation: Optional[Dataset], config: TrainConfig,
        callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
    """Trains ``model`` in place on this thread (call it with the model's context restored).

    The run's traced step is released afterwards (:func:`released_traces`).

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
    with released_traces():  # each run's traced step would otherwise stay in memory
        return _fit(model, train, validation, config, callbacks, native_callbacks)


def _fit(model: "KerasModel", train: Dataset, validation: Optional[Dataset],
         config: TrainConfig, callbacks: Callback, native_callbacks: Sequence[Any]) -> FitResult:
    config.validate()
    for native in native_callbacks:
        if not isinstance(native, keras.callbacks.Callback):
            raise TrainingError(f"native callback {native!r} is a {type(native).__name__}, not a "
                                "keras.callbacks.Callback (Keras 3)")
    x, y = model.prepare(train)
    grid = model.box_grid
    if grid is not None:  # a detector trains on its boxes' dense encoding
        y = [grid.encode(y[0])]
    validation_data = None
    if validation is not None:
        vx, vy = model.prepare(validation)
        if grid is not None:
            vy = [grid.encode(vy[0])]
        validation_data = (_one_or_list(vx), _one_or_list(vy))
    learning_rate = config.learning_rate or model.default_learning_rate
    batch_size = config.batch_size or model.default_batch_size
    keras_model = model.model
    # Per-pixel targets ([N, H, W] class ids, checked against the output by prepare).
    dense = grid is None and per_pixel_targets(model.is_classifier, y[0].ndim)
    loss, metrics = _loss_and_metrics(model, dense)
    with tf.device(model.device):
        # No XLA: its compile time dominates the short runs a robot does, and it retraces.
        keras_model.compile(optimizer=_optimizer(model, learning_rate), loss=loss,
                            metrics=metrics, jit_compile=False)
        partial = PartialWeights(config.keep_partial, keras_model.get_weights,
                                 keras_model.set_weights)
        forward = _Forward(callbacks, partial)
        averaging = serving_callbacks(keras_model)  # validate and serve the average, if any
        stopped = False
        try:
            # shuffle=False: the pipeline shuffles itself (Keras warns otherwise).
            keras_model.fit(_shuffled_batches(x, y, batch_size),
                            epochs=config.epochs, validation_data=validation_data,
                            shuffle=False, verbose=0,
                            callbacks=[forward, *averaging, *native_callbacks])
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
        partial.restore()
    else:
        stopped = len(forward.history) < config.epochs  # a native callback stopped it
    return FitResult(epochs_completed=len(forward.history), stopped=stopped,
                     history=list(forward.history))
