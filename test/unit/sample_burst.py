"""A ROS node for test_ros_sample_topic_burst: publishes a burst of Samples at full speed, then waits
for the ml_bridge node's diagnostics to account for every one and prints them as JSON.

Usage: python sample_burst.py COUNT PUBLISHER_QUEUE_SIZE (with ROS_MASTER_URI set).
"""
import json
import sys
import threading
import time
from typing import Dict

import numpy as np
import rospy
from diagnostic_msgs.msg import DiagnosticArray
from ml_bridge.msg import Sample

from ml_bridge.ros.conversions import array_to_tensor

KEYS = ("samples_received", "samples_stored", "samples_refused", "samples_dropped", "samples_queued")


def main() -> int:
    count, queue_size = int(sys.argv[1]), int(sys.argv[2])
    rospy.init_node("sample_burst", disable_signals=True)
    latest: Dict[str, int] = {}
    changed = threading.Condition()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "samples_received" in values:
                with changed:
                    latest.update({k: int(values[k]) for k in KEYS})
                    changed.notify_all()

    rospy.Subscriber("/diagnostics", DiagnosticArray, on_diagnostics)
    pub = rospy.Publisher("/ml_bridge/samples", Sample, queue_size=queue_size)
    deadline = time.monotonic() + 60.0
    with changed:  # the node is up once it reports its counters
        if not changed.wait_for(lambda: bool(latest), 60.0):
            print(json.dumps({"error": "no diagnostics from the node within 60 s"}))
            return 1
    while pub.get_num_connections() < 1 and time.monotonic() < deadline:
        rospy.sleep(0.05)  # rospy has no event for "a subscriber connected"
    rng = np.random.default_rng(0)
    msgs = [Sample(dataset="burst", inputs=[array_to_tensor(np.full(64, i / count, np.float32))],
                   targets=[array_to_tensor(np.array([rng.integers(10)], np.int64))])
            for i in range(count)]
    start = time.monotonic()
    for msg in msgs:
        pub.publish(msg)
    published = time.monotonic() - start

    def accounted() -> bool:
        done = latest["samples_stored"] + latest["samples_refused"] + latest["samples_dropped"]
        return latest["samples_received"] >= count and done >= latest["samples_received"]

    with changed:
        complete = changed.wait_for(accounted, 20.0)
        result: Dict[str, object] = dict(latest)
    result.update(complete=complete, publish_s=round(published, 3),
                  total_s=round(time.monotonic() - start, 3))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
