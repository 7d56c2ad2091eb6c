"""MLBridgeNode.handle_predict without a master: refusal order and a model that does not answer."""
import threading
from types import SimpleNamespace
from typing import Any, Iterator, List

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.msg import Tensor
from ml_bridge.srv import PredictRequest
from test_core_server import LinearModel

from ml_bridge.core.context import Context
from ml_bridge.core.server import ModelServer
from ml_bridge.ros.conversions import array_to_tensor
from ml_bridge.ros.node import MLBridgeNode, NodeConfig
from ml_bridge.ros.stats import Stats


class Stuck(LinearModel):
    """Predicts only once ``release`` is set; counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.calls: List[int] = []

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        self.calls.append(len(inputs[0]))
        self.release.wait(30.0)
        return super().predict(inputs)


@pytest.fixture
def servers() -> Iterator[List[ModelServer]]:
    started: List[ModelServer] = []
    yield started
    for server in started:
        server.close()


@pytest.fixture
def model(servers: List[ModelServer]) -> Iterator[Stuck]:
    """Released before the servers close (it is set up after them, so torn down first)."""
    stuck = Stuck()
    yield stuck
    stuck.release.set()


def handler(model: LinearModel, servers: List[ModelServer], timeout: float = 30.0) -> Any:
    """The node's handle_predict bound to a stand-in holding what it uses (no services)."""
    server = ModelServer(model, Context())
    servers.append(server)
    node = SimpleNamespace(server=server, config=NodeConfig(timeout=timeout), stats=Stats())
    return lambda req: MLBridgeNode.handle_predict(node, req)  # type: ignore[arg-type]


def test_a_model_that_does_not_answer_in_time_is_named_in_the_reply(model: Stuck,
                                                                    servers: List[ModelServer]) -> None:
    predict = handler(model, servers, timeout=0.2)
    resp = predict(PredictRequest(inputs=[array_to_tensor(np.zeros((1, 64), np.float32))]))
    assert not resp.success and resp.model_version == 1
    assert resp.message == "the model did not answer within ~timeout = 0.2 s (it is busy or stuck)"


def test_millions_of_tensors_are_refused_by_count_before_any_conversion(model: Stuck,
                                                                       servers: List[ModelServer]) -> None:
    model.release.set()
    predict = handler(model, servers)
    resp = predict(PredictRequest(inputs=[Tensor()] * 5_000_000))
    assert not resp.success
    assert resp.message == "request has 5000000 input tensor(s); the model takes 1"
    resp = predict(PredictRequest(inputs=[Tensor(shape=[1 << 20, 1 << 20])]))
    assert not resp.success and "declares more than" in resp.message
    assert model.calls == []
    ok = predict(PredictRequest(inputs=[array_to_tensor(np.zeros((2, 64), np.float32))]))
    assert ok.success and len(ok.class_ids) == 2 and model.calls == [2]
