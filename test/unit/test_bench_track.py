"""The track_cost_share figure's code at a tiny size (no ratio is checked: timings are not
tests): its frames keep every track confirmed and cross the count lines."""
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bench import local, trackfigs


def test_track_cost_share_tiny() -> None:
    model, context = local.load("torch", trackfigs.MODEL)
    fig = trackfigs.track_cost(model, context, reps=1, frames=2)
    assert fig.key == "track_cost_share" and len(fig.values) == 1
    assert math.isfinite(fig.values[0]) and fig.values[0] > 0
    assert fig.details["input"] == [1, 3, 128, 128]
    assert fig.details["confirmed"] == trackfigs.OBJECTS  # every object tracked on every frame
    assert fig.details["crossings"] == 0  # in 5 frames no square reaches a line


def test_moving_boxes_cross_both_lines_within_a_run() -> None:
    start, _ = trackfigs.moving_boxes(0)
    end, classes = trackfigs.moving_boxes(3 + 40)  # as far as the figure's frames go
    assert len(start) == trackfigs.OBJECTS and sorted(set(classes)) == [0, 1, 2]
    for line in trackfigs.LINES:
        x = line["points"][0][0]
        centres = (start[:, 0] + start[:, 2]) / 2, (end[:, 0] + end[:, 2]) / 2
        assert ((centres[0] < x) & (centres[1] > x)).any()
