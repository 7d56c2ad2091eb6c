"""A diverged training run never reaches the served model, a checkpoint or a restart.

Pure numpy (the fake model of test_core_server); the same guarantee with the real backends
is in test_backends_diverged_training.py.
"""
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import numpy as np
import pytest
from test_core_server import LinearModel

from ml_bridge.core import training
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig


class GuardedLinear(LinearModel):
    """The fake model, able to tell whether its weights are finite."""

    def weights_finite(self) -> bool:
        return bool(np.isfinite(self.w).all() and np.isfinite(self.b).all())


class BlowsUpSilently(GuardedLinear):
    """Trains normally, reports finite losses, but ends with an infinite weight."""

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        result = super().fit(train, validation, config, callbacks, native_callbacks)
        self.w[3, 4] = math.inf
        return result


def poisoned_digits() -> Dataset:
    data = digits()
    x = data.inputs[0].copy()
    x[700, 5] = np.nan  # one bad value, in the eighth batch of the first epoch
    return Dataset("poisoned", [x], data.targets)


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    return str(tmp_path / "ckpt")


@pytest.fixture
def server(ckpt: str) -> Iterator[ModelServer]:
    srv = ModelServer(GuardedLinear(), Context(), checkpoint_dir=ckpt)
    yield srv
    srv.close()


def assert_untouched(server: ModelServer, before: np.ndarray, ckpt: str) -> None:
    x = digits(heldout=True).inputs[0]
    assert server.version == 1 and server.predict([x]).model_version == 1
    np.testing.assert_array_equal(server.predict([x]).outputs[0], before)
    assert not os.path.isdir(ckpt) or os.listdir(ckpt) == []
    assert not server.training


def test_nan_in_the_data_aborts_with_the_cause_and_epoch_and_changes_nothing(
        server: ModelServer, ckpt: str) -> None:
    before = server.predict([digits(heldout=True).inputs[0]]).outputs[0]
    epochs: List[int] = []

    class Progress(Callback):
        def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
            epochs.append(epoch)

    with pytest.raises(TrainingError, match=r"training diverged: loss became nan in epoch 1\b.*"
                                            r"still serving version 1.*learning_rate"):
        server.fit(poisoned_digits(), epochs=5, callbacks=[Progress()])
    assert epochs == [0]  # the run stopped at the first non-finite loss, not after 5 epochs
    assert_untouched(server, before, ckpt)
    assert server.fit("digits", epochs=1).model_version == 2  # and the server still trains


def test_keep_partial_does_not_keep_a_diverged_run(server: ModelServer, ckpt: str) -> None:
    before = server.predict([digits(heldout=True).inputs[0]]).outputs[0]
    with pytest.raises(TrainingError, match="diverged"):
        server.fit(poisoned_digits(), epochs=3, keep_partial=True)
    assert_untouched(server, before, ckpt)


def test_weights_that_turn_infinite_with_a_finite_loss_are_refused(ckpt: str) -> None:
    server = ModelServer(BlowsUpSilently(), Context(), checkpoint_dir=ckpt)
    before = server.predict([digits(heldout=True).inputs[0]]).outputs[0]
    try:
        with pytest.raises(TrainingError, match="weights became NaN or infinite by epoch 2"):
            server.fit("digits", epochs=2)
        assert_untouched(server, before, ckpt)
    finally:
        server.close()


def test_an_infinite_learning_rate_is_refused_before_training(server: ModelServer) -> None:
    with pytest.raises(TrainingError, match="learning_rate must be >= 0 and finite"):
        server.fit("digits", epochs=1, learning_rate=math.inf)
    assert server.model.fit_calls == []  # type: ignore[attr-defined]


def test_a_restart_skips_a_checkpoint_with_non_finite_weights(
        ckpt: str, caplog: pytest.LogCaptureFixture) -> None:
    first = ModelServer(GuardedLinear(), Context(), checkpoint_dir=ckpt)
    first.fit("digits", epochs=1)
    good = first.predict([digits(heldout=True).inputs[0]]).outputs[0]
    first.close()
    bad = GuardedLinear()
    bad.w[0, 0] = np.nan
    bad.save_checkpoint(os.path.join(ckpt, "linear-v000003.npz"))  # as an older release wrote it
    with caplog.at_level(logging.WARNING):
        again = ModelServer(GuardedLinear(seed=4), Context(), checkpoint_dir=ckpt)
    try:
        assert again.version == 2
        np.testing.assert_array_equal(again.predict([digits(heldout=True).inputs[0]]).outputs[0], good)
        assert "skipping checkpoint" in caplog.text and "linear-v000003.npz" in caplog.text
        assert "NaN or infinite weights" in caplog.text
    finally:
        again.close()


def test_old_checkpoints_beyond_keep_checkpoints_are_deleted(ckpt: str) -> None:
    server = ModelServer(GuardedLinear(), Context(), checkpoint_dir=ckpt, keep_checkpoints=2)
    try:
        for _ in range(4):
            server.fit("digits", epochs=1)
        assert sorted(os.listdir(ckpt)) == ["linear-v000004.npz", "linear-v000005.npz"]
    finally:
        server.close()


@pytest.mark.parametrize("logs, where", [
    ({"loss": math.inf, "accuracy": 0.1}, "loss became inf in epoch 3, batch 8"),
    ({"loss": 0.5, "accuracy": math.nan}, ""),  # a metric is not the loss
])
def test_finite_loss_watches_batch_losses(logs: Logs, where: str) -> None:
    watch = training.FiniteLoss()
    watch.on_epoch_begin(2)
    watch.on_batch_end(7, logs)
    assert watch.failure == where and watch.should_stop() == bool(where)


def test_finite_loss_watches_the_validation_loss_per_epoch() -> None:
    watch = training.FiniteLoss()
    watch.on_epoch_end(0, {"loss": 0.3, "val_loss": math.nan})
    assert watch.failure == "val_loss became nan in epoch 1" and watch.should_stop()
