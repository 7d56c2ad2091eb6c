#!/usr/bin/env python3
"""Integration test of the tracking chain: run by track_chain.test.

A detect node with ``~track``, a count line and a rule on ended tracks that uploads watches a
scripted video (test/unit/crossing_video.py: squares crossing a line on known frames, stamps
0.1 s apart). Each frame is published once the previous one was answered, so the latest-frame
queue drops none and the truth is exact. ``~counts`` totals and crossings must equal the truth,
each square's track must end once with its duration within one frame period, the rule must
fire once per track that lasted long enough (none for the short ones), and every event must
reach the HTTP server of this test, which refuses the first tries.
"""
import json
import os
import sys
import threading
import time
import unittest
from typing import Any, Dict, List, Optional

import rospy
from ml_bridge.msg import Counts, Event, Track, Tracks
from sensor_msgs.msg import Image

import rostest
from ml_bridge.ros.conversions import array_to_image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
import crossing_video as video
from http_inbox import Inbox as HttpInbox

NS = "/detector/ml_bridge"
BASE = 1_800_000_000   # the video's first stamp, seconds
REFUSED = 2            # tries the HTTP server answers 503


def stamp_of(index: int) -> rospy.Time:
    """Frame ``index``'s stamp: BASE + index periods, exact in nanoseconds."""
    return rospy.Time(BASE) + rospy.Duration(0, index * int(round(video.PERIOD * 1e9)))


class Topic:
    """Every message of a topic in arrival order, and by stamp; waits on a condition."""

    def __init__(self, topic: str, msg_type: Any) -> None:
        self.cond = threading.Condition()
        self.messages: List[Any] = []
        self.by_stamp: Dict[rospy.Time, Any] = {}
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=500)

    def _got(self, msg: Any) -> None:
        with self.cond:
            self.messages.append(msg)
            self.by_stamp[msg.header.stamp] = msg
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[Any]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)


class TrackChainTest(unittest.TestCase):
    def setUp(self) -> None:
        rospy.init_node("ml_bridge_track_chain_test")
        # Up before the node sends anything: its first tries meet this server's refusals.
        self.http = HttpInbox(refuse=REFUSED, port=int(rospy.get_param("~http_port")))
        self.addCleanup(self.http.close)
        rospy.wait_for_service(NS + "/info", timeout=180)
        self.pub = rospy.Publisher("/crossing/image_raw", Image, queue_size=10)
        self.tracks = Topic(NS + "/tracks", Tracks)
        self.counts = Topic(NS + "/counts", Counts)
        self.events = Topic(NS + "/events", Event)

    def publish(self, index: int, pixels: Any) -> rospy.Time:
        msg = array_to_image(pixels, "rgb8")
        msg.header.stamp, msg.header.frame_id = stamp_of(index), "crossing_cam"
        self.pub.publish(msg)
        return msg.header.stamp

    def warm_up(self) -> None:
        """An empty frame (no square: nothing to track), until the node answers it and
        ``~events`` is connected."""
        deadline = time.time() + 120
        while True:
            stamp = self.publish(-20, video.frame(-20))
            if (self.tracks.wait(stamp, 0.5) is not None and self.counts.wait(stamp, 0.5)
                    is not None and self.events.sub.get_num_connections() > 0):
                return
            self.assertLess(time.time(), deadline, "the node did not answer the warm-up frame")

    def test_counts_durations_events_and_uploads_equal_the_truth(self) -> None:
        self.warm_up()
        for index in range(video.FRAMES):
            stamp = self.publish(index, video.frame(index))
            for topic in (self.tracks, self.counts):
                self.assertIsNotNone(topic.wait(stamp, 60), f"{topic.sub.name}: frame {index}")

        last = self.counts.by_stamp[stamp_of(video.FRAMES - 1)]
        self.assertEqual(dict(zip(last.labels, last.total)), video.totals())
        self.assertEqual(list(last.in_frame), [0] * len(last.labels))
        self.assertEqual(list(last.lines), [video.LINE["name"]])
        self.assertEqual((last.forward[0], last.backward[0]), video.crossings())

        # Each square's track ends once; matched to it by label and first frame.
        ended: List[Track] = [t for msg in self.tracks.messages for t in msg.tracks
                              if t.state == Track.ENDED]
        self.assertEqual(len({t.id for t in ended}), len(ended), "a track ended twice")
        by_square = {(t.label, t.first_seen): t for t in ended}
        self.assertEqual(len(by_square), len(video.SQUARES), [(t.label, t.first_seen) for t in ended])
        track_of = {}
        for square in video.SQUARES:
            track = by_square.get((square.colour, stamp_of(square.first)))
            assert track is not None, f"no ended track for {square}"
            self.assertLessEqual(abs(track.duration - square.duration), video.PERIOD + 1e-6,
                                 f"{square}: {track.duration} s")
            track_of[square] = track.id

        # One event per track that lasted MIN_DURATION, none for the others.
        wanted = sorted(track_of[s] for s in video.qualifying())
        fired = [int(e.values[e.keys.index("track_id")]) for e in self.events.messages]
        self.assertEqual(sorted(fired), wanted)
        self.assertTrue(all(e.rule == "stayed" for e in self.events.messages))

        # Every event arrives, once, after the server refused the first tries.
        arrived = self.http.wait_for(
            lambda reqs: len([r for r in reqs if r.status == 200]) >= len(wanted), 120)
        self.assertTrue(arrived, f"{len(self.http.accepted())} of {len(wanted)} events arrived")
        self.assertEqual([r.status for r in self.http.requests[:REFUSED]], [503] * REFUSED)
        bodies = [json.loads(r.body) for r in self.http.accepted("POST")]
        self.assertEqual(len({b["id"] for b in bodies}), len(bodies), "an event id arrived twice")
        self.assertEqual(sorted(b["rows"][0]["track_id"] for b in bodies), wanted)
        for body in bodies:
            row = body["rows"][0]
            self.assertIs(row["track_ended"], True)
            self.assertGreaterEqual(row["track_duration"], video.MIN_DURATION - 1e-6)
            self.assertEqual((body["rule"], body["node"]), ("stayed", NS))


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "track_chain_test", TrackChainTest, sys.argv)
