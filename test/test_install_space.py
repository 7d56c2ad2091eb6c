"""The package as users install it: `catkin_make install`, then the node started from the install space.

Every other test runs from the devel space, where `src/` is on the path whatever setup.py says;
a hand-written package list in setup.py once left out ``ml_bridge.pipelines`` and the installed
node could not start at all. Here the package is built into a fresh workspace and installed,
and only the install space is sourced: every module must import from it, and the node must
start from it and answer ``~info``.
"""
import os
import pkgutil
import shutil
import socket
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("package.xml", "CMakeLists.txt", "setup.py", "msg", "srv", "action", "src", "scripts",
         "launch", "config")
NOETIC = "/opt/ros/noetic/setup.bash"  # a ROS installed from packages.ros.org; Debian's needs none

pytestmark = pytest.mark.skipif(shutil.which("catkin_make") is None or shutil.which("roslaunch") is None,
                                reason="catkin_make / roslaunch not installed (make setup installs them)")


def _ros_env() -> Dict[str, str]:
    """The caller's environment without any sourced workspace: only ROS itself and the venv's python."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CMAKE_PREFIX_PATH", "ROS_PACKAGE_PATH", "PYTHONPATH", "LD_LIBRARY_PATH",
                        "PKG_CONFIG_PATH", "ROS_MASTER_URI")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _sourced(setup_bash: Path, env: Dict[str, str]) -> Dict[str, str]:
    """``env`` after ``source setup_bash``."""
    noetic = "source /opt/ros/noetic/setup.bash >/dev/null; " if Path(NOETIC).is_file() else ""
    dump = subprocess.run(["bash", "-c", f"{noetic}source '{setup_bash}' >/dev/null && env -0"], env=env,
                          check=True, capture_output=True, timeout=60).stdout
    return dict(item.split("=", 1) for item in dump.decode().split("\0") if "=" in item)


@pytest.fixture(scope="module")
def install_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding this package, built and installed; returns its install prefix."""
    ws = tmp_path_factory.mktemp("install_ws")
    pkg = ws / "src" / "ml_bridge"
    pkg.mkdir(parents=True)
    for part in PARTS:
        (pkg / part).symlink_to(REPO / part)
    prefix = ws / "install"
    env = _ros_env()
    if Path(NOETIC).is_file():
        env = _sourced(Path(NOETIC), env)
    build = subprocess.run(["catkin_make", "-C", str(ws), "install", f"-DPYTHON_EXECUTABLE={sys.executable}",
                            "-DCATKIN_ENABLE_TESTING=OFF", f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                           cwd=str(ws), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=600)
    assert build.returncode == 0, build.stdout.decode(errors="replace")[-6000:]
    return prefix


@pytest.fixture(scope="module")
def installed_env(install_space: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A shell environment that has sourced the install space only."""
    env = _sourced(install_space / "setup.bash", _ros_env())
    home = tmp_path_factory.mktemp("ros_home")
    env.update(ROS_HOME=str(home), ROS_LOG_DIR=str(home), PYTHONDONTWRITEBYTECODE="1")
    return env


def _installed_modules() -> List[str]:
    """Every module of the source tree, as users would import it."""
    return [m.name for m in pkgutil.walk_packages([str(REPO / "src" / "ml_bridge")], "ml_bridge.")]


def test_every_module_imports_from_the_install_space(install_space: Path,
                                                      installed_env: Dict[str, str]) -> None:
    modules = _installed_modules()
    assert "ml_bridge.pipelines.segment" in modules  # the walk itself sees the tree
    script = ("import importlib, os, sys\n"
              "import ml_bridge, ml_bridge.msg, ml_bridge.srv\n"
              f"where = os.path.realpath(ml_bridge.__file__)\n"
              f"assert where.startswith({str(install_space)!r}), where\n"
              "from ml_bridge.pipelines import PIPELINES, pipeline_class\n"
              "for name in PIPELINES: pipeline_class(name)\n"
              "for m in sys.argv[1:]: importlib.import_module(m)\n"
              "print('imported', len(sys.argv) - 1)\n")
    run = subprocess.run([sys.executable, "-c", script] + modules, env=installed_env, cwd=str(install_space),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"imported {len(modules)}" in run.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_master(uri: str, proc: "subprocess.Popen[bytes]", timeout: float = 60.0) -> None:
    """Returns once the master at ``uri`` answers (it takes a moment to bind its port)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            xmlrpc.client.ServerProxy(uri).getPid("/install_space_test")
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ROS master at {uri} did not come up") from None
            time.sleep(0.1)


@pytest.fixture()
def master(installed_env: Dict[str, str]) -> Iterator[Dict[str, str]]:
    """A ROS master on a free port; yields the environment that talks to it."""
    port = _free_port()
    env = dict(installed_env, ROS_MASTER_URI=f"http://127.0.0.1:{port}")
    proc = subprocess.Popen(["rosmaster", "--core", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_master(env["ROS_MASTER_URI"], proc)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_node_starts_from_the_install_space(install_space: Path, master: Dict[str, str]) -> None:
    """`roslaunch ml_bridge server.launch` from the install space: the segment pipeline serves ~info.

    A parameter an earlier launch left in the node's namespace (a ~rules list that kept writing
    bags) is gone once the node starts: server.launch clears the node's parameters first.
    """
    stale = subprocess.run(["rosparam", "set", "/ml_bridge/rules",
                            "[{name: stale, all: [{key: score, op: '>=', value: 0.0}]}]"],
                           env=master, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 0, stale.stdout + stale.stderr
    found = subprocess.run(["rospack", "find", "ml_bridge"], env=master, capture_output=True, text=True,
                           timeout=60)
    assert found.stdout.strip() == str(install_space / "share" / "ml_bridge"), found.stdout + found.stderr
    node = subprocess.Popen(["roslaunch", "ml_bridge", "server.launch", "model:=shapes_seg",
                             "pipeline:=segment", "image:=/camera/image_raw",
                             f"checkpoint_dir:={install_space}/ckpt", f"data_root:={install_space}/data"],
                            env=master, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = ("import rospy\n"
              "from ml_bridge.srv import GetInfo\n"
              "rospy.wait_for_service('/ml_bridge/info', timeout=240)\n"
              "info = rospy.ServiceProxy('/ml_bridge/info', GetInfo)()\n"
              "print('MODEL', info.backend, info.model)\n"
              "print('STALE', rospy.has_param('/ml_bridge/rules'),\n"
              "      rospy.has_param('/ml_bridge/max_batch'))\n")
    try:
        call = subprocess.run([sys.executable, "-c", client], env=master, capture_output=True, text=True,
                              timeout=300)
        alive = node.poll() is None
    finally:
        node.terminate()
        try:
            out = node.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            node.kill()
            out = node.communicate()[0].decode(errors="replace")
    assert call.returncode == 0 and "MODEL torch shapes_seg" in call.stdout, (
        f"the installed node did not answer ~info:\n{call.stdout}{call.stderr}\n"
        f"--- roslaunch:\n{out[-6000:]}")
    assert alive, out[-6000:]
    assert "STALE False True" in call.stdout, call.stdout
    assert "ModuleNotFoundError" not in out
