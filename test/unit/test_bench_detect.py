"""The detect figures' code at tiny sizes (no ratio is checked: timings are not tests), the
YOLOv8n-shaped model's planted output, and ``bench/run.py --only``'s merge of results.
"""
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bench import local
from bench.common import Figure, merge_results, missing, write_results


def test_planted_output_gives_candidates_and_about_one_detection_per_object() -> None:
    from bench import detfigs, yolo_shaped

    from ml_bridge.core.detection import decode_yolo

    boxes, logits = yolo_shaped.planted_output()
    assert boxes.shape == (4, 8400) and logits.shape == (80, 8400)
    centres = yolo_shaped.anchor_centres()
    assert centres[0].tolist() == [4.0, 4.0] and centres[-1].tolist() == [624.0, 624.0]
    scores = 1 / (1 + np.exp(-logits))
    output = np.concatenate([boxes, scores])[None]
    candidates = decode_yolo(output, score_threshold=0.25)[0]
    assert 100 <= len(candidates) <= 600  # a real detector's count before NMS
    transform = detfigs.model_input(np.zeros((480, 640, 3), np.uint8), (640, 640))[1]
    found = detfigs.postprocess(output, transform)[0]
    # NMS leaves about one box per object (objects of one class may overlap)
    assert yolo_shaped.OBJECTS // 2 <= len(found) <= yolo_shaped.OBJECTS + 5
    assert (found.boxes[:, 2] <= 640).all() and (found.boxes[:, 3] <= 480).all()


def test_detect_post_share_tiny() -> None:
    from bench import detfigs

    model, context = local.load("torch", detfigs.MODEL)
    fig = detfigs.detect_post(model, context, reps=1, frames=1)
    assert fig.key == "detect_post_share" and len(fig.values) == 1
    assert math.isfinite(fig.values[0]) and fig.values[0] > 0
    assert fig.details["output"] == [1, 84, 8400]
    assert fig.details["candidates"] > fig.details["detections"] > 0
    assert 0 < fig.details["share_of_measured_model"][0]


def test_merge_results_replaces_the_figures_run_and_keeps_the_rest(tmp_path: Path) -> None:
    path = str(tmp_path / "results.json")
    write_results(path, [Figure("a", "<= 1", values=[1.0]), missing("b", ">= 2", "not run"),
                         Figure("c", "(report)", values=[3.0])], {"seconds": 100})
    merge_results(path, [Figure("b", ">= 2", values=[2.0, 4.0]), Figure("d", "<= 5", values=[5.0])],
                  {"seconds": 7})
    with open(path) as f:
        data = json.load(f)
    assert [k for k in data if not k.startswith("_")] == ["a", "b", "c", "d"]
    assert (data["a"], data["b"], data["c"], data["d"]) == (1.0, 3.0, 3.0, 5.0)
    assert data["_details"]["b"]["run"] == {"seconds": 7} and "run" not in data["_details"]["a"]
    assert data["_meta"] == {"seconds": 100}
    merge_results(str(tmp_path / "new.json"), [Figure("e", "<= 1", values=[0.5])], {})
    with open(tmp_path / "new.json") as f:
        assert json.load(f)["e"] == 0.5


def test_only_selects_phases_and_figures_by_key_prefix() -> None:
    from bench.run import KEYS, Run

    run = Run(["detect_"])
    assert run.wants(["segment_fps_ratio", "detect_fps_ratio"])
    assert not run.wants(["segment_fps_ratio", "cameras_scaling"])
    ran = []
    run.phase("left out", ["segment_fps_ratio"], lambda: ran.append(1) or [])  # type: ignore
    assert ran == []
    assert [f.key for f in run.ordered()] == [k for k, _ in KEYS if k.startswith("detect_")]
    assert len(Run().ordered()) == len(KEYS)


def test_the_hand_written_detector_finds_what_the_pipeline_functions_find() -> None:
    import torch
    from bench import detfigs, handwritten_detect
    from bench.pipelines import camera_frame
    from bench.yolo_shaped import yolov8n_shaped

    from ml_bridge.ros.conversions import array_to_image, image_to_array

    class Recorder:
        def __init__(self) -> None:
            self.sent: list = []

        def publish(self, msg: object) -> None:
            self.sent.append(msg)

    model = yolov8n_shaped().model.eval()
    detections, images = Recorder(), Recorder()
    frame = camera_frame()
    msg = array_to_image(frame, "rgb8")
    msg.header.frame_id = "camera"
    handwritten_detect.make_callback(model, detections, images)(msg)
    (got,), (annotated,) = detections.sent, images.sent
    assert got.header.frame_id == "camera" and annotated.header.frame_id == "camera"
    drawn = image_to_array(annotated)
    assert drawn.shape == frame.shape and (drawn != frame[:, :, ::-1]).any()

    x, transform = detfigs.model_input(frame, (640, 640))
    with torch.no_grad():
        output = model(torch.from_numpy(x)).numpy()
    ours = detfigs.postprocess(output, transform)[0]
    theirs = [(d.results[0].id, d.results[0].score, d.bbox.center.x, d.bbox.center.y,
               d.bbox.size_x, d.bbox.size_y) for d in got.detections]
    assert len(theirs) == len(ours) > 0
    for (cls, score, cx, cy, w, h), box, s, c in zip(theirs, ours.boxes, ours.scores,
                                                     ours.class_ids):
        assert cls == c and abs(score - s) < 1e-5
        x1, y1, x2, y2 = box
        np.testing.assert_allclose([cx, cy, w, h], [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1],
                                   atol=1e-3)
