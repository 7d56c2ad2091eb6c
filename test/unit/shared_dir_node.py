"""A second node recording into a shared directory, as a process of its own
(``python shared_dir_node.py DIR``): rule ``seen`` fires in the same wall-clock second as the
test's own recorder (local time fixed to one second in both processes) while the test's bag
is still being written. Prints one JSON object: the bag it announced and its record_errors.
"""
import io
import json
import sys
import time

import rospy
from std_msgs.msg import String

from ml_bridge.pipelines.rules import parse_rules
from ml_bridge.ros.recording.recorder import Recorder

SECOND = 1_700_000_000  # the second both processes name their bags by


def any_msg(text: str) -> rospy.AnyMsg:
    buff = io.BytesIO()
    String(text).serialize(buff)
    msg = rospy.AnyMsg()
    msg._buff = buff.getvalue()
    msg._connection_header = {"type": String._type, "md5sum": String._md5sum,
                              "message_definition": String._full_text, "callerid": "/b"}
    return msg


def main(directory: str) -> None:
    fixed = time.localtime(SECOND)
    time.localtime = lambda *_a: fixed  # type: ignore[assignment]  # this process only
    clock = [100.0]
    rules = parse_rules([{"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
                          "record": {"topics": ["/t"], "before": 1.0, "after": 0.5}}])
    rec = Recorder(rules, directory, 1 << 20, clock=lambda: clock[0], resolve=lambda n: n)
    announced = None
    while clock[0] <= 102.0:
        rec.receive(any_msg(f"b {clock[0]:.3f}"), "/t")
        if clock[0] == 101.0:
            announced = rec.trigger("seen")
        rec.step()
        clock[0] += 0.125
    print(json.dumps({"announced": announced, "errors": rec.counters()["record_errors"]}))


if __name__ == "__main__":
    main(sys.argv[1])
