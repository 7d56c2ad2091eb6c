"""TorchModel.fit: accuracy, Keras hook order, stopping within a batch, keep_partial."""
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch
from torch_fixtures import mlp, same_state, state

from ml_bridge.backends.torch import TorchModel
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import DatasetError, TrainingError
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.spec import TensorSpec
from ml_bridge.core.training import Callback, CallbackList, Logs, TrainConfig

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

BATCHES_PER_EPOCH = 47  # ceil(1500 / 32): digits with digits_mlp's default batch size


@pytest.fixture(scope="module")
def train() -> Dataset:
    return digits()




class Recorder(Callback):
    """Records every hook call; asks to stop after global batch ``stop_after`` (0-based)."""

    def __init__(self, stop_after: Optional[int] = None,
                 model: Optional[TorchModel] = None) -> None:
        self.calls: List[Tuple[str, Any]] = []
        self.batches = 0
        self.stop_after = stop_after
        self.model = model
        self.epoch_states: List[Dict[str, torch.Tensor]] = []

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.calls.append(("train_begin", None))

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        self.calls.append(("train_end", dict(logs or {})))

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("epoch_end", (epoch, dict(logs or {}))))
        if self.model is not None:
            self.epoch_states.append(state(self.model))

    def on_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("batch_end", batch))
        self.batches += 1

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.batches > self.stop_after

    def named(self, name: str) -> List[Any]:
        return [arg for hook, arg in self.calls if hook == name]


def accuracy(model: TorchModel, data: Dataset) -> float:
    return float((model.predict(data.inputs)[0].argmax(1) == data.targets[0]).mean())


def test_digits_mlp_learns_digits(train: Dataset, heldout: Dataset) -> None:
    model = mlp()
    assert accuracy(model, heldout) < 0.3  # control: untrained
    result = model.fit(train, None, TrainConfig(epochs=15), Callback())
    assert result.epochs_completed == 15 and not result.stopped
    assert accuracy(model, heldout) >= 0.85
    assert not model.module.training  # back in eval mode for serving


def test_training_is_deterministic(train: Dataset) -> None:
    a, b = mlp(), mlp()
    a.fit(train, None, TrainConfig(epochs=2), Callback())
    b.fit(train, None, TrainConfig(epochs=2), Callback())
    assert same_state(state(a), state(b))


def test_hooks_in_keras_order_with_metrics(train: Dataset, heldout: Dataset) -> None:
    rec = Recorder()
    result = mlp().fit(train, heldout, TrainConfig(epochs=2, batch_size=500), rec)
    per_epoch = [("epoch_begin", None)] + [("batch_begin", None), ("batch_end", None)] * 3 + [
        ("epoch_end", None)]
    assert [h for h, _ in rec.calls] == (["train_begin"] + [h for h, _ in per_epoch] * 2
                                          + ["train_end"])
    assert rec.named("epoch_begin") == [0, 1]
    assert rec.named("batch_end") == [0, 1, 2, 0, 1, 2]
    epochs = rec.named("epoch_end")
    assert [e for e, _ in epochs] == [0, 1]
    for _, logs in epochs:
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert 0.0 <= logs["accuracy"] <= 1.0 and logs["loss"] > 0
    assert result.history == [logs for _, logs in epochs]
    assert rec.named("train_end") == [epochs[-1][1]]


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


@pytest.mark.parametrize("stop_after", [0, 5, BATCHES_PER_EPOCH + 3])
def test_stop_within_a_batch(train: Dataset, stop_after: int) -> None:
    rec = Recorder(stop_after=stop_after)
    result = mlp().fit(train, None, TrainConfig(epochs=5), rec)
    assert result.stopped
    assert rec.batches == stop_after + 1
    assert len(rec.named("batch_begin")) == stop_after + 1  # no batch started after the stop
    completed = (stop_after + 1) // BATCHES_PER_EPOCH
    assert result.epochs_completed == completed == len(result.history)
    assert [e for e, _ in rec.named("epoch_end")] == list(range(completed))  # none partial
    assert rec.calls[-1][0] == "train_end"


def test_callback_list_stops_when_any_asks(train: Dataset) -> None:
    quiet, stopper = Recorder(), Recorder(stop_after=2)
    result = mlp().fit(train, None, TrainConfig(epochs=1), CallbackList([quiet, stopper]))
    assert result.stopped and quiet.batches == 3


def test_keep_partial_restores_the_last_completed_epoch(train: Dataset) -> None:
    stop_after = 2 * BATCHES_PER_EPOCH + 4  # during the third epoch
    kept = mlp()
    rec = Recorder(stop_after=stop_after, model=kept)
    result = kept.fit(train, None, TrainConfig(epochs=5, keep_partial=True), rec)
    assert result.stopped and result.epochs_completed == 2
    assert same_state(state(kept), rec.epoch_states[-1])
    # Control: without keep_partial the same run keeps the 5 extra batches' updates.
    moved = mlp()
    rec2 = Recorder(stop_after=stop_after, model=moved)
    moved.fit(train, None, TrainConfig(epochs=5), rec2)
    assert same_state(rec2.epoch_states[-1], rec.epoch_states[-1])  # same run up to the stop
    assert not same_state(state(moved), rec2.epoch_states[-1])


def test_keep_partial_before_any_epoch_keeps_the_initial_weights(train: Dataset) -> None:
    model = mlp()
    before = state(model)
    result = model.fit(train, None, TrainConfig(epochs=3, keep_partial=True),
                       Recorder(stop_after=3))
    assert result.epochs_completed == 0 and same_state(state(model), before)


@pytest.mark.parametrize("config", [TrainConfig(epochs=0), TrainConfig(epochs=1, batch_size=-1),
                                    TrainConfig(epochs=1, learning_rate=float("nan")),
                                    TrainConfig(epochs=1, validation_split=1.0)])
def test_invalid_config_raises_before_training(train: Dataset, config: TrainConfig) -> None:
    model = mlp()
    before = state(model)
    rec = Recorder()
    with pytest.raises(TrainingError):
        model.fit(train, None, config, rec)
    assert rec.calls == [] and same_state(state(model), before)


@pytest.mark.parametrize("targets, message", [
    (np.full(1500, 12, dtype=np.int64), r"\[0, 10\)"),
    (np.zeros(1500, dtype=np.float64), "integer class ids"),
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
                          inputs=[TensorSpec("x", "float32", (-1, 3))],
                          outputs=[TensorSpec("y", "float32", (-1, 1))],
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
