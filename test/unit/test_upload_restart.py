"""The ``upload`` action across a SIGKILL: events in the outbox of a node killed while its
server was down arrive once it runs again and the server, after refusing a few tries,
takes them (real processes: a master, the node's rule actions, an HTTP server thread)."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Dict

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from http_inbox import Inbox

from ml_bridge.ros.processes import free_port, stop

NODE = Path(__file__).resolve().parent / "upload_node.py"
#: The fields of an event's JSON body, as the interface lists them.
FIELDS = {"id", "rule", "stamp", "camera", "keys", "values", "rows", "model", "model_version",
          "node", "bag"}


def told(stream: IO[bytes], timeout: float = 120.0) -> Dict[str, Any]:
    """The JSON line the process prints (among rospy's log lines)."""
    lines: queue.Queue[bytes] = queue.Queue()

    def read() -> None:
        for line in iter(stream.readline, b""):
            if line.startswith(b"{"):
                lines.put(line)
        lines.put(b"null")  # the process ended without it

    threading.Thread(target=read, daemon=True).start()
    return json.loads(lines.get(timeout=timeout)) or {}


def test_events_pending_when_the_node_is_killed_arrive_after_it_restarts(tmp_path: Path) -> None:
    port, server_port = free_port(), free_port()  # nobody listens on server_port at first
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/", UPLOAD_TOKEN="t0k3n",
               ROS_HOME=str(tmp_path / "ros"), ROS_LOG_DIR=str(tmp_path / "log"))
    master = subprocess.Popen(["rosmaster", "--core", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    url = f"http://127.0.0.1:{server_port}/events"

    def node(count: int, log: str) -> "subprocess.Popen[bytes]":
        return subprocess.Popen([sys.executable, str(NODE), str(tmp_path / "rec"), url,
                                 str(count)], env=env, stdout=subprocess.PIPE,
                                stderr=open(tmp_path / log, "wb"), start_new_session=True)

    inbox = None
    second = None
    try:
        first = node(5, "first.log")
        try:
            said = told(first.stdout)  # type: ignore[arg-type]
        finally:
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        pending = said.get("pending", [])
        assert len(pending) == 5, (tmp_path / "first.log").read_text()
        assert len(list(Path(said["outbox"]).glob("*.json"))) == 5  # the kill took none
        inbox = Inbox(refuse=2, port=server_port)
        second = node(0, "second.log")
        arrived = inbox.wait_for(lambda reqs: {json.loads(r.body)["id"] for r in reqs
                                               if r.status == 200} >= set(pending), 120.0)
        assert arrived, (tmp_path / "second.log").read_text()
    finally:
        if second is not None:
            stop(second)
        if inbox is not None:
            inbox.close()
        stop(master)
    assert [r.status for r in inbox.requests[:3]] == [503, 503, 200]
    bodies = [json.loads(r.body) for r in inbox.accepted("POST")]
    assert sorted(b["id"] for b in bodies) == sorted(pending)  # each once: ids unique
    assert all(set(b) == FIELDS for b in bodies)
    first_event = min(bodies, key=lambda b: b["stamp"])
    assert {k: v for k, v in first_event.items() if k != "id"} == {
        "rule": "seen", "stamp": 100.0, "camera": "", "keys": ["score"], "values": ["0.9"],
        "rows": [{"label": "cat", "class_id": 1, "score": 0.9, "model_version": 3,
                  "inference_ms": 1.5}],
        "model": "fake", "model_version": 3, "node": "/upload_node", "bag": ""}
    assert {r.headers["Authorization"] for r in inbox.requests} == {"Bearer t0k3n"}
