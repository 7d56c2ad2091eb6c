"""ModelServer: one served model, its executor, training, checkpoints and recorded data.

This is the Python API of ml_bridge; the ROS node is a thin layer over it::

    server = ModelServer.load("torch", "digits_mlp")      # in main: captures the context
    prediction = server.predict([x])                       # from any thread
    classify(prediction).class_ids                         # ml_bridge.pipelines.classify
    server.fit("digits", epochs=15, callbacks=[...])       # trains a copy, swaps it in

What a result means (class ids, masks, clips, objects) is the pipelines' business
(:mod:`ml_bridge.pipelines`); the server runs the model and says which model ran.
"""
import logging
import threading
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ml_bridge.core import registry
from ml_bridge.core.checkpoints import CheckpointStore
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import CheckpointError, InputError, TrainingError
from ml_bridge.core.execution import ModelExecutor, WorkerResult, make_executor
from ml_bridge.core.model import BackendModel, ModelOptions, ModelStamp
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.prediction import ModelInfo, ModelOutput
from ml_bridge.core.prediction import Prediction as Prediction  # the deprecated name, re-exported
from ml_bridge.core.resolve import DatasetResolver
from ml_bridge.core.samples import sample_for_model
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS, validate_inputs
from ml_bridge.core.training import (
    Callback,
    CallbackList,
    FiniteLoss,
    StopCheck,
    TrainConfig,
    TrainingOutcome,
)

log = logging.getLogger(__name__)


class ModelServer:
    """Serves one model through one executor; trains copies of it and swaps them in."""

    def __init__(self, model: BackendModel, context: Context,
                 max_batch: int = NODE_PARAMS.default("max_batch"),
                 checkpoint_dir: str = "", data_root: str = "",
                 max_elements: int = DEFAULT_MAX_ELEMENTS,
                 keep_checkpoints: int = NODE_PARAMS.default("keep_checkpoints"),
                 model_thread: str = NODE_PARAMS.default("model_thread")) -> None:
        """Takes a loaded model and the context captured on the thread that loaded it.

        If ``checkpoint_dir`` holds checkpoints of this model, the newest one that loads
        cleanly is served, with its version. After each save, checkpoints older than the
        newest ``keep_checkpoints`` are deleted (0 keeps all). ``model_thread`` (auto, always,
        never): whether :meth:`predict` may run on the caller's thread when the model is idle
        (:func:`ml_bridge.core.execution.make_executor`; auto: yes for CPU models).
        """
        self.context = context
        self.max_elements = max_elements
        self.datasets = DatasetResolver(data_root)
        # (model, stamp) are swapped together, as one tuple, between two model calls.
        self._served: Tuple[BackendModel, ModelStamp] = (model, ModelStamp.of(model, 1))
        self._train_lock = threading.Lock()  # held for a whole training run
        #: How model calls run (chosen here, once); every call and swap goes through it.
        self.executor: ModelExecutor = make_executor(context, self._run, max_batch, model_thread,
                                                     model.device)
        self.checkpoints = (CheckpointStore(checkpoint_dir, model.source, model.checkpoint_suffix,
                                            keep=keep_checkpoints)
                            if checkpoint_dir else None)
        if self.checkpoints is not None:
            self._restore_newest()

    @classmethod
    def load(cls, backend: str, model: str, options: Optional[ModelOptions] = None,
             **kwargs: Any) -> "ModelServer":
        """Loads ``model`` with ``backend`` on this thread and captures its context here.

        Call it from the thread that set the framework up (main). ``kwargs`` go to __init__.
        """
        module = registry.load(backend)
        loaded: BackendModel = module.load_model(model, options or ModelOptions())
        return cls(loaded, loaded.capture_context(), **kwargs)

    # -- serving ------------------------------------------------------------------------------
    @property
    def model(self) -> BackendModel:
        """The model being served now."""
        return self._served[0]

    @property
    def version(self) -> int:
        """Version of the served model: 1 at first, +1 at every swap."""
        return self._served[1].version

    @property
    def training(self) -> bool:
        """True while a training run is in progress."""
        return self._train_lock.locked()

    def info(self) -> ModelInfo:
        """What is served, for ``~info``."""
        model, stamp = self._served
        return ModelInfo(model.backend, model.framework_version(), model.device, model.describe(),
                         stamp.version, list(model.input_specs), list(model.output_specs),
                         list(model.labels), self.training)

    def _run(self, inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], ModelStamp]:
        model, stamp = self._served  # read once: one call never mixes two models
        return model.predict(inputs), stamp

    def _validated(self, inputs: Sequence[np.ndarray]) -> List[np.ndarray]:
        return validate_inputs([np.asarray(a) for a in inputs], self.model.input_specs,
                               self.max_elements)

    def predict_async(self, inputs: Sequence[np.ndarray]) -> "Callable[[Optional[float]], ModelOutput]":
        """Validates and submits a request; returns a function that waits for the ModelOutput."""
        future = self.executor.submit(self._validated(inputs))

        def wait(timeout: Optional[float] = None) -> ModelOutput:
            return self._finish(future.result(timeout))
        return wait

    def predict(self, inputs: Sequence[np.ndarray], timeout: Optional[float] = None) -> ModelOutput:
        """Runs the model on ``inputs`` (batch first); any thread may call.

        Where it runs is the executor's (``model_thread``): on this thread with the context
        restored, or on the model thread; either way micro-batched with concurrent requests
        and waiting at most ``timeout`` seconds.

        Raises:
            InputError: the inputs do not fit the model's input specs.
            ModelCallError: the framework raised while running the model.
        """
        return self._finish(self.executor.predict(self._validated(inputs), timeout))

    def defer(self, inputs: Sequence[np.ndarray], timeout: Optional[float] = None
              ) -> Callable[[], ModelOutput]:
        """Validates a request now; returns its call as a function that returns the
        ModelOutput, for a caller with several requests: defer all, then call each
        (:meth:`ModelExecutor.defer`: joined where the executor joins them).

        Raises:
            InputError: the inputs do not fit the model's input specs (at once).
        """
        return self.executor.defer(self._validated(inputs), timeout, self._finish)

    def predict_image(self, image: np.ndarray, timeout: Optional[float] = None) -> ModelOutput:
        """Runs the model's image preprocessing (gray H x W or RGB H x W x 3, uint8), then predict."""
        preprocess = self.model.preprocess_image
        if preprocess is None:
            raise InputError(f"model '{self.model.describe()}' has no image preprocessing; "
                             "use a model that takes images")
        return self.predict(preprocess(image), timeout)

    @staticmethod
    def _finish(result: WorkerResult) -> ModelOutput:
        return ModelOutput(result.outputs, result.served, result.inference_ms)

    # -- recorded data ------------------------------------------------------------------------
    def record(self, dataset: str, inputs: Sequence[np.ndarray],
               targets: Sequence[np.ndarray]) -> int:
        """Appends one sample (no batch dimension, or a batch of 1) durably to ``dataset``.

        Raises:
            DatasetError: the sample does not fit the model, or there is no data root.
        """
        ins, tgs = sample_for_model(self.model, self.context, dataset, inputs, targets,
                                    self.max_elements)
        return self.datasets.store().append(dataset, ins, tgs)

    # -- training -----------------------------------------------------------------------------
    def fit(self, dataset: Union[str, Dataset], epochs: int, batch_size: int = 0,
            learning_rate: float = 0.0, validation_split: float = 0.0,
            keep_partial: bool = False, callbacks: Sequence[Any] = (),
            should_stop: Optional[Callable[[], bool]] = None) -> TrainingOutcome:
        """Trains a copy of the served model on this thread, then swaps it in atomically.

        ``callbacks`` are ml_bridge Callbacks (both backends) or the framework's own
        (keras.callbacks.Callback). ``should_stop`` is polled after every batch. On success
        the new weights are checkpointed and served as version + 1. After a stop the served
        model is unchanged, unless ``keep_partial`` and at least one epoch completed.

        Raises:
            TrainingError, DatasetError: invalid settings or data; nothing was trained.
        """
        config = TrainConfig(epochs, batch_size, learning_rate, validation_split, keep_partial)
        config.validate()
        if not self._train_lock.acquire(blocking=False):
            raise TrainingError("a training run is already in progress; wait for it or stop it")
        try:
            return self._fit(dataset, config, callbacks, should_stop)
        finally:
            self._train_lock.release()

    def _fit(self, dataset: Union[str, Dataset], config: TrainConfig, callbacks: Sequence[Any],
             should_stop: Optional[Callable[[], bool]]) -> TrainingOutcome:
        served = self.model
        if not served.trainable:
            raise TrainingError(f"model '{served.describe()}' cannot be trained (frozen graph or "
                                "SavedModel); serve a .keras, TorchScript or factory model")
        data = (self.datasets.load(dataset, served.image_format) if isinstance(dataset, str)
                else dataset)
        data.check()
        with self.context:
            served.check_targets(data)
        train, validation = data.split(config.validation_split)
        finite = FiniteLoss()  # stops a diverged run at the batch where its loss left the reals
        ours = [finite] + [c for c in callbacks if isinstance(c, Callback)]
        native = [c for c in callbacks if not isinstance(c, Callback)]
        if should_stop is not None:
            ours.append(StopCheck(should_stop))
        copy = self.executor.exclusive(served.clone).result()
        start = time.perf_counter()
        with self.context:
            result = copy.fit(train, validation, config, CallbackList(ours), native_callbacks=native)
            if not finite.failure and not copy.weights_finite():
                finite.failure = (f"the weights became NaN or infinite by epoch "
                                  f"{result.epochs_completed}")
        if finite.failure:  # never swap in, checkpoint or keep a diverged model
            raise TrainingError(f"training diverged: {finite.failure}; nothing was swapped in or "
                                f"checkpointed (still serving version {self.version}). Lower the "
                                "learning_rate or check the data for NaN or infinite values")
        logs = result.last_logs
        keep = not result.stopped or (config.keep_partial and result.epochs_completed > 0)
        if not keep:
            return TrainingOutcome(result.epochs_completed, True, False, self.version, "", logs,
                                   f"stopped after {result.epochs_completed} epoch(s); the served "
                                   f"model is unchanged (version {self.version})")
        checkpoint = ""
        new_version = self.version + 1
        if self.checkpoints is not None:
            with self.context:
                checkpoint = self.checkpoints.save(new_version, copy.save_checkpoint)
        version = self.executor.exclusive(lambda: self._swap(copy, new_version)).result()
        if self.checkpoints is not None:
            self.checkpoints.prune(version)  # after the swap: the served file is kept
        how = "stopped; kept" if result.stopped else "trained"
        return TrainingOutcome(result.epochs_completed, result.stopped, True, version, checkpoint,
                               logs, f"{how} {result.epochs_completed} epoch(s) in "
                               f"{time.perf_counter() - start:.1f} s; serving version {version}")

    def _swap(self, model: BackendModel, version: int) -> int:
        """Runs between two model calls (ModelExecutor.exclusive): the next uses the new weights."""
        self._served = (model, ModelStamp.of(model, version))
        return version

    def _restore_newest(self) -> None:
        assert self.checkpoints is not None
        candidate: List[BackendModel] = []

        def load(path: str) -> None:
            fresh = self.model.clone()
            fresh.load_checkpoint(path)
            if not fresh.weights_finite():
                raise CheckpointError(f"checkpoint {path} holds NaN or infinite weights (saved "
                                      "from a diverged run)")
            candidate[:] = [fresh]

        found = self.executor.exclusive(lambda: self.checkpoints.load_newest(load)).result()  # type: ignore[union-attr]
        if found is not None:
            version, path = found
            self._served = (candidate[0], ModelStamp.of(candidate[0], version))
            log.info("serving checkpoint %s (version %d)", path, version)

    def close(self) -> None:
        """Closes the executor: calls accepted are finished, its threads joined."""
        self.executor.close()

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
