"""``map50`` (core.box_metrics) against pycocotools' COCOeval on the same detections, the
dense box encoding the built-in detectors train on, and detection target checks."""
import contextlib
import io
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest

from ml_bridge.core.box_metrics import MapTally, average_precision, box_iou
from ml_bridge.core.box_targets import PAD, CenterGrid, check_boxes, frame_boxes, pad_boxes
from ml_bridge.core.detection import Boxes
from ml_bridge.core.errors import DatasetError

coco = pytest.importorskip("pycocotools.coco")
cocoeval = pytest.importorskip("pycocotools.cocoeval")


def coco_map50(detections: Sequence[Boxes], truths: Sequence[np.ndarray], classes: int) -> float:
    """pycocotools' AP at IoU 0.5, area "all", 100 detections per image (stats[1])."""
    images = [{"id": i + 1, "width": 640, "height": 640} for i in range(len(truths))]
    annotations: List[Dict[str, Any]] = []
    for i, truth in enumerate(truths):
        for row in truth:
            w, h = float(row[3] - row[1]), float(row[4] - row[2])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": int(row[0]) + 1, "iscrowd": 0, "area": w * h,
                                "bbox": [float(row[1]), float(row[2]), w, h]})
    gt = coco.COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        results = [{"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                    "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                   for i, det in enumerate(detections)
                   for b, s, c in zip(det.boxes, det.scores, det.class_ids)]
        dt = gt.loadRes(results) if results else coco.COCO()
        evaluation = cocoeval.COCOeval(gt, dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[1])


def random_case(rng: np.random.Generator, images: int,
                classes: int) -> Tuple[List[Boxes], List[np.ndarray]]:
    truths: List[np.ndarray] = []
    detections: List[Boxes] = []
    for _ in range(images):
        k = int(rng.integers(0, 6))
        xy = rng.uniform(0, 500, (k, 2))
        wh = rng.uniform(8, 120, (k, 2))
        truth = np.concatenate([rng.integers(0, classes, (k, 1)), xy, xy + wh], 1)
        truths.append(truth.astype(np.float32))
        # Detections: jittered copies of some truths (some with the wrong class), and noise.
        keep = rng.random(k) < 0.8
        jitter = truth[keep, 1:] + rng.normal(0, 6, (int(keep.sum()), 4))
        ids = np.where(rng.random(int(keep.sum())) < 0.85, truth[keep, 0],
                       rng.integers(0, classes, int(keep.sum())))
        m = int(rng.integers(0, 5))
        nxy = rng.uniform(0, 500, (m, 2))
        noise = np.concatenate([nxy, nxy + rng.uniform(8, 120, (m, 2))], 1)
        boxes = np.concatenate([jitter, noise]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        detections.append(Boxes(boxes, rng.random(len(boxes)),
                                np.concatenate([ids, rng.integers(0, classes, m)])))
    return detections, truths


@pytest.mark.parametrize("seed", range(6))
def test_map50_equals_pycocotools_on_random_detections(seed: int) -> None:
    rng = np.random.default_rng(seed)
    detections, truths = random_case(rng, images=int(rng.integers(1, 40)), classes=3)
    ours = average_precision(detections, truths, 3)
    assert ours == pytest.approx(coco_map50(detections, truths, 3), abs=1e-9)


def test_map50_equals_pycocotools_on_hand_made_detections() -> None:
    truths = [np.array([[0, 10, 10, 50, 50], [1, 60, 60, 100, 120]], np.float32),
              np.array([[0, 0, 0, 20, 20]], np.float32),
              np.zeros((0, 5), np.float32),
              np.array([[2, 5, 5, 30, 30]], np.float32)]  # class 2: never detected
    detections = [
        # A hit, a duplicate of it (a false positive at a lower score), a hit at IoU ~0.51.
        Boxes([[12, 11, 51, 50], [10, 10, 49, 52], [60, 60, 100, 100]], [0.9, 0.6, 0.8],
              [0, 0, 1]),
        Boxes([[30, 30, 60, 60]], [0.95], [0]),  # a miss with the top score
        Boxes([[1, 1, 9, 9]], [0.3], [1]),  # a false positive on an empty image
        Boxes.empty(),
    ]
    ours = average_precision(detections, truths, 3)
    assert ours == pytest.approx(coco_map50(detections, truths, 3), abs=1e-9)
    # Perfect detections score 1; a class with ground truth and no detection scores 0.
    perfect = [Boxes(t[:, 1:], np.ones(len(t)), t[:, 0]) for t in truths]
    assert average_precision(perfect, truths, 3) == pytest.approx(1.0)
    assert average_precision([Boxes.empty()] * 4, truths, 3) == 0.0


def test_map50_without_ground_truth_is_nan_and_counts_must_agree() -> None:
    assert np.isnan(average_precision([Boxes.empty()], [np.zeros((0, 5))], 3))
    with pytest.raises(Exception, match="1 images but ground truth for 2"):
        average_precision([Boxes.empty()], [np.zeros((0, 5))] * 2, 3)


def test_box_iou() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou == pytest.approx(np.array([[50 / 150, 0.0]]))


def test_grid_encoding_round_trips_the_boxes_and_marks_centres() -> None:
    grid = CenterGrid((64, 96), stride=8, classes=3)
    frames = [np.array([[2, 10, 20, 30, 44], [0, 50, 8, 90, 60]], np.float32),
              np.zeros((0, 5), np.float32)]
    encoded = grid.encode(pad_boxes(frames, 4))
    assert encoded.shape == (2, grid.target_rows, 8 * 12)
    for got, want in zip(grid.truths(encoded), frames):
        np.testing.assert_array_equal(got, want)
    centres = np.flatnonzero(encoded[0, grid.center_row])
    # Box 0's centre (20, 32) is in cell row 4, column 2; box 1's (70, 34) in row 4, column 8.
    assert sorted(centres.tolist()) == [4 * 12 + 2, 4 * 12 + 8]
    assert encoded[0, :4, 4 * 12 + 2].tolist() == [20, 32, 20, 24]
    assert encoded[0, 4 + 2, 4 * 12 + 2] == 1.0 and encoded[0, 4 + 0, 4 * 12 + 2] < 1.0
    assert not encoded[1, :grid.center_row + 1].any()


def test_tally_decodes_dense_outputs_like_the_detect_pipeline() -> None:
    grid = CenterGrid((32, 32), stride=8, classes=2)
    boxes = pad_boxes([np.array([[1, 4, 4, 12, 12]], np.float32)], 2)
    output = np.zeros((1, 4 + 2, grid.anchors), np.float32)
    output[0, :4, 5] = [8, 8, 8, 8]
    output[0, 4 + 1, 5] = 0.9
    tally = MapTally(grid)
    tally.add(output, grid.encode(boxes))
    assert tally.result() == pytest.approx(1.0)
    tally.reset()
    assert np.isnan(tally.result())


def test_detection_targets_are_checked_with_the_cause_named() -> None:
    good = check_boxes("t", np.array([[0, 1, 2, 3, 4], [PAD, 0, 0, 0, 0]]), 3)
    assert good.shape == (1, 2, 5) and good.dtype == np.float32
    assert [len(f) for f in frame_boxes(good)] == [1]
    with pytest.raises(DatasetError, match=r"\[0, 3\)"):
        check_boxes("t", np.array([[[3, 1, 2, 3, 4]]]), 3)
    with pytest.raises(DatasetError, match="x2 < x1"):
        check_boxes("t", np.array([[[0, 5, 2, 3, 4]]]), 3)
    with pytest.raises(DatasetError, match=r"\[K, 5\] per frame"):
        check_boxes("t", np.zeros((2, 3, 4)), 3)
    with pytest.raises(DatasetError, match="NaN"):
        check_boxes("t", np.array([[[0, np.nan, 2, 3, 4]]]), 3)
