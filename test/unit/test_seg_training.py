"""Training on per-pixel targets, both backends: ``shapes_seg`` reaches INTERFACE.md's held-out
mean IoU after ``~train``'s defaults; metrics come from the whole epoch; bad masks are refused."""
from typing import List, Optional

import numpy as np
import pytest
from trained import EPOCHS, trained

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.metrics import confusion_matrix, mean_iou, pixel_accuracy
from ml_bridge.core.server import ModelServer
from ml_bridge.core.synthetic import SHAPE_LABELS, shapes_heldout
from ml_bridge.core.training import Callback, Logs

BACKENDS = ["torch", "tensorflow"]
SEG_METRICS = {"loss", "pixel_accuracy", "mean_iou"}


def class_axis(server: ModelServer) -> int:
    fmt = server.model.image_format
    assert fmt is not None
    return 1 if fmt.channels_first else -1


def predicted_classes(server: ModelServer, inputs: np.ndarray) -> np.ndarray:
    prediction = server.predict([inputs])
    return np.asarray(prediction.outputs[0].argmax(axis=class_axis(server)))


class EpochLogs(Callback):
    def __init__(self) -> None:
        self.epochs: List[Logs] = []

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.epochs.append(dict(logs or {}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shapes_seg_reaches_its_heldout_mean_iou(backend: str) -> None:
    server, result = trained(backend, "shapes_seg", "shapes")
    assert result.epochs_completed == EPOCHS and result.swapped
    assert server.model.labels == SHAPE_LABELS
    # The epoch feedback carries the segmentation metrics (the last epoch's reach the result).
    assert SEG_METRICS <= set(result.logs), sorted(result.logs)
    # Held-out frames in the served model's own format, as the segment pipeline feeds it.
    data = shapes_heldout(server.model.image_format)
    predicted = predicted_classes(server, data.inputs[0])
    assert predicted.shape == data.targets[0].shape
    iou = mean_iou(confusion_matrix(predicted, data.targets[0], len(SHAPE_LABELS)))
    assert iou >= 0.8, f"{backend} shapes_seg: held-out mean IoU {iou:.3f}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_metrics_come_from_the_whole_epoch(backend: str) -> None:
    server = ModelServer.load(backend, "shapes_seg")
    data = shapes_heldout(server.model.image_format)
    small = Dataset("small", [data.inputs[0][:48]], [data.targets[0][:48]])
    logs = EpochLogs()
    # 24 validation frames in 3 batches: a mean of per-batch IoUs would differ from the IoU
    # of the pooled confusion matrix.
    result = server.fit(small, epochs=1, batch_size=8, validation_split=0.5, callbacks=[logs])
    assert len(logs.epochs) == 1
    epoch = logs.epochs[0]
    assert SEG_METRICS | {"val_loss", "val_pixel_accuracy", "val_mean_iou"} <= set(epoch)
    assert "accuracy" not in epoch and epoch == pytest.approx(result.logs)
    # The validation figures are those of the trained weights on all 24 frames at once.
    confusion = confusion_matrix(predicted_classes(server, small.inputs[0][24:]),
                                 small.targets[0][24:], len(SHAPE_LABELS))
    assert epoch["val_mean_iou"] == pytest.approx(mean_iou(confusion), abs=1e-3)
    assert epoch["val_pixel_accuracy"] == pytest.approx(pixel_accuracy(confusion), abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_masks_of_another_size_are_refused_naming_both(backend: str) -> None:
    server = ModelServer.load(backend, "shapes_seg")
    data = shapes_heldout(server.model.image_format)
    wrong = Dataset("wrong", [data.inputs[0][:4]], [np.zeros((4, 32, 48), np.int64)])
    with pytest.raises(DatasetError, match=r"32 x 48 class ids per pixel.*output 0 is 64 x 64"):
        server.fit(wrong, epochs=1)
    assert server.version == 1  # nothing was trained


@pytest.mark.parametrize("backend", BACKENDS)
def test_class_ids_outside_the_labels_are_refused(backend: str) -> None:
    server = ModelServer.load(backend, "shapes_seg")
    data = shapes_heldout(server.model.image_format)
    masks = data.targets[0][:4].copy()
    masks[2, 10, 10] = 4  # one foreign pixel is enough
    with pytest.raises(DatasetError, match=r"\[0, 4\)"):
        server.fit(Dataset("foreign", [data.inputs[0][:4]], [masks]), epochs=1)
    assert server.version == 1
