"""ml_bridge.core.registry, .training and .vision: small pieces users meet directly."""
import math
from typing import List, Optional

import numpy as np
import pytest

from ml_bridge.core import registry
from ml_bridge.core.errors import BackendError, InputError, TrainingError
from ml_bridge.core.training import Callback, CallbackList, FitResult, Logs, StopCheck, TrainConfig
from ml_bridge.core.vision import digits_input, rgb_input, to_gray, to_rgb
from ml_bridge.pipelines.classify import top_class


def test_backend_names_and_aliases() -> None:
    assert registry.names() == ["tensorflow", "torch"]
    assert registry.canonical(" PyTorch ") == "torch"
    assert registry.canonical("keras") == registry.canonical("tf") == "tensorflow"


@pytest.mark.parametrize("name", ["jax", "", "torchh"])
def test_unknown_backend_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(BackendError, match=f"unknown backend '{name}'; valid backends: tensorflow, torch"):
        registry.canonical(name)
    with pytest.raises(BackendError, match="valid backends"):
        registry.load(name)


@pytest.mark.parametrize("config, words", [
    (TrainConfig(0), "epochs must be > 0, got 0"),
    (TrainConfig(1, batch_size=-1), "batch_size must be >= 0"),
    (TrainConfig(1, learning_rate=math.nan), "learning_rate must be >= 0"),
    (TrainConfig(1, learning_rate=-0.1), "learning_rate must be >= 0"),
    (TrainConfig(1, validation_split=1.0), r"validation_split must be in \[0, 1\)"),
])
def test_invalid_train_configs(config: TrainConfig, words: str) -> None:
    with pytest.raises(TrainingError, match=words):
        config.validate()


def test_valid_train_config() -> None:
    TrainConfig(3, batch_size=0, learning_rate=0.0, validation_split=0.5).validate()


class Recorder(Callback):
    def __init__(self, stop: bool = False) -> None:
        self.calls: List[str] = []
        self.stop = stop

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.calls.append("train_begin")

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(f"epoch_end {epoch} {logs}")

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(f"batch_end {batch}")

    def should_stop(self) -> bool:
        return self.stop


def test_callback_list_fans_out_and_stops_when_any_asks() -> None:
    a, b = Recorder(), Recorder()
    hooks = CallbackList([a, b, Callback()])
    hooks.on_train_begin()
    hooks.on_batch_end(0, {"loss": 1.0})
    hooks.on_epoch_end(0, {"loss": 0.5})
    hooks.on_epoch_begin(1)
    hooks.on_batch_begin(0)
    hooks.on_train_end()
    assert a.calls == b.calls == ["train_begin", "batch_end 0", "epoch_end 0 {'loss': 0.5}"]
    assert not hooks.should_stop()
    b.stop = True
    assert hooks.should_stop()
    flag = [False]
    assert not StopCheck(lambda: flag[0]).should_stop()
    flag[0] = True
    assert CallbackList([StopCheck(lambda: flag[0])]).should_stop()


def test_fit_result_last_logs() -> None:
    assert FitResult(0, True).last_logs == {}
    assert FitResult(2, False, [{"loss": 2.0}, {"loss": 1.0}]).last_logs == {"loss": 1.0}


def test_top_class_of_logits_is_the_softmax_at_the_argmax() -> None:
    logits = np.array([[1000.0, 999.0, 0.0], [1.0, 2.0, 3.0], [-5.0, -7.0, -6.0]], np.float32)
    ids, scores = top_class(logits, probabilities=False)
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=1, keepdims=True))
    full = shifted / shifted.sum(axis=1, keepdims=True)  # the full softmax, computed here
    assert ids == [0, 2, 0]
    assert all(np.isfinite(scores))  # no overflow at 1000
    np.testing.assert_allclose(scores, full[np.arange(3), ids])
    assert isinstance(ids[0], int) and isinstance(scores[0], float)


def test_top_class_of_probabilities_is_taken_as_is() -> None:
    ids, scores = top_class(np.array([[0.2, 0.7, 0.1]], np.float32), probabilities=True)
    assert ids == [1]
    np.testing.assert_allclose(scores, [0.7], rtol=1e-6)


def test_image_preprocessing() -> None:
    rgb = np.zeros((32, 24, 3), np.uint8)
    rgb[:, :12] = 255
    x = digits_input(rgb)[0]
    assert x.shape == (1, 64) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x.reshape(8, 8)[:, :4], 1.0)
    np.testing.assert_allclose(x.reshape(8, 8)[:, 4:], 0.0)
    gray = np.full((5, 7), 9, np.uint8)
    assert to_gray(gray) is gray and to_rgb(gray).shape == (5, 7, 3)
    assert rgb_input(gray, (4, 6), channels_first=True)[0].shape == (1, 3, 4, 6)
    assert rgb_input(rgb, (4, 6), channels_first=False)[0].shape == (1, 4, 6, 3)
    with pytest.raises(InputError, match=r"got shape \[4, 4, 4\]"):
        to_gray(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        to_rgb(np.zeros((4,), np.uint8))
