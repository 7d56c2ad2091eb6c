"""The model-thread executor: model calls run one at a time on one thread, context restored.

GPU frameworks want one model driven from one thread, never concurrently. Callers get a
:class:`concurrent.futures.Future`; errors come back through it. Requests waiting together
whose inputs agree in everything but the batch dimension are concatenated into one call of at
most ``max_batch`` rows (dynamic micro-batching: only what is already waiting is batched, so
an idle server adds no latency) and the outputs are split back. Jobs
(:meth:`ModelThread.exclusive`: clone, swap) run on the same thread, between two calls.
"""
import collections
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Tuple, TypeVar, Union, cast

import numpy as np

from ml_bridge.core.context import Context
from ml_bridge.core.execution.base import (
    ModelExecutor,
    PredictFn,
    WorkerStopped,
    context_failure,
    timed_call,
)
from ml_bridge.core.execution.batching import WorkerResult, batch_key, run_requests
from ml_bridge.core.threads import ThreadOwner

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class ModelThread(ThreadOwner, ModelExecutor):
    """One thread that runs model calls and jobs with the captured context restored.

    ``model_lock`` is held by whoever runs the model and ``state_lock`` guards the queue; an
    executor that also runs calls elsewhere (:class:`~ml_bridge.core.execution.inline.InlineExecutor`)
    passes its own, so that both sides see one state under one lock.
    """

    def __init__(self, context: Context, predict_fn: PredictFn, max_batch: int = 1,
                 name: str = "ml_bridge-model", model_lock: Optional[threading.Lock] = None,
                 state_lock: Optional[threading.Lock] = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.context = context
        self.max_batch = max_batch
        self._call = timed_call(predict_fn)
        self._queue: Deque[Union[_Predict, _Job]] = collections.deque()
        self._cond = threading.Condition(state_lock or threading.Lock())
        self._model = model_lock or threading.Lock()  # one model call at a time
        self._claimed = False  # the thread has work in hand (guarded by the state lock)
        self._closed = False  # set by close, read under the state lock
        ThreadOwner.__init__(self, name)
        self.start()  # last: the loop reads everything above

    @property
    def queued(self) -> int:
        """Requests and jobs waiting for the model thread now."""
        with self._cond:
            return len(self._queue)

    def has_work(self) -> bool:
        """Whether a call made now would wait behind this thread's work (or the thread is
        closed). The caller holds the state lock."""
        return self._closed or self._claimed or bool(self._queue)

    def submit(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Queues a call on validated inputs (batch dimension first)."""
        rows, key = batch_key(inputs)
        item = _Predict(inputs, Future(), key, rows)
        self._put(item)
        return item.future

    def exclusive(self, fn: Callable[[], T]) -> "Future[T]":
        """Queues any callable to run on the model thread, between two calls."""
        job = _Job(fn, Future())
        self._put(job)
        return job.future

    def _signal_stop(self) -> None:
        """Refuses later calls; the thread stops after the calls already queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

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
        with self._cond:
            self._claimed = False

    def _run(self) -> None:
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
