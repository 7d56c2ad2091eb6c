#!/usr/bin/env python3
"""Integration tests of ``pipeline:=segment`` with two cameras: run by segment_<backend>.test.

The node serves the untrained (seeded) ``shapes_seg``; this test node builds the same model
and pipeline in-process and checks that the node's masks are exactly that pipeline's.
"""
import sys
import threading
import time
import unittest
from typing import Any, Dict, List, Optional

import numpy as np
import rospy
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import Prediction
from ml_bridge.srv import GetInfo
from sensor_msgs.msg import Image

import rostest
from ml_bridge.core.server import ModelServer
from ml_bridge.core.synthetic import render_scene
from ml_bridge.pipelines import make_pipeline
from ml_bridge.pipelines.base import Frame, Pipeline
from ml_bridge.ros.conversions import array_to_image, image_to_array

NS = "/ml_bridge"
CAMERAS = ("left", "right")


class Inbox:
    """Messages of one topic by stamp; waits on a condition, never on a sleep."""

    def __init__(self, topic: str, msg_type: type) -> None:
        self.cond = threading.Condition()
        self.by_stamp: Dict[rospy.Time, Any] = {}
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=20)

    def _got(self, msg: Any) -> None:
        with self.cond:
            self.by_stamp[msg.header.stamp] = msg
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[Any]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)

    def close(self) -> None:
        self.sub.unregister()


def scene(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    image, _ = render_scene(np.random.default_rng(seed), height, width)
    return image


class SegmentTest(unittest.TestCase):
    backend: str
    server: ModelServer
    pubs: Dict[str, rospy.Publisher]
    pipeline: Pipeline[Any]
    stamp_seconds = 2000

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("ml_bridge_segment_test")
        cls.backend = rospy.get_param("~backend")
        rospy.wait_for_service(NS + "/info", timeout=180)
        cls.pubs = {c: rospy.Publisher(f"/{c}/image_raw", Image, queue_size=2) for c in CAMERAS}
        cls.server = ModelServer.load(cls.backend, "shapes_seg")
        cls.pipeline = make_pipeline("segment", cls.server.model, {})

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.close()

    def frame(self, camera: str, image: np.ndarray, encoding: str = "rgb8") -> Image:
        SegmentTest.stamp_seconds += 1
        msg = array_to_image(image, encoding)
        msg.header.stamp = rospy.Time(self.stamp_seconds, 250)
        msg.header.frame_id = f"{camera}_optical"
        return msg

    def send(self, camera: str, msg: Image, inboxes: List[Inbox], timeout: float = 60) -> List[Any]:
        """Publishes ``msg`` until every inbox has the answer for its stamp (connections take
        a moment to come up; the node processes the latest frame, a repeat is harmless)."""
        deadline = time.time() + timeout
        got: List[Any] = [None] * len(inboxes)
        while time.time() < deadline and not all(got):
            self.pubs[camera].publish(msg)
            got = [box.wait(msg.header.stamp, 0.5) for box in inboxes]
        self.assertTrue(all(got), f"no answer on every output for the {camera} frame")
        return got

    def in_process(self, image: np.ndarray) -> Any:
        result = self.pipeline.run(Frame(image, 0.0), lambda x: self.server.predict(x, 60))
        assert result is not None
        return result

    def diagnostics(self) -> Dict[str, str]:
        msg = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=20)
        status = [s for s in msg.status if "model" in s.name]
        return {kv.key: kv.value for kv in status[0].values}

    def test_1_mask_equals_the_in_process_pipeline_and_carries_the_header(self) -> None:
        masks = Inbox(NS + "/left/mask", Image)
        preds = Inbox(NS + "/left/predictions", Prediction)
        try:
            image = scene(1)
            msg = self.frame("left", image)
            mask_msg, pred = self.send("left", msg, [masks, preds])
            self.assertEqual(mask_msg.encoding, "mono8")
            self.assertEqual((mask_msg.height, mask_msg.width), image.shape[:2])
            self.assertEqual(mask_msg.header.frame_id, "left_optical")
            self.assertEqual(pred.header.frame_id, "left_optical")
            expected = self.in_process(image)
            np.testing.assert_array_equal(image_to_array(mask_msg), expected.outputs["mask"])
            classes = expected.outputs["predictions"]
            self.assertEqual(list(pred.class_ids), classes.class_ids)
            np.testing.assert_allclose(pred.scores, classes.scores, rtol=1e-6)
            self.assertAlmostEqual(sum(pred.scores), 1.0, places=5)
            self.assertEqual(pred.model_version, 1)
        finally:
            masks.close()
            preds.close()

    def test_2_overlay_is_computed_only_while_subscribed(self) -> None:
        masks = Inbox(NS + "/right/mask", Image)
        try:
            self.send("right", self.frame("right", scene(2)), [masks])
            self.assertEqual(self.diagnostics()["stream right: published_overlay"], "0")
        finally:
            masks.close()
        overlays = Inbox(NS + "/right/overlay", Image)
        try:
            image = scene(3)
            bgr = np.ascontiguousarray(image[:, :, ::-1])
            msg = self.frame("right", bgr, "bgr8")
            (overlay,) = self.send("right", msg, [overlays])
            self.assertEqual(overlay.encoding, "bgr8")  # the frame's encoding and size
            self.assertEqual((overlay.height, overlay.width), image.shape[:2])
            self.assertEqual(overlay.header.frame_id, "right_optical")
            expected = self.in_process(image).outputs["overlay"]  # RGB
            np.testing.assert_array_equal(image_to_array(overlay), expected)
            self.assertNotEqual(self.diagnostics()["stream right: published_overlay"], "0")
        finally:
            overlays.close()

    def test_3_two_cameras_at_once_each_get_their_own_outputs(self) -> None:
        boxes = {c: Inbox(f"{NS}/{c}/mask", Image) for c in CAMERAS}
        try:
            msgs = {c: self.frame(c, scene(10 + i, 96 + 32 * i, 128)) for i, c in enumerate(CAMERAS)}
            got: Dict[str, Any] = {}
            deadline = time.time() + 60
            while time.time() < deadline and len(got) < 2:
                for c in CAMERAS:  # both at once: the model thread may batch them together
                    if c not in got:
                        self.pubs[c].publish(msgs[c])
                for c in CAMERAS:
                    answer = boxes[c].wait(msgs[c].header.stamp, 0.5)
                    if answer is not None:
                        got[c] = answer
            self.assertEqual(sorted(got), list(CAMERAS))
            for c in CAMERAS:
                self.assertEqual(got[c].header.frame_id, f"{c}_optical")
                self.assertEqual((got[c].height, got[c].width), (msgs[c].height, msgs[c].width))
            # Neither camera's topic carries the other camera's frame.
            self.assertNotIn(msgs["right"].header.stamp, boxes["left"].by_stamp)
            self.assertNotIn(msgs["left"].header.stamp, boxes["right"].by_stamp)
        finally:
            for box in boxes.values():
                box.close()

    def test_4_a_bad_encoding_is_skipped_and_the_node_keeps_serving(self) -> None:
        masks = Inbox(NS + "/left/mask", Image)
        try:
            bad = self.frame("left", np.zeros((20, 30), np.uint16), "16UC1")
            deadline = time.time() + 30
            while self.diagnostics().get("stream left: errors", "0") == "0" and time.time() < deadline:
                self.pubs["left"].publish(bad)
            self.assertNotEqual(self.diagnostics()["stream left: errors"], "0")
            self.assertIsNone(masks.by_stamp.get(bad.header.stamp))
            self.send("left", self.frame("left", scene(4)), [masks])
            info = rospy.ServiceProxy(NS + "/info", GetInfo)()  # the node still answers
            self.assertEqual(info.model_version, 1)
        finally:
            masks.close()


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "segment_test", SegmentTest, sys.argv)
