"""InlineExecutor (``~model_thread``): a request runs on the caller's thread,
with the context restored, never beside another model call; requests that arrive while the
model runs are joined into one batch that a waiting caller runs on its own thread.
"""
import concurrent.futures
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import backends
import numpy as np
import pytest
from threads import on_thread
from worker_doubles import TIMEOUT, DepthContext, Model, rows

from ml_bridge.core.context import Context
from ml_bridge.core.errors import InputError, ModelCallError
from ml_bridge.core.execution import (
    InlineExecutor,
    ModelExecutor,
    ModelThread,
    WorkerStopped,
    runs_inline,
)
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.server import ModelServer


def wait_for(condition: Callable[[], bool]) -> None:
    """Waits until ``condition()`` holds (polls it; fails after TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.001)


def run_into(worker: InlineExecutor, box: Dict[Any, Any], key: Any, inputs: List[np.ndarray]) -> None:
    """``worker.predict(inputs)`` on this thread; its result, or the error it raised, in box[key]."""
    try:
        box[key] = worker.predict(inputs, TIMEOUT)
    except Exception as err:  # the test looks at it
        box[key] = err


def hold_inline(worker: InlineExecutor, model: Model) -> threading.Thread:
    """Starts an inline call of one row on another thread and waits until it is inside the
    model (which holds it until ``model.release`` is set)."""
    thread = threading.Thread(target=lambda: worker.predict(rows(1)))
    thread.start()
    assert model.entered.wait(TIMEOUT)
    return thread


def wait_queued(worker: ModelExecutor, count: int) -> None:
    """Waits until ``count`` items wait in the executor's queue."""
    wait_for(lambda: worker.queued >= count)


def test_an_idle_model_runs_the_call_on_the_callers_thread_with_the_context_entered() -> None:
    ctx = DepthContext()
    model = Model(ctx)
    worker = InlineExecutor(ctx, model, name="model-thread")
    try:
        result = on_thread(lambda: worker.predict(rows(2)), name="caller")
        np.testing.assert_array_equal(result.outputs[0], rows(2)[0] * 2 + 1)
        assert result.served == 7 and result.batched_with == 1
        assert model.calls[-1] == ("caller", 2, 1)  # the caller's thread, context entered
        # negative control: the same call on a fresh thread without the worker sees no context
        on_thread(lambda: model(rows(1)), name="bare")
        assert model.calls[-1] == ("bare", 1, 0)
    finally:
        worker.close()
    queued = ModelThread(ctx, model, name="model-thread")
    try:
        on_thread(lambda: queued.predict(rows(1)))
        assert model.calls[-1] == ("model-thread", 1, 1)  # without inline: the model thread
    finally:
        queued.close()


def test_callers_that_find_the_model_busy_are_joined_into_one_batch_on_the_leaders_thread() -> None:
    model = Model(hold_first=True)
    worker = InlineExecutor(Context(), model, max_batch=8, name="model-thread")
    results: List[Any] = [None] * 4

    def caller(i: int) -> None:
        results[i] = worker.predict(rows(1, 10 * i), TIMEOUT)

    threads = [threading.Thread(target=caller, args=(i,), name=f"caller{i}") for i in range(4)]
    threads[0].start()
    assert model.entered.wait(TIMEOUT)  # the first call holds the model, on its own thread
    for t in threads[1:]:
        t.start()
    wait_for(lambda: worker.waiting == 3)  # the others left their requests and wait
    assert len(model.calls) == 1 and worker.queued == 0
    model.release.set()
    for t in threads:
        t.join(TIMEOUT)
    worker.close()
    assert model.overlaps == 0  # never two calls at once
    # caller0 ran its own call, then the three waiting requests as one call of 3 rows
    assert model.calls == [("caller0", 1, 0), ("caller0", 3, 0)]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result.outputs[0], rows(1, 10 * i)[0] * 2 + 1)
        assert result.batched_with == (1 if i == 0 else 3)


class Gated(Model):
    """Holds every call until its gate is opened, one gate per call (in call order)."""

    def __init__(self, calls: int, context: Optional[DepthContext] = None) -> None:
        super().__init__(context)
        self.gates = [threading.Event() for _ in range(calls)]
        self.started = [threading.Event() for _ in range(calls)]

    def __call__(self, inputs: List[np.ndarray]) -> Tuple[List[np.ndarray], int]:
        n = len(self.calls)
        self.started[n].set()
        assert self.gates[n].wait(TIMEOUT)
        return super().__call__(inputs)


def test_a_leader_runs_two_batches_at_most_then_the_next_waiting_caller_leads() -> None:
    ctx = DepthContext()
    model = Gated(3, ctx)
    worker = InlineExecutor(ctx, model, max_batch=8)
    results: Dict[str, Any] = {}

    def start(name: str, start_value: float) -> threading.Thread:
        t = threading.Thread(
            target=lambda: results.update({name: worker.predict(rows(1, start_value), TIMEOUT)}),
            name=name)
        t.start()
        return t

    threads = [start("a", 0)]
    assert model.started[0].wait(TIMEOUT)     # a leads: its own call runs
    threads.append(start("b", 10))
    wait_for(lambda: worker.waiting == 1)
    model.gates[0].set()
    assert model.started[1].wait(TIMEOUT)     # a runs b's request (its second batch)
    threads.append(start("c", 20))
    wait_for(lambda: worker.waiting == 2)     # c waits before d starts: c is the first in line
    threads.append(start("d", 30))
    wait_for(lambda: worker.waiting == 3)     # b waits for its result, c and d are left
    model.gates[1].set()
    assert model.started[2].wait(TIMEOUT)     # a has handed the lead on: c runs c and d
    model.gates[2].set()
    for t in threads:
        t.join(TIMEOUT)
    worker.close()
    # every batch on its leader's thread, with the context entered there
    assert model.calls == [("a", 1, 1), ("a", 1, 1), ("c", 2, 1)]
    for name, value in (("a", 0), ("b", 10), ("c", 20), ("d", 30)):
        np.testing.assert_array_equal(results[name].outputs[0], rows(1, value)[0] * 2 + 1)


def test_waiting_requests_are_joined_by_shape_and_max_batch_and_one_bad_one_fails_alone() -> None:
    model = Model(hold_first=True)
    worker = InlineExecutor(Context(), model, max_batch=3)
    box: Dict[int, Any] = {}
    requests = {0: rows(1), 1: rows(2, 10), 2: [np.ones((1, 4), np.float32)], 3: rows(2, 20),
                4: [-np.ones((1, 3), np.float32)], 5: rows(1, 30)}
    threads = [threading.Thread(target=run_into, args=(worker, box, 0, requests[0]))]
    threads[0].start()
    assert model.entered.wait(TIMEOUT)
    for i in range(1, 6):
        threads.append(threading.Thread(target=run_into, args=(worker, box, i, requests[i])))
        threads[-1].start()
        wait_for(lambda: worker.waiting == i)  # noqa: B023 (i is read at once)
    model.release.set()
    for t in threads:
        t.join(TIMEOUT)
    worker.close()
    # after the first call: 1 (2 rows; with 3 it would be 4 > max_batch), 2 (another shape),
    # 3 + 4 joined (3 rows) fail and are retried one by one (2, 1), 5 (no room left beside them)
    assert [c[1] for c in model.calls[1:]] == [2, 1, 3, 2, 1, 1]
    assert isinstance(box[4], ModelCallError) and "negative input" in str(box[4])
    for i in (0, 1, 3, 5):
        np.testing.assert_array_equal(box[i].outputs[0], requests[i][0] * 2 + 1)
    np.testing.assert_array_equal(box[2].outputs[0], requests[2][0] * 2 + 1)
    assert model.overlaps == 0


def test_a_caller_that_waits_too_long_for_the_model_gets_a_timeout() -> None:
    model = Model(hold_first=True)
    worker = InlineExecutor(Context(), model)
    holder = hold_inline(worker, model)
    with pytest.raises(concurrent.futures.TimeoutError, match="model was busy"):
        worker.predict(rows(1, 50), timeout=0.01)
    assert worker.waiting == 0  # the request was taken back
    model.release.set()
    holder.join(TIMEOUT)
    assert [c[1] for c in model.calls] == [1]  # and never run: the leader found nothing left
    assert worker.predict(rows(1), timeout=0.01).outputs[0][0, 0] == 1  # free again: no wait
    worker.close()


def test_a_job_queued_during_an_inline_call_runs_after_it() -> None:
    model = Model(hold_first=True)
    worker = InlineExecutor(Context(), model)
    caller = hold_inline(worker, model)
    job = worker.exclusive(lambda: (model.active, len(model.calls)))  # e.g. a swap
    wait_queued(worker, 1)
    later = worker.submit(rows(1, 5))  # queued behind the job
    model.release.set()
    caller.join(TIMEOUT)
    assert job.result(TIMEOUT) == (0, 1)  # no model call running, the inline one finished
    assert later.result(TIMEOUT).outputs[0][0, 0] == 11
    assert model.overlaps == 0
    worker.close()


def test_a_call_that_arrives_while_a_job_runs_waits_for_it() -> None:
    model = Model()
    worker = InlineExecutor(Context(), model, name="model-thread")
    running, gate = threading.Event(), threading.Event()

    def hold() -> bool:  # e.g. a clone or a swap
        running.set()
        return gate.wait(TIMEOUT)

    job = worker.exclusive(hold)
    assert running.wait(TIMEOUT)
    box: List[Any] = []
    caller = threading.Thread(target=lambda: box.append(worker.predict(rows(1), TIMEOUT)))
    caller.start()
    wait_queued(worker, 1)  # it queued instead of running beside the job
    assert not model.calls
    gate.set()
    caller.join(TIMEOUT)
    assert job.result(TIMEOUT) is True
    assert model.calls == [("model-thread", 1, 0)] and box[0].outputs[0][0, 0] == 1
    worker.close()


class Scale:
    """A BackendModel stand-in for ModelServer: y = scale * x, labels and version by swap."""

    backend = "fake"
    source = "scale"
    device = "cpu"
    checkpoint_suffix = ".npz"
    is_classifier = True
    outputs_probabilities = False
    preprocess_image = None
    image_format = None

    def __init__(self, scale: float, labels: List[str], hold: Optional[Model] = None) -> None:
        from ml_bridge.core.spec import ArraySpec

        self.scale = scale
        self.labels = labels
        self.hold = hold
        self.input_specs = [ArraySpec("x", "float32", (-1, 2))]
        self.output_specs = [ArraySpec("y", "float32", (-1, 2))]

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        if self.hold is not None:
            self.hold(inputs)  # records the call and holds the first one
        return [inputs[0] * self.scale]


def test_a_swap_never_lands_inside_an_inline_call_and_results_carry_the_model_that_ran() -> None:
    gate = Model(hold_first=True)
    server = ModelServer(Scale(1.0, ["a", "b"], gate), Context(), max_batch=8)  # type: ignore[arg-type]
    assert isinstance(server.executor, InlineExecutor)  # auto, on a CPU model
    replacement = Scale(3.0, ["c", "d"])
    try:
        x = np.ones((1, 2), np.float32)
        box: List[Any] = []
        caller = threading.Thread(target=lambda: box.append(server.predict([x], TIMEOUT)))
        caller.start()
        assert gate.entered.wait(TIMEOUT)
        swapped = server.executor.exclusive(lambda: (gate.active, server._swap(replacement, 7)))  # type: ignore[arg-type]
        wait_queued(server.executor, 1)
        gate.release.set()
        caller.join(TIMEOUT)
        assert swapped.result(TIMEOUT) == (0, 7)  # the swap ran between two calls
        ran = box[0]
        assert ran.model_version == 1 and ran.model.labels == ("a", "b")
        np.testing.assert_array_equal(ran.outputs[0], x)
        after = server.predict([x], TIMEOUT)
        assert after.model_version == 7 and after.model.labels == ("c", "d")
        np.testing.assert_array_equal(after.outputs[0], 3 * x)
    finally:
        server.close()


def test_errors_on_the_inline_path_reach_the_caller_and_free_the_model() -> None:
    worker = InlineExecutor(Context(), Model())
    with pytest.raises(ModelCallError, match="ValueError: negative input"):
        worker.predict([-np.ones((1, 3), np.float32)])
    assert worker.predict(rows(1)).outputs[0][0, 0] == 1  # the model is free again
    worker.close()
    with pytest.raises(WorkerStopped, match="stopped"):
        worker.predict(rows(1))

    broken = InlineExecutor(DepthContext(fail_once=True), Model())
    with pytest.raises(ModelCallError, match="restoring or leaving the framework context failed"):
        broken.predict(rows(1))
    assert broken.predict(rows(1)).outputs[0][0, 0] == 1
    broken.close()


@pytest.mark.parametrize("mode, device, inline", [
    ("auto", "cpu", True), ("auto", "/CPU:0", True), ("auto", "cuda:0", False),
    ("auto", "/GPU:0", False), ("always", "cpu", False), ("never", "cuda:0", True),
    ("", "cpu", True), (" Always ", "cpu", False)])
def test_model_thread_modes(mode: str, device: str, inline: bool) -> None:
    assert runs_inline(mode, device) is inline


def test_an_unknown_model_thread_mode_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match="~model_thread must be one of auto, always, never"):
        runs_inline("sometimes", "cpu")


def test_model_thread_always_keeps_every_call_on_the_model_thread() -> None:
    gate = Model()
    server = ModelServer(Scale(1.0, ["a", "b"], gate), Context(),  # type: ignore[arg-type]
                         model_thread="always")
    try:
        on_thread(lambda: server.predict([np.ones((1, 2), np.float32)]), name="caller")
        assert isinstance(server.executor, ModelThread)
        assert gate.calls[-1][0] == server.executor.thread.name
    finally:
        server.close()


# -- real frameworks ---------------------------------------------------------------------------
def _torch_state() -> Tuple[Context, Callable[[], Any], Any]:
    import torch

    from ml_bridge.backends.torch.core import TorchContext

    torch.set_grad_enabled(False)
    try:
        ctx = TorchContext.capture("cpu")
    finally:
        torch.set_grad_enabled(True)
    return ctx, torch.is_grad_enabled, False


def _tf_state() -> Tuple[Context, Callable[[], Any], Any]:
    import keras

    from ml_bridge.backends.tensorflow.core import capture

    def capture_mixed() -> Context:
        keras.config.set_dtype_policy("mixed_float16")  # per thread: set on a helper thread
        try:
            return capture()
        finally:
            keras.config.set_dtype_policy("float32")

    return on_thread(capture_mixed), lambda: keras.config.dtype_policy().name, "mixed_float16"


@pytest.mark.parametrize("backend", backends.ALL)
def test_the_framework_context_is_restored_on_the_inline_path(backend: str) -> None:
    ctx, probe, captured = _torch_state() if backend == "torch" else _tf_state()
    default = on_thread(probe)
    assert default != captured  # negative control: a fresh thread has the framework's default
    worker = InlineExecutor(ctx, lambda xs: ([xs[0]], (threading.current_thread().name, probe())))
    try:
        assert on_thread(lambda: worker.predict(rows(1)).served, name="caller") == ("caller", captured)
        assert on_thread(probe) == default  # and nothing leaked onto later threads
    finally:
        worker.close()


@pytest.mark.parametrize("backend", backends.ALL)
def test_inline_results_equal_the_model_threads_bit_for_bit(backend: str) -> None:
    from ml_bridge.core import registry
    from ml_bridge.core.datasets import digits

    model = registry.load(backend).load_model("digits_mlp", ModelOptions())
    x = digits(heldout=True).inputs[0][:5]
    inline = ModelServer(model, model.capture_context(), model_thread="auto")
    queued = ModelServer(model, model.capture_context(), model_thread="always")
    try:
        assert isinstance(inline.executor, InlineExecutor) and isinstance(queued.executor, ModelThread)
        got = on_thread(lambda: inline.predict([x], TIMEOUT))
        want = on_thread(lambda: queued.predict([x], TIMEOUT))
        np.testing.assert_array_equal(got.outputs[0], want.outputs[0])
        assert got.model_version == want.model_version == 1
    finally:
        inline.close()
        queued.close()


class GateThenFail(Context):
    """Its first entry waits for ``release`` and then fails (a device that cannot be set)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.first = True

    def __enter__(self) -> "GateThenFail":
        if self.first:
            self.first = False
            self.entered.set()
            assert self.release.wait(TIMEOUT)
            raise RuntimeError("cannot restore device")
        return self


@pytest.mark.parametrize("failure", ["model", "context"])
def test_a_leader_that_fails_hands_the_waiting_requests_on(failure: str) -> None:
    model = Model(hold_first=failure == "model")
    ctx = GateThenFail() if failure == "context" else Context()
    worker = InlineExecutor(ctx, model, max_batch=8)
    box: Dict[str, Any] = {}
    leader = threading.Thread(target=run_into,
                              args=(worker, box, "leader", [-np.ones((1, 3), np.float32)]))
    leader.start()
    assert (model.entered if failure == "model" else ctx.entered).wait(TIMEOUT)  # type: ignore[attr-defined]
    follower = threading.Thread(target=run_into, args=(worker, box, "follower", rows(1, 5)))
    follower.start()
    wait_for(lambda: worker.waiting == 1)
    (model.release if failure == "model" else ctx.release).set()  # type: ignore[attr-defined]
    leader.join(TIMEOUT)
    follower.join(TIMEOUT)
    worker.close()
    expected = "negative input" if failure == "model" else "restoring or leaving the framework context"
    assert isinstance(box["leader"], ModelCallError) and expected in str(box["leader"])
    np.testing.assert_array_equal(box["follower"].outputs[0], rows(1, 5)[0] * 2 + 1)
    assert model.overlaps == 0 and worker.waiting == 0
