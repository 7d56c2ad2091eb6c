"""The package in a user's own catkin workspace: its files are visible once, after `make setup`.

`make setup` used to build its dev workspace in build/ws with links back into the package, so
once the checkout sat in `~/catkin_ws/src/`, roslaunch found every launch file twice and refused
("multiple files named [server.launch]"). These tests resolve the package as ROS tools do, in
a subprocess, from an enclosing workspace whose src/ holds this checkout.
"""
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_SH = REPO / "build" / "env.sh"

pytestmark = pytest.mark.skipif(shutil.which("roslaunch") is None or shutil.which("rospack") is None,
                                reason="ROS 1 command-line tools (roslaunch, rospack) not installed")


def _clean_env(package_path: str) -> Dict[str, str]:
    """A shell where only ``package_path`` provides packages: no sourced catkin workspace."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CMAKE_PREFIX_PATH", "ROS_PACKAGE_PATH", "PYTHONPATH")}
    env["ROS_PACKAGE_PATH"] = package_path
    return env


def _launch_files(env: Dict[str, str], cwd: Path) -> List[str]:
    """What `roslaunch --files ml_bridge server.launch` resolves to; fails the test on an error."""
    env = dict(env, ROS_HOME=str(cwd), ROS_LOG_DIR=str(cwd))  # roslaunch's log stays in the test
    run = subprocess.run(["roslaunch", "--files", "ml_bridge", "server.launch"], env=env, cwd=str(cwd),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"roslaunch could not resolve server.launch:\n{run.stdout}{run.stderr}"
    return run.stdout.split()


def test_enclosing_workspace_sees_each_launch_file_once(tmp_path: Path) -> None:
    """The checkout as ~/catkin_ws/src/ml_bridge, after `make setup` ran inside it."""
    src = tmp_path / "catkin_ws" / "src"
    src.mkdir(parents=True)
    (src / "ml_bridge").symlink_to(REPO, target_is_directory=True)
    env = _clean_env(str(src))
    found = subprocess.run(["rospack", "find", "ml_bridge"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert found.stdout.strip() == str(src / "ml_bridge"), found.stdout + found.stderr
    assert _launch_files(env, tmp_path) == [str(src / "ml_bridge" / "launch" / "server.launch")]


@pytest.mark.skipif(not ENV_SH.is_file(), reason="workspace not built (make setup)")
def test_dev_workspace_sees_each_launch_file_once(tmp_path: Path) -> None:
    """After `source build/env.sh`, from any directory: one server.launch, this checkout's."""
    dump = subprocess.run(["bash", "-c", f"source '{ENV_SH}' >/dev/null && env -0"],
                          check=True, capture_output=True, timeout=30).stdout
    env = dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)
    files = _launch_files(env, tmp_path)
    assert len(files) == 1
    assert Path(files[0]).resolve() == REPO / "launch" / "server.launch"
    for entry in env.get("ROS_PACKAGE_PATH", "").split(os.pathsep):
        where = Path(entry).resolve()
        assert where != REPO and REPO not in where.parents, \
            f"build/env.sh puts {entry} on ROS_PACKAGE_PATH: a workspace inside the package"
