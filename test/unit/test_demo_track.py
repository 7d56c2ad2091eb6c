"""The tracking part of ``make demo-vision``: its scripted camera shows what its truth says."""
import numpy as np

from ml_bridge.ros import demo_track as demo


def test_every_shape_crosses_the_line_whole_and_apart_from_the_others() -> None:
    middle = demo.SIZE / 2
    for mover in demo.MOVERS:
        start, end = mover.centre(mover.first)[0], mover.centre(mover.last)[0]
        assert (start < middle < end) if mover.direction == "forward" else (end < middle < start)
        for index in range(mover.first, mover.last + 1):
            x, y = mover.centre(index)
            reach = mover.size * 0.72  # the farthest a shape's outline reaches from its centre
            assert reach <= x <= demo.SIZE - reach and reach <= y <= demo.SIZE - reach
            for other in demo.MOVERS:
                if other is not mover and other.first <= index <= other.last:
                    ox, oy = other.centre(index)
                    assert np.hypot(x - ox, y - oy) > reach + other.size * 0.72


def test_frames_show_the_shapes_in_view_and_the_truth_counts_them() -> None:
    ground = demo.frame(-1)
    assert abs(float(ground.mean()) - 150) < 3  # no shape before the first frame
    for mover in demo.MOVERS:
        x, y = mover.centre(mover.first)
        assert np.abs(demo.frame(mover.first)[int(y), int(x)].astype(int) - 150).sum() > 100
    totals, crossings = demo.truth()
    assert totals == {"circle": 2, "square": 1, "triangle": 1}
    assert crossings == {"forward": 2, "backward": 2}
    # every track ends (~track_max_age 1 s) before the last frame
    assert demo.FRAMES - max(m.last for m in demo.MOVERS) > 1.0 / (demo.PERIOD_NS / 1e9)
    assert all(0 <= k < demo.FRAMES for k in demo.SHOT_FRAMES)
