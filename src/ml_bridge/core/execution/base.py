"""The interface every way of running the model implements (:class:`ModelExecutor`), and
what the implementations share: the timed model call and the error of a failed context."""
import abc
import time
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Callable, List, Optional, Tuple, Type, TypeVar

import numpy as np

from ml_bridge.core.errors import MLBridgeError, ModelCallError
from ml_bridge.core.execution.batching import CallFn, WorkerResult
from ml_bridge.core.threads import ClosedError

T = TypeVar("T")
R = TypeVar("R")
E = TypeVar("E", bound="ModelExecutor")
#: Runs the served model on validated inputs: returns (outputs, what served them), the
#: latter read with the outputs, during the call (ModelServer passes a ModelStamp).
PredictFn = Callable[[List[np.ndarray]], Tuple[List[np.ndarray], Any]]


class WorkerStopped(ClosedError):
    """The executor has been closed; no more calls are accepted."""


class ModelExecutor(abc.ABC):
    """Runs model calls on validated inputs (batch dimension first), at most one at a time.

    As :class:`concurrent.futures.Executor`: :meth:`submit` returns a Future at once and the
    call's errors come back through it; :meth:`close` (or leaving a ``with`` block) refuses
    later calls, finishes those accepted and joins the executor's threads. An implementation
    decides where a call runs (the caller's thread, a model thread, another process) and may
    join requests that wait together into one call; callers never ask which.
    """

    @abc.abstractmethod
    def submit(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        """Starts a call now and returns its Future; requests submitted together before any
        is waited on may be joined into one call.

        Raises:
            WorkerStopped: the executor is closed.
        """

    @abc.abstractmethod
    def exclusive(self, fn: Callable[[], T]) -> "Future[T]":
        """Runs ``fn`` with the framework context restored while no model call runs: between
        two calls (a clone of the served model, a swap). Its result or error comes back
        through the Future.

        Raises:
            WorkerStopped: the executor is closed.
        """

    @abc.abstractmethod
    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Refuses later calls, finishes those accepted and joins the executor's threads
        (waiting at most ``timeout`` seconds for each)."""

    @property
    def queued(self) -> int:
        """Requests and jobs accepted and not started yet."""
        return 0

    def predict(self, inputs: List[np.ndarray], timeout: Optional[float] = None) -> WorkerResult:
        """Runs a call and returns its result, waiting at most ``timeout`` seconds.

        Raises:
            WorkerStopped: the executor is closed.
            MLBridgeError: the model call failed (ModelCallError wraps framework errors).
            concurrent.futures.TimeoutError: no result within ``timeout``.
        """
        return self.submit(inputs).result(timeout)

    def defer(self, inputs: List[np.ndarray], timeout: Optional[float],
              then: Callable[[WorkerResult], R]) -> Callable[[], R]:
        """The call as a function that returns ``then(result)``, for a caller with several
        requests: it defers all, then calls each function in turn. The call starts now where
        that gains something (here: submitted, so that the requests are joined) and the
        function waits until ``timeout`` seconds after this (however late it is called);
        an executor that runs calls on the caller's thread runs it when the function is
        called.

        Raises:
            WorkerStopped: the executor is closed (at once, or when the function is called).
        """
        future = self.submit(inputs)
        deadline = None if timeout is None else time.monotonic() + timeout

        def wait() -> R:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            return then(future.result(left))
        return wait

    def __enter__(self: "E") -> "E":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def timed_call(predict_fn: PredictFn) -> CallFn:
    """``predict_fn`` as the executors call it: framework errors wrapped in ModelCallError
    (ours pass through), the call's milliseconds added."""
    def call(inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], Any, float]:
        start = time.perf_counter()
        try:
            outputs, served = predict_fn(inputs)
        except MLBridgeError:
            raise
        except Exception as err:
            raise ModelCallError(f"the model raised {type(err).__name__}: {err}") from err
        return outputs, served, (time.perf_counter() - start) * 1000.0
    return call


def context_failure(err: BaseException) -> ModelCallError:
    """The error a caller gets when restoring or leaving the framework context failed."""
    failure = ModelCallError(f"restoring or leaving the framework context failed: "
                             f"{type(err).__name__}: {err}")
    failure.__cause__ = err
    return failure
