"""The inline executor: model calls on the callers' threads, one at a time, joined when busy.

A caller that finds the model idle leads: it restores the framework context on its own thread,
takes the model lock and runs its request. Callers that arrive meanwhile leave their request
with it and sleep on a lock of their own; when its call is done, the leader runs everything
left with it as one micro-batch (:func:`ml_bridge.core.execution.batching.run_requests`),
answers each, does the same once more for what arrived meanwhile, and then makes the first
caller still waiting the next leader. The model runs back to back while the callers wake, and
each waiting request costs one sleep and one wake-up.

What cannot run on a caller's thread (:meth:`InlineExecutor.submit`, whose caller does not
wait; jobs such as a swap) goes to a :class:`ModelThread` that shares the model lock; while it
has work queued or in hand, blocking calls queue behind it too (and are micro-batched there).
"""
import concurrent.futures
import functools
import logging
import threading
from concurrent.futures import Future
from typing import Callable, List, Optional, TypeVar

import numpy as np

from ml_bridge.core.context import Context
from ml_bridge.core.errors import MLBridgeError, ModelCallError
from ml_bridge.core.execution.base import ModelExecutor, PredictFn, context_failure, timed_call
from ml_bridge.core.execution.batching import CallFn, WorkerResult, batch_key, run_requests
from ml_bridge.core.execution.model_thread import ModelThread

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

#: States of a request left with the leader (:class:`_Slot`).
_PENDING, _TAKEN, _LEAD, _DONE = range(4)


class Busy(concurrent.futures.TimeoutError):
    """The model stayed busy for longer than the caller's timeout (an inline call's wait)."""


class _Slot:
    """A request left with the leader: its inputs, and a lock its caller waits on (held from
    the start, released once the result is in or the caller is to lead)."""

    __slots__ = ("inputs", "key", "rows", "ready", "state", "result", "error", "batch")

    def __init__(self, inputs: List[np.ndarray]) -> None:
        self.inputs = inputs
        self.rows, self.key = batch_key(inputs)
        self.ready = threading.Lock()
        self.ready.acquire()
        self.state = _PENDING
        self.result: Optional[WorkerResult] = None
        self.error: Optional[BaseException] = None
        self.batch: List[_Slot] = []  # when promoted to lead: the requests to run

    def deliver(self, result: Optional[WorkerResult], error: Optional[BaseException]) -> None:
        self.result, self.error, self.state = result, error, _DONE
        self.ready.release()


class InlineCalls:
    """Runs requests on the callers' threads under ``model_lock`` with ``context`` entered."""

    def __init__(self, context: Context, model_lock: threading.Lock, state_lock: threading.Lock,
                 call: CallFn, max_batch: int, queue_instead: Callable[[], bool]) -> None:
        """``queue_instead`` says, with ``state_lock`` held, whether a call must queue
        elsewhere (:meth:`run` then returns None)."""
        self.context = context
        self.max_batch = max_batch
        self._model = model_lock  # shared with the model thread
        self._call = call
        self._queue_instead = queue_instead
        self._lock = state_lock  # guards the three below (and the model thread's queue)
        self._leading = False  # a caller leads: it holds (or waits for) the model lock
        self._pending: List[_Slot] = []  # requests left with the leader
        self._waiting = 0  # callers waiting for their result (or to lead)

    @property
    def waiting(self) -> int:
        """Callers that left their request with the leader and wait now."""
        with self._lock:
            return self._waiting

    def run(self, inputs: List[np.ndarray], timeout: Optional[float]) -> Optional[WorkerResult]:
        """Runs the request on this thread (it leads), or leaves it with the leader and waits
        for its result (or to be made the next leader); None (nothing run) when
        ``queue_instead()`` holds.

        Raises:
            MLBridgeError: the model call failed (ModelCallError wraps framework errors).
            Busy: the model was not free, or the request not answered, within ``timeout``.
        """
        slot: Optional[_Slot] = None
        with self._lock:
            if self._queue_instead():
                return None
            if self._leading:
                slot = _Slot(inputs)
                self._pending.append(slot)
                self._waiting += 1
            else:
                self._leading = True
        if slot is None:  # the model was idle: this call first, then what arrived meanwhile
            return self._run_own(inputs, timeout)
        self._follow(slot, timeout)
        if slot.state == _LEAD:  # set before its ready lock was released: read after acquiring it
            self._run_led(slot.batch, timeout)
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def _run_own(self, inputs: List[np.ndarray], timeout: Optional[float]) -> WorkerResult:
        """The leader's own call, holding the model lock with the context restored on this
        thread; then, as one batch, the requests left with it meanwhile; then the lead ends."""
        result: Optional[WorkerResult] = None
        leading = True
        try:
            with self.context:
                if not self._model.acquire(blocking=False) and \
                        not self._model.acquire(timeout=lock_timeout(timeout)):
                    raise Busy(f"the model was busy for longer than {timeout:g} s")
                try:
                    result = WorkerResult(*self._call(inputs))
                    batch = self._next()
                    leading = bool(batch)
                    if leading:
                        self._serve(batch)
                finally:
                    self._model.release()
        except (MLBridgeError, Busy):
            raise
        except Exception as err:  # entering or leaving the context failed
            failure = context_failure(err)
            if result is None:
                raise failure from err
            log.error("%s", failure)  # the call was answered; leaving the context failed
        finally:
            if leading:
                self._hand_on()
        assert result is not None  # every other way out of the try raised
        return result

    def _follow(self, slot: _Slot, timeout: Optional[float]) -> None:
        """Waits until the slot is answered or made leader; a timeout while it is still
        pending takes it back (raises Busy); one while it runs abandons it."""
        got = slot.ready.acquire(timeout=lock_timeout(timeout))
        with self._lock:
            self._waiting -= 1
            if got or slot.state in (_DONE, _LEAD):
                return  # answered, or to lead (a promotion is never dropped)
            if slot.state == _PENDING:
                self._pending.remove(slot)
        raise Busy(f"the model was busy for longer than {timeout:g} s")

    def _run_led(self, batch: List[_Slot], timeout: Optional[float]) -> None:
        """A promoted caller's turn: ``batch`` (its own request among them), then what arrived
        meanwhile, holding the model lock with the context restored on this thread; then the
        lead ends."""
        held = False
        leading = True
        try:
            with self.context:
                held = self._model.acquire(timeout=lock_timeout(timeout))
                if not held:  # a job (clone, swap) or a queued call kept the model
                    busy = Busy(f"the model was busy for longer than {timeout:g} s")
                    for each in batch:
                        each.deliver(None, busy)
                    return
                self._serve(batch)
                batch = self._next()
                leading = bool(batch)
                if leading:
                    self._serve(batch)
        except Exception as err:  # entering or leaving the context failed
            failure = context_failure(err)
            undelivered = [each for each in batch if each.state != _DONE]
            for each in undelivered:
                each.deliver(None, failure)
            if not undelivered:  # the calls were answered; leaving the context failed
                log.error("%s", failure)
        finally:
            if held:
                self._model.release()
            if leading:
                self._hand_on()

    def _serve(self, batch: List[_Slot]) -> None:
        """Runs ``batch`` (the model lock held, the context entered) and answers every slot."""
        try:
            for each, result, error in run_requests(self._call, batch, self.max_batch):
                each.deliver(result, error)
        finally:  # never leave a caller waiting
            for each in batch:
                if each.state != _DONE:
                    each.deliver(None, ModelCallError("the batch this request was in failed"))

    def _next(self) -> List[_Slot]:
        """The requests left with the leader meanwhile, taken; or none, and the lead given up
        (in the same turn of the lock: a request left later finds no leader and leads)."""
        with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                self._leading = False
            for each in batch:
                each.state = _TAKEN
            return batch

    def _hand_on(self) -> None:
        """The leader is done: the first waiting request leads the rest, or no one leads."""
        with self._lock:
            if not self._pending:
                self._leading = False
                return
            batch, self._pending = self._pending, []
            for each in batch:
                each.state = _TAKEN
            first = batch[0]
            first.state, first.batch = _LEAD, batch
        first.ready.release()


def lock_timeout(timeout: Optional[float]) -> float:
    """``timeout`` as Lock.acquire takes it (-1: wait for ever)."""
    return -1 if timeout is None else max(timeout, 0.0)


class InlineExecutor(ModelExecutor):
    """Blocking calls on the callers' threads (:class:`InlineCalls`); submitted calls and jobs
    on a model thread (:class:`ModelThread`). Both hold one model lock: one call at a time."""

    def __init__(self, context: Context, predict_fn: PredictFn, max_batch: int = 1,
                 name: str = "ml_bridge-model") -> None:
        model_lock, state_lock = threading.Lock(), threading.Lock()
        # Its thread touches nothing of InlineCalls: it may start first.
        self._thread = ModelThread(context, predict_fn, max_batch, name, model_lock, state_lock)
        self._calls = InlineCalls(context, model_lock, state_lock, timed_call(predict_fn),
                                  max_batch, self._thread.has_work)

    @property
    def thread(self) -> threading.Thread:
        """The model thread (submitted calls and jobs)."""
        return self._thread.thread

    @property
    def queued(self) -> int:
        """Requests and jobs waiting for the model thread now."""
        return self._thread.queued

    @property
    def waiting(self) -> int:
        """Callers that left their request with the caller running the model, now."""
        return self._calls.waiting

    def predict(self, inputs: List[np.ndarray], timeout: Optional[float] = None) -> WorkerResult:
        """Runs the call on this thread once the model is free (waiting at most ``timeout``
        seconds for it), or, while the model thread has work, behind that work.

        Raises:
            WorkerStopped: the executor is closed.
            MLBridgeError: the model call failed (ModelCallError wraps framework errors).
            concurrent.futures.TimeoutError: no result within ``timeout``.
        """
        result = self._calls.run(inputs, timeout)
        if result is None:
            return self.submit(inputs).result(timeout)
        return result

    def defer(self, inputs: List[np.ndarray], timeout: Optional[float],
              then: Callable[[WorkerResult], R]) -> Callable[[], R]:
        """The call, run on the caller's thread when the function returned is called: one
        after the other costs less than any hand-off."""
        return functools.partial(self._predict_then, inputs, timeout, then)

    def _predict_then(self, inputs: List[np.ndarray], timeout: Optional[float],
                      then: Callable[[WorkerResult], R]) -> R:
        return then(self.predict(inputs, timeout))

    def submit(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Queues the call on the model thread (its caller does not wait to run it)."""
        return self._thread.submit(inputs)

    def exclusive(self, fn: Callable[[], T]) -> "Future[T]":
        """Queues ``fn`` on the model thread, between two calls (inline ones included)."""
        return self._thread.exclusive(fn)

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Refuses later calls; the model thread ends after what it holds."""
        self._thread.close(timeout)
