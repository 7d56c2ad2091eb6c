"""The model thread: model calls run one at a time, with the captured context restored.

GPU frameworks want one model driven from one thread, never concurrently. Callers get a
:class:`concurrent.futures.Future`; errors come back through it. Concurrent predict requests
whose inputs agree in everything but the batch dimension are concatenated into one call of at
most ``max_batch`` rows (dynamic micro-batching: only what is already waiting is batched, so
an idle server adds no latency) and the outputs are split back.

With ``inline`` (CPU models, see ``~model_thread``), :meth:`ModelWorker.run` skips the hand-off:
the call runs on the caller's thread, with the context restored there, holding the model lock.
Callers that arrive while an inline call runs leave their request with it and wait: when its
call is done, that caller (the leader) runs everything left with it as one micro-batch on its
own thread and delivers the results, does the same once more for what arrived meanwhile, and
then makes the first caller still waiting the next leader. Waiting requests are joined
instead of taking turns at the lock: the model runs back to back while the callers wake, and
a batch of 8 rows costs a small model about what one row does. Jobs (clone, swap) still run
on the model thread, holding the same lock, so they fall between two calls; while one is
queued or running, inline callers queue behind it (and are micro-batched there). Either way
at most one model call runs at any time.
"""
import collections
import concurrent.futures
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, TypeVar, Union, cast

import numpy as np

from ml_bridge.core.context import Context
from ml_bridge.core.errors import InputError, MLBridgeError, ModelCallError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", "_Predict", "_Slot")  # a request: inputs, rows and batch key
#: Values of ``~model_thread``: where a request runs when the model is idle.
MODEL_THREAD_MODES = ("auto", "always", "never")
#: Runs the served model on validated inputs: returns (outputs, what served them), the
#: latter read with the outputs, during the call (ModelServer passes a ModelStamp).
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


#: What a model-thread turn delivers once the model is free again: (future, result, error).
_Delivery = Tuple["Future[Any]", Any, Optional[BaseException]]

#: States of an inline request (:class:`_Slot`).
_PENDING, _TAKEN, _LEAD, _DONE = range(4)


class _Slot:
    """An inline request left with the leader: its inputs, and a lock its caller waits on
    (held from the start, released once the result is in or the caller is to lead)."""

    __slots__ = ("inputs", "key", "rows", "ready", "state", "result", "error", "batch")

    def __init__(self, inputs: List[np.ndarray]) -> None:
        self.inputs = inputs
        self.rows, self.key = _batch_key(inputs)
        self.ready = threading.Lock()
        self.ready.acquire()
        self.state = _PENDING
        self.result: Optional[WorkerResult] = None
        self.error: Optional[BaseException] = None
        self.batch: List[_Slot] = []  # when promoted to lead: the requests to run

    def deliver(self, result: Optional[WorkerResult], error: Optional[BaseException]) -> None:
        self.result, self.error, self.state = result, error, _DONE
        self.ready.release()


def _batch_key(inputs: List[np.ndarray]) -> Tuple[int, Tuple[Any, ...]]:
    """(rows, key): requests with equal keys can be concatenated along the first dimension."""
    rows = int(inputs[0].shape[0]) if inputs and inputs[0].ndim > 0 else 0
    key = tuple((a.shape[1:], a.dtype.str) for a in inputs) if rows else ("unbatchable", id(inputs))
    return rows, key


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


class _Busy(concurrent.futures.TimeoutError):
    """The model stayed busy for longer than the caller's timeout (an inline call's wait)."""


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
        self._waiting = 0      # inline callers waiting for the model lock or their result
        self._inline = threading.Lock()  # guards the three below
        self._leading = False  # an inline caller leads: it holds (or waits for) the model lock
        self._pending: List[_Slot] = []  # requests left with the leader
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
        """Inline callers waiting for their turn at the model now."""
        return self._waiting

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
            return self._run_here(inputs, timeout)
        return self.predict(inputs).result(timeout)

    def predict(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Queues a predict call on validated inputs (batch dimension first)."""
        rows, key = _batch_key(inputs)
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

    # -- the caller's thread (inline) -------------------------------------------------------------
    def _run_here(self, inputs: List[np.ndarray], timeout: Optional[float]) -> WorkerResult:
        """Runs the request on this thread (it leads), or leaves it with the leader and waits
        for its result (or to be made the next leader)."""
        slot: Optional[_Slot] = None
        with self._inline:
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
                        not self._model.acquire(timeout=_lock_timeout(timeout)):
                    raise _Busy(f"the model was busy for longer than {timeout:g} s")
                try:
                    result = WorkerResult(*self._call(inputs))
                    if self._pending:  # a hint, read without the lock; taken with it
                        self._serve(self._take_pending())
                finally:
                    self._model.release()
        except (MLBridgeError, _Busy):
            raise
        except Exception as err:  # entering or leaving the context failed
            failure = _context_failure(err)
            if result is None:
                raise failure from err
            log.error("%s", failure)  # the call was answered; leaving the context failed
        assert result is not None  # every other way out of the try raised
        return result

    def _follow(self, slot: _Slot, timeout: Optional[float]) -> None:
        """Waits until the slot is answered or made leader; a timeout while it is still
        pending takes it back (raises _Busy); one while it runs abandons it."""
        got = slot.ready.acquire(timeout=_lock_timeout(timeout))
        with self._inline:
            self._waiting -= 1
            if got or slot.state in (_DONE, _LEAD):
                return  # answered, or to lead (a promotion is never dropped)
            if slot.state == _PENDING:
                self._pending.remove(slot)
        raise _Busy(f"the model was busy for longer than {timeout:g} s")

    def _run_led(self, batch: List[_Slot], timeout: Optional[float]) -> None:
        """A promoted caller's turn: ``batch`` (its own request among them), then what arrived
        meanwhile, holding the model lock with the context restored on this thread."""
        held = False
        try:
            with self.context:
                held = self._model.acquire(timeout=_lock_timeout(timeout))
                if not held:  # a job (clone, swap) or a queued call kept the model
                    busy = _Busy(f"the model was busy for longer than {timeout:g} s")
                    for each in batch:
                        each.deliver(None, busy)
                    return
                self._serve(batch)
                if self._pending:
                    batch = self._take_pending()
                    self._serve(batch)
        except Exception as err:  # entering or leaving the context failed
            failure = _context_failure(err)
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
            for each, result, error in self._run_predict(batch):
                each.deliver(result, error)
        finally:  # never leave a caller waiting
            for each in batch:
                if each.state != _DONE:
                    each.deliver(None, ModelCallError("the batch this request was in failed"))

    def _take_pending(self) -> List[_Slot]:
        with self._inline:
            batch, self._pending = self._pending, []
            for each in batch:
                each.state = _TAKEN
            return batch

    def _hand_on(self) -> None:
        """The leader is done: the first waiting request leads the rest, or no one leads."""
        with self._inline:
            if not self._pending:
                self._leading = False
                return
            batch, self._pending = self._pending, []
            for each in batch:
                each.state = _TAKEN
            first = batch[0]
            first.state, first.batch = _LEAD, batch
        first.ready.release()

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
                        deliveries = [(r.future, result, error) for r, result, error
                                      in self._run_predict(cast(List[_Predict], live))]
            except Exception as err:  # a context that fails must not kill the thread and hang every caller
                failure = _context_failure(err)
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

    def _run_predict(self, requests: Sequence[R]) -> List[Tuple[R, Optional[WorkerResult],
                                                                 Optional[MLBridgeError]]]:
        """Runs requests, those of one key joined into calls of at most ``max_batch`` rows;
        a joined call that fails is retried one by one, so one bad request fails alone."""
        out: List[Tuple[R, Optional[WorkerResult], Optional[MLBridgeError]]] = []
        for group in self._groups(requests):
            if len(group) > 1:
                joined = [np.concatenate(parts) for parts in zip(*(r.inputs for r in group))]
                total = sum(r.rows for r in group)
                try:
                    outputs, version, ms = self._call(joined)
                except MLBridgeError:
                    outputs = []  # retried one by one below
                if outputs and all(o.ndim > 0 and o.shape[0] == total for o in outputs):
                    start = 0
                    for r in group:
                        part = [o[start:start + r.rows] for o in outputs]
                        out.append((r, WorkerResult(part, version, ms, len(group)), None))
                        start += r.rows
                    continue
            for r in group:
                try:
                    outputs, version, ms = self._call(r.inputs)
                except MLBridgeError as err:
                    out.append((r, None, err))
                    continue
                out.append((r, WorkerResult(outputs, version, ms), None))
        return out

    def _groups(self, requests: Sequence[R]) -> List[List[R]]:
        """The requests in calls: equal keys joined in arrival order, at most ``max_batch`` rows
        a call; requests without a batch dimension alone."""
        groups: List[List[R]] = []
        open_groups: Dict[Any, Tuple[List[R], int]] = {}
        for r in requests:
            group, rows = open_groups.get(r.key, (None, 0))
            if group is None or self.max_batch == 1 or r.rows == 0 or rows + r.rows > self.max_batch:
                group, rows = [], 0
                groups.append(group)
            group.append(r)
            open_groups[r.key] = (group, rows + r.rows)
        return groups


def _lock_timeout(timeout: Optional[float]) -> float:
    """``timeout`` as Lock.acquire takes it (-1: wait for ever)."""
    return -1 if timeout is None else max(timeout, 0.0)


def _context_failure(err: BaseException) -> ModelCallError:
    failure = ModelCallError(f"restoring or leaving the framework context failed: "
                             f"{type(err).__name__}: {err}")
    failure.__cause__ = err
    return failure
