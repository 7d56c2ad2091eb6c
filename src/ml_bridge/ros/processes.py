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


def private_master(workdir: str) -> int:
    """Empties ``workdir`` and points this process's ROS environment at a new private master.

    Returns the master's port (free now); start it with ``roslaunch -p PORT ...``. ROS_HOME
    (logs) goes to ``workdir/ros``.
    """
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    port = free_port()
    os.environ["ROS_MASTER_URI"] = f"http://127.0.0.1:{port}"
    os.environ["ROS_HOME"] = os.path.join(workdir, "ros")
    return port


def wait_for_node(launch: "subprocess.Popen[bytes]", service: str, name: str,
                  timeout: float = 300.0) -> bool:
    """Waits for the master, then init_node(``name``), then waits for ``service``.

    False when ``launch`` exits or ``timeout`` passes first.
    """
    import time

    import rosgraph
    import rospy

    deadline = time.time() + timeout
    while not rosgraph.is_master_online():
        if launch.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.2)  # polling a process that has no event to wait on
    rospy.init_node(name, disable_signals=True)
    while True:
        try:
            rospy.wait_for_service(service, timeout=1.0)
            return True
        except rospy.ROSException:
            if launch.poll() is not None or time.time() > deadline:
                return False
