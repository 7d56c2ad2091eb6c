"""~tracks and ~counts messages (ros/sinks.py) from the tracking step's outputs; no master."""
import io

import numpy as np
import rospy
from ml_bridge.msg import Counts, Track, Tracks
from std_msgs.msg import Header

from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.counting import Counts as CountsOut
from ml_bridge.pipelines.track_stage import TrackList
from ml_bridge.pipelines.tracking import CONFIRMED, ENDED, TrackState
from ml_bridge.ros import sinks

FIRST_NS = 1_700_000_000_123_456_789


def result() -> Result:
    header = Header(seq=4, stamp=rospy.Time(1_700_000_002, 5), frame_id="cam")
    return Result(Frame(np.zeros((4, 4, 3), np.uint8), 0.0, header), ModelStamp(7), 1.0)


def test_tracks_carry_ids_states_boxes_and_exact_stamps() -> None:
    seen = TrackState(12, CONFIRMED, 2, "car", 0.75, (10.4, 20.6, 50.0, 80.2), (0.0, 0.0),
                      FIRST_NS, FIRST_NS + 1_500_000_000, 9)
    ended = TrackState(3, ENDED, 0, "bus", 0.5, (0.0, 0.0, 4.0, 4.0), (0.0, 0.0), FIRST_NS,
                       FIRST_NS, 3)
    tracks_type, convert = sinks.sink("tracks")
    assert tracks_type is Tracks
    msg = convert(result(), TrackList([seen, ended], ["taxi", "bus"]), sinks.SinkOptions())
    assert msg.header.frame_id == "cam" and msg.header.stamp == rospy.Time(1_700_000_002, 5)
    assert msg.model_version == 7
    first, second = msg.tracks
    assert (first.id, first.state, first.class_id, first.label) == (12, Track.CONFIRMED, 2, "taxi")
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == \
        (10, 21, 40, 59)
    assert first.first_seen == rospy.Time(1_700_000_000, 123_456_789)
    assert first.last_seen == rospy.Time(1_700_000_001, 623_456_789)
    assert abs(first.duration - 1.5) < 1e-6
    assert (second.id, second.state, second.duration) == (3, Track.ENDED, 0.0)
    msg.serialize(io.BytesIO())   # every field has a type the wire takes


def test_counts_are_copied_field_by_field() -> None:
    counts_type, convert = sinks.sink("counts")
    assert counts_type is Counts
    msg = convert(result(), CountsOut(["car", "bus"], [1, 0], [4, 2], ["door"], [3], [1]),
                  sinks.SinkOptions())
    assert (msg.labels, list(msg.in_frame), list(msg.total)) == (["car", "bus"], [1, 0], [4, 2])
    assert (msg.lines, list(msg.forward), list(msg.backward)) == (["door"], [3], [1])
    assert msg.header.frame_id == "cam"
    msg.serialize(io.BytesIO())
