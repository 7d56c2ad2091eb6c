"""``motion_clip`` and ``shapes_crop`` reach INTERFACE.md's held-out accuracy after ``~train``'s
defaults (10 epochs, default batch size and learning rate), on both backends."""
from typing import Callable, Optional

import backends
import numpy as np
import pytest
from trained import EPOCHS, trained

from ml_bridge.core.datasets import Dataset
from ml_bridge.core.synthetic_crops import CROP_LABELS, shape_crops_heldout
from ml_bridge.core.synthetic_motion import MOTION_LABELS, motion_heldout
from ml_bridge.core.vision import ImageFormat

HeldOut = Callable[[Optional[ImageFormat]], Dataset]
# Small models: on a busy 2-core box torch's second thread only spin-waits (10x slower).
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.mark.parametrize("backend", backends.ALL)
@pytest.mark.parametrize("model, dataset, heldout, labels, threshold", [
    ("motion_clip", "motion", motion_heldout, MOTION_LABELS, 0.9),
    ("shapes_crop", "shape_crops", shape_crops_heldout, CROP_LABELS, 0.95),
])
def test_builtin_reaches_its_heldout_accuracy(backend: str, model: str, dataset: str,
                                              heldout: HeldOut, labels: list,
                                              threshold: float) -> None:
    server, result = trained(backend, model, dataset)
    assert result.epochs_completed == EPOCHS and result.swapped
    assert server.model.labels == labels
    # The held-out data in the served model's own format, as the pipelines would feed it.
    data = heldout(server.model.image_format)
    prediction = server.predict(data.inputs)
    assert prediction.model.version == 2  # the trained weights, not the initial ones
    accuracy = float(np.mean(prediction.outputs[0].argmax(axis=1) == data.targets[0]))
    assert accuracy >= threshold, f"{backend} {model}: held-out accuracy {accuracy:.3f}"
