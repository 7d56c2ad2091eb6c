"""Both backends: a goal whose loss explodes is refused, and the served model stays as it was."""
import os
from pathlib import Path
from typing import List, Optional

import backends
import numpy as np
import pytest

from ml_bridge.core.datasets import digits
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.server import ModelServer
from ml_bridge.core.training import Callback, Logs


class Batches(Callback):
    def __init__(self) -> None:
        self.seen = 0
        self.epochs: List[int] = []

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.seen += 1

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.epochs.append(epoch)


def poison(model: BackendModel) -> None:
    """Puts one NaN into the model's first weight, through its framework."""
    if model.backend == "torch":
        import torch  # only this branch needs it

        first = next(model.module.parameters())  # type: ignore[attr-defined]
        with torch.no_grad():
            first.view(-1)[0] = float("nan")
    else:
        weights = model.model.get_weights()  # type: ignore[attr-defined]
        weights[0].flat[0] = np.nan
        model.model.set_weights(weights)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", backends.ALL)
def test_a_huge_learning_rate_is_refused_and_nothing_is_swapped_or_saved(backend: str,
                                                                        tmp_path: Path) -> None:
    ckpt = str(tmp_path / "ckpt")
    server = ModelServer.load(backend, "digits_mlp", checkpoint_dir=ckpt)
    x = digits(heldout=True).inputs[0]
    before = server.predict([x]).outputs[0]
    progress = Batches()
    try:
        with pytest.raises(TrainingError, match=r"training diverged: loss became (nan|inf) in epoch 1, "
                                                r"batch \d+; .*still serving version 1"):
            server.fit("digits", epochs=3, learning_rate=1e30, callbacks=[progress])
        assert progress.epochs == [] and progress.seen < 47  # stopped within the first epoch
        after = server.predict([x])
        assert server.version == after.model_version == 1
        np.testing.assert_array_equal(after.outputs[0], before)
        assert np.isfinite(after.outputs[0]).all()
        assert not os.path.isdir(ckpt) or os.listdir(ckpt) == []
        with server.context:
            assert server.model.weights_finite()
    finally:
        server.close()


@pytest.mark.parametrize("backend", backends.ALL)
def test_a_restart_skips_a_checkpoint_with_nan_weights(backend: str, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    ckpt = str(tmp_path / "ckpt")
    first = ModelServer.load(backend, "digits_mlp", checkpoint_dir=ckpt)
    try:
        with first.context:
            bad = first.model.clone()
            poison(bad)
            assert not bad.weights_finite() and first.model.weights_finite()
            first.checkpoints.save(7, bad.save_checkpoint)  # type: ignore[union-attr]
    finally:
        first.close()
    again = ModelServer.load(backend, "digits_mlp", checkpoint_dir=ckpt)
    try:
        assert again.version == 1 and "NaN or infinite weights" in caplog.text
        assert np.isfinite(again.predict([digits(heldout=True).inputs[0]]).outputs[0]).all()
    finally:
        again.close()
