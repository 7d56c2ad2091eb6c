"""What every backend must do: one test per behaviour, run for each backend.

The built-in ``digits_mlp`` of each backend, driven only through the neutral BackendModel API
(load, fit with ml_bridge callbacks, predict, clone, checkpoints) and the model thread:
promised accuracy, Keras hook order, a stop within the batch it was asked in, keep_partial,
invalid settings refused before training, micro-batched results equal to one-by-one ones.
What only one backend does (eval mode, native Keras callbacks, ...) stays in its own tests.
"""
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import backends
import numpy as np
import pytest
from recording import Recorder
from trained import trained

from ml_bridge.core import registry
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.execution import ModelThread, WorkerResult
from ml_bridge.core.model import BackendModel, ModelOptions
from ml_bridge.core.training import Callback, FitResult, TrainConfig

BACKENDS = backends.ALL
#: digits() has 1500 samples: 47 batches of digits_mlp's default 32 per epoch.
BATCHES_PER_EPOCH = 47
WAIT = 60.0  # bound on waits for the model thread


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "torch":  # tiny matrices: torch's thread pool only adds spin-waits
        request.getfixturevalue("one_intra_op_thread")
    return str(request.param)


@pytest.fixture(scope="module")
def train() -> Dataset:
    return digits()


class Fresh:
    """A freshly loaded digits_mlp and the context captured where it was loaded (main)."""

    def __init__(self, backend: str) -> None:
        self.model: BackendModel = registry.load(backend).load_model("digits_mlp", ModelOptions())
        self.context: Context = self.model.capture_context()

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback) -> FitResult:
        with self.context:  # as ModelServer trains: the captured context restored
            return self.model.fit(train, validation, config, callbacks)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        with self.context:
            return self.model.predict([x])[0]


def accuracy(outputs: np.ndarray, data: Dataset) -> float:
    return float((outputs.argmax(axis=1) == data.targets[0]).mean())


def test_digits_mlp_reaches_the_promised_accuracy_on_held_out_digits(backend: str,
                                                                      heldout: Dataset) -> None:
    assert accuracy(Fresh(backend).outputs(heldout.inputs[0]), heldout) < 0.3  # control: untrained
    server, result = trained(backend, "digits_mlp", "digits", epochs=15)  # INTERFACE: 15 epochs
    assert result.epochs_completed == 15 and not result.stopped and result.swapped
    assert {"loss", "accuracy"} <= set(result.logs)
    prediction = server.predict([heldout.inputs[0]], timeout=WAIT)
    assert accuracy(prediction.outputs[0], heldout) >= 0.85


def test_hooks_come_in_keras_order_with_the_same_metrics(backend: str, train: Dataset,
                                                         heldout: Dataset) -> None:
    rec = Recorder()
    result = Fresh(backend).fit(train, heldout, TrainConfig(epochs=2, batch_size=500), rec)
    per_epoch = ["epoch_begin"] + ["batch_begin", "batch_end"] * 3 + ["epoch_end"]
    assert [h for h, _ in rec.calls] == ["train_begin"] + per_epoch * 2 + ["train_end"]
    assert rec.named("epoch_begin") == [0, 1]  # 0-based, as Keras
    assert rec.named("batch_end") == [0, 1, 2, 0, 1, 2]
    epochs = rec.named("epoch_end")
    assert [e for e, _ in epochs] == [0, 1]
    for _, logs in epochs:
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy"}
        assert all(isinstance(v, float) for v in logs.values())
        assert 0.0 <= logs["accuracy"] <= 1.0 and logs["loss"] > 0
    assert result.history == [logs for _, logs in epochs]
    assert rec.named("train_end") == [epochs[-1][1]]


@pytest.mark.parametrize("stop_after", [0, 5, BATCHES_PER_EPOCH + 3])
def test_a_stop_ends_training_within_the_batch_it_was_asked_in(backend: str, train: Dataset,
                                                                stop_after: int) -> None:
    rec = Recorder(stop_after=stop_after)
    result = Fresh(backend).fit(train, None, TrainConfig(epochs=5), rec)
    assert result.stopped
    assert rec.batches == stop_after + 1
    assert len(rec.named("batch_begin")) == stop_after + 1  # no batch started after the stop
    completed = (stop_after + 1) // BATCHES_PER_EPOCH
    assert result.epochs_completed == completed == len(result.history)
    assert [e for e, _ in rec.named("epoch_end")] == list(range(completed))  # none partial
    assert rec.calls[-1][0] == "train_end"


@pytest.mark.parametrize("keep_partial", [True, False])
def test_keep_partial_keeps_the_weights_of_the_last_completed_epoch(
        backend: str, train: Dataset, heldout: Dataset, tmp_path: Path, keep_partial: bool) -> None:
    fresh = Fresh(backend)
    rec = Recorder(stop_after=2 * BATCHES_PER_EPOCH + 4, model=fresh.model, folder=tmp_path)
    result = fresh.fit(train, None, TrainConfig(epochs=5, keep_partial=keep_partial), rec)
    assert result.stopped and result.epochs_completed == 2 and len(rec.checkpoints) == 2
    at_epoch_end = Fresh(backend)
    with at_epoch_end.context:
        at_epoch_end.model.load_checkpoint(rec.checkpoints[-1])
    x = heldout.inputs[0][:50]
    same = np.array_equal(fresh.outputs(x), at_epoch_end.outputs(x))
    assert same is keep_partial  # without it (the control) the 5 extra batches show


def test_a_stop_before_any_epoch_ends_keeps_the_initial_weights(backend: str, train: Dataset,
                                                                 heldout: Dataset) -> None:
    fresh = Fresh(backend)
    x = heldout.inputs[0][:50]
    before = fresh.outputs(x)
    rec = Recorder(stop_after=3)
    result = fresh.fit(train, None, TrainConfig(epochs=3, keep_partial=True), rec)
    assert result.stopped and result.epochs_completed == 0 and result.history == []
    assert [h for h, _ in rec.calls] == (["train_begin", "epoch_begin"]
                                          + ["batch_begin", "batch_end"] * 4 + ["train_end"])
    np.testing.assert_array_equal(fresh.outputs(x), before)


@pytest.mark.parametrize("config", [TrainConfig(epochs=0), TrainConfig(epochs=1, batch_size=-1),
                                    TrainConfig(epochs=1, learning_rate=float("nan")),
                                    TrainConfig(epochs=1, learning_rate=float("inf")),
                                    TrainConfig(epochs=1, validation_split=1.0)])
def test_invalid_settings_are_refused_before_training(backend: str, train: Dataset,
                                                      heldout: Dataset, config: TrainConfig) -> None:
    fresh = Fresh(backend)
    x = heldout.inputs[0][:50]
    before = fresh.outputs(x)
    rec = Recorder()
    with pytest.raises(TrainingError):
        fresh.fit(train, None, config, rec)
    assert rec.calls == []
    np.testing.assert_array_equal(fresh.outputs(x), before)


@pytest.fixture
def worker_for(backend: str) -> Iterator[Any]:
    workers: List[ModelThread] = []

    def make(fresh: Fresh, max_batch: int) -> ModelThread:
        workers.append(ModelThread(fresh.context, lambda xs: (fresh.model.predict(xs), 1),
                                   max_batch=max_batch))
        return workers[-1]

    yield make
    for worker in workers:
        worker.close()


def test_micro_batched_requests_get_the_one_by_one_results(backend: str, heldout: Dataset,
                                                           worker_for: Any) -> None:
    fresh = Fresh(backend)
    rows = [heldout.inputs[0][i:i + 1] for i in range(24)]
    one_by_one = [fresh.outputs(r) for r in rows]
    worker = worker_for(fresh, 8)
    gate = threading.Event()
    worker.exclusive(lambda: gate.wait(WAIT))  # hold the model thread so requests queue up
    futures = [worker.submit([r]) for r in rows]
    gate.set()
    done: List[WorkerResult] = [f.result(WAIT) for f in futures]
    assert max(r.batched_with for r in done) == 8  # control: they really were batched
    # A batched matmul may round differently from row-by-row ones in the last bits: equal
    # within float32 precision, and every class decision identical.
    for got, want in zip(done, one_by_one):
        np.testing.assert_allclose(got.outputs[0], want, rtol=1e-5, atol=1e-6)
        assert got.outputs[0].argmax() == want.argmax()
