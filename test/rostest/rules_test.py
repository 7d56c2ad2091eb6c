#!/usr/bin/env python3
"""Integration tests of ``~rules``: run by rules.test (torch, the untrained seeded digits_mlp).

The untrained digits_mlp is deterministic: it calls a black frame "0" and a white one "1"
(checked in-process first), so the rule ``label == "1"`` holds exactly on the white frames.
"""
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
from typing import Any, Callable, List, Optional

import numpy as np
import rosbag
import rospy
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import Event, Prediction
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

import rostest
from ml_bridge.core.server import ModelServer
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame
from ml_bridge.ros.conversions import array_to_image
from ml_bridge.ros.processes import stop

NS = "/ml_bridge"
CAMERA = "/rules_cam/image_raw"
BEFORE, AFTER = 2.0, 1.5        # the rule's record window in rules.test
BRIGHT = (60, 70, 80)           # white frames among 200 at 20 Hz
TOLERANCE = 0.2


def frame(value: int, stamp: rospy.Time) -> Image:
    msg = array_to_image(np.full((48, 64, 3), value, np.uint8), "rgb8")
    msg.header.stamp = stamp
    msg.header.frame_id = "rules_cam"
    return msg


class Inbox:
    """Every message of a topic, in arrival order; waits on a condition."""

    def __init__(self, topic: str, msg_type: type) -> None:
        self.cond = threading.Condition()
        self.messages: List[Any] = []
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=500)

    def _got(self, msg: Any) -> None:
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def wait_for(self, test: Callable[[Any], bool], timeout: float) -> Optional[Any]:
        def found() -> Optional[Any]:
            return next((m for m in self.messages if test(m)), None)
        with self.cond:
            self.cond.wait_for(lambda: found() is not None, timeout)
            return found()

    def close(self) -> None:
        self.sub.unregister()


class SimClock:
    """A ``/clock`` published at 100 Hz, sim time running at the wall's pace from ``start``;
    :meth:`jump` sends it back, as a looping ``rosbag play --clock`` does."""

    def __init__(self, start: float) -> None:
        self.pub = rospy.Publisher("/clock", Clock, queue_size=10)
        self._now = start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):  # the publishing pace, not a synchronisation
            with self._lock:
                self._now += 0.01
                now = self._now
            self.pub.publish(Clock(rospy.Time.from_sec(now)))

    def jump(self, to: float) -> None:
        with self._lock:
            self._now = to

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pub.unregister()


def wait_until(test: Callable[[], bool], timeout: float) -> bool:
    """Polls a file-system condition (there is no event to wait on) until it holds."""
    deadline = time.monotonic() + timeout
    while not test() and time.monotonic() < deadline:
        time.sleep(0.05)
    return test()


class RulesTest(unittest.TestCase):
    workdir: str

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("rules_test")
        cls.workdir = rospy.get_param("~workdir")
        rospy.wait_for_service(NS + "/info", timeout=180)

    def test_0_the_model_calls_black_0_and_white_1(self) -> None:
        server = ModelServer.load("torch", "digits_mlp")
        try:
            pipeline = make_pipeline("classify", server.model, {})
            for value, label in ((0, "0"), (255, "1")):
                image = np.full((48, 64, 3), value, np.uint8)
                result = pipeline.run(Frame(image), lambda x: server.predict(x, 60))
                assert result is not None
                self.assertEqual(result.rows[0]["label"], label, "digits_mlp's seeded weights "
                                 "changed: pick frames it labels differently for rules.test")
        finally:
            server.close()

    def test_1_a_rule_fires_an_event_and_records_a_bag_around_its_matches(self) -> None:
        record_dir = os.path.join(self.workdir, "recordings")
        pub = rospy.Publisher(CAMERA, Image, queue_size=5)
        events = Inbox(NS + "/events", Event)
        preds = Inbox(NS + "/predictions", Prediction)
        try:
            # Black frames until the node answers: every connection is up.
            deadline = time.monotonic() + 60
            while not preds.wait_for(lambda m: True, 0.2) and time.monotonic() < deadline:
                pub.publish(frame(0, rospy.Time.now()))
            self.assertTrue(preds.messages, "the node never answered a frame")
            rate = rospy.Rate(20)
            bright = []
            for i in range(200):  # 10 s at 20 Hz
                stamp = rospy.Time.now()
                pub.publish(frame(255 if i in BRIGHT else 0, stamp))
                if i in BRIGHT:
                    bright.append(stamp)
                rate.sleep()
            event = events.wait_for(lambda m: m.rule == "bright", 30)
            self.assertIsNotNone(event, "no Event on ~events")
            assert event is not None
            # The matches as the node saw them (latest frame wins could skip one under load).
            with preds.cond:
                matches = [m.header.stamp for m in preds.messages if list(m.labels) == ["1"]]
            self.assertTrue(matches and set(matches) <= set(bright), matches)
            self.assertEqual(event.header.stamp, matches[0])
            self.assertEqual(event.header.frame_id, "rules_cam")
            self.assertEqual((list(event.keys), list(event.values)), (["label"], ["1"]))
            self.assertEqual(os.path.dirname(event.bag), record_dir)
            self.assertTrue(event.bag.endswith(".bag"), event.bag)
            self.assertTrue(wait_until(lambda: os.path.exists(event.bag), 30), event.bag)

            with rosbag.Bag(event.bag) as bag:  # what `rosbag info` reads
                topics = bag.get_type_and_topic_info().topics
                self.assertEqual(topics[CAMERA].msg_type, "sensor_msgs/Image")
                self.assertEqual(topics[NS + "/predictions"].msg_type, "ml_bridge/Prediction")
                recorded = [(topic, msg, t.to_sec()) for topic, msg, t in bag.read_messages()]
            times = [t for _, _, t in recorded]
            fired, last = event.header.stamp.to_sec(), matches[-1].to_sec()
            self.assertLess(abs(min(times) - (fired - BEFORE)), TOLERANCE, (min(times), fired))
            self.assertLess(abs(max(times) - (last + AFTER)), TOLERANCE, (max(times), last))
            images = {m.header.stamp for topic, m, _ in recorded if topic == CAMERA}
            self.assertTrue(set(bright) <= images)
            labelled = [m.header.stamp for topic, m, _ in recorded
                        if topic == NS + "/predictions" and list(m.labels) == ["1"]]
            self.assertEqual(labelled, matches)
            self.assertEqual([n for n in os.listdir(record_dir) if not n.endswith(".bag")], [])
            diagnostics = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=20)
            (status,) = [s for s in diagnostics.status if "model" in s.name]
            values = {kv.key: kv.value for kv in status.values}
            self.assertEqual((values["rules: events"], values["rules: recordings_written"]),
                             ("1", "1"))
        finally:
            events.close()
            preds.close()
            pub.unregister()

    def test_2_killed_leaves_no_bag_next_start_sets_it_aside_a_clean_stop_completes_it(self) -> None:
        """Killed, restarted on a /clock that goes back, stopped cleanly: no bag is lost.

        On the restarted node, time going back (a looping `rosbag play --clock`) closes the
        open recording at once and the rule fires again in the new timeline."""
        name, camera = "rules_kill", "/kill_cam/image_raw"
        record_dir = os.path.join(self.workdir, "kill_recordings")
        shutil.rmtree(record_dir, ignore_errors=True)
        params = {"backend": "torch", "model": "digits_mlp", "image": camera,
                  "checkpoint_dir": os.path.join(self.workdir, "kill_checkpoints"),
                  "data_root": os.path.join(self.workdir, "kill_data"), "record_dir": record_dir,
                  "rules": [{"name": "long", "all": [{"key": "label", "op": "==", "value": "1"}],
                             "record": {"topics": [camera], "before": 1.0, "after": 60.0,
                                        "max": 120.0}}]}
        for key, value in params.items():
            rospy.set_param(f"/{name}/{key}", value)

        def start(log: str) -> "subprocess.Popen[bytes]":
            with open(os.path.join(self.workdir, log), "wb") as out:
                return subprocess.Popen(["rosrun", "ml_bridge", "server", f"__name:={name}"],
                                        stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)

        proc = start("kill_1.log")
        pub = rospy.Publisher(camera, Image, queue_size=5)
        events = Inbox(f"/{name}/events", Event)
        try:
            rospy.wait_for_service(f"/{name}/info", timeout=180)
            deadline = time.monotonic() + 60
            while not events.wait_for(lambda m: True, 0.2) and time.monotonic() < deadline:
                pub.publish(frame(255, rospy.Time.now()))
            event = events.wait_for(lambda m: True, 0)
            self.assertIsNotNone(event, "the rule never fired")
            assert event is not None
            self.assertTrue(wait_until(lambda: os.path.exists(event.bag + ".active"), 30))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # while the recording is open (after: 60 s)
            proc.wait(30)
            events.close()
        self.assertEqual(os.listdir(record_dir), [os.path.basename(event.bag) + ".active"])

        # The restarted node runs on sim time (read at its start-up; this node keeps the wall
        # clock) from a /clock that goes back, as `rosbag play --loop --clock` sends it.
        clock = SimClock(1000.0)
        rospy.set_param("/use_sim_time", True)
        proc = start("kill_2.log")
        aside = event.bag + ".unfinished"
        events = Inbox(f"/{name}/events", Event)
        diagnostics = Inbox("/diagnostics", DiagnosticArray)
        try:
            self.assertTrue(wait_until(lambda: os.path.exists(aside), 180), os.listdir(record_dir))
            rospy.wait_for_service(f"/{name}/info", timeout=180)  # it started all the same
            rospy.delete_param("/use_sim_time")

            def on_clock(m: DiagnosticArray) -> bool:
                return (m.header.stamp.to_sec() >= 1000.0
                        and any(s.name.startswith(name + ":") for s in m.status))
            # Its diagnostics are stamped with its ROS time: once one says 1000 s or later, so
            # does every receive time until the jump.
            self.assertIsNotNone(diagnostics.wait_for(on_clock, 60), "the node is not on /clock")
            # A clean stop (SIGINT) while recording: the bag is closed complete under its name.
            deadline = time.monotonic() + 60
            while not events.wait_for(lambda m: True, 0.2) and time.monotonic() < deadline:
                pub.publish(frame(255, rospy.Time.now()))
            second = events.wait_for(lambda m: True, 0)
            self.assertIsNotNone(second, "the rule never fired after the restart")
            assert second is not None
            self.assertTrue(wait_until(lambda: os.path.exists(second.bag + ".active"), 30))
            # The clock goes back: the open recording (after: 60 s) is written out complete
            # at once, and the rule fires again in the new timeline.
            clock.jump(500.0)
            self.assertTrue(wait_until(lambda: os.path.exists(second.bag), 30),
                            "time went back and the recording stayed open")
            deadline = time.monotonic() + 60
            while (not events.wait_for(lambda m: m.bag != second.bag, 0.2)
                   and time.monotonic() < deadline):
                pub.publish(frame(255, rospy.Time.now()))
            third = events.wait_for(lambda m: m.bag != second.bag, 0)
            self.assertIsNotNone(third, "the rule never fired after time went back")
            assert third is not None
            self.assertTrue(wait_until(lambda: os.path.exists(third.bag + ".active"), 30))
        finally:
            stop(proc)
            events.close()
            diagnostics.close()
            pub.unregister()
            clock.close()
            if rospy.has_param("/use_sim_time"):
                rospy.delete_param("/use_sim_time")
        self.assertEqual(sorted(os.listdir(record_dir)), sorted(
            os.path.basename(p) for p in (aside, second.bag, third.bag)))
        times = []
        for bag_path in (second.bag, third.bag):
            with rosbag.Bag(bag_path) as bag:
                self.assertEqual(bag.get_type_and_topic_info().topics[camera].msg_type,
                                 "sensor_msgs/Image")
                times.append([t.to_sec() for _, _, t in bag.read_messages()])
        # Each bag holds one timeline: sim time from 1000 s before the jump, from 500 s after.
        self.assertTrue(times[0] and min(times[0]) >= 999.0, times[0])
        self.assertTrue(times[1] and 499.0 <= min(times[1]) and max(times[1]) < 999.0, times[1])
        with open(os.path.join(self.workdir, "kill_2.log"), errors="replace") as log:
            self.assertIn("did not stop cleanly", log.read())

    def test_3_an_invalid_rule_stops_start_up_naming_rule_and_field(self) -> None:
        rospy.set_param("/bad_rules/rules", [{"name": "typo", "all": [
            {"key": "label", "op": "==", "value": "1"}], "record": {"topics": ["/a"], "before": -1}}])
        proc = subprocess.run(["rosrun", "ml_bridge", "server", "__name:=bad_rules"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        out = proc.stdout.decode(errors="replace")
        self.assertEqual(proc.returncode, 1, out)
        self.assertIn("ml_bridge cannot start: ~rules[0] 'typo': record.before", out)
        self.assertNotIn("Traceback", out)


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "rules_test", RulesTest, sys.argv)
