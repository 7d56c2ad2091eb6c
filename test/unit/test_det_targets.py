"""Detection targets with a varying number of boxes per frame ([K, 5], K from 0 up) through
recorded samples, .npz files and rosbag datasets, into training; bad boxes are refused with
the cause named."""
from pathlib import Path
from typing import Iterator, List

import backends
import numpy as np
import pytest

from ml_bridge.core.box_targets import PAD, stack_targets
from ml_bridge.core.datasets import load_npz
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.shape_scenes import render_boxes_scene

#: Frames of 0, 1, 3 and 2 boxes.
COUNTS = [0, 1, 3, 2]


def frames_and_boxes() -> List[tuple]:
    rng = np.random.default_rng(5)
    out = []
    for k in COUNTS:
        image, boxes = render_boxes_scene(rng, max_shapes=6)
        while len(boxes) < k:
            image, boxes = render_boxes_scene(rng, max_shapes=6)
        out.append((image, boxes[:k]))
    return out


@pytest.fixture(params=backends.ALL)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelServer]:
    srv = ModelServer.load(request.param, "shapes_det", data_root=str(tmp_path))
    yield srv
    srv.close()


def test_recorded_samples_of_any_box_count_are_stored_padded_and_train(
        server: ModelServer) -> None:
    fmt = server.model.image_format
    assert fmt is not None
    for image, boxes in frames_and_boxes():
        server.record("scenes", [fmt.frame(image)], [boxes.astype(np.float64)])
    stored = server.datasets.load("scenes", None)
    targets = stored.targets[0]
    assert targets.dtype == np.float32 and targets.shape == (len(COUNTS), max(COUNTS), 5)
    assert [int((frame[:, 0] != PAD).sum()) for frame in targets] == COUNTS
    np.testing.assert_array_equal(targets[2], frames_and_boxes()[2][1])
    result = server.fit("scenes", epochs=1, batch_size=2)
    assert result.epochs_completed == 1 and result.swapped
    assert "map50" in result.logs


@pytest.mark.parametrize("boxes, why", [
    (np.array([[3, 1, 1, 9, 9]], np.float32), r"ids must be whole numbers in \[0, 3\)"),
    (np.array([[0, 9, 1, 1, 9]], np.float32), "x2 < x1"),
    (np.array([[0, 1, 1, 9]], np.float32), r"\[K, 5\] per frame"),
    (np.array([[0.5, 1, 1, 9, 9]], np.float32), "whole numbers"),
])
def test_boxes_that_do_not_fit_are_refused_with_the_cause(server: ModelServer,
                                                          boxes: np.ndarray, why: str) -> None:
    fmt = server.model.image_format
    assert fmt is not None
    image = np.zeros((128, 128, 3), np.uint8)
    with pytest.raises(DatasetError, match=why):
        server.record("bad", [fmt.frame(image)], [boxes])


def test_npz_with_padded_boxes_loads_and_fits_a_detector(tmp_path: Path) -> None:
    drawn = frames_and_boxes()
    frames = np.stack([image for image, _ in drawn]).astype(np.float32) / 255.0
    path = tmp_path / "boxes.npz"
    np.savez(path, inputs=frames, targets=stack_targets([b for _, b in drawn]))
    data = load_npz(str(path))
    assert data.targets[0].shape == (len(COUNTS), max(COUNTS), 5)
    server = ModelServer.load("torch", "shapes_det")
    try:
        fmt = server.model.image_format
        assert fmt is not None
        data.inputs[0] = fmt.batch([image for image, _ in drawn])
        server.model.check_targets(data)
    finally:
        server.close()


def test_stacking_pads_box_counts_and_refuses_other_mismatches() -> None:
    one = np.ones((1, 5), np.float32)
    stacked = stack_targets([one, np.zeros((0, 5), np.float32), np.ones((3, 5), np.float32)])
    assert stacked.shape == (3, 3, 5)
    assert stacked[0, 1:, 0].tolist() == [PAD, PAD] and stacked[1, :, 0].tolist() == [PAD] * 3
    with pytest.raises(ValueError):
        stack_targets([np.ones((2, 4)), np.ones((3, 4))])
    with pytest.raises(ValueError):
        stack_targets([one, np.ones((2, 5), np.float64)])


def test_bag_samples_of_any_box_count_load_padded(tmp_path: Path) -> None:
    rosbag = pytest.importorskip("rosbag")
    from ml_bridge.msg import Sample

    from ml_bridge.ros.bag_dataset import load_bag
    from ml_bridge.ros.conversions import array_to_tensor

    drawn = frames_and_boxes()
    path = str(tmp_path / "samples.bag")
    with rosbag.Bag(path, "w") as bag:
        for image, boxes in drawn:
            msg = Sample(inputs=[array_to_tensor(image.astype(np.float32))],
                         targets=[array_to_tensor(boxes)])
            bag.write("/samples", msg)
    data = load_bag(path)
    assert data.targets[0].shape == (len(COUNTS), max(COUNTS), 5)
    assert [int((frame[:, 0] != PAD).sum()) for frame in data.targets[0]] == COUNTS
