"""A ROS node for test_ros_time_backwards: MLBridgeNode around a numpy model, under sim time whose
/clock this process publishes itself: forward from 1000 s, then back to 10 s (a bag played with
``--loop --clock``, a simulator reset). Prints, as JSON, how many of the node's /diagnostics and
``~train/status`` messages it saw stamped before the jump and after it.

Usage: python clock_jump_node.py WORKDIR (with ROS_MASTER_URI set; it sets /use_sim_time).
"""
import json
import sys
import threading
import time
from typing import Callable, Dict, List

import rosgraph
import rospy
from actionlib_msgs.msg import GoalStatusArray
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock
from test_core_server import LinearModel

from ml_bridge.core.context import Context
from ml_bridge.core.server import ModelServer
from ml_bridge.ros.node import MLBridgeNode, NodeConfig

FORWARD, BACK = 1000.0, 10.0  # sim seconds: where the clock starts, where it jumps back to
STEP = 0.1                    # sim seconds the clock advances each turn (every 20 ms or sooner)
COUNT = 3                     # messages of each kind wanted on each side of the jump
WAIT = 60.0                   # wall seconds each side may take


def main() -> int:
    workdir = sys.argv[1]
    deadline = time.monotonic() + WAIT
    while not rosgraph.is_master_online():
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no master"}))
            return 1
        time.sleep(0.1)  # a master has no readiness signal but answering
    rosgraph.Master("/clock_jump").setParam("/use_sim_time", True)
    rospy.init_node("clock_jump", disable_signals=True)
    stamps: Dict[str, List[float]] = {"diagnostics": [], "status": []}
    changed = threading.Condition()

    def note(kind: str, stamp: rospy.Time) -> None:
        with changed:
            stamps[kind].append(stamp.to_sec())
            changed.notify_all()

    def on_diagnostics(msg: DiagnosticArray) -> None:
        if any(status.name == "clock_jump: model" for status in msg.status):
            note("diagnostics", msg.header.stamp)

    rospy.Subscriber("/diagnostics", DiagnosticArray, on_diagnostics)
    rospy.Subscriber("/clock_jump/train/status", GoalStatusArray,
                     lambda msg: note("status", msg.header.stamp))
    clock = rospy.Publisher("/clock", Clock, queue_size=1)
    node = MLBridgeNode(ModelServer(LinearModel(), Context(), data_root=f"{workdir}/data"),
                        NodeConfig(record_dir=f"{workdir}/recordings"))
    now = FORWARD

    def counts(low: float, high: float) -> Dict[str, int]:
        return {kind: sum(low <= t < high for t in seen) for kind, seen in stamps.items()}

    def drive(done: Callable[[], bool]) -> None:
        nonlocal now
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            clock.publish(Clock(rospy.Time.from_sec(now)))
            now += STEP
            with changed:  # the wait paces the clock; it returns early once done
                if changed.wait_for(done, 0.02):
                    return

    try:
        drive(lambda: min(counts(FORWARD, 1e9).values()) >= COUNT)
        now = BACK
        drive(lambda: min(counts(BACK, FORWARD).values()) >= COUNT)
        with changed:
            print(json.dumps({"before": counts(FORWARD, 1e9), "after": counts(BACK, FORWARD)}))
    finally:
        node.shutdown()
        rospy.signal_shutdown("done")  # actionlib's goal thread runs until rospy shuts down
    return 0


if __name__ == "__main__":
    sys.exit(main())
