#!/usr/bin/env python3
"""Integration test of ``pipeline:=objects``: run by objects_<backend>.test.

The node serves ``shapes_crop`` with two cameras: ``left`` gets its boxes as
vision_msgs/Detection2DArray, ``right`` as darknet_ros_msgs/BoundingBoxes. Neither package is
installed: this test builds both classes at run time from their definitions, as the node does.
It trains the model through ``~train``, then publishes synthetic frames with several shapes
at known places plus their detections, stamped like the frame, and checks ``~<camera>/objects``:
one entry per box, in order, the square crop, the frame's header, the shape's class; then that
detections without a frame produce nothing and are counted in diagnostics.
"""
import math
import os
import sys
import threading
import time
import unittest
from typing import Any, Dict, List, Optional, Tuple

import actionlib
import numpy as np
import rospy
from actionlib_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import ObjectPredictions, TrainAction, TrainGoal
from sensor_msgs.msg import Image

import rostest
from ml_bridge.core.synthetic import SHAPE_LABELS, contrasting_color, draw_shape, textured_background
from ml_bridge.pipelines.objects import Box, square_crop
from ml_bridge.ros.conversions import array_to_image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "unit"))
from detection_msgs import bounding_boxes, detection2d_array, detection_class

NS = "/ml_bridge"
CAMERAS = ("left", "right")
KIND = {"left": "vision_msgs/Detection2DArray", "right": "darknet_ros_msgs/BoundingBoxes"}
HEIGHT, WIDTH, CELL = 128, 192, 64
FRAMES = 40
#: A detector's box is a little larger than the object.
PADDING = 1.2
#: Each shape: (label, box (x_center, y_center, width, height)).
Shapes = List[Tuple[str, Tuple[float, float, float, float]]]


class Inbox:
    """ObjectPredictions of one camera by stamp; waits on a condition, never on a sleep."""

    def __init__(self, topic: str) -> None:
        self.cond = threading.Condition()
        self.by_stamp: Dict[rospy.Time, ObjectPredictions] = {}
        self.sub = rospy.Subscriber(topic, ObjectPredictions, self._got, queue_size=100)

    def _got(self, msg: ObjectPredictions) -> None:
        with self.cond:
            self.by_stamp[msg.header.stamp] = msg
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[ObjectPredictions]:
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)


def scene(rng: np.random.Generator) -> Tuple[np.ndarray, Shapes]:
    """A frame with 2..5 shapes, one per 64 x 64 cell (none overlap), in random order."""
    image = textured_background(rng, HEIGHT, WIDTH)
    shapes: Shapes = []
    cells = rng.permutation((HEIGHT // CELL) * (WIDTH // CELL))[:int(rng.integers(2, 6))]
    for cell in cells:
        row, col = divmod(int(cell), WIDTH // CELL)
        cx = col * CELL + CELL / 2 + float(rng.uniform(-5, 5))
        cy = row * CELL + CELL / 2 + float(rng.uniform(-5, 5))
        kind = int(rng.integers(1, 4))
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        color = contrasting_color(rng, image[int(cy), int(cx)].astype(np.float64))
        draw_shape(image, mask, kind, (cx, cy), float(rng.uniform(18, 30)), color.tolist(),
                   float(rng.uniform(0, 2 * math.pi)))
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        shapes.append((SHAPE_LABELS[kind], ((x0 + x1) / 2.0, (y0 + y1) / 2.0,
                                            (x1 - x0) * PADDING, (y1 - y0) * PADDING)))
    return image, shapes


def corners(box: Tuple[float, float, float, float]) -> Tuple[int, int, int, int]:
    """darknet's integer xmin, ymin, xmax, ymax of a box."""
    cx, cy, w, h = box
    return (int(round(cx - w / 2)), int(round(cy - h / 2)), int(round(cx + w / 2)),
            int(round(cy + h / 2)))


def dropped(values: Dict[str, str]) -> int:
    """Detections a stream dropped for want of their frame (at once, or after waiting)."""
    return sum(int(values.get(k, 0)) for k in ("detections_unmatched", "detections_expired"))


class ObjectsTest(unittest.TestCase):
    backend: str
    epochs: int
    version: int = 0
    client: actionlib.SimpleActionClient
    images: Dict[str, rospy.Publisher]
    detections: Dict[str, rospy.Publisher]
    classes: Dict[str, type]
    inboxes: Dict[str, Inbox]
    next_secs = 3000

    @classmethod
    def setUpClass(cls) -> None:
        rospy.init_node("ml_bridge_objects_test")
        cls.backend = rospy.get_param("~backend")
        cls.epochs = int(rospy.get_param("~epochs"))
        rospy.wait_for_service(NS + "/info", timeout=180)
        cls.client = actionlib.SimpleActionClient(NS + "/train", TrainAction)
        assert cls.client.wait_for_server(rospy.Duration(60))
        cls.classes = {c: detection_class(KIND[c]) for c in CAMERAS}
        cls.images = {c: rospy.Publisher(f"/{c}/image_raw", Image, queue_size=10) for c in CAMERAS}
        cls.detections = {c: rospy.Publisher(f"/{c}/detections", cls.classes[c], queue_size=10)
                          for c in CAMERAS}
        cls.inboxes = {c: Inbox(f"{NS}/{c}/objects") for c in CAMERAS}

    def stamp(self) -> rospy.Time:
        ObjectsTest.next_secs += 1
        return rospy.Time(self.next_secs, 123_456_789)  # nanoseconds a float would round off

    def frame_msg(self, camera: str, image: np.ndarray, stamp: rospy.Time) -> Image:
        msg = array_to_image(image, "rgb8")
        msg.header.stamp = stamp
        msg.header.frame_id = f"{camera}_optical"
        return msg

    def detections_msg(self, camera: str, stamp: rospy.Time, shapes: Shapes) -> Any:
        """The camera's detections type, stamped like the frame (darknet: ``image_header``).
        Detection2DArray names the camera's frame_id (a differing one would not match);
        darknet's leaves it empty (matched by stamp alone): the result must carry the frame's
        header."""
        if KIND[camera].startswith("vision_msgs"):
            return detection2d_array(self.classes[camera], stamp.secs, stamp.nsecs,
                                     f"{camera}_optical", [box for _, box in shapes])
        return bounding_boxes(self.classes[camera], stamp.secs, stamp.nsecs, "",
                              [corners(box) for _, box in shapes])

    def boxes_of(self, camera: str, shapes: Shapes) -> List[Box]:
        """The boxes as the node reads them (darknet's are whole pixels)."""
        if KIND[camera].startswith("vision_msgs"):
            return [Box(*box) for _, box in shapes]
        return [Box((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
                for x0, y0, x1, y1 in (corners(box) for _, box in shapes)]

    def publish(self, camera: str, image: np.ndarray, stamp: rospy.Time, shapes: Shapes,
                detections_first: bool = False) -> None:
        frame, dets = self.frame_msg(camera, image, stamp), self.detections_msg(camera, stamp, shapes)
        if detections_first:  # a detector faster than the camera transport
            self.detections[camera].publish(dets)
        self.images[camera].publish(frame)
        if not detections_first:
            self.detections[camera].publish(dets)

    def warm_up(self, camera: str) -> None:
        """Publishes one frame and its detections until the answer comes: every connection
        (frames, detections, ours) is up and the node computes (someone subscribes)."""
        image, shapes = scene(np.random.default_rng(7))
        stamp = self.stamp()
        deadline = time.time() + 60
        while self.inboxes[camera].wait(stamp, 0.5) is None:
            self.assertLess(time.time(), deadline, f"no objects for the {camera} warm-up frame")
            self.publish(camera, image, stamp, shapes)

    def diagnostics_until(self, camera: str, done: Any, timeout: float = 30) -> Dict[str, str]:
        """Diagnostics of the camera's stream, once ``done(values)`` holds (or the timeout)."""
        deadline = time.time() + timeout
        values: Dict[str, str] = {}
        while time.time() < deadline:
            msg = rospy.wait_for_message("/diagnostics", DiagnosticArray, timeout=20)
            status = [s for s in msg.status if "model" in s.name]
            prefix = f"stream {camera}: "
            values = {kv.key[len(prefix):]: kv.value for kv in status[0].values
                      if kv.key.startswith(prefix)}
            if done(values):
                break
        return values

    def test_1_train_through_the_action(self) -> None:
        self.client.send_goal(TrainGoal(epochs=self.epochs, dataset="shape_crops"))
        self.assertTrue(self.client.wait_for_result(rospy.Duration(900)), "training timed out")
        self.assertEqual(self.client.get_state(), GoalStatus.SUCCEEDED)
        result = self.client.get_result()
        self.assertEqual(result.epochs_completed, self.epochs)
        ObjectsTest.version = result.model_version

    def check_camera(self, camera: str, seed: int) -> None:
        self.assertTrue(self.version, "test_1 failed")
        self.warm_up(camera)
        rng = np.random.default_rng(seed)
        right = total = 0
        for i in range(FRAMES):
            image, shapes = scene(rng)
            stamp = self.stamp()
            self.publish(camera, image, stamp, shapes, detections_first=bool(i % 2))
            msg = self.inboxes[camera].wait(stamp, 60)
            assert msg is not None, f"no objects for frame {i} of {camera}"
            self.assertEqual(msg.header.frame_id, f"{camera}_optical")  # the frame's header
            self.assertEqual(msg.model_version, self.version)
            self.assertEqual([o.detection_index for o in msg.objects], list(range(len(shapes))))
            for obj, box in zip(msg.objects, self.boxes_of(camera, shapes)):
                roi = (obj.roi.x_offset, obj.roi.y_offset, obj.roi.width, obj.roi.height)
                self.assertEqual(roi, square_crop(box, WIDTH, HEIGHT))
                self.assertTrue(0.0 < obj.score <= 1.0)
            right += sum(o.label == label for o, (label, _) in zip(msg.objects, shapes))
            total += len(shapes)
        accuracy = right / total
        rospy.loginfo("objects %s (%s): %d of %d shapes right (%.3f)", camera, KIND[camera],
                      right, total, accuracy)
        self.assertGreaterEqual(accuracy, 0.95)

        # A frame whose detections hold no box: an empty list, without a model call (a call
        # takes time: inference_ms 0 says there was none), named after the served model.
        image, _ = scene(rng)
        stamp = self.stamp()
        self.publish(camera, image, stamp, [])
        msg = self.inboxes[camera].wait(stamp, 60)
        assert msg is not None, f"no objects for the frame without boxes on {camera}"
        self.assertEqual(list(msg.objects), [])
        self.assertEqual(msg.header.frame_id, f"{camera}_optical")
        self.assertEqual((msg.inference_ms, msg.model_version), (0.0, self.version))

    def test_2_detection2d_array_boxes_are_classified_in_order(self) -> None:
        self.check_camera("left", 2024)

    def test_3_darknet_boxes_are_matched_by_image_header_and_classified_in_order(self) -> None:
        self.check_camera("right", 2025)

    def test_4_detections_without_a_frame_produce_nothing_and_are_counted(self) -> None:
        self.assertTrue(self.version, "test_1 failed")
        for camera in CAMERAS:
            self.warm_up(camera)
            before = self.diagnostics_until(camera, lambda v: "detections_unmatched" in v)
            _, shapes = scene(np.random.default_rng(11))
            lost = [self.stamp() for _ in range(3)]  # frames that are never published
            for stamp in lost:
                self.detections[camera].publish(self.detections_msg(camera, stamp, shapes))
            # A frame after them (and its detections, on the same connection as theirs):
            # once its answer is in, the node has seen every lost one.
            image, shapes = scene(np.random.default_rng(12))
            stamp = self.stamp()
            self.publish(camera, image, stamp, shapes)
            self.assertIsNotNone(self.inboxes[camera].wait(stamp, 60))
            for lost_stamp in lost:
                self.assertNotIn(lost_stamp, self.inboxes[camera].by_stamp)
            target = dropped(before) + len(lost)
            after = self.diagnostics_until(camera, lambda v, n=target: dropped(v) >= n)
            self.assertEqual(dropped(after), target)
            self.assertEqual(after["detections_refused"], "0")


if __name__ == "__main__":
    rostest.rosrun("ml_bridge", "objects_test", ObjectsTest, sys.argv)
