"""Runs every test/rostest/*.test with rostest (each brings up its own master and nodes)."""
import glob
import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = sorted(glob.glob(os.path.join(HERE, "rostest", "*.test")))


@pytest.mark.parametrize("launch", TESTS, ids=[os.path.basename(t) for t in TESTS])
def test_rostest(launch: str, tmp_path: "os.PathLike[str]") -> None:
    env = dict(os.environ, ROS_HOME=str(tmp_path), ROS_LOG_DIR=str(tmp_path))
    proc = subprocess.run(["rostest", "--text", "ml_bridge", os.path.basename(launch)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    out = proc.stdout.decode(errors="replace")
    # rostest can exit 0 with a failed test inside: its summary line is what counts.
    if proc.returncode != 0 or "* RESULT: SUCCESS" not in out:
        logs = "\n".join(f"--- {p}\n" + open(p, errors="replace").read()[-6000:]
                         for p in glob.glob(os.path.join(str(tmp_path), "**", "*.log"), recursive=True))
        pytest.fail(f"rostest {launch} failed (exit {proc.returncode}):\n{out[-12000:]}\n{logs}")
