""""Your own detector" (docs/guides/detect.md): a YOLOv8-shaped TorchScript file, a Keras model
with a [1, 4 + C, A] output and a torchvision-style factory, each loaded the way the node loads
it and served through the detect pipeline."""
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from blob_detectors import COLOURS, SIZE, blob_frame, torch_detector

from ml_bridge.core import registry
from ml_bridge.core.model import BackendModel, ModelOptions, ModelStamp
from ml_bridge.core.server import Prediction
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame

BLOBS = [("red", (30, 40, 110, 100)), ("blue", (180, 20, 300, 140))]


def detect(model: BackendModel, image: np.ndarray, params: Any = None) -> Any:
    pipeline = make_pipeline("detect", model, params or {})
    stamp = ModelStamp.of(model, 1)
    result = pipeline.run(Frame(image, 1.0), lambda x: Prediction(model.predict(x), stamp, 0.0))
    assert result is not None
    return result


def check(result: Any, labels: Sequence[str] = ("red", "blue")) -> None:
    found = result.outputs["detections"]
    # the frame is 320 x 160 and the model sees it at a fifth: 5 frame pixels a model pixel
    np.testing.assert_allclose(found.boxes, [box for _, box in BLOBS], atol=5)
    assert result.outputs["predictions"].labels == list(labels)


def test_yolov8_shaped_torchscript_file_with_labels(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "blobs.pt"
    example = torch.zeros(1, 3, SIZE, SIZE)
    torch.jit.save(torch.jit.trace(torch_detector(), example), str(path))
    model = registry.load("torch").load_model(str(path), ModelOptions(labels=list(COLOURS)))
    assert model.labels == list(COLOURS)  # three labels beside a [N, 7, A] output
    # a TorchScript file does not say its input size (an export's is in its name or docs)
    check(detect(model, blob_frame(160, 320, BLOBS), {"input_size": [SIZE, SIZE]}))


def test_yolov8_shaped_factory_takes_one_label_per_class() -> None:
    model = registry.load("torch").load_model("blob_detectors:torch_detector",
                                              ModelOptions(labels=list(COLOURS)))
    assert tuple(model.outputs[0].shape[1:]) == (7, 16)  # 4 + 3 rows, not 3 classes
    check(detect(model, blob_frame(160, 320, BLOBS)))


def test_torchvision_style_factory_with_dict_output() -> None:
    model = registry.load("torch").load_model("blob_detectors:torch_boxes_detector",
                                              ModelOptions(labels=list(COLOURS)))
    assert [s.name for s in model.outputs] == ["boxes", "scores", "labels"]
    # decoded boxes: no letterbox by default, so the frame is stretched to 64 x 64
    check(detect(model, blob_frame(160, 320, BLOBS)))


def test_keras_model_with_a_yolov8_output() -> None:
    pytest.importorskip("tensorflow")
    model = registry.load("tensorflow").load_model("blob_detectors:keras_detector",
                                                   ModelOptions(labels=list(COLOURS)))
    assert tuple(model.outputs[0].shape[1:]) == (7, 16)
    check(detect(model, blob_frame(160, 320, BLOBS)))
