"""ml_bridge.core.server.ModelServer with a pure-numpy fake model: no framework is imported."""
import copy
import logging
import os
import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import pytest

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import CheckpointError, DatasetError, InputError, TrainingError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.server import ModelServer
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig
from ml_bridge.pipelines.classify import classify

TIMEOUT = 10.0


class LinearModel(BackendModel):
    """A softmax-regression classifier in numpy: x [N, 64] -> scores [N, 10]."""

    backend = "fake"
    checkpoint_suffix = ".npz"
    default_batch_size = 100
    default_learning_rate = 0.5

    def __init__(self, source: str = "linear", seed: int = 0) -> None:
        self.source = source
        rng = np.random.default_rng(seed)
        self.w = rng.normal(0.0, 0.01, (64, 10))
        self.b = np.zeros(10)
        self.inputs = [ArraySpec("x", "float32", (-1, 64))]
        self.outputs = [ArraySpec("scores", "float32", (-1, 10))]
        self.labels = [f"digit {i}" for i in range(10)]
        self.is_classifier = True
        self.fit_calls: List[TrainConfig] = []  # shared by clones: counts every fit

    def capture_context(self) -> Context:
        return Context()

    def predict(self, inputs: List[np.ndarray]) -> List[np.ndarray]:
        return [(inputs[0] @ self.w + self.b).astype(np.float32)]

    def clone(self) -> "LinearModel":
        twin = copy.copy(self)
        twin.w, twin.b = self.w.copy(), self.b.copy()
        return twin

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        if native_callbacks:
            raise TrainingError("the fake backend has no native callbacks")
        self.fit_calls.append(config)
        x, y = train.inputs[0].astype(np.float64), train.targets[0]
        size = config.batch_size or self.default_batch_size
        lr = config.learning_rate or self.default_learning_rate
        history: List[Logs] = []
        kept = (self.w.copy(), self.b.copy())
        callbacks.on_train_begin()
        for epoch in range(config.epochs):
            callbacks.on_epoch_begin(epoch)
            for batch, start in enumerate(range(0, len(x), size)):
                xb, yb = x[start:start + size], y[start:start + size]
                p = _softmax(xb @ self.w + self.b)
                p[np.arange(len(yb)), yb] -= 1.0
                self.w -= lr * xb.T @ p / len(yb)
                self.b -= lr * p.mean(axis=0)
                callbacks.on_batch_end(batch, {"loss": 0.0})
                if callbacks.should_stop():
                    if config.keep_partial:
                        self.w, self.b = kept
                    callbacks.on_train_end()
                    return FitResult(epoch, True, history)
            logs = self._evaluate(train, "")
            if validation is not None:
                logs.update(self._evaluate(validation, "val_"))
            history.append(logs)
            kept = (self.w.copy(), self.b.copy())
            callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end(history[-1])
        return FitResult(config.epochs, False, history)

    def _evaluate(self, data: Dataset, prefix: str) -> Logs:
        p = _softmax(data.inputs[0] @ self.w + self.b)
        y = data.targets[0]
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        return {prefix + "loss": loss, prefix + "accuracy": float((p.argmax(axis=1) == y).mean())}

    def check_targets(self, dataset: Dataset) -> None:
        t = dataset.targets[0]
        if len(dataset.targets) != 1 or t.ndim != 1 or t.dtype.kind not in "iu":
            raise DatasetError(f"targets must be one int array [N], got {t.dtype}{list(t.shape)}")
        if len(t) and (t.min() < 0 or t.max() >= 10):
            raise DatasetError("targets must be class ids in 0..9")

    def save_checkpoint(self, path: str) -> None:
        with open(path, "wb") as f:
            np.savez(f, w=self.w, b=self.b)

    def load_checkpoint(self, path: str) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                w, b = data["w"], data["b"]
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: {err}") from err
        if w.shape != self.w.shape or b.shape != self.b.shape:
            raise CheckpointError(f"{path} does not fit the model")
        self.w, self.b = w, b


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class StopAfter(Callback):
    """Asks to stop once ``batches`` batches have run."""

    def __init__(self, batches: int) -> None:
        self.batches = batches
        self.seen = 0
        self.epochs_ended: List[int] = []

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.seen += 1

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.epochs_ended.append(epoch)

    def should_stop(self) -> bool:
        return self.seen >= self.batches


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    return digits(heldout=True).inputs[0]


@pytest.fixture
def server(tmp_path: Path) -> Any:
    srv = ModelServer(LinearModel(), Context(), max_batch=8, checkpoint_dir=str(tmp_path / "ckpt"),
                      data_root=str(tmp_path / "data"))
    yield srv
    srv.close()


def test_predict_returns_version_and_classifier_results(server: ModelServer, heldout: np.ndarray) -> None:
    x = heldout[:5]
    p = server.predict([x.astype(np.float64)])  # float64 is converted to the spec's float32
    classes = classify(p)
    scores = x @ server.model.w + server.model.b  # type: ignore[attr-defined]
    ids = scores.argmax(axis=1)
    assert p.model_version == 1 and p.outputs[0].shape == (5, 10)
    assert classes.class_ids == ids.tolist()
    np.testing.assert_allclose(classes.scores, _softmax(scores)[np.arange(5), ids], rtol=1e-5)
    assert classes.labels == [f"digit {i}" for i in ids]
    assert server.info().model_version == 1 and not server.info().training


def test_a_bad_request_is_refused_and_changes_nothing(server: ModelServer, heldout: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"input 0 \('x'\) has shape \[2, 63\]"):
        server.predict([np.zeros((2, 63), np.float32)])
    with pytest.raises(InputError, match="cannot be converted"):
        server.predict([np.zeros((2, 64), np.complex64)])
    assert server.predict([heldout[:1]]).model_version == 1


def test_fit_swaps_bumps_version_and_checkpoints(server: ModelServer, heldout: np.ndarray,
                                                 tmp_path: Path) -> None:
    before = server.predict([heldout]).outputs[0]
    epochs: List[int] = []

    class Progress(Callback):
        def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
            epochs.append(epoch)
            assert logs is not None and {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(logs)

    result = server.fit("digits", epochs=3, validation_split=0.2, callbacks=[Progress()])
    assert result.swapped and not result.stopped and result.epochs_completed == 3
    assert result.model_version == server.version == 2 and epochs == [0, 1, 2]
    assert result.checkpoint == str(tmp_path / "ckpt" / "linear-v000002.npz")
    assert os.path.isfile(result.checkpoint) and result.logs["accuracy"] > 0.8
    assert "serving version 2" in result.message
    after = server.predict([heldout])
    assert after.model_version == 2 and not np.array_equal(after.outputs[0], before)
    accuracy = np.mean(np.array(classify(after).class_ids) == digits(heldout=True).targets[0])
    assert accuracy > 0.8
    assert server.fit("digits", epochs=1).model_version == 3


def test_a_stop_without_keep_partial_changes_nothing(server: ModelServer, heldout: np.ndarray,
                                                     tmp_path: Path) -> None:
    before = server.predict([heldout])
    stop = StopAfter(20)  # 15 batches per epoch: stops in the second epoch
    result = server.fit("digits", epochs=5, callbacks=[stop])
    assert result.stopped and not result.swapped and result.epochs_completed == 1
    assert stop.seen == 20 and stop.epochs_ended == [0]  # stopped within the batch
    assert result.model_version == server.version == 1 and result.checkpoint == ""
    assert "unchanged (version 1)" in result.message
    after = server.predict([heldout])
    assert after.model_version == 1
    np.testing.assert_array_equal(after.outputs[0], before.outputs[0])
    assert not (tmp_path / "ckpt").exists() or os.listdir(tmp_path / "ckpt") == []


def test_keep_partial_keeps_the_completed_epochs(server: ModelServer, heldout: np.ndarray) -> None:
    reference = server.model.clone()
    polls = [0]

    def should_stop() -> bool:
        polls[0] += 1
        return polls[0] >= 20

    result = server.fit("digits", epochs=5, keep_partial=True, should_stop=should_stop)
    assert result.stopped and result.swapped and result.epochs_completed == 1
    assert result.model_version == server.version == 2 and os.path.isfile(result.checkpoint)
    reference.fit(digits(), None, TrainConfig(1), Callback())  # exactly one epoch, no stop
    expected = reference.predict([heldout])[0]
    np.testing.assert_allclose(server.predict([heldout]).outputs[0], expected, rtol=1e-6)


def test_keep_partial_before_any_epoch_changes_nothing(server: ModelServer) -> None:
    result = server.fit("digits", epochs=2, keep_partial=True, callbacks=[StopAfter(3)])
    assert result.stopped and not result.swapped and result.epochs_completed == 0
    assert server.version == 1


@pytest.mark.parametrize("kwargs, error, words", [
    ({"epochs": 0}, TrainingError, "epochs must be > 0"),
    ({"epochs": 1, "validation_split": 1.5}, TrainingError, "validation_split"),
    ({"epochs": 1, "dataset": "nope"}, DatasetError, "unknown dataset 'nope'"),
    ({"epochs": 1, "dataset": "../x.npz"}, DatasetError, "outside the data root"),
    ({"epochs": 1, "dataset": Dataset("bad", [np.zeros((4, 64), np.float32)],
                                      [np.full(4, 11)])}, DatasetError, "class ids"),
])
def test_invalid_goals_raise_before_training(server: ModelServer, kwargs: Any, error: type,
                                             words: str) -> None:
    kwargs.setdefault("dataset", "digits")
    with pytest.raises(error, match=words):
        server.fit(**kwargs)
    assert server.model.fit_calls == [] and server.version == 1  # type: ignore[attr-defined]
    assert not server.training


def test_a_second_concurrent_fit_is_refused_while_serving_goes_on(server: ModelServer,
                                                                  heldout: np.ndarray) -> None:
    inside, release = threading.Event(), threading.Event()

    class Hold(Callback):
        def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
            inside.set()
            assert release.wait(TIMEOUT)

    results: List[Any] = []
    first = threading.Thread(target=lambda: results.append(server.fit("digits", 1, callbacks=[Hold()])))
    first.start()
    try:
        assert inside.wait(TIMEOUT)
        assert server.training and server.info().training
        with pytest.raises(TrainingError, match="already in progress"):
            server.fit("digits", epochs=1)
        assert server.predict([heldout[:2]]).model_version == 1  # the old model keeps serving
    finally:
        release.set()
        first.join(TIMEOUT)
    assert results[0].model_version == 2 and not server.training
    assert server.fit("digits", epochs=1).model_version == 3  # the lock was released


def test_restart_serves_the_newest_good_checkpoint(tmp_path: Path, heldout: np.ndarray,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    ckpt = str(tmp_path / "ckpt")
    first = ModelServer(LinearModel(), Context(), checkpoint_dir=ckpt)
    first.fit("digits", epochs=1)
    first.fit("digits", epochs=1)
    trained = first.predict([heldout]).outputs[0]
    first.close()
    (tmp_path / "ckpt" / "linear-v000004.npz").write_bytes(b"torn")
    with caplog.at_level(logging.WARNING):
        again = ModelServer(LinearModel(seed=5), Context(), checkpoint_dir=ckpt)
    assert "linear-v000004.npz" in caplog.text
    p = again.predict([heldout])
    assert again.version == p.model_version == 3
    np.testing.assert_array_equal(p.outputs[0], trained)
    assert again.fit("digits", epochs=1).model_version == 4
    again.close()
    fresh = ModelServer(LinearModel(), Context(), checkpoint_dir=str(tmp_path / "empty"))
    assert fresh.version == 1
    fresh.close()


def test_record_appends_samples_that_fit_and_refuses_others(server: ModelServer,
                                                            heldout: np.ndarray) -> None:
    y = digits(heldout=True).targets[0]
    assert server.record("mine", [heldout[0]], [y[0]]) == 1
    batch_of_one = heldout[1:2].astype(np.float64)
    assert server.record("mine", [batch_of_one], [np.array(y[1], np.int64)]) == 2
    data = server.datasets.load("mine")
    assert data.inputs[0].shape == (2, 64) and data.inputs[0].dtype == np.float32
    assert data.targets[0].shape == (2,)
    with pytest.raises(DatasetError, match="does not fit the model.*dimension 1 must be 64"):
        server.record("mine", [np.zeros(63, np.float32)], [np.array(0, np.int64)])
    with pytest.raises(DatasetError, match="sample has 2 input"):
        server.record("mine", [heldout[0], heldout[1]], [np.array(0, np.int64)])
    with pytest.raises(DatasetError, match="class ids"):
        server.record("mine", [heldout[0]], [np.array(12, np.int64)])
    with pytest.raises(DatasetError, match="invalid dataset name"):
        server.record("../up", [heldout[0]], [np.array(1, np.int64)])
    assert len(server.datasets.load("mine")) == 2
    assert server.fit("mine", epochs=1).model_version == 2


def test_record_without_a_data_root_says_so(heldout: np.ndarray) -> None:
    srv = ModelServer(LinearModel(), Context())
    with pytest.raises(DatasetError, match="no data root"):
        srv.record("mine", [heldout[0]], [np.array(0, np.int64)])
    srv.close()


def test_results_carry_the_model_that_ran_even_if_a_swap_follows(server: ModelServer,
                                                                   heldout: np.ndarray) -> None:
    relabelled = server.model.clone()
    relabelled.labels = [f"other {i}" for i in range(10)]
    wait = server.predict_async([heldout[:3]])  # queued first: runs on the model served now
    swapped = server.executor.exclusive(lambda: server._swap(relabelled, 7))  # queued right behind
    assert swapped.result(TIMEOUT) == 7 and server.version == 7
    prediction = wait(TIMEOUT)                  # read after the swap
    assert prediction.model_version == 1
    assert classify(prediction).labels[0].startswith("digit ")
    assert classify(server.predict([heldout[:1]])).labels[0].startswith("other ")
