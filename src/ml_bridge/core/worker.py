"""The model thread: every model call, from any caller thread, runs here, one at a time.

GPU frameworks want one model driven from one thread, never concurrently. Callers get a
:class:`concurrent.futures.Future`; errors come back through it. Concurrent predict requests
whose inputs agree in everything but the batch dimension are concatenated into one call of at
most ``max_batch`` rows (dynamic micro-batching: only what is already waiting is batched, so
an idle server adds no latency) and the outputs are split back.
"""
import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple, TypeVar, Union

import numpy as np

from ml_bridge.core.context import Context
from ml_bridge.core.errors import MLBridgeError, ModelCallError

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Runs the served model on validated inputs: returns (outputs, what served them), the
#: latter read on the model thread with the outputs (ModelServer passes a ModelStamp).
PredictFn = Callable[[List[np.ndarray]], Tuple[List[np.ndarray], Any]]


@dataclass
class WorkerResult:
    """Outputs of one request, what produced them (as the PredictFn said) and the model time."""

    outputs: List[np.ndarray]
    served: Any
    inference_ms: float
    batched_with: int = 1


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


class WorkerStopped(MLBridgeError):
    """The model thread has been stopped; no more calls are accepted."""


class ModelWorker:
    """One thread that runs model calls with the captured context restored."""

    def __init__(self, context: Context, predict_fn: PredictFn, max_batch: int = 1,
                 name: str = "ml_bridge-model") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.context = context
        self.max_batch = max_batch
        self._predict_fn = predict_fn
        self._queue: Deque[Union[_Predict, _Job]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The model thread."""
        return self._thread

    def predict(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Queues a predict call on validated inputs (batch dimension first)."""
        rows = int(inputs[0].shape[0]) if inputs and inputs[0].ndim > 0 else 0
        key = tuple((a.shape[1:], a.dtype.str) for a in inputs) if rows else ("unbatchable", id(inputs))
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

    def _take(self) -> Optional[List[Union[_Predict, _Job]]]:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
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

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            live = [b for b in batch if b.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                with self.context:
                    if isinstance(live[0], _Job):
                        self._run_job(live[0])  # type: ignore[arg-type]
                    else:
                        self._run_predict(live)  # type: ignore[arg-type]
            except Exception as err:  # a context that fails must not kill the thread and hang every caller
                failure = ModelCallError(f"restoring or leaving the framework context failed: "
                                         f"{type(err).__name__}: {err}")
                failure.__cause__ = err
                pending = [item for item in live if not item.future.done()]
                for item in pending:
                    item.future.set_exception(failure)
                if not pending:  # the calls were answered; leaving the context failed
                    log.error("%s", failure)

    @staticmethod
    def _run_job(job: _Job) -> None:
        try:
            job.future.set_result(job.fn())
        except BaseException as err:  # delivered to the caller, who decides
            job.future.set_exception(err)

    def _call(self, inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], Any, float]:
        start = time.perf_counter()
        try:
            outputs, version = self._predict_fn(inputs)
        except MLBridgeError:
            raise
        except Exception as err:
            raise ModelCallError(f"the model raised {type(err).__name__}: {err}") from err
        return outputs, version, (time.perf_counter() - start) * 1000.0

    def _run_predict(self, batch: List[_Predict]) -> None:
        if len(batch) > 1:
            joined = [np.concatenate(parts) for parts in zip(*(b.inputs for b in batch))]
            total = sum(b.rows for b in batch)
            try:
                outputs, version, ms = self._call(joined)
            except MLBridgeError:
                outputs = []  # retried one by one below, so one bad request fails alone
            if outputs and all(o.ndim > 0 and o.shape[0] == total for o in outputs):
                start = 0
                for b in batch:
                    part = [o[start:start + b.rows] for o in outputs]
                    b.future.set_result(WorkerResult(part, version, ms, len(batch)))
                    start += b.rows
                return
        for b in batch:
            try:
                outputs, version, ms = self._call(b.inputs)
            except MLBridgeError as err:
                b.future.set_exception(err)
                continue
            b.future.set_result(WorkerResult(outputs, version, ms))
