#!/usr/bin/env python3
"""Integration test of ``pipeline:=clip``: run by clip_<backend>.test.

The node serves ``motion_clip``; this test trains it through ``~train`` on ``motion``, loads
the checkpoint the node saved into an in-process ModelServer, and checks that a camera
sequence published to the node gives exactly the windows, headers, ``window_start`` stamps
and classes that the same pipeline gives in-process, and that a stamp gap restarts the window.
"""
import sys
import threading
import time
import unittest
from typing import Dict, List, Optional, Tuple

import actionlib
import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import Prediction, TrainAction, TrainGoal
from ml_bridge.srv import GetInfo
from sensor_msgs.msg import Image

import rostest
from ml_bridge.core.server import ModelServer
from ml_bridge.core.synthetic_motion import MOTION_LABELS, motion_frames
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.ros.conversions import array_to_image

NS = "/ml_bridge"
TOPIC = "/camera/image_raw"
#: A camera at 10 frames per second.
PERIOD = rospy.Duration(0, 100_000_000)
#: Each frame: (stamp, image).
Sequence = List[Tuple[rospy.Time, np.ndarray]]


class Inbox:
    """Predictions by header stamp, in arrival order; waits on a condition, never a sleep."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_stamp: Dict[rospy.Time, Prediction] = {}
        self.order: List[rospy.Time] = []
        self.sub = rospy.Subscriber(NS + "/predictions", Prediction, self._got, queue_size=100)

    def _got(self, msg: Prediction) -> None:
        with self.cond:
            self.by_stamp[msg.header.stamp] = msg
            self.order.append(msg.header.stamp)
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[Prediction]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)


def sequence(label: int, seed: int, start: rospy.Time, n: int) -> Sequence:
    """``n`` held-out frames of one motion, stamped every PERIOD from ``start``."""
    return [(start + PERIOD * i, image) for i, image in enumerate(motion_frames(label, n, seed))]


class ClipTest(unittest.TestCase):
    backend: str
    checkpoint_dir: str
    stride: int
    max_gap: float
    epochs: int
    client: actionlib.SimpleActionClient
    pub: rospy.Publisher
    inbox: Inbox
    server: Optional[ModelServer] = None

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("ml_bridge_clip_test")
        cls.backend = rospy.get_param("~backend")
        cls.checkpoint_dir = rospy.get_param("~checkpoint_dir")
        cls.epochs = int(rospy.get_param("~epochs"))
        cls.stride = int(rospy.get_param(NS + "/clip_stride"))
        cls.max_gap = float(rospy.get_param(NS + "/max_gap"))
        rospy.wait_for_service(NS + "/info", timeout=180)
        cls.client = actionlib.SimpleActionClient(NS + "/train", TrainAction)
        assert cls.client.wait_for_server(rospy.Duration(60))
        # queue_size: a burst between two due windows must not be dropped on our side.
        cls.pub = rospy.Publisher(TOPIC, Image, queue_size=100)
        cls.inbox = Inbox()

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.server is not None:
            cls.server.close()

    def publish(self, stamp: rospy.Time, image: np.ndarray) -> None:
        msg = array_to_image(image, "rgb8")
        msg.header.stamp = stamp
        msg.header.frame_id = "camera_optical"
        self.pub.publish(msg)

    def diagnostics(self) -> Dict[str, str]:
        msg = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=20)
        status = [s for s in msg.status if "model" in s.name]
        return {kv.key: kv.value for kv in status[0].values}

    def test_1_train_through_the_action_and_load_the_same_weights(self) -> None:
        self.client.send_goal(TrainGoal(epochs=self.epochs, dataset="motion"))
        self.assertTrue(self.client.wait_for_result(rospy.Duration(900)), "training timed out")
        self.assertEqual(self.client.get_state(), GoalStatus.SUCCEEDED)
        result = self.client.get_result()
        self.assertEqual(result.epochs_completed, self.epochs)
        self.assertTrue(result.checkpoint)
        # The newest checkpoint in the node's checkpoint_dir is the one it just saved.
        server = ModelServer.load(self.backend, "motion_clip", checkpoint_dir=self.checkpoint_dir)
        ClipTest.server = server
        self.assertEqual(server.version, result.model_version)
        info = rospy.ServiceProxy(NS + "/info", GetInfo)()
        self.assertEqual(info.model_version, result.model_version)

    def warm_up(self) -> None:
        """Publishes frames of an old motion until a prediction comes back, so both of our
        connections are up and the node computes (it does only while someone subscribes).
        The real sequence starts after a gap, so none of these frames is in its windows."""
        images = motion_frames(MOTION_LABELS.index("down"), 40, 99)
        deadline = time.time() + 120
        for i in range(100_000):
            stamp = rospy.Time(500) + PERIOD * i
            self.publish(stamp, images[i % len(images)])
            with self.inbox.cond:  # any prediction: the node sees our frames and subscription
                if self.inbox.cond.wait_for(lambda: bool(self.inbox.order), 0.2):
                    return
            self.assertLess(time.time(), deadline, "no prediction for the warm-up frames")

    def send(self, frames: Sequence, due: List[int]) -> None:
        """Publishes ``frames``; after each due frame, waits for its prediction (the model
        then never falls behind, so no window is skipped)."""
        for i, (stamp, image) in enumerate(frames):
            self.publish(stamp, image)
            if i in due:
                self.assertIsNotNone(self.inbox.wait(stamp, 60), f"no prediction for frame {i}")

    def test_2_windows_headers_and_classes_match_the_in_process_pipeline(self) -> None:
        server = self.server
        assert server is not None, "test_1 failed"
        pipeline = make_pipeline("clip", server.model,
                                 {"clip_stride": self.stride, "max_gap": self.max_gap})
        length = pipeline.queue_size()  # clip_length: the model's T
        self.warm_up()
        # 40 frames of one held-out motion, then (after a gap > max_gap) another motion.
        first = sequence(MOTION_LABELS.index("right"), 2024, rospy.Time(1000), 40)
        gap = PERIOD * 39 + rospy.Duration(self.max_gap + 0.5)
        second = sequence(MOTION_LABELS.index("up"), 2025, first[0][0] + gap, length + self.stride)
        # Due: after exactly clip_length frames, then one every clip_stride frames; the gap
        # restarts the count.
        due_first = list(range(length - 1, len(first), self.stride))
        due_second = [length - 1, length - 1 + self.stride]
        self.send(first, due_first)
        self.send(second, due_second)

        # In-process: the same frames and stamps through the same pipeline and weights.
        expected: Dict[rospy.Time, Tuple[Result, rospy.Time]] = {}
        state = pipeline.new_state()
        frames = first + second
        for i, (stamp, image) in enumerate(frames):
            result = pipeline.run(Frame(image, stamp.to_sec()),
                                  lambda x: server.predict(x, timeout=60), state)
            if result is not None:
                expected[stamp] = (result, frames[i - length + 1][0])
        wanted = [first[i][0] for i in due_first] + [second[i][0] for i in due_second]
        self.assertEqual(sorted(expected), wanted)

        # Predictions arrive in order, so every one published for these frames is in by now
        # (the last due frame's came last): exactly the due frames got one.
        ours = [s for s in self.inbox.order if s >= first[0][0]]
        self.assertEqual(ours, wanted)
        for stamp in wanted:
            msg = self.inbox.by_stamp[stamp]
            result, window_start = expected[stamp]
            self.assertEqual(msg.header.frame_id, "camera_optical")
            self.assertEqual(msg.window_start, window_start)  # the first frame's stamp
            self.assertEqual(msg.model_version, server.version)
            classes = result.outputs["predictions"]
            self.assertEqual(list(msg.class_ids), classes.class_ids)
            self.assertEqual(list(msg.labels), classes.labels)
            np.testing.assert_allclose(msg.scores, classes.scores, rtol=1e-4, atol=1e-5)
        # The gap restarted the window: its first prediction covers only frames after it.
        self.assertEqual(self.inbox.by_stamp[second[length - 1][0]].window_start, second[0][0])
        # The trained model sees the motions (held-out accuracy is tested in the unit tests).
        right = [self.inbox.by_stamp[s].labels[0] == "right" for s in wanted[:len(due_first)]]
        up = [self.inbox.by_stamp[s].labels[0] == "up" for s in wanted[len(due_first):]]
        rospy.loginfo("clip: %d of %d windows of 'right' and %d of %d of 'up' recognised",
                      sum(right), len(right), sum(up), len(up))
        self.assertGreater(sum(right), len(right) / 2)
        self.assertGreater(sum(up), len(up) / 2)

        diagnostics = self.diagnostics()
        prefix = f"stream {TOPIC}: "
        self.assertEqual(diagnostics[prefix + "frames_dropped"], "0")
        self.assertEqual(diagnostics[prefix + "skipped"], "0")
        self.assertEqual(diagnostics[prefix + "out_of_order"], "0")
        self.assertGreaterEqual(int(diagnostics[prefix + "gaps"]), 2)  # warm-up -> first -> second


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "clip_test", ClipTest, sys.argv)
