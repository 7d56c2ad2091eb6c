"""A burst of 2000 Samples at full speed into a real node is stored completely (private master)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.core.sample_store import SampleStore
from ml_bridge.ros.processes import free_port, stop

HERE = Path(__file__).resolve().parent
BURST = 2000


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Dict[str, str]]:
    """The ml_bridge node (torch digits_mlp) from server.launch, on a private master."""
    port = free_port()
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/", ROS_HOME=str(tmp_path / "ros"))
    launch = subprocess.Popen(["roslaunch", "-p", str(port), "ml_bridge", "server.launch",
                               "backend:=torch", "model:=digits_mlp", "output:=log",
                               f"data_root:={tmp_path / 'data'}",
                               f"checkpoint_dir:={tmp_path / 'ckpt'}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        yield env
    finally:
        stop(launch)


def test_a_burst_from_one_publisher_is_stored_completely_and_in_order(
        node: Dict[str, str], tmp_path: Path) -> None:
    # The publisher's own queue holds the burst: what a smaller one discards when the machine
    # is busy is lost before it is sent, where no subscriber can see it.
    publisher_queue = BURST
    burst = subprocess.run([sys.executable, str(HERE / "sample_burst.py"), str(BURST),
                            str(publisher_queue)], env=node, capture_output=True, timeout=120)
    out = burst.stdout.decode().strip().splitlines()
    assert burst.returncode == 0 and out, burst.stdout.decode()[-3000:] + burst.stderr.decode()[-3000:]
    result = json.loads(out[-1])
    assert result["complete"], result
    assert result["samples_received"] == result["samples_stored"] == BURST, result
    assert result["samples_dropped"] == result["samples_refused"] == 0, result
    data = SampleStore(str(tmp_path / "data")).load("burst")
    np.testing.assert_allclose(data.inputs[0][:, 0], np.arange(BURST) / BURST, rtol=1e-6)
    print(f"publisher queue {publisher_queue}: published in {result['publish_s']} s, "
          f"all stored after {result['total_s']} s")
