#!/usr/bin/env python3
"""Integration test of ``pipeline:=detect``: run by detect.test.

Two detector nodes (torch and TensorFlow, hand-built blob detectors loaded as factories, labels
from a text file) watch one camera; a third node runs the ``objects`` pipeline on the torch
detector's ``~detections``. Frames with coloured rectangles at known places are published;
each detector's ``~detections`` must box them (IoU >= 0.7) with the right class, carry the
frame's header and Noetic's md5sum, and the objects node must classify every box. A frame
that cannot be read is skipped and the nodes serve the next one.
"""
import os
import sys
import threading
import time
import unittest
from typing import Any, Dict, List, Optional, Sequence, Tuple

import rospy
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import ObjectPredictions
from sensor_msgs.msg import Image

import rostest
from ml_bridge.ros.conversions import array_to_image
from ml_bridge.ros.detections import message_class

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
from blob_detectors import COLOURS, blob_frame

#: vision_msgs/Detection2DArray's md5sum in Noetic (vision_msgs 0.0.x; see
#: test/unit/test_ros_detection_array.py for where it comes from).
NOETIC_MD5 = "402071f61477de256df9f1aa45e6e4c8"
DETECTORS = ("/detector_torch", "/detector_tensorflow")
HEIGHT, WIDTH = 120, 160
Blobs = List[Tuple[str, Tuple[int, int, int, int]]]
#: Each frame: rectangles of distinct colours (the detectors report one box per colour).
SCENES: List[Blobs] = [
    [("red", (10, 10, 50, 50)), ("blue", (90, 60, 140, 110))],
    [("green", (60, 20, 110, 60))],
    [("blue", (5, 70, 45, 115)), ("green", (70, 5, 120, 45)), ("red", (110, 70, 155, 115))],
]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


class Inbox:
    """Messages of one topic by stamp; waits on a condition, never on a sleep."""

    def __init__(self, topic: str, msg_type: Any) -> None:
        self.cond = threading.Condition()
        self.by_stamp: Dict[rospy.Time, Any] = {}
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=100)

    def _got(self, msg: Any) -> None:
        if isinstance(msg, rospy.AnyMsg):  # typed by what the publisher announced
            header = msg._connection_header
            cls = message_class(header["type"], header["message_definition"], header["md5sum"])
            typed = cls().deserialize(msg._buff)
            typed._connection_header = header
            msg = typed
        with self.cond:
            self.by_stamp[msg.header.stamp] = msg
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[Any]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)


class DetectTest(unittest.TestCase):
    pub: rospy.Publisher
    detections: Dict[str, Inbox]
    objects: Inbox
    next_secs = 5000

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("ml_bridge_detect_test")
        for node in DETECTORS + ("/classifier",):
            rospy.wait_for_service(node + "/info", timeout=180)
        cls.pub = rospy.Publisher("/cam/image_raw", Image, queue_size=10)
        cls.detections = {d: Inbox(d + "/detections", rospy.AnyMsg) for d in DETECTORS}
        cls.objects = Inbox("/classifier/objects", ObjectPredictions)

    def frame(self, blobs: Blobs) -> Tuple[Image, rospy.Time]:
        DetectTest.next_secs += 1
        stamp = rospy.Time(self.next_secs, 987_654_321)
        msg = array_to_image(blob_frame(HEIGHT, WIDTH, blobs), "rgb8")
        msg.header.stamp, msg.header.frame_id = stamp, "cam_optical"
        return msg, stamp

    def answered(self, stamp: rospy.Time, timeout: float) -> bool:
        return all(self.detections[d].wait(stamp, timeout) is not None for d in DETECTORS) and \
            self.objects.wait(stamp, timeout) is not None

    def warm_up(self) -> None:
        """Publishes one frame until every node answers it: all connections are up."""
        msg, stamp = self.frame(SCENES[0])
        deadline = time.time() + 120
        while not self.answered(stamp, 0.5):
            self.assertLess(time.time(), deadline, "no answer to the warm-up frame")
            self.pub.publish(msg)

    def check(self, blobs: Blobs, stamp: rospy.Time) -> None:
        for node in DETECTORS:
            msg = self.detections[node].wait(stamp, 60)
            assert msg is not None, f"{node}: no detections for the frame of {stamp}"
            self.assertEqual(msg._connection_header["md5sum"], NOETIC_MD5)
            self.assertEqual(msg._connection_header["type"], "vision_msgs/Detection2DArray")
            self.assertEqual((msg.header.stamp, msg.header.frame_id), (stamp, "cam_optical"))
            found = {}
            for det in msg.detections:
                b = det.bbox
                found[COLOURS[det.results[0].id]] = (
                    b.center.x - b.size_x / 2, b.center.y - b.size_y / 2,
                    b.center.x + b.size_x / 2, b.center.y + b.size_y / 2)
                self.assertAlmostEqual(det.results[0].score, 0.9, places=5)
                self.assertEqual(len(det.source_img.data), 0)
            self.assertEqual(sorted(found), sorted(colour for colour, _ in blobs), node)
            for colour, box in blobs:
                self.assertGreaterEqual(iou(found[colour], box), 0.7, f"{node} {colour}")
        objects = self.objects.wait(stamp, 60)
        assert objects is not None, f"the objects node did not classify the frame of {stamp}"
        self.assertEqual(objects.header.frame_id, "cam_optical")
        first = self.detections[DETECTORS[0]].wait(stamp, 0)
        assert first is not None
        torch_order = [COLOURS[d.results[0].id] for d in first.detections]
        self.assertEqual([o.label for o in objects.objects], torch_order)

    def test_1_boxes_headers_md5_and_the_chained_classifier(self) -> None:
        self.warm_up()
        for blobs in SCENES:
            msg, stamp = self.frame(blobs)
            self.pub.publish(msg)
            self.check(blobs, stamp)

    @staticmethod
    def stream_errors() -> Dict[str, int]:
        """Each detector's stream ``errors`` counter, from its next diagnostics."""
        errors: Dict[str, int] = {}
        deadline = time.time() + 60
        while len(errors) < len(DETECTORS) and time.time() < deadline:
            msg = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=30)
            for status in msg.status:
                node = "/" + status.name.split(":")[0]
                if node in DETECTORS and status.name.endswith(": model"):
                    errors[node] = sum(int(kv.value) for kv in status.values
                                       if kv.key.startswith("stream ")
                                       and kv.key.endswith(": errors"))
        return errors

    def test_2_a_bad_frame_is_skipped_and_the_nodes_serve_on(self) -> None:
        self.warm_up()
        before = self.stream_errors()
        bad = Image(height=10, width=10, encoding="rgb8", step=30, data=bytes(5))
        DetectTest.next_secs += 1
        bad.header.stamp = rospy.Time(self.next_secs, 0)
        self.pub.publish(bad)
        # Nothing follows it until both detectors have refused it (a later frame would win).
        deadline = time.time() + 60
        while not all(n in before and self.stream_errors().get(n, 0) > before[n] for n in DETECTORS):
            self.assertLess(time.time(), deadline, "the bad frame was not counted as an error")
        msg, stamp = self.frame(SCENES[2])
        self.pub.publish(msg)
        self.check(SCENES[2], stamp)
        for node in DETECTORS:
            self.assertNotIn(bad.header.stamp, self.detections[node].by_stamp)


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "detect_test", DetectTest, sys.argv)
