"""ros.model_call: streams' calls are micro-batched and time out by name; ~predict's run inline."""
import threading
import time
from typing import Iterator, List

import numpy as np
import pytest
from test_core_server import LinearModel

from ml_bridge.core.server import ModelServer
from ml_bridge.ros.model_call import ModelTimeout, predict_within, submit_within

TIMEOUT = 10.0


class CountingModel(LinearModel):
    """Records the batch size of every call."""

    calls: List[int]

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        self.calls.append(int(inputs[0].shape[0]))
        return super().predict(inputs)


@pytest.fixture
def server() -> Iterator[ModelServer]:
    model = CountingModel()
    model.calls = []
    served = ModelServer(model, model.capture_context(), max_batch=8)  # model_thread auto: inline
    yield served
    served.close()


def _hold(server: ModelServer) -> threading.Event:
    """Occupies the model thread with a job until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def job() -> None:
        started.set()
        release.wait(TIMEOUT)

    server.executor.exclusive(job)
    assert started.wait(TIMEOUT)
    return release


def test_concurrent_stream_calls_are_joined_into_one_model_call(server: ModelServer) -> None:
    release = _hold(server)
    x = np.zeros((1, 64), np.float32)
    results: List[int] = []
    callers = [threading.Thread(target=lambda: results.append(
        submit_within(server, [x], TIMEOUT).model_version)) for _ in range(3)]
    for t in callers:
        t.start()
    deadline = time.monotonic() + TIMEOUT
    while server.executor.queued < 3 and time.monotonic() < deadline:  # the worker has no event
        threading.Event().wait(0.01)                                # for "queued": poll it
    assert server.executor.queued == 3
    release.set()
    for t in callers:
        t.join(TIMEOUT)
    assert results == [1, 1, 1]
    assert server.model.calls == [3]  # type: ignore[attr-defined]


def test_an_idle_cpu_model_answers_predict_on_the_callers_thread(server: ModelServer) -> None:
    seen: List[str] = []
    original = server.model.predict

    def spy(inputs: List[np.ndarray]) -> List[np.ndarray]:
        seen.append(threading.current_thread().name)
        return original(inputs)

    server.model.predict = spy  # type: ignore[method-assign]
    predict_within(server, [np.zeros((1, 64), np.float32)], TIMEOUT)
    assert seen == [threading.current_thread().name]


def test_a_stream_call_to_a_busy_model_times_out_with_a_message(server: ModelServer) -> None:
    release = _hold(server)
    try:
        with pytest.raises(ModelTimeout, match="did not answer within ~timeout = 0.2 s"):
            submit_within(server, [np.zeros((1, 64), np.float32)], 0.2)
    finally:
        release.set()
