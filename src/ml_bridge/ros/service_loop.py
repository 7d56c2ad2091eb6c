"""A ROS service whose connections are all served by one thread, requests that arrive together
handled as one batch (``~predict``).

rospy gives every service connection a thread of its own that blocks in ``recv``. With eight
clients calling at once, each call then pays for waking its thread and for that thread's turn at
the GIL against seven others: measured on this 2-core VM with the hand-written handler of the
benchmark, 170-270 µs of the node's CPU a call, and one thread answering every connection from a
``select`` loop took the same handler to 60-95 µs a call and 2-3.5x the calls per second (README,
Performance). One thread also sees the requests that arrived together, so the handler gets them
as one list and can join them into one model call.

:class:`LoopedService` is a ``rospy.Service`` (registered with the master, found by
``rosservice``, called by any ROS client): rospy still accepts each connection and reads its
header; the connection is then handed to the loop instead of to a thread of its own. The wire
format is rospy's: each request and response is a 4-byte little-endian length and the message;
a response starts with an ok byte (0 and an error string when the request failed).
"""
import selectors
import socket
import struct
import threading
from io import BytesIO
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import genpy
import rospy
from rospy.impl.tcpros_service import convert_return_to_response

#: The service's handler: the requests that arrived together -> one response for each, in
#: order (a response, something rospy converts to one, or an exception to report instead).
BatchHandler = Callable[[List[Any]], Sequence[Any]]

_LEN = struct.Struct("<I")
_ERROR = struct.Struct("<BI")
#: Bytes read from a connection per turn of the loop (more while a long request is incomplete).
RECV_BYTES = 1 << 16
_RECV_MAX = 1 << 23


class _Connection:
    """One client's connection: bytes received and not yet a whole request, bytes to send."""

    __slots__ = ("transport", "sock", "persistent", "inbox", "outbox", "skip", "closed")

    def __init__(self, transport: Any, persistent: bool) -> None:
        self.transport = transport
        self.sock: socket.socket = transport.socket
        self.persistent = persistent
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.skip = 0  # bytes still to discard of a request that was too long
        self.closed = False


class LoopedService(rospy.Service):
    """``rospy.Service(name, service_class, ...)`` whose connections one thread serves.

    ``handle_many`` gets the requests that arrived together (from one or several connections,
    in arrival order) and returns a response for each. A request longer than
    ``max_request_bytes`` is read and discarded, and answered with an error (``hint`` says
    what bounds it), as is one that does not deserialize; the connection stays open for the
    next.
    """

    def __init__(self, name: str, service_class: Any, handle_many: BatchHandler,
                 max_request_bytes: int = 1 << 32, hint: str = "") -> None:
        # Everything the loop needs exists before the base class registers the service: a
        # client may connect as soon as the master knows it.
        self._handle_many = handle_many
        self.max_request_bytes = max_request_bytes
        self._too_large = f"request too large: more than {max_request_bytes} bytes{hint}"
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already holds a wake-up
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards the two below
        self._arrived: List[_Connection] = []  # connections rospy accepted, not yet in the loop
        self._stopped = False
        self._connections: Dict[int, _Connection] = {}
        super().__init__(name, service_class, self._handle_one)
        self._thread = threading.Thread(target=self._loop, name=f"service {self.resolved_name}",
                                        daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        """The thread that serves every connection."""
        return self._thread

    # -- what rospy calls -----------------------------------------------------------------------
    def handle(self, transport: Any, header: Dict[str, str]) -> None:
        """Called by rospy on a thread of its own for each new connection: hands it to the loop
        (rospy's own method would serve it here until it closes)."""
        if header.get("probe") == "1":  # rosservice's probe only wanted the header
            transport.close()
            return
        persistent = header.get("persistent", "").lower() in ("1", "true")
        with self._lock:
            if self._stopped:
                transport.close()
                return
            self._arrived.append(_Connection(transport, persistent))
        self._wake()

    def shutdown(self, reason: str = "") -> None:
        """Unregisters the service (rospy) and stops the loop, closing its connections."""
        with self._lock:
            self._stopped = True
        self._wake()
        super().shutdown(reason)

    def _handle_one(self, request: Any) -> Any:
        """The handler rospy knows: one request through ``handle_many``."""
        response = self._handle_many([request])[0]
        if isinstance(response, BaseException):
            raise response
        return response

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stopped:
            try:
                self._turn(self._selector.select())
            except Exception as err:  # a bug of ours: log it, keep serving the others
                rospy.logerr("%s: serving loop: %s: %s", self.resolved_name,
                             type(err).__name__, err)
        for conn in list(self._connections.values()):
            self._close(conn)
        with self._lock:
            for conn in self._arrived:
                conn.transport.close()
            self._arrived = []
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _turn(self, ready: List[Tuple[selectors.SelectorKey, int]]) -> None:
        """Reads every ready connection, answers the whole requests found as one batch."""
        batch: List[Tuple[_Connection, Any]] = []
        for key, events in ready:
            conn = key.data
            if conn is None:
                self._adopt()
                continue
            if events & selectors.EVENT_WRITE:
                self._flush(conn)
            if events & selectors.EVENT_READ and not conn.closed:
                self._read(conn, batch)
        if batch:
            self._answer(batch)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # full (a wake-up is pending) or closed by the loop: nothing to do
            pass

    def _adopt(self) -> None:
        """Takes the connections rospy handed over into the loop."""
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            arrived, self._arrived = self._arrived, []
        for conn in arrived:
            try:
                conn.sock.setblocking(False)
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
            except (OSError, ValueError):  # closed before the loop got to it
                conn.closed = True
                conn.transport.close()
                continue
            self._connections[id(conn)] = conn

    def _read(self, conn: _Connection, batch: List[Tuple[_Connection, Any]]) -> None:
        """Receives what the connection has; each whole request found goes into ``batch``."""
        inbox = conn.inbox
        want = RECV_BYTES
        if len(inbox) >= 4:  # a long request: read the rest of it at once
            want = min(max(want, _LEN.unpack_from(inbox)[0] + 4 - len(inbox)), _RECV_MAX)
        try:
            data = conn.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed the connection
            self._close(conn)
            return
        inbox += data
        while not conn.closed:
            if conn.skip:
                dropped = min(conn.skip, len(inbox))
                del inbox[:dropped]
                conn.skip -= dropped
                if conn.skip:
                    return
                self._send_error(conn, self._too_large)
            if len(inbox) < 4:
                return
            size = _LEN.unpack_from(inbox)[0]
            if size > self.max_request_bytes:
                del inbox[:4]
                conn.skip = size
                continue
            if len(inbox) < 4 + size:
                return
            body = bytes(inbox[4:4 + size])
            del inbox[:4 + size]
            try:
                request = self.request_class().deserialize(body)
            except (genpy.DeserializationError, struct.error, ValueError, TypeError,
                    UnicodeDecodeError) as err:
                self._send_error(conn, f"request could not be deserialized as "
                                       f"{self.request_class._type}: {err}")
                continue
            request._connection_header = conn.transport.header
            batch.append((conn, request))

    def _answer(self, batch: List[Tuple[_Connection, Any]]) -> None:
        """Runs the handler on the batch and sends each connection its response."""
        try:
            responses = list(self._handle_many([request for _, request in batch]))
            if len(responses) != len(batch):
                raise RuntimeError(f"the handler answered {len(responses)} of {len(batch)} "
                                   f"requests")
        except Exception as err:  # rospy's behaviour: log, and tell every caller
            rospy.logerr("%s: error processing requests: %s: %s", self.resolved_name,
                         type(err).__name__, err)
            for conn, _ in batch:
                self._send_error(conn, f"error processing request: {err}")
            return
        for (conn, _), response in zip(batch, responses):
            if conn.closed:
                continue
            if isinstance(response, BaseException):
                prefix = ("service cannot process request" if
                          isinstance(response, rospy.ServiceException) else
                          "error processing request")
                self._send_error(conn, f"{prefix}: {response}")
                continue
            try:
                data = self._serialize(response)
            except Exception as err:  # rospy.ServiceException for None, genpy's for bad fields
                self._send_error(conn, f"error processing request: {err}")
                continue
            self._send(conn, data)

    def _serialize(self, response: Any) -> memoryview:
        """ok byte, length and message (a view of a buffer of its own: no copy to send)."""
        message = convert_return_to_response(response, self.response_class)
        out = BytesIO()
        out.write(b"\x01\0\0\0\0")
        message.serialize(out)
        view = out.getbuffer()
        _LEN.pack_into(view, 1, len(view) - 5)
        return view

    def _send_error(self, conn: _Connection, message: str) -> None:
        text = message.encode("utf-8")
        self._send(conn, _ERROR.pack(0, len(text)) + text)

    def _send(self, conn: _Connection, data: Union[bytes, memoryview]) -> None:
        """Sends a response now, or as much as the socket takes and the rest when writable;
        the connection is not read while a response waits (clients wait for it anyway)."""
        if conn.closed:
            return
        if conn.outbox:
            conn.outbox += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        if sent < len(data):
            conn.outbox += data[sent:]
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        elif not conn.persistent:
            self._close(conn)

    def _flush(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.outbox[:sent]
        if conn.outbox:
            return
        if conn.persistent:
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        else:
            self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._connections.pop(id(conn), None)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.transport.close()
