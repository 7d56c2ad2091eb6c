"""Training a Keras model through the neutral callbacks: accuracy, stops, partial weights."""
import time
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from keras.callbacks import Callback as KerasCallback  # noqa: E402

from ml_bridge.backends.tensorflow import load_model  # noqa: E402
from ml_bridge.backends.tensorflow.model import KerasModel  # noqa: E402
from ml_bridge.core.datasets import Dataset, digits  # noqa: E402
from ml_bridge.core.errors import DatasetError, TrainingError  # noqa: E402
from ml_bridge.core.model import ModelOptions  # noqa: E402
from ml_bridge.core.training import Callback, TrainConfig  # noqa: E402

#: digits() has 1500 samples: 47 batches of 32 per epoch.
BATCHES_PER_EPOCH = 47


class Recorder(Callback):
    """Records every hook; asks to stop once ``stop_after`` train batches have ended."""

    def __init__(self, stop_after: Optional[int] = None, model: Optional[KerasModel] = None):
        self.stop_after = stop_after
        self.model = model
        self.events: List[str] = []
        self.batch_ends = 0
        self.epoch_logs: List[Dict[str, float]] = []
        self.epoch_weights: List[List[np.ndarray]] = []
        self.stop_asked_at: Optional[float] = None

    def on_train_begin(self, logs: Any = None) -> None:
        self.events.append("train_begin")

    def on_train_end(self, logs: Any = None) -> None:
        self.events.append("train_end")

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_end {epoch}")
        self.epoch_logs.append(dict(logs or {}))
        if self.model is not None:
            self.epoch_weights.append(self.model.model.get_weights())

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batch_ends += 1

    def should_stop(self) -> bool:
        stop = self.stop_after is not None and self.batch_ends >= self.stop_after
        if stop and self.stop_asked_at is None:
            self.stop_asked_at = time.perf_counter()
        return stop


class ValidationBatches(KerasCallback):
    """A native Keras callback counting validation batches."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.train_ended = False

    def on_test_batch_end(self, batch: int, logs: Any = None) -> None:
        self.count += 1

    def on_train_end(self, logs: Any = None) -> None:
        self.train_ended = True


@pytest.fixture(scope="module")
def mlp() -> KerasModel:
    model = load_model("digits_mlp", ModelOptions())
    assert isinstance(model, KerasModel)
    return model


@pytest.fixture(scope="module")
def data() -> Dict[str, Dataset]:
    return {"train": digits(), "heldout": digits(heldout=True)}


def _accuracy(model: KerasModel, dataset: Dataset) -> float:
    scores = model.predict(dataset.inputs)[0]
    return float((scores.argmax(axis=1) == dataset.targets[0]).mean())


def test_digits_mlp_reaches_085_on_heldout(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    model = mlp.clone()
    recorder = Recorder()
    with model.capture_context():
        result = model.fit(data["train"], data["heldout"], TrainConfig(epochs=15), recorder)
    assert result.epochs_completed == 15 and not result.stopped
    assert _accuracy(model, data["heldout"]) >= 0.85
    logs = result.history[-1]
    assert set(logs) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(isinstance(v, float) for v in logs.values())
    assert recorder.events[0] == "train_begin" and recorder.events[-1] == "train_end"
    assert [e for e in recorder.events if e.startswith("epoch_end")] == [
        f"epoch_end {i}" for i in range(15)]  # 0-based epochs
    assert result.history == recorder.epoch_logs
    assert recorder.batch_ends == 15 * BATCHES_PER_EPOCH


def test_stop_within_a_batch(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    model = mlp.clone()
    k = BATCHES_PER_EPOCH + 9  # the 10th batch of the second epoch
    recorder = Recorder(stop_after=k + 1)
    validation_batches = ValidationBatches()
    result = model.fit(data["train"], data["heldout"], TrainConfig(epochs=5), recorder,
                       native_callbacks=[validation_batches])
    returned = time.perf_counter()
    assert result.stopped and result.epochs_completed == 1
    assert recorder.batch_ends == k + 1  # batches 0..k ran, not one more
    assert "epoch_end 1" not in recorder.events  # no epoch end for the partial epoch
    assert recorder.events[-1] == "train_end"
    # Only epoch 0 was validated (297 held-out samples: 10 batches); the stop did not wait
    # for a validation pass of the partial epoch.
    assert validation_batches.count == 10
    assert validation_batches.train_ended  # native callbacks get on_train_end after a stop
    assert recorder.stop_asked_at is not None
    assert returned - recorder.stop_asked_at < 1.0


def test_stop_before_any_epoch_completes(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    model = mlp.clone()
    recorder = Recorder(stop_after=3)
    result = model.fit(data["train"], None, TrainConfig(epochs=2), recorder)
    assert result.stopped and result.epochs_completed == 0 and result.history == []
    assert recorder.batch_ends == 3
    assert recorder.events == ["train_begin", "epoch_begin 0", "train_end"]


@pytest.mark.parametrize("keep_partial", [True, False])
def test_keep_partial_restores_last_completed_epoch(mlp: KerasModel, data: Dict[str, Dataset],
                                                    keep_partial: bool) -> None:
    model = mlp.clone()
    recorder = Recorder(stop_after=BATCHES_PER_EPOCH + 5, model=model)
    config = TrainConfig(epochs=3, keep_partial=keep_partial)
    result = model.fit(data["train"], None, config, recorder)
    assert result.stopped and result.epochs_completed == 1
    at_epoch_end = recorder.epoch_weights[0]
    same = all(np.array_equal(a, b) for a, b in zip(model.model.get_weights(), at_epoch_end))
    assert same is keep_partial  # without keep_partial (negative control) 5 more batches show


def test_native_keras_callbacks_are_called(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    seen: List[int] = []
    native = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch))
    model = mlp.clone()
    result = model.fit(data["train"], None, TrainConfig(epochs=2, batch_size=500), Callback(),
                       native_callbacks=[native])
    assert seen == [0, 1] and result.epochs_completed == 2
    with pytest.raises(TrainingError, match="not a keras.callbacks.Callback"):
        model.fit(data["train"], None, TrainConfig(epochs=1), Callback(),
                  native_callbacks=[object()])


def test_native_early_stop_reports_stopped(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    model = mlp.clone()
    result = model.fit(data["train"], None, TrainConfig(epochs=4, batch_size=500), Callback(),
                       native_callbacks=[stop])
    # Epoch 0 sets the best loss; epoch 1 cannot beat it by 1e9, so Keras stops after it.
    assert result.stopped and result.epochs_completed == 2


@pytest.mark.parametrize("config", [TrainConfig(epochs=0), TrainConfig(epochs=1, batch_size=-1),
                                    TrainConfig(epochs=1, learning_rate=float("nan")),
                                    TrainConfig(epochs=1, validation_split=1.0)])
def test_invalid_config_raises_before_training(mlp: KerasModel, data: Dict[str, Dataset],
                                               config: TrainConfig) -> None:
    model = mlp.clone()
    recorder = Recorder()
    before = model.model.get_weights()
    with pytest.raises(TrainingError):
        model.fit(data["train"], None, config, recorder)
    assert recorder.events == []
    assert all(np.array_equal(a, b) for a, b in zip(model.model.get_weights(), before))


def _with_targets(dataset: Dataset, targets: np.ndarray) -> Dataset:
    return Dataset("bad", dataset.inputs, [targets])


def test_bad_targets_raise_before_training(mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    train = data["train"]
    n = len(train)
    bad = {
        "ids must be in": _with_targets(train, np.full(n, 10, np.int64)),
        "negative": _with_targets(train, np.full(n, -1, np.int64)),
        "shaped": _with_targets(train, np.zeros((n, 2), np.int64)),
        "non-integer": _with_targets(train, np.full(n, 0.5, np.float32)),
        "numbers": _with_targets(train, np.array(["1"] * n)),
        "does not fit": Dataset("bad", [np.zeros((n, 63), np.float32)], train.targets),
        "different sample counts": _with_targets(train, train.targets[0][:10]),
    }
    model = mlp.clone()
    for words, dataset in bad.items():
        recorder = Recorder()
        with pytest.raises(DatasetError) as err:
            model.fit(dataset, None, TrainConfig(epochs=1), recorder)
        if words != "negative":
            assert words in str(err.value), str(err.value)
        assert recorder.events == []
        with pytest.raises(DatasetError):
            model.check_targets(dataset)
    # Whole-valued float ids (as Tensor ``values`` arrive) and [N, 1] ids are accepted.
    model.check_targets(_with_targets(train, train.targets[0].astype(np.float64)[:, None]))


def test_regression_targets_must_match_output(data: Dict[str, Dataset]) -> None:
    model = load_model("tf_factories:small_functional", ModelOptions())
    x = np.zeros((20, 4), np.float32)
    model.check_targets(Dataset("ok", [x], [np.zeros((20, 3), np.float32)]))
    with pytest.raises(DatasetError, match="output"):
        model.check_targets(Dataset("bad", [x], [np.zeros((20, 2), np.float32)]))
    result = model.fit(Dataset("ok", [x], [np.ones((20, 3), np.float32)]), None,
                       TrainConfig(epochs=2), Callback())
    assert result.epochs_completed == 2 and "loss" in result.last_logs


def test_frozen_graph_cannot_train(tmp_path: Any) -> None:
    import tf_factories

    from ml_bridge.core.errors import CheckpointError

    path, x_name, y_name, sample, _ = tf_factories.write_frozen_graph(str(tmp_path))
    model = load_model(path, ModelOptions(input_tensor=x_name, output_tensor=y_name))
    assert not model.trainable
    dataset = Dataset("d", [sample], [np.zeros((len(sample), 4), np.float32)])
    with pytest.raises(TrainingError, match="inference-only"):
        model.fit(dataset, None, TrainConfig(epochs=1), Callback())
    with pytest.raises(CheckpointError):
        model.save_checkpoint(str(tmp_path / "x.weights.h5"))
