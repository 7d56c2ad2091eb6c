"""The detector node a user would write by hand, the ``detect`` pipeline is compared with.

``python -m bench.handwritten_detect IMAGE_TOPIC`` subscribes to IMAGE_TOPIC and publishes
``/bench_handwritten_detect/detections`` (vision_msgs/Detection2DArray, Noetic's layout) and
``/bench_handwritten_detect/image`` (the frame with the boxes drawn), the way the tutorials
do it: everything in the rospy image callback (``queue_size=1`` and a ``buff_size`` large
enough for a frame, as the tutorials advise for images), cv_bridge in (to bgr8) and out, the
frame letterboxed with OpenCV, the torch model called under ``torch.no_grad()``, the YOLOv8
output decoded with numpy and suppressed with ``cv2.dnn.NMSBoxes``, the boxes drawn with
``cv2.rectangle`` and ``cv2.putText``. The model is the detect figures' own
(``bench.yolo_shaped``, the same seeded weights the node serves).

The decode is vectorised (numpy over every anchor at once): some tutorials loop over the
anchors in Python, which would only make this peer slower. Its NMS is class-aware, as the
pipeline's, in one ``cv2.dnn.NMSBoxes`` call (each class's boxes shifted apart by a class
offset, the trick YOLO code uses), so both sides publish the same detections.
"""
import sys
from typing import Any, Callable, Tuple

import cv2
import numpy as np
import rospy
from cv_bridge import CvBridge
from sensor_msgs.msg import Image

SIZE = 640
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45


def message_classes() -> Tuple[Any, Any, Any]:
    """(Detection2DArray, Detection2D, ObjectHypothesisWithPose): vision_msgs' own where it is
    installed (a tutorial imports them from there), else the classes ml_bridge generates at
    run time (the same definition and md5sum)."""
    from ml_bridge.ros import detection_array

    return detection_array.message_classes()


def make_callback(model: Any, pub: Any, pub_image: Any) -> Callable[[Image], None]:
    """The image callback: ``model`` the torch module, ``pub`` and ``pub_image`` what
    publishes the detections and the annotated frame (rospy Publishers in the node)."""
    import torch

    from bench.yolo_shaped import LABELS

    bridge = CvBridge()
    Detection2DArray, Detection2D, Hypothesis = message_classes()

    def callback(msg: Image) -> None:
        frame = bridge.imgmsg_to_cv2(msg, desired_encoding="bgr8")
        h, w = frame.shape[:2]
        scale = min(SIZE / h, SIZE / w)
        new_w, new_h = round(w * scale), round(h * scale)
        resized = cv2.resize(frame, (new_w, new_h)) if (new_w, new_h) != (w, h) else frame
        left, top = (SIZE - new_w) // 2, (SIZE - new_h) // 2
        padded = cv2.copyMakeBorder(resized, top, SIZE - new_h - top, left, SIZE - new_w - left,
                                    cv2.BORDER_CONSTANT, value=(114, 114, 114))
        blob = cv2.dnn.blobFromImage(padded, 1 / 255.0, swapRB=True)
        with torch.no_grad():
            output = model(torch.from_numpy(blob))[0].numpy()

        pred = output.T  # [8400, 84]
        scores = pred[:, 4:]
        class_ids = scores.argmax(axis=1)
        confidences = scores[np.arange(len(scores)), class_ids]
        keep = confidences > SCORE_THRESHOLD
        pred, class_ids, confidences = pred[keep], class_ids[keep], confidences[keep]
        # cx, cy, w, h in the padded input -> x, y, w, h in the frame
        x = (pred[:, 0] - pred[:, 2] / 2 - left) / scale
        y = (pred[:, 1] - pred[:, 3] / 2 - top) / scale
        boxes = np.stack([x, y, pred[:, 2] / scale, pred[:, 3] / scale], axis=1)
        # class-aware in one call: boxes of different classes moved apart so they never overlap
        offset = (class_ids * 4096.0)[:, None]
        shifted = np.concatenate([boxes[:, :2] + offset, boxes[:, 2:]], axis=1)
        indices = cv2.dnn.NMSBoxes(shifted.tolist(), confidences.tolist(), SCORE_THRESHOLD,
                                   NMS_IOU)

        out = Detection2DArray(header=msg.header)
        for i in np.array(indices).reshape(-1):
            bx, by, bw, bh = boxes[i]
            x1, y1 = max(0.0, bx), max(0.0, by)
            x2, y2 = min(float(w), bx + bw), min(float(h), by + bh)
            det = Detection2D(header=msg.header)
            det.bbox.center.x = (x1 + x2) / 2
            det.bbox.center.y = (y1 + y2) / 2
            det.bbox.size_x = x2 - x1
            det.bbox.size_y = y2 - y1
            det.results.append(Hypothesis(id=int(class_ids[i]), score=float(confidences[i])))
            out.detections.append(det)
            cv2.rectangle(frame, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 2)
            cv2.putText(frame, f"{LABELS[class_ids[i]]} {confidences[i]:.2f}",
                        (int(x1), max(0, int(y1) - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (0, 255, 0), 1)
        pub.publish(out)
        annotated = bridge.cv2_to_imgmsg(frame, encoding="bgr8")
        annotated.header = msg.header
        pub_image.publish(annotated)

    return callback


def main() -> None:
    """Serves until shut down."""
    from bench.yolo_shaped import yolov8n_shaped

    topic = sys.argv[1] if len(sys.argv) > 1 else "/camera/image_raw"
    model = yolov8n_shaped().model.eval()
    rospy.init_node("bench_handwritten_detect")
    pub = rospy.Publisher("~detections", message_classes()[0], queue_size=1)
    pub_image = rospy.Publisher("~image", Image, queue_size=1)
    rospy.Subscriber(topic, Image, make_callback(model, pub, pub_image), queue_size=1,
                     buff_size=2 ** 24)
    rospy.spin()


if __name__ == "__main__":
    main()
