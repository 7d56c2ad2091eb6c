"""tcpros_patch: a client that connects and sends nothing no longer blocks new connections.

rospy's own TCPROS server (no master needed) with a recording handler, patched and not (the
negative control); then the real node on a private master, called while an idle connection is
open to its port.
"""
import os
import socket
import subprocess
import threading
from io import BytesIO
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rosgraph
import rospy
from ml_bridge.srv import GetInfo
from rosgraph.network import encode_ros_handshake_header
from rospy.impl import tcpros_base
from test_ros_master_restart import Lines

from ml_bridge.ros import tcpros_patch
from ml_bridge.ros.processes import free_port, stop

WAIT = 60.0  # bound on waits for what comes at once when the code works
HEADER = encode_ros_handshake_header({"service": "/test/svc", "md5sum": "*", "callerid": "/test"})


class Server:
    """rospy's TCPROSServer on a free port; records each connection's header, its socket's
    timeout when rospy's handler gets it, and whether the idle client was still open then."""

    def __init__(self) -> None:
        self.seen: List[Tuple[Dict[str, str], Any, bool]] = []
        self.called = threading.Condition()
        self.idle_open = True  # the test clears it before it closes its idle client
        self.server = tcpros_base.TCPROSServer(port=0)
        self.server.service_connection_handler = self._handle
        self.server.start_server()
        self.port = int(self.server.get_address()[1])

    def _handle(self, sock: socket.socket, _addr: Any, header: Dict[str, str]) -> None:
        with self.called:
            self.seen.append((header, sock.gettimeout(), self.idle_open))
            self.called.notify_all()
        sock.close()

    def wait(self, count: int, timeout: float = WAIT) -> bool:
        with self.called:
            return self.called.wait_for(lambda: len(self.seen) >= count, timeout)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)


@pytest.fixture
def patched() -> Iterator[None]:
    tcpros_patch.apply(timeout=1.0)
    yield
    tcpros_patch.remove()


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    yield made
    made.server.shutdown()


def test_a_new_connection_is_served_while_an_idle_one_is_open() -> None:
    tcpros_patch.apply(timeout=10 * WAIT)  # the idle client outlives the test's waits
    server = Server()  # built after apply, as the node applies it before init_node
    try:
        with server.connect(), server.connect() as caller:
            caller.sendall(HEADER)
            assert server.wait(1), "the second connection was not served"
        header, timeout, idle_open = server.seen[0]
        assert header["service"] == "/test/svc" and idle_open
        assert timeout is None  # rospy's handler gets the socket back in blocking mode
    finally:
        server.server.shutdown()
        tcpros_patch.remove()


def test_a_client_that_sends_no_header_is_dropped_after_the_timeout(patched: None) -> None:
    server = Server()
    try:
        with server.connect() as idle:
            assert idle.recv(1) == b""  # closed by the server (the client's own timeout: WAIT)
        with server.connect() as caller:  # and the server goes on serving
            caller.sendall(HEADER)
            assert server.wait(1)
    finally:
        server.server.shutdown()


def test_the_negative_control_unpatched_rospy_serves_no_one_while_an_idle_client_is_open(
        server: Server) -> None:
    assert not tcpros_patch.applied()
    idle = server.connect()
    with server.connect() as caller:
        caller.sendall(HEADER)
        # rospy's accept thread is in recv on the idle client: nothing can be served (waiting
        # longer could not change that), until the idle client goes away
        assert not server.wait(1, timeout=1.0)
        server.idle_open = False
        idle.close()
        assert server.wait(1)
    assert server.seen[0][2] is False


def test_a_server_that_already_runs_is_patched_too(server: Server,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcpros_base, "_tcpros_server", server.server)  # rospy's singleton
    tcpros_patch.apply(timeout=10 * WAIT)
    try:
        with server.connect(), server.connect() as caller:
            caller.sendall(HEADER)
            assert server.wait(1)
            assert server.seen[0][2]
    finally:
        tcpros_patch.remove()


def test_outbound_header_reads_are_left_alone(patched: None) -> None:
    """This node's own subscriptions and calls read headers too: no timeout is set on them."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(30.0)
        theirs.sendall(HEADER)
        header = tcpros_base.read_ros_handshake_header(ours, BytesIO(), 4096)
        assert header["callerid"] == "/test" and ours.gettimeout() == 30.0


def test_a_bad_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0 seconds, got 0"):
        tcpros_patch.apply(timeout=0)
    assert not tcpros_patch.applied()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Dict[str, str]]:
    uri = f"http://127.0.0.1:{free_port()}/"
    env = dict(os.environ, ROS_MASTER_URI=uri, ROS_HOME=str(tmp_path / "ros"),
               ROS_LOG_DIR=str(tmp_path / "log"))
    monkeypatch.setenv("ROS_MASTER_URI", uri)  # this process's ServiceProxy asks this master
    port = uri.rsplit(":", 1)[1].strip("/")
    master = subprocess.Popen(["rosmaster", "--core", "-p", port], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    yield env
    stop(master)


def test_the_node_answers_info_while_an_idle_client_holds_a_connection(
        env: Dict[str, str], tmp_path: Path) -> None:
    node = subprocess.Popen(["rosrun", "ml_bridge", "server", "_backend:=torch",
                             "_model:=digits_mlp", f"_checkpoint_dir:={tmp_path / 'ckpt'}",
                             f"_data_root:={tmp_path / 'data'}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = Lines(node.stdout)  # type: ignore[arg-type]
    try:
        assert out.wait_for("watching it"), out.text()  # its services are registered
        uri = rosgraph.Master("/test").lookupService("/ml_bridge/info")
        host, port = uri[len("rosrpc://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=WAIT) as idle:
            answers: List[Any] = []
            answered = threading.Event()

            def call() -> None:
                try:
                    answers.append(rospy.ServiceProxy("/ml_bridge/info", GetInfo)())
                except Exception as err:  # reported by the assertion below
                    answers.append(err)
                answered.set()

            threading.Thread(target=call, daemon=True).start()  # stock rospy: it never returns
            assert answered.wait(WAIT), "~info did not answer while an idle client was connected"
            assert str(answers[0].model).startswith("digits_mlp"), answers[0]
            idle.setblocking(False)
            with pytest.raises(BlockingIOError):  # still open: the call did not wait for it
                idle.recv(1, socket.MSG_PEEK)
    finally:
        stop(node)
