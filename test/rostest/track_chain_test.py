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
import unittest
from typing import List

import rospy
from ml_bridge.msg import Track

import rostest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
import crossing_video as video
from crossing_feed import WAIT, Feed, stamp_of
from http_inbox import Inbox as HttpInbox

NS = "/detector/ml_bridge"
REFUSED = 2            # tries the HTTP server answers 503


class TrackChainTest(unittest.TestCase):
    def setUp(self) -> None:
        rospy.init_node("ml_bridge_track_chain_test")
        # Up before the node sends anything: its first tries meet this server's refusals.
        self.http = HttpInbox(refuse=REFUSED, port=int(rospy.get_param("~http_port")))
        self.addCleanup(self.http.close)
        rospy.wait_for_service(NS + "/info", timeout=180)
        self.feed = Feed(NS)

    def test_counts_durations_events_and_uploads_equal_the_truth(self) -> None:
        self.feed.warm_up()
        self.feed.play()

        last = self.feed.counts.by_stamp[stamp_of(video.FRAMES - 1)]
        self.assertEqual(dict(zip(last.labels, last.total)), video.totals())
        self.assertEqual(list(last.in_frame), [0] * len(last.labels))
        self.assertEqual(list(last.lines), [video.LINE["name"]])
        self.assertEqual((last.forward[0], last.backward[0]), video.crossings())

        # Each square's track ends once; matched to it by label and first frame.
        ended: List[Track] = [t for msg in self.feed.tracks.messages for t in msg.tracks
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
        # An uploading rule's event is published once its outbox entry is on the disk: it may
        # come after the last frame's tracks and counts.
        self.feed.events.wait_for(lambda msgs: len(msgs) >= len(wanted), WAIT)
        self.assertEqual(sorted(self.feed.fired()), wanted)
        self.assertTrue(all(e.rule == "stayed" for e in self.feed.events.messages))

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
