"""A ROS service whose connections are all served by one thread, requests that arrive together
handled as one batch (``~predict``).

rospy gives every service connection a thread of its own that blocks in ``recv``. With eight
clients calling at once, each call then pays for waking its thread and for that thread's turn at
the GIL against the others; one thread answering every connection from a ``select`` loop pays
neither (the figures are in bench/NOTES.md). One thread also sees the requests that arrived
together, so the handler gets them as one list and can join them into one model call.

:class:`LoopedService` is a ``rospy.Service`` (registered with the master, found by
``rosservice``, called by any ROS client): rospy still accepts each connection and reads its
header; the connection is then handed to the loop instead of to a thread of its own. The wire
format is rospy's (:mod:`ml_bridge.ros.service_wire`).
"""
import selectors
import socket
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import genpy
import rospy

from ml_bridge.core.threads import ThreadOwner
from ml_bridge.ros.service_wire import ServiceConnection, answer_frame, error_frame

#: The service's handler: the requests that arrived together -> one response for each, in
#: order (a response, something rospy converts to one, or an exception to report instead).
BatchHandler = Callable[[List[Any]], Sequence[Any]]


class _Answered:
    """A request answered before the handler: ``error`` is sent as it is (ok byte 0), or
    ``response`` (a response, or an exception) as the handler's would be."""

    __slots__ = ("error", "response")

    def __init__(self, error: str = "", response: Any = None) -> None:
        self.error = error
        self.response = response


#: What the loop found on a connection: a deserialized request, or an answer already.
_Item = Tuple[ServiceConnection, Any]


class LoopedService(rospy.Service, ThreadOwner):
    """``rospy.Service(name, service_class, ...)`` whose connections one thread serves.

    ``handle_many`` gets the requests that arrived together (from one or several connections,
    in arrival order) and returns a response for each. A request longer than
    ``max_request_bytes`` is read and discarded, and answered with an error (``hint`` says
    what bounds it), as is one that does not deserialize; the connection stays open for the
    next. ``screen`` sees each request's bytes before they are deserialized and may answer it
    there (a response, or an exception to report), e.g. a count that is wrong before genpy
    builds millions of objects; it returns None to let the request through. Every connection's
    answers go out in the order of its requests. :meth:`close` (or :meth:`shutdown`, rospy's
    name for it) unregisters the service and ends the loop, closing its connections.
    """

    def __init__(self, name: str, service_class: Any, handle_many: BatchHandler,
                 max_request_bytes: int = 1 << 32, hint: str = "",
                 screen: Optional[Callable[[bytes], Any]] = None) -> None:
        # Everything the loop needs exists before the base class registers the service: a
        # client may connect as soon as the master knows it.
        self._handle_many = handle_many
        self._screen = screen
        self.max_request_bytes = max_request_bytes
        self._too_large = f"request too large: more than {max_request_bytes} bytes{hint}"
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a full pipe already holds a wake-up
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()  # guards the two below
        self._arrived: List[ServiceConnection] = []  # connections rospy accepted, not yet in the loop
        self._stopped = False
        self._reason = ""  # why it shuts down, for rospy's log
        try:
            # rospy.Service's: it is untyped, so mypy takes ThreadOwner's signature for it
            super().__init__(name, service_class, self._handle_one)  # type: ignore[call-arg]
        except BaseException:  # e.g. the name is taken: nothing of the loop stays open
            self._close_selector()
            raise
        ThreadOwner.__init__(self, f"service {self.resolved_name}")
        self.start()

    # -- what rospy calls -----------------------------------------------------------------------
    def handle(self, transport: Any, header: Dict[str, str]) -> None:
        """Called by rospy on a thread of its own for each new connection: hands it to the loop
        (rospy's own method would serve it here until it closes)."""
        if header.get("probe") == "1" or transport.socket is None:  # a probe wants the header
            transport.close()                                         # only; None: closed
            return
        persistent = header.get("persistent", "").lower() in ("1", "true")
        with self._lock:
            if self._stopped:
                transport.close()
                return
            self._arrived.append(ServiceConnection(transport, persistent))
        self._wake()

    def shutdown(self, reason: str = "") -> None:
        """Stops the loop, closing its connections, and unregisters the service (rospy); does
        not wait for the loop to end (:meth:`close` does)."""
        self._reason = reason
        self.close(0)

    def _signal_stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake()
        super().shutdown(self._reason)

    def _handle_one(self, request: Any) -> Any:
        """The handler rospy knows: one request through ``handle_many``."""
        response = self._handle_many([request])[0]
        if isinstance(response, BaseException):
            raise response
        return response

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopped:
            try:
                self._turn(self._selector.select())
            except Exception as err:  # a bug of ours: log it, keep serving the others
                rospy.logerr("%s: serving loop: %s: %s", self.resolved_name,
                             type(err).__name__, err)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:  # a connection (None: the wake-up pipe)
                self._close(key.data)
        with self._lock:
            for conn in self._arrived:
                conn.close()
            self._arrived = []
        self._close_selector()

    def _close_selector(self) -> None:
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _turn(self, ready: List[Tuple[selectors.SelectorKey, int]]) -> None:
        """Reads every ready connection, answers the whole requests found as one batch."""
        batch: List[_Item] = []
        for key, events in ready:
            conn = key.data
            if conn is None:
                self._adopt()
                continue
            try:
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ and not conn.closed:
                    self._read(conn, batch)
            except Exception as err:  # a bug of ours: this connection goes, the others stay
                rospy.logerr("%s: closing a connection: %s: %s", self.resolved_name,
                             type(err).__name__, err)
                self._close(conn)
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
            except Exception:  # closed before the loop got to it (a closed transport's socket
                conn.close()        # is None)

    def _read(self, conn: ServiceConnection, batch: List[_Item]) -> None:
        """Receives what the connection has; each whole request found goes into ``batch``."""
        bodies = conn.receive(self.max_request_bytes)
        if bodies is None:  # the client closed the connection
            self._close(conn)
            return
        for body in bodies:
            batch.append((conn, _Answered(error=self._too_large) if body is None else
                          self._request(body, conn)))

    def _request(self, body: bytes, conn: ServiceConnection) -> Any:
        """The request in ``body``, or the answer it gets without the handler."""
        if self._screen is not None:
            answer = self._screen(body)
            if answer is not None:
                return _Answered(response=answer)
        try:
            request = self.request_class().deserialize(body)
        except (genpy.DeserializationError, struct.error, ValueError, TypeError,
                UnicodeDecodeError) as err:
            return _Answered(error=f"request could not be deserialized as "
                                   f"{self.request_class._type}: {err}")
        request._connection_header = conn.transport.header
        return request

    def _answer(self, batch: List[_Item]) -> None:
        """Runs the handler on the batch's requests and sends every answer, in order."""
        requests = [item for _, item in batch if not isinstance(item, _Answered)]
        responses: List[Any] = []
        failed = ""
        if requests:
            try:
                responses = list(self._handle_many(requests))
                if len(responses) != len(requests):
                    raise RuntimeError(f"the handler answered {len(responses)} of "
                                       f"{len(requests)} requests")
            except Exception as err:  # rospy's behaviour: log, and tell every caller
                rospy.logerr("%s: error processing requests: %s: %s", self.resolved_name,
                             type(err).__name__, err)
                failed = f"error processing request: {err}"
        answers = iter(responses)
        for conn, item in batch:
            if isinstance(item, _Answered):
                error, response = item.error, item.response
            else:
                error, response = failed, None if failed else next(answers)
            if conn.closed:
                continue
            try:
                self._reply(conn, error, response)
            except Exception as err:  # a bug of ours: this caller is told, the others served
                self._send_error(conn, f"error processing request: {type(err).__name__}: "
                                       f"{err}")

    def _reply(self, conn: ServiceConnection, error: str, response: Any) -> None:
        self._send(conn, error_frame(error) if error else
                   answer_frame(response, self.response_class))

    def _send_error(self, conn: ServiceConnection, message: str) -> None:
        self._send(conn, error_frame(message))

    def _send(self, conn: ServiceConnection, data: Any) -> None:
        """Sends a response now, or as much as the socket takes and the rest when writable;
        the connection is not read while a response waits (clients wait for it anyway)."""
        if conn.closed:
            return
        waited = bool(conn.outbox)
        try:
            waiting = conn.send(data)
        except OSError:
            self._close(conn)
            return
        if waiting and not waited:
            self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        elif not waiting and not conn.persistent:
            self._close(conn)

    def _flush(self, conn: ServiceConnection) -> None:
        try:
            if conn.flush():
                return
        except OSError:
            self._close(conn)
            return
        if conn.persistent:
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        else:
            self._close(conn)

    def _close(self, conn: ServiceConnection) -> None:
        if conn.closed:
            return
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()
