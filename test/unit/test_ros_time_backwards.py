"""ROS time going back (a bag loop with --clock, a simulator reset) stops none of the node's
timers: /diagnostics and the ~train action's status keep coming (a real master, sim time)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.ros.processes import free_port, stop

NODE = Path(__file__).resolve().parent / "clock_jump_node.py"


def test_diagnostics_and_the_train_status_keep_coming_after_time_goes_back(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/",
               ROS_HOME=str(tmp_path / "ros"), ROS_LOG_DIR=str(tmp_path / "log"))
    master = subprocess.Popen(["rosmaster", "--core", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        proc = subprocess.run([sys.executable, str(NODE), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    finally:
        stop(master)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert min(result["before"].values()) >= 3, out  # the clock drives both
    assert min(result["after"].values()) >= 3, out  # and both survive the jump back
