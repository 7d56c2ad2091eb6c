"""The execution seam: one executor chosen when the server is built, ``defer`` for callers with
several requests, executors as context managers, and an executor with many calls in flight
(as a remote server's would be) serving a ModelServer with nothing else changed."""
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, List, Optional, TypeVar

import numpy as np
import pytest
from test_core_worker_inline import Scale
from threads import on_thread
from worker_doubles import TIMEOUT, Model, rows

from ml_bridge.core import server as server_module
from ml_bridge.core.context import Context
from ml_bridge.core.execution import (
    InlineExecutor,
    ModelExecutor,
    ModelThread,
    PredictFn,
    WorkerResult,
    WorkerStopped,
    make_executor,
)
from ml_bridge.core.execution.base import timed_call
from ml_bridge.core.server import ModelServer

T = TypeVar("T")


@pytest.mark.parametrize("model_thread, device, kind", [
    ("auto", "cpu", InlineExecutor), ("auto", "cuda:0", ModelThread),
    ("always", "cpu", ModelThread), ("never", "cuda:0", InlineExecutor)])
def test_the_executor_is_chosen_once_and_closes_as_a_context_manager(
        model_thread: str, device: str, kind: type) -> None:
    with make_executor(Context(), Model(), 4, model_thread, device) as executor:
        assert type(executor) is kind
        assert executor.predict(rows(1), TIMEOUT).outputs[0][0, 0] == 1
        thread = executor.thread  # type: ignore[attr-defined]
    assert not thread.is_alive()  # joined on the way out
    with pytest.raises(WorkerStopped, match="stopped"):
        executor.predict(rows(1), TIMEOUT)
    with pytest.raises(WorkerStopped):
        executor.exclusive(lambda: 1)


def test_a_server_closes_its_executor_as_a_context_manager() -> None:
    with ModelServer(Scale(1.0, ["a", "b"]), Context(), model_thread="always") as server:  # type: ignore[arg-type]
        assert server.predict([np.ones((1, 2), np.float32)], TIMEOUT).model_version == 1
        executor = server.executor
    assert isinstance(executor, ModelThread) and not executor.thread.is_alive()
    with pytest.raises(WorkerStopped):
        server.predict([np.ones((1, 2), np.float32)], TIMEOUT)


def test_deferred_calls_on_the_model_thread_are_submitted_at_once_and_joined() -> None:
    model = Model()
    with ModelThread(Context(), model, max_batch=8, name="model-thread") as executor:
        running, gate = threading.Event(), threading.Event()

        def hold() -> bool:  # the thread busy: the calls below wait together
            running.set()
            return gate.wait(TIMEOUT)

        executor.exclusive(hold)
        assert running.wait(TIMEOUT)
        waits = [executor.defer(rows(1, 10 * i), TIMEOUT, lambda r: r.outputs[0][0, 0])
                 for i in range(3)]
        assert executor.queued == 3 and not model.calls  # submitted before any is waited on
        gate.set()
        assert [wait() for wait in waits] == [1, 21, 41]
    assert model.calls == [("model-thread", 3, 0)]  # one joined call


def test_deferred_calls_inline_run_when_called_on_the_callers_thread() -> None:
    model = Model()
    with InlineExecutor(Context(), model, max_batch=8) as executor:
        waits = [executor.defer(rows(1, 10 * i), TIMEOUT, lambda r: r.outputs[0][0, 0])
                 for i in range(2)]
        assert not model.calls and executor.queued == 0  # nothing ran, nothing queued
        assert on_thread(lambda: [wait() for wait in waits], name="caller") == [1, 21]
    assert model.calls == [("caller", 1, 0), ("caller", 1, 0)]  # one after the other


class InFlight(ModelExecutor):
    """A stand-in for a remote executor: every call in flight at once, on a pool of threads
    (a remote server orders its own calls and swaps)."""

    def __init__(self, predict_fn: PredictFn) -> None:
        self._call = timed_call(predict_fn)
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="in-flight")

    def submit(self, inputs: List[np.ndarray]) -> "Future[WorkerResult]":
        return self._pool.submit(lambda: WorkerResult(*self._call(inputs)))

    def exclusive(self, fn: Callable[[], T]) -> "Future[T]":
        return self._pool.submit(fn)

    def close(self, timeout: Optional[float] = 10.0) -> None:
        self._pool.shutdown(wait=True)


def test_an_executor_with_many_calls_in_flight_serves_the_server_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: List[InFlight] = []

    def in_flight(context: Context, predict_fn: PredictFn, *args: object) -> ModelExecutor:
        chosen.append(InFlight(predict_fn))
        return chosen[0]

    monkeypatch.setattr(server_module, "make_executor", in_flight)
    together = threading.Barrier(3, timeout=TIMEOUT)  # passed only by 3 calls in flight at once
    model = Scale(2.0, ["a", "b"])
    model.predict = lambda inputs: (together.wait(), [inputs[0] * 2.0])[1]  # type: ignore[method-assign]
    server = ModelServer(model, Context(), model_thread="always")  # type: ignore[arg-type]
    try:
        assert server.executor is chosen[0]
        x = np.ones((1, 2), np.float32)
        out: List[float] = []
        callers = [threading.Thread(target=lambda: out.append(
            float(server.predict([x], TIMEOUT).outputs[0][0, 0]))) for _ in range(3)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(TIMEOUT)
        assert out == [2.0, 2.0, 2.0]
        waits = [server.defer([x], TIMEOUT) for _ in range(3)]  # all in flight before any wait
        assert [w().model_version for w in waits] == [1, 1, 1]
        assert server.executor.exclusive(lambda: server._swap(model, 7)).result(TIMEOUT) == 7  # type: ignore[arg-type]
        waits = [server.defer([x], TIMEOUT) for _ in range(3)]
        assert [w().model_version for w in waits] == [7, 7, 7]
    finally:
        server.close()
