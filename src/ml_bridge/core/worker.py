"""The model thread: model calls run one at a time, with the captured context restored.

GPU frameworks want one model driven from one thread, never concurrently. Callers get a
:class:`concurrent.futures.Future`; errors come back through it. Concurrent predict requests
whose inputs agree in everything but the batch dimension are concatenated into one call of at
most ``max_batch`` rows (dynamic micro-batching: only what is already waiting is batched, so
an idle server adds no latency) and the outputs are split back.

With ``inline`` (CPU models, see ``~model_thread``), :meth:`ModelWorker.run` skips the hand-off:
the call runs on the caller's thread (:class:`ml_bridge.core.inline.InlineCalls`), with the
context restored there, holding the model lock; requests that arrive meanwhile are joined
there into micro-batches. Jobs (clone, swap) still run on the model thread, holding the same
lock, so they fall between two calls; while one is queued or running, inline callers queue
behind it (and are micro-batched there). Either way at most one model call runs at any time.
"""
import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple, TypeVar, Union, cast

import numpy as np

from ml_bridge.core.batching import WorkerResult, batch_key, run_requests
from ml_bridge.core.context import Context
from ml_bridge.core.errors import InputError, MLBridgeError, ModelCallError
from ml_bridge.core.inline import InlineCalls, context_failure

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Values of ``~model_thread``: where a request runs when the model is idle.
MODEL_THREAD_MODES = ("auto", "always", "never")
#: Runs the served model on validated inputs: returns (outputs, what served them), the
#: latter read with the outputs, during the call (ModelServer passes a ModelStamp).
PredictFn = Callable[[List[np.ndarray]], Tuple[List[np.ndarray], Any]]

__all__ = ["MODEL_THREAD_MODES", "ModelWorker", "PredictFn", "WorkerResult", "WorkerStopped",
           "runs_inline"]


@dataclass
class _Predict:
    inputs: List[np.ndarray]
    future: "Future[WorkerResult]"
    key: Tuple[Any, ...]
    rows: int


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: "Future[Any]"


#: What a model-thread turn delivers once the model is free again: (future, result, error).
_Delivery = Tuple["Future[Any]", Any, Optional[BaseException]]


def runs_inline(model_thread: str, device: str) -> bool:
    """Whether a request that finds the model idle runs on the caller's thread.

    ``always``: no, every call goes through the model thread. ``never``: yes, on any device.
    ``auto``: yes for CPU models (the hand-off costs more than a small model's call, and CPU
    frameworks keep no per-thread state the context does not restore); no on a GPU, whose
    streams and per-thread handles were not measured safe to drive from many threads.

    Raises:
        InputError: ``model_thread`` is not one of MODEL_THREAD_MODES.
    """
    mode = (model_thread or "auto").strip().lower()
    if mode not in MODEL_THREAD_MODES:
        raise InputError(f"~model_thread must be one of {', '.join(MODEL_THREAD_MODES)}, got "
                         f"'{model_thread}' (auto: on the caller's thread for CPU models)")
    if mode == "auto":
        return "cpu" in (device or "cpu").lower()
    return mode == "never"


class WorkerStopped(MLBridgeError):
    """The model thread has been stopped; no more calls are accepted."""


class ModelWorker:
    """One thread that runs model calls with the captured context restored (and, with
    ``inline``, callers that find the model idle run their call themselves)."""

    def __init__(self, context: Context, predict_fn: PredictFn, max_batch: int = 1,
                 name: str = "ml_bridge-model", inline: bool = False) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.context = context
        self.max_batch = max_batch
        self.inline = inline
        self._predict_fn = predict_fn
        self._queue: Deque[Union[_Predict, _Job]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._model = threading.Lock()  # held by whoever runs the model: one call at a time
        self._claimed = False  # the model thread has work in hand: inline callers queue behind it
        self._inline = InlineCalls(context, self._model, self._call, max_batch)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The model thread."""
        return self._thread

    @property
    def queued(self) -> int:
        """Requests and jobs waiting for the model thread now."""
        return len(self._queue)

    @property
    def waiting(self) -> int:
        """Inline callers that left their request with the caller running the model, now."""
        return self._inline.waiting

    def run(self, inputs: List[np.ndarray], timeout: Optional[float] = None) -> WorkerResult:
        """Runs a predict call on validated inputs and returns its result.

        Inline, with no job queued or running: on this thread, once the model is free (waiting
        at most ``timeout`` seconds for it). Otherwise queued (and micro-batched) like
        :meth:`predict`, waiting at most ``timeout`` seconds for the result.

        Raises:
            WorkerStopped: the worker is closed.
            MLBridgeError: the model call failed (ModelCallError wraps framework errors).
            concurrent.futures.TimeoutError: the model was not free, or a queued call not
                finished, within ``timeout``.
        """
        # Read without the condition's lock (single reads are atomic): a job queued at this
        # very moment may be passed by this call, which arrived with it; it still runs between
        # two calls, never inside one.
        if self.inline and not self._queue and not self._claimed:
            if self._closed:
                raise WorkerStopped("the model thread has stopped (node shutting down)")
            return self._inline.run(inputs, timeout)
        return self.predict(inputs).result(timeout)

    def predict(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Queues a predict call on validated inputs (batch dimension first)."""
        rows, key = batch_key(inputs)
        item = _Predict(inputs, Future(), key, rows)
        self._put(item)
        return item.future

    def submit(self, fn: Callable[[], T]) -> "Future[T]":
        """Queues any callable to run on the model thread with the context restored."""
        job = _Job(fn, Future())
        self._put(job)
        return job.future

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stops the thread after the calls already queued; fails later calls."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _put(self, item: Union[_Predict, _Job]) -> None:
        with self._cond:
            if self._closed:
                raise WorkerStopped("the model thread has stopped (node shutting down)")
            self._queue.append(item)
            self._cond.notify()

    # -- the model thread ---------------------------------------------------------------------------
    def _take(self) -> Optional[List[Union[_Predict, _Job]]]:
        """The next job or batch, once the model lock is held (after any inline call)."""
        batch = self._pop()
        if batch is not None:
            self._model.acquire()
        return batch

    def _pop(self) -> Optional[List[Union[_Predict, _Job]]]:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            self._claimed = True  # set with the pop: inline callers now queue behind this
            first = self._queue.popleft()
            if not isinstance(first, _Predict) or self.max_batch == 1 or first.rows == 0:
                return [first]
            batch: List[Union[_Predict, _Job]] = [first]
            rows = first.rows
            for item in list(self._queue):
                if (isinstance(item, _Predict) and item.key == first.key
                        and rows + item.rows <= self.max_batch):
                    self._queue.remove(item)
                    batch.append(item)
                    rows += item.rows
            return batch

    def _release(self) -> None:
        """The model thread's turn is over: the model is free, inline calls may go again."""
        self._model.release()
        self._claimed = False

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [b for b in batch if b.future.set_running_or_notify_cancel()]
            if not live:
                self._release()
                continue
            deliveries: List[_Delivery] = []
            try:
                with self.context:
                    if isinstance(live[0], _Job):
                        deliveries = self._run_job(live[0])  # type: ignore[arg-type]
                    else:
                        deliveries = [(r.future, result, error) for r, result, error in
                                      run_requests(self._call, cast(List[_Predict], live),
                                                   self.max_batch)]
            except Exception as err:  # a context that fails must not kill the thread and hang every caller
                failure = context_failure(err)
                if not deliveries:
                    deliveries = [(item.future, None, failure) for item in live]
                else:  # the calls were answered; leaving the context failed
                    log.error("%s", failure)
            finally:
                self._release()
            # Answered once the model is free: a caller woken here may run its next call inline.
            for future, value, error in deliveries:
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)

    @staticmethod
    def _run_job(job: _Job) -> List[_Delivery]:
        try:
            return [(job.future, job.fn(), None)]
        except BaseException as err:  # delivered to the caller, who decides
            return [(job.future, None, err)]

    def _call(self, inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], Any, float]:
        start = time.perf_counter()
        try:
            outputs, version = self._predict_fn(inputs)
        except MLBridgeError:
            raise
        except Exception as err:
            raise ModelCallError(f"the model raised {type(err).__name__}: {err}") from err
        return outputs, version, (time.perf_counter() - start) * 1000.0
