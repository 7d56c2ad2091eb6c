"""Process helpers for tools that bring up a private master and nodes (demo, benchmarks)."""
import os
import signal
import socket
import subprocess


def free_port() -> int:
    """A TCP port nobody listens on now (for a private ROS master)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: "subprocess.Popen[bytes]", grace: float = 20.0) -> None:
    """SIGINT to the process's whole group (a launch and its master), then SIGTERM, SIGKILL.

    The process must have been started with ``start_new_session=True``.
    """
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue
