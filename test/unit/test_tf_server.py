"""The TensorFlow backend behind core's ModelServer: train, swap, checkpoint, restart."""
import threading
from typing import Any, List

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ml_bridge.core.datasets import digits  # noqa: E402
from ml_bridge.core.errors import TrainingError  # noqa: E402
from ml_bridge.core.model import ModelOptions  # noqa: E402
from ml_bridge.core.server import ModelServer  # noqa: E402
from ml_bridge.core.training import Callback  # noqa: E402
from ml_bridge.pipelines.classify import classify  # noqa: E402


class Epochs(Callback):
    def __init__(self) -> None:
        self.epochs: List[int] = []
        self.threads: List[str] = []

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.epochs.append(epoch)
        self.threads.append(threading.current_thread().name)


def test_train_swap_checkpoint_and_restart(tmp_path: Any) -> None:
    heldout = digits(heldout=True)
    server = ModelServer.load("tensorflow", "digits_mlp", checkpoint_dir=str(tmp_path))
    try:
        before = server.predict([heldout.inputs[0][:4]], 10).outputs[0]
        epochs = Epochs()
        seen: List[int] = []
        native = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e))
        result = server.fit("digits", epochs=2, callbacks=[epochs, native])
        assert result.swapped and result.model_version == 2 and result.checkpoint
        assert result.checkpoint.endswith(".weights.h5")
        assert epochs.epochs == [0, 1] and seen == [0, 1]
        after = server.predict([heldout.inputs[0][:4]], 10).outputs[0]
        assert not np.allclose(before, after)
    finally:
        server.close()
    restarted = ModelServer.load("tensorflow", "digits_mlp", checkpoint_dir=str(tmp_path))
    try:
        assert restarted.version == 2  # the newest checkpoint is served at start
        again = restarted.predict([heldout.inputs[0][:4]], 10).outputs[0]
        np.testing.assert_allclose(again, after, rtol=1e-6)
        image = np.zeros((40, 30), np.uint8)  # mono8 frame, any size
        prediction = classify(restarted.predict_image(image, 10))
        assert len(prediction.class_ids) == 1 and prediction.labels[0] in list("0123456789")
        assert 0.0 <= prediction.scores[0] <= 1.0
    finally:
        restarted.close()


def test_frozen_graph_server_refuses_training(tmp_path: Any) -> None:
    import tf_factories

    path, x_name, y_name, sample, expected = tf_factories.write_frozen_graph(str(tmp_path))
    server = ModelServer.load("tensorflow", path,
                              ModelOptions(input_tensor=x_name, output_tensor=y_name),
                              checkpoint_dir=str(tmp_path / "ckpt"))
    try:
        out = server.predict([sample], 10).outputs[0]
        np.testing.assert_allclose(out, expected, rtol=1e-5)
        with pytest.raises(TrainingError):
            server.fit("digits", epochs=1)
        assert server.version == 1
    finally:
        server.close()
