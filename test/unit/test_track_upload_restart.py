"""The whole node across a SIGKILL: a detect node with ``~track`` whose rule on ended tracks
uploads to a server that is down is killed with its events pending; a new node on the same
``~record_dir`` sends them once the server, after refusing a few tries, takes them (real
processes: a master, the node, crossing_feed.py playing the video, an HTTP server thread)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import crossing_video as video
from http_inbox import Inbox

from ml_bridge.ros.processes import free_port, stop

HERE = Path(__file__).resolve().parent
LABELS = HERE.parent / "rostest" / "blob_labels.txt"
NODE = "/chain"
#: Bound on each wait: a node starting, or the video played, on a loaded machine.
WAIT = 180.0


def start_node(env: Dict[str, str], tmp_path: Path, url: str, log: str) -> "subprocess.Popen[bytes]":
    rule = {"name": "stayed", "upload": {"url": url},
            "all": [{"key": "track_ended", "op": "==", "value": True},
                    {"key": "track_duration", "op": ">=", "value": video.MIN_DURATION}]}
    params = {"backend": "torch", "model": "blob_detectors:torch_detector", "pipeline": "detect",
              "image": "/crossing/image_raw", "labels": str(LABELS), "track": True,
              "track_max_age": video.MAX_AGE, "record_dir": str(tmp_path / "rec"),
              "upload_retry_max": 0.2, "rules": [rule],
              "checkpoint_dir": str(tmp_path / "ckpt"), "data_root": str(tmp_path / "data")}
    args = [f"_{name}:={json.dumps(value)}" for name, value in params.items()]  # JSON is YAML
    return subprocess.Popen(["rosrun", "ml_bridge", "server", f"__name:={NODE[1:]}"] + args,
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / log, "wb"),
                            start_new_session=True)


def kill(proc: "subprocess.Popen[bytes]") -> None:
    """SIGKILL to the node's process group (rosrun and the node it runs)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def entries(outbox: Path) -> List[str]:
    """The ids of the events waiting in ``outbox`` (entries are ``<seq>-<id>.json``)."""
    return sorted(p.name.split("-", 1)[1][:-len(".json")] for p in outbox.glob("*.json"))


def test_events_pending_when_the_detect_node_is_killed_arrive_after_it_restarts(
        tmp_path: Path) -> None:
    port, server_port = free_port(), free_port()  # nobody listens on server_port at first
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/",
               ROS_HOME=str(tmp_path / "ros"), ROS_LOG_DIR=str(tmp_path / "log"),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    url = f"http://127.0.0.1:{server_port}/events"
    outbox = tmp_path / "rec" / "outbox" / NODE[1:]
    master = subprocess.Popen(["rosmaster", "--core", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    inbox = None
    second = None
    try:
        first = start_node(env, tmp_path, url, "first.log")
        try:
            feed = subprocess.run([sys.executable, str(HERE / "crossing_feed.py"), NODE], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=WAIT)
            out = feed.stdout.decode(errors="replace")
            assert feed.returncode == 0, out + (tmp_path / "first.log").read_text()
            fired = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
            assert len(fired["track_ids"]) == len(video.qualifying())
            deadline = time.monotonic() + WAIT
            while len(entries(outbox)) < len(fired["track_ids"]):
                assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
                time.sleep(0.1)  # polling a directory, which has no event to wait on
        finally:
            kill(first)
        pending = entries(outbox)
        assert len(pending) == len(fired["track_ids"])  # the kill took none
        inbox = Inbox(refuse=2, port=server_port)
        second = start_node(env, tmp_path, url, "second.log")
        arrived = inbox.wait_for(lambda reqs: {json.loads(r.body)["id"] for r in reqs
                                               if r.status == 200} >= set(pending), WAIT)
        assert arrived, (tmp_path / "second.log").read_text()
    finally:
        if second is not None:
            kill(second)  # done with it: what it would do on a clean stop is not tested here
        if inbox is not None:
            inbox.close()
        stop(master)
    assert [r.status for r in inbox.requests[:3]] == [503, 503, 200]
    bodies = [json.loads(r.body) for r in inbox.accepted("POST")]
    assert sorted(b["id"] for b in bodies) == pending  # each once: ids unique
    assert sorted(b["rows"][0]["track_id"] for b in bodies) == sorted(fired["track_ids"])
    assert all(b["rule"] == "stayed" and b["node"] == NODE for b in bodies)
