"""The rules' actions as the node runs them, in a process of its own
(``python upload_node.py RECORD_DIR URL COUNT``): a node (``/upload_node``) whose rule
``seen`` uploads to URL fires on COUNT results (fed as a stream hands them to
:class:`RosRules`), waits until they are in the outbox and prints one JSON line with their
ids. Then it serves on, uploading, until it is killed.
"""
import json
import os
import sys
import threading
from types import SimpleNamespace

import numpy as np
import rospy

from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.ros.recording.rule_actions import RosRules


def main(record_dir: str, url: str, count: int) -> None:
    rospy.init_node("upload_node", disable_signals=True)
    rule = {"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
            "upload": {"url": url, "headers": {"Authorization": "Bearer ${UPLOAD_TOKEN}"}}}
    rules = RosRules([rule], record_dir, 1, [""], upload_retry_max=0.05)
    rules.start()
    stream = SimpleNamespace(camera="", topic="/cam", pipeline=SimpleNamespace(model_source="fake"))
    for i in range(count):
        rules.on_result(stream, Result(  # type: ignore[arg-type]
            frame=Frame(np.zeros((2, 2), np.uint8), stamp=100.0 + i), model=ModelStamp(3),
            inference_ms=1.5, rows=[{"label": "cat", "class_id": 1, "score": 0.9}]))
    assert rules.uploader is not None and rules.uploader.flush(60.0)
    names = rules.uploader.outbox.names()
    print(json.dumps({"pending": [n.split("-", 1)[1][:-len(".json")] for n in names],
                      "outbox": rules.uploader.outbox.directory}), flush=True)
    threading.Event().wait()  # serves until killed


if __name__ == "__main__":
    os.environ.setdefault("UPLOAD_TOKEN", "t0k3n")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
