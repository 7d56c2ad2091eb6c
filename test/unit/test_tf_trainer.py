"""Training a Keras model, what only the TensorFlow backend does: native Keras callbacks, the
validation pass, its target checks. What both backends must do is in test_conformance."""
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

    def __init__(self, stop_after: Optional[int] = None):
        self.stop_after = stop_after
        self.events: List[str] = []
        self.batch_ends = 0

    def on_train_begin(self, logs: Any = None) -> None:
        self.events.append("train_begin")

    def on_train_end(self, logs: Any = None) -> None:
        self.events.append("train_end")

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.events.append(f"epoch_end {epoch}")

    def on_batch_end(self, batch: int, logs: Any = None) -> None:
        self.batch_ends += 1

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.batch_ends >= self.stop_after


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


def test_a_stop_skips_the_partial_epochs_validation_and_ends_native_callbacks(
        mlp: KerasModel, data: Dict[str, Dataset]) -> None:
    # Stopping within a batch, as such, is in test_conformance (both backends).
    model = mlp.clone()
    k = BATCHES_PER_EPOCH + 9  # the 10th batch of the second epoch
    recorder = Recorder(stop_after=k + 1)
    validation_batches = ValidationBatches()
    result = model.fit(data["train"], data["heldout"], TrainConfig(epochs=5), recorder,
                       native_callbacks=[validation_batches])
    assert result.stopped and result.epochs_completed == 1
    # Only epoch 0 was validated (297 held-out samples: 10 batches); the stop did not wait
    # for a validation pass of the partial epoch.
    assert validation_batches.count == 10
    assert validation_batches.train_ended  # native callbacks get on_train_end after a stop


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


def test_the_same_run_twice_gives_the_same_weights(mlp: KerasModel,
                                                   data: Dict[str, Dataset]) -> None:
    # The training set's order is seeded, as the torch trainer's: a goal's outcome (and the
    # built-ins' held-out scores) does not depend on which run it was.
    weights = []
    for _ in range(2):
        model = mlp.clone()
        model.fit(data["train"], None, TrainConfig(epochs=2, batch_size=100), Callback())
        weights.append(model.model.get_weights())
    for first, second in zip(*weights):
        np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)


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
