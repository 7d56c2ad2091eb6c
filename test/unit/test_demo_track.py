"""The tracking part of ``make demo-vision``: its scripted camera shows what its truth says."""
import numpy as np

from ml_bridge.core.box_metrics import box_iou
from ml_bridge.core.shape_scenes import MAX_SIZE, MIN_SIZE, shape_box
from ml_bridge.ros import demo_track as demo


def test_every_shape_crosses_the_line_whole_and_apart_from_the_others() -> None:
    middle = demo.SIZE / 2
    for mover in demo.MOVERS:
        start, end = mover.centre(mover.first)[0], mover.centre(mover.last)[0]
        assert (start < middle < end) if mover.direction == "forward" else (end < middle < start)
        for index in range(mover.first, mover.last + 1):
            x, y = mover.centre(index)
            reach = mover.size * demo.REACH
            assert reach <= x <= demo.SIZE - reach and reach <= y <= demo.SIZE - reach
            for other in demo.MOVERS:
                if other is not mover and other.first <= index <= other.last:
                    ox, oy = other.centre(index)
                    assert np.hypot(x - ox, y - oy) > reach + other.size * demo.REACH


def test_frames_show_the_shapes_in_view_and_the_truth_counts_them() -> None:
    ground = demo.frame(-1).astype(int)
    for mover in demo.MOVERS:
        x, y = (int(v) for v in mover.centre(mover.first))
        shown = demo.frame(mover.first).astype(int)
        assert np.abs(shown[y, x] - ground[y, x]).sum() > 100
    totals, crossings = demo.truth()
    assert totals == {"circle": 2, "square": 1, "triangle": 1}
    assert crossings == {"forward": 2, "backward": 2}
    # every track ends (~track_max_age 1 s) before the last frame
    assert demo.FRAMES - max(m.last for m in demo.MOVERS) > 1.0 / (demo.PERIOD_NS / 1e9)
    assert all(0 <= k < demo.FRAMES for k in demo.SHOT_FRAMES)


def test_shapes_are_drawn_as_the_detector_was_trained_to_see_them() -> None:
    # shape_scenes' textured grounds, not a flat one: a flat ground is not in the training set
    ground = demo.frame(-1).astype(np.float64)
    assert float(ground.reshape(-1, 3).mean(axis=0).std() + ground.std(axis=(0, 1)).mean()) > 15
    _, colours = demo.scenery()
    for mover, colour in zip(demo.MOVERS, colours):
        assert MIN_SIZE * demo.SIZE <= mover.size <= MAX_SIZE * demo.SIZE
        # as shape_scenes picks a colour: far (>= 110) from the ground behind the shape
        half = int(mover.size / 2)
        behind = ground[int(mover.y) - half:int(mover.y) + half].reshape(-1, 3).mean(axis=0)
        assert float(np.abs(np.asarray(colour) - behind).sum()) >= 110


def test_a_track_survives_its_shape_missed_for_max_gap_frames() -> None:
    # ~track_iou 0.3 (the contract's default): the box after MAX_GAP missed frames still
    # overlaps the track's last box enough, and the gap fits in ~track_max_age (10 frames)
    assert demo.MAX_GAP + 1 < 1.0 / (demo.PERIOD_NS / 1e9)
    for mover in demo.MOVERS:
        kind = demo.LABELS.index(mover.label) + 1
        seen = shape_box(kind, mover.centre(mover.first), mover.size, mover.angle)
        again = shape_box(kind, mover.centre(mover.first + demo.MAX_GAP + 1), mover.size,
                          mover.angle)
        assert float(box_iou(seen[None], again[None])[0, 0]) > 0.3
