"""core.detection: YOLO and decoded-box layouts, class-aware NMS, letterbox mapping."""
import numpy as np
import pytest

from ml_bridge.core.detection import (
    Boxes,
    FrameTransform,
    clip_boxes,
    decode_boxes,
    decode_yolo,
    letterbox,
    map_to_frame,
    nms,
    stretch_transform,
    suppress,
)
from ml_bridge.core.errors import InputError


def _boxes(boxes: object, scores: object, class_ids: object) -> Boxes:
    return Boxes(np.array(boxes), np.array(scores), np.array(class_ids))


def _v8(anchors, num_classes=3, count=50):
    """[1, 4 + C, A] with the given (cx, cy, w, h, class, score) anchors first, zeros after."""
    out = np.zeros((1, 4 + num_classes, count), np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(anchors):
        out[0, :4, a] = (cx, cy, w, h)
        out[0, 4 + cls, a] = score
    return out


def test_yolov8_layout_decodes_to_corner_boxes():
    out = _v8([(50, 40, 20, 10, 2, 0.9), (10, 10, 4, 4, 0, 0.1), (100, 100, 10, 30, 1, 0.5)])
    out[0, 4, 0] = 0.3  # a lower score of another class on the same anchor: argmax wins
    [found] = decode_yolo(out, score_threshold=0.25)
    np.testing.assert_allclose(found.boxes, [[40, 35, 60, 45], [95, 85, 105, 115]])
    np.testing.assert_allclose(found.scores, [0.9, 0.5])
    assert found.class_ids.tolist() == [2, 1]
    assert found.boxes.dtype == np.float32 and found.class_ids.dtype == np.int64


def test_yolov5_layout_multiplies_objectness():
    out = np.zeros((2, 40, 5 + 2), np.float32)
    out[0, 3] = (30, 30, 10, 20, 0.5, 0.2, 0.8)   # score 0.4, class 1
    out[0, 4] = (60, 60, 10, 10, 0.2, 0.9, 0.0)   # 0.18 < threshold
    out[1, 0] = (5, 5, 2, 2, 1.0, 0.7, 0.1)
    first, second = decode_yolo(out, layout="auto", score_threshold=0.25)
    np.testing.assert_allclose(first.boxes, [[25, 20, 35, 40]])
    np.testing.assert_allclose(first.scores, [0.4], rtol=1e-6)
    assert first.class_ids.tolist() == [1]
    assert second.class_ids.tolist() == [0] and len(second) == 1


def test_num_classes_decides_the_layout_and_is_checked():
    # 8 anchors of 4 + 3 channels would look like yolov5 by axis length alone
    out = np.zeros((1, 7, 8), np.float32)
    out[0, :, 0] = (10, 10, 4, 4, 0, 0, 0.9)
    [found] = decode_yolo(out, num_classes=3)
    assert found.class_ids.tolist() == [2]
    with pytest.raises(InputError, match="C = 5"):
        decode_yolo(out, num_classes=5)
    with pytest.raises(InputError, match="yolov8"):
        decode_yolo(np.zeros((1, 4, 100)), layout="yolov8")
    with pytest.raises(InputError, match="detect_format"):
        decode_yolo(np.zeros((7, 100)))
    with pytest.raises(InputError, match="unknown YOLO layout"):
        decode_yolo(out, layout="v8")


def test_non_finite_boxes_are_dropped():
    out = _v8([(50, 40, 20, 10, 2, 0.9), (np.nan, 40, 20, 10, 1, 0.9)])
    [found] = decode_yolo(out)
    assert len(found) == 1


def test_torchvision_dict():
    outputs: dict = {"boxes": np.array([[[1, 2, 30, 40], [5, 5, 9, 9]]], np.float32),
               "scores": np.array([[0.8, 0.1]], np.float32),
               "labels": np.array([[3, 1]], np.int64)}
    [found] = decode_boxes(outputs, (100, 200), score_threshold=0.25)
    np.testing.assert_allclose(found.boxes, [[1, 2, 30, 40]])
    assert found.class_ids.tolist() == [3]
    single = {k: v[0] for k, v in outputs.items()}  # one image without the N axis
    [same] = decode_boxes(single, (100, 200), score_threshold=0.0)
    assert len(same) == 2


def test_tf_object_detection_dict_normalised_yx_and_num_detections():
    outputs = {"detection_boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1],
                                             [0.2, 0.2, 0.3, 0.3]]], np.float32),
               "detection_scores": np.array([[0.9, 0.3, 0.95]], np.float32),
               "detection_classes": np.array([[1.0, 7.0, 4.0]], np.float32),
               "num_detections": np.array([2.0], np.float32)}
    [found] = decode_boxes(outputs, (100, 200), score_threshold=0.25)
    # height 100, width 200: x = xmin * 200, y = ymin * 100; the third is past num_detections
    np.testing.assert_allclose(found.boxes, [[40, 10, 120, 50], [0, 0, 200, 100]], rtol=1e-6)
    assert found.class_ids.tolist() == [1, 7]


def test_decode_boxes_names_the_expected_keys():
    with pytest.raises(InputError, match="detection_boxes"):
        decode_boxes({"output0": np.zeros((1, 7, 10))}, (64, 64))


def _brute_nms(boxes, scores, classes, iou, limit):
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union
    kept: list = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        if all(classes[j] != classes[i] or overlap(boxes[i], boxes[j]) <= iou for j in kept):
            kept.append(i)
    return kept[:limit]


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    count = 60
    corner = rng.uniform(0, 80, (count, 2))
    size = rng.uniform(5, 40, (count, 2))
    boxes = np.concatenate([corner, corner + size], axis=1)
    scores = rng.uniform(0, 1, count)
    classes = rng.integers(0, 3, count)
    kept = nms(boxes, scores, classes, iou=0.45, max_detections=25)
    assert kept.tolist() == _brute_nms(boxes, scores, classes, 0.45, 25)
    assert np.all(np.diff(scores[kept]) <= 0)


def test_nms_is_class_aware_and_takes_negative_scores():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, [-1.0, -2.0, -0.5], [0, 1, 0]).tolist() == [2, 1]
    assert nms(np.zeros((0, 4)), [], []).tolist() == []
    # sub-pixel boxes keep their float geometry (IoU 0.16; truncated to whole pixels it is 1)
    assert nms([[0, 0, 1.9, 1.9], [0.9, 0.9, 2.8, 2.8]], [0.9, 0.8], [0, 0]).tolist() == [0, 1]
    found = suppress(_boxes(boxes, [0.5, 0.6, 0.7], [0, 0, 0]))
    assert found.scores.tolist() == pytest.approx([0.7])


def test_letterbox_round_trip_on_a_640_by_480_frame():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:300, 200:500] = 255  # the box x 200..500, y 100..300
    padded, transform = letterbox(frame, (320, 320))
    assert padded.shape == (320, 320, 3)
    assert padded[0, 0].tolist() == [114, 114, 114]  # grey bands above and below
    ys, xs = np.nonzero(padded[:, :, 0] > 200)
    found = _boxes([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [1.0], [0])
    back = map_to_frame(found, transform)
    np.testing.assert_allclose(back.boxes, [[200, 100, 500, 300]], atol=1.0)
    assert (transform.pad_x, transform.pad_y) == (0.0, 40.0)


def test_letterbox_keeps_gray_images_single_channel():
    padded, transform = letterbox(np.zeros((10, 40, 1), np.uint8), (32, 32))
    assert padded.shape == (32, 32, 1)
    assert transform.scale_x == transform.scale_y == pytest.approx(0.8)


def test_boxes_are_clipped_to_the_frame_and_empty_ones_dropped():
    transform = stretch_transform((100, 200), (50, 50))  # x / 4, y / 2
    found = _boxes([[-10, -10, 10, 10], [40, 40, 60, 60], [55, 10, 60, 20]], [0.9, 0.8, 0.7],
                  [0, 1, 2])
    back = map_to_frame(found, transform)
    np.testing.assert_allclose(back.boxes, [[0, 0, 40, 20], [160, 80, 200, 100]])
    assert back.class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(clip_boxes([[-1, 5, 300, 7]], 200, 100), [[0, 5, 200, 7]])
    assert isinstance(transform, FrameTransform)


def test_boxes_check_their_lengths():
    with pytest.raises(InputError, match="disagree"):
        _boxes(np.zeros((2, 4)), [0.1], [0, 1])


def _reference_decode(output, layout, threshold):
    """The plain decode: arg-max over every anchor's full class axis, then the threshold."""
    pred = np.asarray(output).astype(np.float32)
    if layout == "yolov8":
        pred = pred.transpose(0, 2, 1)
    first = 4 if layout == "yolov8" else 5
    result = []
    for image in pred:
        class_ids = image[:, first:].argmax(axis=1)
        scores = image[np.arange(len(image)), first + class_ids]
        if layout == "yolov5":
            with np.errstate(invalid="ignore"):  # inf x 0, as in the decode
                scores = scores * image[:, 4]
        centre, half = image[:, :2], image[:, 2:4] / 2.0
        xyxy = np.concatenate([centre - half, centre + half], axis=1)
        keep = (scores >= threshold) & np.isfinite(xyxy).all(axis=1)
        result.append((xyxy[keep], scores[keep], class_ids[keep]))
    return result


@pytest.mark.parametrize("layout", ["yolov8", "yolov5"])
@pytest.mark.parametrize("seed", range(4))
def test_decode_matches_a_full_arg_max_reference(layout, seed):
    rng = np.random.default_rng(seed)
    classes, anchors = int(rng.integers(1, 9)), int(rng.integers(1, 300))
    shape = (2, 4 + classes, anchors) if layout == "yolov8" else (2, anchors, 5 + classes)
    dtype = (np.float32, np.float64, np.float16, np.float32)[seed]
    # Quantised scores make ties within an anchor's classes common (the first class wins).
    output = (np.round(rng.random(shape) * 4) / 4).astype(dtype)
    output.flat[rng.integers(0, output.size, 6)] = np.nan
    output.flat[rng.integers(0, output.size, 6)] = np.inf
    # Scores at most 1 without the infinities: 1.5 leaves every anchor below the threshold.
    below = np.where(np.isinf(output), 0.5, output).astype(dtype)
    cases = [(output, t) for t in (0.0, 0.25, 0.5, 0.75, 1.0)] + [(below, 1.5)]
    for out, threshold in cases:
        expected = _reference_decode(out, layout, threshold)
        with np.errstate(invalid="ignore"):
            found = decode_yolo(out, layout, threshold)
        assert len(found) == 2
        if threshold == 1.5:
            assert [len(image) for image in found] == [0, 0]
        for image, (boxes, scores, class_ids) in zip(found, expected):
            np.testing.assert_array_equal(image.boxes, boxes)
            np.testing.assert_array_equal(image.scores, scores)
            np.testing.assert_array_equal(image.class_ids, class_ids)


def test_decode_keeps_the_first_of_tied_classes():
    out = _v8([(50, 40, 20, 10, 1, 0.6), (10, 10, 4, 4, 2, 0.6)])
    out[0, 4 + 2, 0] = 0.6  # anchor 0: classes 1 and 2 tie
    out[0, 4 + 0, 1] = 0.6  # anchor 1: classes 0 and 2 tie
    [found] = decode_yolo(out, score_threshold=0.5)
    assert found.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(found.scores, [0.6, 0.6])
