"""Model calls on the callers' threads (``~model_thread`` inline), one at a time, joined when busy.

A caller that finds the model idle leads: it restores the framework context on its own thread,
takes the model lock and runs its request. Callers that arrive meanwhile leave their request
with it and sleep on a lock of their own; when its call is done, the leader runs everything
left with it as one micro-batch (:func:`ml_bridge.core.batching.run_requests`), answers each,
does the same once more for what arrived meanwhile, and then makes the first caller still
waiting the next leader. The model runs back to back while the callers wake, and each waiting
request costs one sleep and one wake-up (README, Performance).
"""
import concurrent.futures
import logging
import threading
from typing import List, Optional

import numpy as np

from ml_bridge.core.batching import CallFn, WorkerResult, batch_key, run_requests
from ml_bridge.core.context import Context
from ml_bridge.core.errors import MLBridgeError, ModelCallError

log = logging.getLogger(__name__)

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

    def __init__(self, context: Context, model_lock: threading.Lock, call: CallFn,
                 max_batch: int) -> None:
        self.context = context
        self.max_batch = max_batch
        self._model = model_lock  # shared with the model thread's jobs
        self._call = call
        self._lock = threading.Lock()  # guards the three below
        self._leading = False  # a caller leads: it holds (or waits for) the model lock
        self._pending: List[_Slot] = []  # requests left with the leader
        self._waiting = 0  # callers waiting for their result (or to lead)

    @property
    def waiting(self) -> int:
        """Callers that left their request with the leader and wait now."""
        return self._waiting

    def run(self, inputs: List[np.ndarray], timeout: Optional[float]) -> WorkerResult:
        """Runs the request on this thread (it leads), or leaves it with the leader and waits
        for its result (or to be made the next leader).

        Raises:
            MLBridgeError: the model call failed (ModelCallError wraps framework errors).
            Busy: the model was not free, or the request not answered, within ``timeout``.
        """
        slot: Optional[_Slot] = None
        with self._lock:
            if self._leading:
                slot = _Slot(inputs)
                self._pending.append(slot)
                self._waiting += 1
            else:
                self._leading = True
        if slot is None:  # the model was idle: this call first, then what arrived meanwhile
            try:
                return self._run_own(inputs, timeout)
            finally:
                self._hand_on()
        self._follow(slot, timeout)
        if slot.state == _LEAD:
            try:
                self._run_led(slot.batch, timeout)
            finally:
                self._hand_on()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def _run_own(self, inputs: List[np.ndarray], timeout: Optional[float]) -> WorkerResult:
        """The leader's own call, holding the model lock with the context restored on this
        thread; then, as one batch, the requests left with it meanwhile."""
        result: Optional[WorkerResult] = None
        try:
            with self.context:
                if not self._model.acquire(blocking=False) and \
                        not self._model.acquire(timeout=lock_timeout(timeout)):
                    raise Busy(f"the model was busy for longer than {timeout:g} s")
                try:
                    result = WorkerResult(*self._call(inputs))
                    if self._pending:  # a hint, read without the lock; taken with it
                        self._serve(self._take_pending())
                finally:
                    self._model.release()
        except (MLBridgeError, Busy):
            raise
        except Exception as err:  # entering or leaving the context failed
            failure = context_failure(err)
            if result is None:
                raise failure from err
            log.error("%s", failure)  # the call was answered; leaving the context failed
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
        meanwhile, holding the model lock with the context restored on this thread."""
        held = False
        try:
            with self.context:
                held = self._model.acquire(timeout=lock_timeout(timeout))
                if not held:  # a job (clone, swap) or a queued call kept the model
                    busy = Busy(f"the model was busy for longer than {timeout:g} s")
                    for each in batch:
                        each.deliver(None, busy)
                    return
                self._serve(batch)
                if self._pending:
                    batch = self._take_pending()
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

    def _serve(self, batch: List[_Slot]) -> None:
        """Runs ``batch`` (the model lock held, the context entered) and answers every slot."""
        try:
            for each, result, error in run_requests(self._call, batch, self.max_batch):
                each.deliver(result, error)
        finally:  # never leave a caller waiting
            for each in batch:
                if each.state != _DONE:
                    each.deliver(None, ModelCallError("the batch this request was in failed"))

    def _take_pending(self) -> List[_Slot]:
        with self._lock:
            batch, self._pending = self._pending, []
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


def context_failure(err: BaseException) -> ModelCallError:
    """The error a caller gets when restoring or leaving the framework context failed."""
    failure = ModelCallError(f"restoring or leaving the framework context failed: "
                             f"{type(err).__name__}: {err}")
    failure.__cause__ = err
    return failure
