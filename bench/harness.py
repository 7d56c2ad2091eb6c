"""A private master and the processes of a benchmark run, always torn down (process groups).

The master is started once (``rosmaster --core -p PORT``) because rospy can init this process only
once; each ml_bridge node is started as ``make demo`` does, with ``roslaunch -p PORT
ml_bridge server.launch ...`` in its own process group, and stopped before the next one.
"""
import os
import subprocess
import sys
import time
from types import TracebackType
from typing import IO, Dict, List, Optional, Sequence, Type

from ml_bridge.ros.processes import free_port, stop  # noqa: F401  (used by bench.run)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Group:
    """Processes started in their own sessions, logged to ``workdir``; ``close`` stops all."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.procs: List[subprocess.Popen[bytes]] = []
        self._logs: List[IO[bytes]] = []

    def start(self, name: str, argv: List[str],
              env: Optional[Dict[str, str]] = None) -> "subprocess.Popen[bytes]":
        """Starts ``argv`` in a new session (``env`` added to this process's environment);
        output goes to ``workdir/name.log``."""
        log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        self._logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str) -> "subprocess.Popen[bytes]":
        """Starts ``python -m module args`` from the repository root."""
        return self.start(name, [sys.executable, "-m", module, *args])

    def stop(self, proc: "subprocess.Popen[bytes]") -> None:
        """Stops one process (group) started here."""
        stop(proc)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        """Stops everything still running, newest first (the master last)."""
        for proc in reversed(self.procs):
            stop(proc)
        self.procs = []
        for log in self._logs:
            log.close()
        self._logs = []

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def start_master(group: Group, port: int) -> "subprocess.Popen[bytes]":
    """``rosmaster --core -p port`` (one process, unlike roscore, whose children leave its
    process group); waits until it answers. Sets ROS_MASTER_URI for this process."""
    os.environ["ROS_MASTER_URI"] = f"http://127.0.0.1:{port}"
    os.environ["ROS_HOME"] = os.path.join(group.workdir, "ros")
    proc = group.start("rosmaster", ["rosmaster", "--core", "-p", str(port)])
    import rosgraph

    deadline = time.time() + 60
    while not rosgraph.is_master_online():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"rosmaster did not come up; see {group.workdir}/rosmaster.log")
        time.sleep(0.2)
    return proc


def start_node(group: Group, port: int, backend: str, model: str, max_batch: int = 8,
               image: str = "", env: Optional[Dict[str, str]] = None,
               args: Sequence[str] = ()) -> "subprocess.Popen[bytes]":
    """The ml_bridge node via launch/server.launch (``env``: extra environment variables,
    ``args``: more launch arguments, e.g. ``pipeline:=segment``); waits for ``/ml_bridge/info``.
    A model from ``bench.models`` is importable: the repository root is put on PYTHONPATH."""
    import rospy

    name = model.replace(":", "_").replace(".", "_")
    work = os.path.join(group.workdir, f"{backend}_{name}")
    argv = ["roslaunch", "-p", str(port), "ml_bridge", "server.launch", f"backend:={backend}",
            f"model:={model}", f"max_batch:={max_batch}", f"image:={image}",
            f"checkpoint_dir:={work}/checkpoints", f"data_root:={work}/data", "output:=log",
            *args]
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    proc = group.start(f"node_{backend}_{name}", argv, {"PYTHONPATH": path, **(env or {})})
    deadline = time.time() + 120
    while True:
        try:
            rospy.wait_for_service("/ml_bridge/info", timeout=1.0)
            rospy.wait_for_service("/ml_bridge/predict", timeout=1.0)
            return proc
        except rospy.ROSException:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the {backend} {model} node did not come up; see "
                                   f"{group.workdir}/node_{backend}_{name}.log and "
                                   f"{group.workdir}/ros/log") from None


def node_pid(launch_pid: int) -> int:
    """The node process under roslaunch (its child running scripts/server)."""
    deadline = time.time() + 10
    while time.time() < deadline:
        children = subprocess.run(["pgrep", "-P", str(launch_pid)], capture_output=True,
                                  text=True).stdout.split()
        for child in children:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"server" in f.read():
                    return int(child)
        time.sleep(0.2)
    raise RuntimeError(f"could not find the node process under roslaunch (pid {launch_pid})")
