"""ModelThread: one model thread, the context restored, errors and micro-batching."""
import threading
from concurrent.futures import Future
from typing import Dict, List, Tuple

import numpy as np
import pytest
from worker_doubles import TIMEOUT, DepthContext, Model, rows

from ml_bridge.core.context import Context, in_context
from ml_bridge.core.errors import InputError, MLBridgeError, ModelCallError
from ml_bridge.core.execution import ModelThread, WorkerResult, WorkerStopped


def hold(model: Model, worker: ModelThread) -> "Future[WorkerResult]":
    """Submits one request and waits until the model is inside it, so later ones queue up."""
    first = worker.submit(rows(1, 100))
    assert model.entered.wait(TIMEOUT)
    return first


def test_calls_run_on_the_model_thread_with_the_context_entered() -> None:
    ctx = DepthContext()
    model = Model(ctx)
    worker = ModelThread(ctx, model, name="model-thread")
    futures: Dict[int, Future[WorkerResult]] = {}

    def caller(i: int) -> None:
        futures[i] = worker.submit(rows(1, i))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, future in futures.items():
        result = future.result(TIMEOUT)
        np.testing.assert_array_equal(result.outputs[0], rows(1, i)[0] * 2 + 1)
        assert result.served == 7 and result.inference_ms >= 0
    assert {c[0] for c in model.calls} == {"model-thread"}
    assert all(c[2] == 1 for c in model.calls)
    # negative control: the same call on this thread, without restoring, sees no context
    model([np.zeros((1, 3), np.float32)])
    assert model.calls[-1][0] != "model-thread" and model.calls[-1][2] == 0
    worker.close()


def test_exclusive_runs_any_callable_on_the_model_thread() -> None:
    ctx = DepthContext()
    worker = ModelThread(ctx, Model())
    assert worker.exclusive(lambda: (threading.current_thread(), ctx.depth)).result(TIMEOUT) == (
        worker.thread, 1)
    empty: Dict[str, int] = {}
    with pytest.raises(KeyError):
        worker.exclusive(lambda: empty["missing"]).result(TIMEOUT)
    worker.close()


def test_in_context_decorator_restores_on_the_calling_thread() -> None:
    ctx = DepthContext()

    @in_context(ctx)
    def depth() -> int:
        return ctx.depth

    assert depth() == 1 and ctx.depth == 0


def test_model_errors_come_back_through_the_future() -> None:
    worker = ModelThread(Context(), Model())
    err = worker.submit([-np.ones((1, 3), np.float32)]).exception(TIMEOUT)
    assert isinstance(err, ModelCallError) and isinstance(err, MLBridgeError)
    assert "ValueError: negative input" in str(err)

    def refuse(inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], int]:
        raise InputError("bad request")

    worker2 = ModelThread(Context(), refuse)
    err = worker2.submit(rows(1)).exception(TIMEOUT)
    assert type(err) is InputError  # our own errors pass through unwrapped
    for w in (worker, worker2):
        w.close()


def test_concurrent_requests_are_batched_with_identical_results() -> None:
    model = Model(hold_first=True)
    worker = ModelThread(Context(), model, max_batch=4)
    first = hold(model, worker)
    requests = [rows(1, 10 * i) for i in range(6)]
    futures = [worker.submit(r) for r in requests]
    model.release.set()
    results = [f.result(TIMEOUT) for f in futures]
    first.result(TIMEOUT)
    assert [c[1] for c in model.calls] == [1, 4, 2]  # 7 requests, 3 model calls
    assert [r.batched_with for r in results] == [4, 4, 4, 4, 2, 2]
    for request, result in zip(requests, results):
        alone, version = Model()(request)
        np.testing.assert_array_equal(result.outputs[0], alone[0])
        assert result.outputs[0].shape == (1, 3) and result.served == version
    worker.close()


def test_max_batch_counts_rows_and_shapes_must_agree() -> None:
    model = Model(hold_first=True)
    worker = ModelThread(Context(), model, max_batch=4)
    first = hold(model, worker)
    three_a, three_b = worker.submit(rows(3)), worker.submit(rows(3, 50))
    other_width = worker.submit([np.ones((1, 5), np.float32)])
    other_dtype = worker.submit([np.ones((1, 3), np.float64)])
    model.release.set()
    for f in (first, three_a, three_b, other_width, other_dtype):
        assert f.result(TIMEOUT).batched_with == 1
    assert [c[1] for c in model.calls] == [1, 3, 3, 1, 1]
    assert max(c[1] for c in model.calls) <= 4
    worker.close()


def test_a_failing_request_in_a_batch_fails_alone() -> None:
    model = Model(hold_first=True)
    worker = ModelThread(Context(), model, max_batch=8)
    first = hold(model, worker)
    good1, bad, good2 = worker.submit(rows(1, 1)), worker.submit(rows(1, -9)), worker.submit(rows(1, 5))
    model.release.set()
    first.result(TIMEOUT)
    np.testing.assert_array_equal(good1.result(TIMEOUT).outputs[0], rows(1, 1)[0] * 2 + 1)
    np.testing.assert_array_equal(good2.result(TIMEOUT).outputs[0], rows(1, 5)[0] * 2 + 1)
    assert isinstance(bad.exception(TIMEOUT), ModelCallError)
    # one joined call that failed, then each retried alone
    assert [c[1] for c in model.calls] == [1, 3, 1, 1, 1]


def test_max_batch_one_never_batches() -> None:
    model = Model(hold_first=True)
    worker = ModelThread(Context(), model, max_batch=1)
    first = hold(model, worker)
    futures = [worker.submit(rows(1, i)) for i in range(3)]
    model.release.set()
    for f in [first, *futures]:
        f.result(TIMEOUT)
    assert [c[1] for c in model.calls] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        ModelThread(Context(), model, max_batch=0)


def test_close_finishes_queued_calls_and_refuses_later_ones() -> None:
    model = Model(hold_first=True)
    worker = ModelThread(Context(), model)
    first = hold(model, worker)
    queued = worker.submit(rows(1))
    closer = threading.Thread(target=worker.close)
    closer.start()
    model.release.set()
    closer.join(TIMEOUT)
    assert first.result(TIMEOUT) and queued.result(TIMEOUT)
    assert not worker.thread.is_alive()
    with pytest.raises(WorkerStopped, match="stopped"):
        worker.submit(rows(1))
    with pytest.raises(WorkerStopped):
        worker.exclusive(lambda: 1)


class BrokenContext(Context):
    """A context whose restore fails, as a framework's can (e.g. a CUDA device gone)."""

    def __enter__(self) -> "BrokenContext":
        raise RuntimeError("cannot restore device")


def test_a_context_that_fails_to_restore_fails_the_call_not_the_thread() -> None:
    worker = ModelThread(BrokenContext(), Model())
    err = worker.submit(rows(1)).exception(TIMEOUT)  # must not hang
    assert isinstance(err, ModelCallError) and "cannot restore device" in str(err)
    assert worker.thread.is_alive()
    assert isinstance(worker.exclusive(lambda: 1).exception(TIMEOUT), ModelCallError)
    worker.close()
