"""A real node on a private master exits non-zero, saying why, once its master is restarted."""
import os
import subprocess
import threading
from pathlib import Path
from typing import IO, Dict, Iterator, List

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.ros.processes import free_port, stop

#: Bound on each wait: node start-up on a loaded machine, or a master coming up.
WAIT = 180.0


class Lines:
    """Collects a process's output lines on a thread; waits for one that contains some text."""

    def __init__(self, stream: "IO[bytes]") -> None:
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: "IO[bytes]") -> None:
        for raw in stream:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


def roscore(port: int, env: Dict[str, str]) -> "subprocess.Popen[bytes]":
    return subprocess.Popen(["roscore", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture
def env(tmp_path: Path) -> Dict[str, str]:
    port = free_port()
    return dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/",
                ROS_HOME=str(tmp_path / "ros"), ROS_LOG_DIR=str(tmp_path / "log"))


@pytest.fixture
def masters(env: Dict[str, str]) -> Iterator[List["subprocess.Popen[bytes]"]]:
    started: List[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        stop(proc)


def test_the_node_exits_non_zero_naming_the_restart(env: Dict[str, str], tmp_path: Path,
                                                    masters: List["subprocess.Popen[bytes]"]) -> None:
    port = int(env["ROS_MASTER_URI"].rsplit(":", 1)[1].strip("/"))
    masters.append(roscore(port, env))
    node = subprocess.Popen(["rosrun", "ml_bridge", "server", "_backend:=torch", "_model:=digits_mlp",
                             f"_checkpoint_dir:={tmp_path / 'ckpt'}", f"_data_root:={tmp_path / 'data'}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = Lines(node.stdout)  # type: ignore[arg-type]
    try:
        assert out.wait_for("watching it"), out.text()  # registered, and the watch has seen it
        stop(masters.pop())
        masters.append(roscore(port, env))  # a new master on the same port
        code = node.wait(WAIT)
    finally:
        stop(node)
    assert code == 1, out.text()
    assert out.wait_for("ml_bridge stops: the ROS master at"), out.text()
    assert "restarted (/run_id" in out.text() and "no longer knows this node" in out.text()
