"""A timeout on the header of every TCPROS connection this process accepts (rospy, ros_comm 1.15).

rospy accepts all inbound connections of a node (service calls, new subscribers of its topics)
on one thread, and reads each new connection's header on that thread with a blocking ``recv``
and no timeout (``rospy.impl.tcpros_base.TCPROSServer._tcp_server_callback``). One client that
connects and sends nothing (a client that dropped off Wi-Fi half-open, a port scanner, a hung
probe) blocks every new call and every new subscriber until it goes away; connections already
open keep working.

:func:`apply` changes two things in this process, and nothing else of rospy:

- the accept thread hands each accepted connection to a short-lived thread of its own, which
  runs rospy's own callback (header, then rospy's topic or service handler), so the accept loop
  never waits on a client;
- on those threads only, the header is read with a timeout of :data:`HEADER_TIMEOUT` seconds,
  and the socket goes back to blocking mode before rospy's handlers get it (they expect it).
  A connection that sends nothing for that long before its header is complete is closed,
  and rospy logs "Inbound TCP/IP connection failed: timed out".

The node applies it before ``rospy.init_node``, which starts the server.
"""
import logging
import socket
import threading
from typing import Any, Callable, Optional, Tuple

from rosgraph.network import read_ros_handshake_header
from rospy.impl import tcpros_base

log = logging.getLogger(__name__)

#: Seconds a new connection may take to send its header. A ROS client sends it right after
#: connecting; this only bounds how long a silent client holds a thread and a socket.
HEADER_TIMEOUT = 10.0

_lock = threading.Lock()
#: rospy's callback and header reader while the patch is applied (None: not applied).
_originals: Optional[Tuple[Callable[..., Any], Callable[..., Any]]] = None
_timeout = HEADER_TIMEOUT
#: ``.timeout``: set on a connection's thread until its header is read.
_local = threading.local()


def apply(timeout: float = HEADER_TIMEOUT) -> None:
    """Patches rospy's TCPROS server of this process (idempotent; ``timeout`` in seconds).

    Call it before ``rospy.init_node``; a server that already runs is patched too, for the
    connections it accepts from then on.
    """
    global _originals, _timeout
    if not timeout > 0:
        raise ValueError(f"the header timeout must be > 0 seconds, got {timeout!r}")
    with _lock:
        _timeout = timeout
        if _originals is None:
            _originals = (tcpros_base.TCPROSServer._tcp_server_callback,
                          tcpros_base.read_ros_handshake_header)
            tcpros_base.TCPROSServer._tcp_server_callback = _accepted  # type: ignore[assignment]
            tcpros_base.read_ros_handshake_header = _read_header
        _rebind_running_server()


def remove() -> None:
    """Gives rospy its own functions back (tests)."""
    global _originals
    with _lock:
        if _originals is not None:
            callback, reader = _originals
            tcpros_base.TCPROSServer._tcp_server_callback = callback  # type: ignore[assignment]
            tcpros_base.read_ros_handshake_header = reader
            _originals = None
            _rebind_running_server()


def applied() -> bool:
    """Whether :func:`apply` is in force."""
    return _originals is not None


def _rebind_running_server() -> None:
    """TCPServer keeps the bound callback it was built with: point a running one at the class's."""
    server = tcpros_base._tcpros_server
    accept_loop = getattr(server, "tcp_ros_server", None)
    if accept_loop is not None:
        accept_loop.inbound_handler = server._tcp_server_callback


def _accepted(server: Any, sock: socket.socket, client_addr: Any) -> None:
    """On rospy's accept thread: the connection goes to a thread of its own."""
    try:
        threading.Thread(target=_serve, args=(server, sock, client_addr), daemon=True,
                         name="tcpros-inbound").start()
    except RuntimeError as err:  # no thread to be had: refuse this one, keep accepting
        log.warning("inbound connection from %s refused: %s", client_addr, err)
        sock.close()


def _serve(server: Any, sock: socket.socket, client_addr: Any) -> None:
    originals = _originals
    callback = originals[0] if originals is not None else type(server)._tcp_server_callback
    _local.timeout = _timeout
    try:
        callback(server, sock, client_addr)  # rospy logs and closes a failed connection
    finally:
        _local.timeout = None


def _read_header(sock: socket.socket, buff: Any, buff_size: int) -> Any:
    """rospy's header reader, with the timeout when it reads an accepted connection's header."""
    originals = _originals
    read = originals[1] if originals is not None else read_ros_handshake_header
    timeout = getattr(_local, "timeout", None)
    if timeout is None:  # an outbound connection's header (this node subscribing, calling)
        return read(sock, buff, buff_size)
    _local.timeout = None
    sock.settimeout(timeout)
    try:
        return read(sock, buff, buff_size)
    finally:
        sock.settimeout(None)  # blocking again, as rospy's handlers expect
