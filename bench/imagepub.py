"""A camera stand-in: 640x480 rgb8 frames stamped at publish time.

``python -m bench.imagepub TOPIC RATE SECONDS``: publishes at RATE Hz (0 = as fast as it can)
for SECONDS, then exits. TOPIC may name several topics separated by commas (several cameras
from one process): each frame goes to every one of them, each with its own stamp.
"""
import sys
import time

import numpy as np
import rospy
from sensor_msgs.msg import Image


def main() -> None:
    """Publishes, then exits."""
    topics, rate, seconds = sys.argv[1].split(","), float(sys.argv[2]), float(sys.argv[3])
    rospy.init_node("bench_camera", anonymous=True)
    pubs = [rospy.Publisher(topic, Image, queue_size=2, tcp_nodelay=True) for topic in topics]
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    msg = Image(height=480, width=640, encoding="rgb8", is_bigendian=0, step=640 * 3,
                data=frame.tobytes())
    msg.header.frame_id = "camera"
    deadline = time.time() + 20
    while any(p.get_num_connections() == 0 for p in pubs) and time.time() < deadline:
        time.sleep(0.02)
    period = 1.0 / rate if rate > 0 else 0.0
    end = time.perf_counter() + seconds
    next_at = time.perf_counter()
    seq = 0
    while time.perf_counter() < end and not rospy.is_shutdown():
        msg.header.seq = seq
        for pub in pubs:
            msg.header.stamp = rospy.Time.now()
            pub.publish(msg)
        seq += 1
        next_at += period
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    print(f"published {seq} frames in {seconds} s, cpu {time.process_time():.3f} s", flush=True)


if __name__ == "__main__":
    main()
