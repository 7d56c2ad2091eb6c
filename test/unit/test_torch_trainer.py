"""TorchModel.fit, what only torch does or checks: eval mode, optimizer settings, targets,
regression, inference mode. What both backends must do is in test_conformance."""
from typing import Any, List

import numpy as np
import pytest
import torch
from recording import Recorder
from torch_fixtures import mlp, same_state, state

from ml_bridge.backends.torch import TorchModel
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import DatasetError, TrainingError
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.training import Callback, CallbackList, TrainConfig

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def train() -> Dataset:
    return digits()


def test_serves_in_eval_mode_after_training(train: Dataset) -> None:
    model = mlp()
    model.fit(Dataset("d", [train.inputs[0][:64]], [train.targets[0][:64]]), None,
              TrainConfig(epochs=1), Callback())
    assert not model.module.training  # dropout and batch norm as served, not as trained


def test_training_is_deterministic(train: Dataset) -> None:
    a, b = mlp(), mlp()
    a.fit(train, None, TrainConfig(epochs=2), Callback())
    b.fit(train, None, TrainConfig(epochs=2), Callback())
    assert same_state(state(a), state(b))


def test_batch_size_and_learning_rate_from_config(train: Dataset) -> None:
    seen: List[float] = []

    def sgd(params: Any, lr: float) -> torch.optim.Optimizer:
        seen.append(lr)
        return torch.optim.SGD(params, lr=lr)

    model = mlp()
    model.optimizer = sgd
    rec = Recorder()
    model.fit(train, None, TrainConfig(epochs=1, batch_size=100, learning_rate=0.5), rec)
    assert seen == [0.5]
    assert rec.batches == 15
    model.fit(train, None, TrainConfig(epochs=1), Recorder())
    assert seen == [0.5, model.default_learning_rate]


def test_callback_list_stops_when_any_asks(train: Dataset) -> None:
    quiet, stopper = Recorder(), Recorder(stop_after=2)
    result = mlp().fit(train, None, TrainConfig(epochs=1), CallbackList([quiet, stopper]))
    assert result.stopped and quiet.batches == 3


@pytest.mark.parametrize("targets, message", [
    (np.full(1500, 12, dtype=np.int64), r"\[0, 10\)"),
    (np.full(1500, 0.5), "non-integer"),
])
def test_bad_targets_raise_before_training(train: Dataset, targets: np.ndarray,
                                           message: str) -> None:
    model = mlp()
    before = state(model)
    rec = Recorder()
    with pytest.raises(DatasetError, match=message):
        model.fit(Dataset("bad", train.inputs, [targets]), None, TrainConfig(epochs=1), rec)
    assert rec.calls == [] and same_state(state(model), before)


def test_bad_validation_targets_raise_before_training(train: Dataset) -> None:
    val = Dataset("val", [train.inputs[0][:10]], [np.full(10, 99, dtype=np.int64)])
    rec = Recorder()
    with pytest.raises(DatasetError, match=r"'val'.*\[0, 10\)"):
        mlp().fit(train, val, TrainConfig(epochs=1), rec)
    assert rec.calls == []


def test_untrainable_model_raises(train: Dataset) -> None:
    model = mlp()
    for p in model.module.parameters():
        p.requires_grad_(False)
    assert not model.trainable
    with pytest.raises(TrainingError, match="no trainable parameters"):
        model.fit(train, None, TrainConfig(epochs=1), Callback())


def test_native_callbacks_are_refused(train: Dataset) -> None:
    rec = Recorder()
    with pytest.raises(TrainingError, match="no native callbacks.*object"):
        mlp().fit(train, None, TrainConfig(epochs=1), rec, native_callbacks=[object()])
    assert rec.calls == []


def test_trains_even_when_the_thread_is_in_inference_mode(train: Dataset) -> None:
    model = mlp()
    before = state(model)
    with torch.inference_mode():
        result = model.fit(Dataset("d", [train.inputs[0][:64]], [train.targets[0][:64]]), None,
                           TrainConfig(epochs=1), Callback())
    assert result.epochs_completed == 1 and not same_state(state(model), before)


def test_regression_with_mse_and_a_bundle_loss() -> None:
    gen = np.random.default_rng(0)
    x = gen.normal(size=(256, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], dtype=np.float32)).astype(np.float32)
    data = Dataset("lin", [x], [y])

    def make(loss: Any = None) -> TorchModel:
        module = torch.nn.Linear(3, 1)
        torch.nn.init.zeros_(module.weight)
        torch.nn.init.zeros_(module.bias)
        bundle = ModelBundle(module, loss=loss, learning_rate=0.05)
        return TorchModel(bundle.model, "lin", torch.device("cpu"),
                          inputs=[ArraySpec("x", "float32", (-1, 3))],
                          outputs=[ArraySpec("y", "float32", (-1, 1))],
                          loss=bundle.loss, learning_rate=bundle.learning_rate)

    mse = make()
    assert not mse.is_classifier
    logs = mse.fit(data, None, TrainConfig(epochs=20, batch_size=32), Callback()).history
    assert logs[-1]["loss"] < 0.01 and "accuracy" not in logs[-1]
    calls: List[int] = []

    def l1(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.nn.functional.l1_loss(out, target)

    make(l1).fit(data, None, TrainConfig(epochs=1, batch_size=32), Callback())
    assert len(calls) == 8
