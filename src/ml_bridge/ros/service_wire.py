"""One client's connection to a :class:`~ml_bridge.ros.service_loop.LoopedService`, in rospy's
service wire format, on a non-blocking socket.

Each request is a 4-byte little-endian length and the serialized message. Each response is an
ok byte, then a length and the message (ok = 1), or a length and an error text (ok = 0).
"""
import socket
import struct
from io import BytesIO
from typing import Any, List, Optional, Union

import rospy
from rospy.impl.tcpros_service import convert_return_to_response

_LEN = struct.Struct("<I")
_ERROR = struct.Struct("<BI")
#: Bytes read from a connection per turn of the loop (more while a long request is incomplete).
RECV_BYTES = 1 << 16
_RECV_MAX = 1 << 23


def response_frame(message: Any) -> memoryview:
    """ok byte, length and message (a view of a buffer of its own: no copy to send)."""
    out = BytesIO()
    out.write(b"\x01\0\0\0\0")
    message.serialize(out)
    view = out.getbuffer()
    _LEN.pack_into(view, 1, len(view) - 5)
    return view


def error_frame(text: str) -> bytes:
    """ok byte 0, length and the UTF-8 text: what a rospy client raises ServiceException with."""
    data = text.encode("utf-8")
    return _ERROR.pack(0, len(data)) + data


def answer_frame(response: Any, response_class: Any) -> Union[bytes, memoryview]:
    """What a handler's answer sends, as rospy's own service would: the response (or what
    rospy converts to one: a dict, a tuple, a field's value), or an error frame for None, an
    exception, or fields genpy cannot serialize, in rospy's words."""
    if response is None:
        return error_frame("service cannot process request: service handler returned None")
    if isinstance(response, BaseException):
        prefix = ("service cannot process request" if
                  isinstance(response, rospy.ServiceException) else "error processing request")
        return error_frame(f"{prefix}: {response}")
    try:
        return response_frame(convert_return_to_response(response, response_class))
    except Exception as err:  # genpy's errors for bad fields
        return error_frame(f"error processing request: {err}")


class ServiceConnection:
    """Bytes received and not yet a whole request; bytes to send that the socket did not take."""

    __slots__ = ("transport", "sock", "persistent", "inbox", "outbox", "skip", "closed")

    def __init__(self, transport: Any, persistent: bool) -> None:
        self.transport = transport
        self.sock: socket.socket = transport.socket
        self.persistent = persistent
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.skip = 0  # bytes still to discard of a request that was too long
        self.closed = False

    def receive(self, max_bytes: int) -> Optional[List[Optional[bytes]]]:
        """Reads what the socket has. Returns the whole requests found, in order: each body,
        or None for one longer than ``max_bytes`` (read and discarded, never kept); None when
        the client has closed the connection."""
        inbox = self.inbox
        want = RECV_BYTES
        if len(inbox) >= 4:  # a long request: read the rest of it at once
            want = min(max(want, _LEN.unpack_from(inbox)[0] + 4 - len(inbox)), _RECV_MAX)
        try:
            data = self.sock.recv(want)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        inbox += data
        found: List[Optional[bytes]] = []
        while True:
            if self.skip:
                dropped = min(self.skip, len(inbox))
                del inbox[:dropped]
                self.skip -= dropped
                if self.skip:
                    return found
                found.append(None)
            if len(inbox) < 4:
                return found
            size = _LEN.unpack_from(inbox)[0]
            if size > max_bytes:
                del inbox[:4]
                self.skip = size
                continue
            if len(inbox) < 4 + size:
                return found
            with memoryview(inbox) as view:  # one copy of the body, then the inbox shrinks
                found.append(bytes(view[4:4 + size]))
            del inbox[:4 + size]

    def send(self, data: Union[bytes, memoryview]) -> bool:
        """Sends a response now, or as much as the socket takes and keeps the rest. Returns
        True while bytes wait for the socket to be writable (then :meth:`flush`).

        Raises:
            OSError: the connection is broken.
        """
        if self.outbox:
            self.outbox += data
            return True
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self.outbox += data[sent:]
            return True
        return False

    def flush(self) -> bool:
        """Sends what waits; True while some still does.

        Raises:
            OSError: the connection is broken.
        """
        try:
            sent = self.sock.send(self.outbox)
        except (BlockingIOError, InterruptedError):
            return True
        del self.outbox[:sent]
        return bool(self.outbox)

    def close(self) -> None:
        self.closed = True
        self.transport.close()
