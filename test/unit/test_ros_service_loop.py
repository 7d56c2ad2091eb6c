"""LoopedService speaks rospy's service wire protocol to every connection from one thread.

No master: rospy hands a service each accepted connection by calling ``handle(transport,
header)``; here the transport's socket is one end of a socket pair and the test is the client
at the other end, writing and reading the frames a rospy ServiceProxy writes and reads.
"""
import itertools
import socket
import struct
import threading
from io import BytesIO
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rospy
from ml_bridge.msg import Tensor
from ml_bridge.srv import Predict, PredictRequest, PredictResponse

from ml_bridge.ros.service_loop import LoopedService

WAIT = 30.0
_names = itertools.count()


class Transport:
    """What rospy's TCPROSTransport gives the service: the socket, the client's header, close."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock
        self.header = {"callerid": "/test"}
        self.closed = threading.Event()

    def close(self) -> None:
        self.socket.close()
        self.closed.set()


class Client:
    """The client end of one connection."""

    def __init__(self, service: LoopedService, persistent: bool = True,
                 header: Optional[Dict[str, str]] = None) -> None:
        self.sock, theirs = socket.socketpair()
        self.sock.settimeout(WAIT)
        self.transport = Transport(theirs)
        service.handle(self.transport, {"persistent": "1" if persistent else "0", **(header or {})})

    def send(self, *requests: Any) -> None:
        self.sock.sendall(b"".join(frame(r) for r in requests))

    def receive(self) -> Tuple[bool, Any]:
        """(True, response) or (False, the error text)."""
        ok = self._exactly(1)[0]
        (size,) = struct.unpack("<I", self._exactly(4))
        body = self._exactly(size)
        return (True, PredictResponse().deserialize(body)) if ok else (False, body.decode())

    def closed_by_server(self) -> bool:
        return self.sock.recv(1) == b""

    def _exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("the service closed the connection")
            out += chunk
        return bytes(out)


def frame(request: Any) -> bytes:
    if isinstance(request, bytes):  # raw bytes: not a message
        return struct.pack("<I", len(request)) + request
    buf = BytesIO()
    request.serialize(buf)
    return struct.pack("<I", buf.tell()) + buf.getvalue()


def named(name: str, size: int = 0) -> PredictRequest:
    """A request whose input's name says which it is (``size``: bytes of data it asks back)."""
    return PredictRequest(inputs=[Tensor(name=name, shape=[size])])


class Echo:
    """Handler: answers each request with its input's name (and as many bytes of data as its
    shape asks); records the batches; can be held inside a call."""

    def __init__(self) -> None:
        self.batches: List[List[str]] = []
        self.entered = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.raise_on: Optional[str] = None

    def __call__(self, requests: List[PredictRequest]) -> List[Any]:
        names = [r.inputs[0].name if r.inputs else "" for r in requests]
        self.batches.append(names)
        self.entered.set()
        assert self.go.wait(WAIT)
        if self.raise_on in names:
            raise RuntimeError(f"cannot answer {self.raise_on}")
        return [self._answer(r, n) for r, n in zip(requests, names)]

    @staticmethod
    def _answer(request: PredictRequest, name: str) -> Any:
        if name == "none":
            return None
        if name == "refused":
            return rospy.ServiceException("refused by the handler")
        size = request.inputs[0].shape[0] if request.inputs[0].shape else 0
        return PredictResponse(success=True, message=name,
                               outputs=[Tensor(name=name, data=bytes(size))] if size else [])


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def service(echo: Echo) -> Iterator[LoopedService]:
    served = LoopedService(f"/test_loop_{next(_names)}/predict", Predict, echo,
                           max_request_bytes=10_000)
    yield served
    echo.go.set()
    served.shutdown("test over")
    served.thread.join(WAIT)


def test_requests_that_arrive_together_are_one_batch_each_answered_on_its_connection(
        service: LoopedService, echo: Echo) -> None:
    first = Client(service)
    echo.go.clear()
    first.send(named("a"))
    assert echo.entered.wait(WAIT)  # the loop is inside the handler: the rest arrive meanwhile
    others = [Client(service) for _ in range(3)]
    others[0].send(named("b1"), named("b2"))  # two on one connection: answered in order
    others[1].send(named("c"))
    others[2].send(named("d"))
    echo.go.set()
    assert first.receive() == (True, PredictResponse(success=True, message="a"))
    assert [others[0].receive()[1].message, others[0].receive()[1].message] == ["b1", "b2"]
    assert others[1].receive()[1].message == "c" and others[2].receive()[1].message == "d"
    assert echo.batches[0] == ["a"]
    assert sorted(echo.batches[1]) == ["b1", "b2", "c", "d"] and len(echo.batches) == 2
    assert echo.batches[1].index("b1") < echo.batches[1].index("b2")


def test_a_persistent_connection_stays_open_and_a_single_call_is_closed_after_its_answer(
        service: LoopedService) -> None:
    persistent = Client(service)
    for name in ("x", "y", "z"):
        persistent.send(named(name))
        assert persistent.receive()[1].message == name
    once = Client(service, persistent=False)
    once.send(named("only"))
    assert once.receive()[1].message == "only"
    assert once.closed_by_server() and once.transport.closed.wait(WAIT)
    assert not persistent.transport.closed.is_set()


def test_a_probe_is_closed_without_calling_the_handler(service: LoopedService, echo: Echo) -> None:
    probe = Client(service, header={"probe": "1"})
    assert probe.transport.closed.is_set() and probe.closed_by_server()
    assert echo.batches == []


def test_too_long_and_undeserializable_requests_get_errors_and_the_connection_serves_on(
        service: LoopedService) -> None:
    client = Client(service)
    client.send(PredictRequest(inputs=[Tensor(data=bytes(20_000))]), named("after_long"))
    ok, text = client.receive()
    assert not ok and text == "request too large: more than 10000 bytes"
    assert client.receive()[1].message == "after_long"
    client.send(b"\xff\xff\xff\x7f", named("after_garbage"))
    ok, text = client.receive()
    assert not ok and text.startswith("request could not be deserialized as ml_bridge/PredictRequest")
    assert client.receive()[1].message == "after_garbage"


def test_answers_found_before_the_handler_keep_each_connections_order(echo: Echo) -> None:
    # A request the screen answers, or one that does not deserialize, read in the same turn
    # as good ones: every answer in the order of the requests.
    def screen(body: bytes) -> Optional[PredictResponse]:
        count = struct.unpack_from("<I", body)[0]  # Tensor[] inputs comes first
        return PredictResponse(message=f"{count} tensors") if count > 1 else None

    service = LoopedService(f"/test_loop_{next(_names)}/predict", Predict, echo, screen=screen)
    try:
        client = Client(service)
        two = PredictRequest(inputs=[Tensor(name="x"), Tensor(name="y")])
        client.send(named("first"), b"\x01\x00\x00\x00\xff", two, named("last"))
        assert client.receive()[1].message == "first"
        ok, text = client.receive()
        assert not ok and "could not be deserialized" in text
        assert client.receive() == (True, PredictResponse(message="2 tensors"))
        assert client.receive()[1].message == "last"
        assert all("x" not in batch for batch in echo.batches)  # never deserialized
    finally:
        service.shutdown("test over")


def test_a_request_longer_than_one_read_arrives_whole(echo: Echo) -> None:
    service = LoopedService(f"/test_loop_{next(_names)}/predict", Predict, echo)
    try:
        client = Client(service)
        big = PredictRequest(inputs=[Tensor(name="big", data=bytes(range(256)) * 4096)])  # 1 MiB
        sender = threading.Thread(target=client.send, args=(big, named("after")))
        sender.start()  # the socket pair holds far less: the loop reads it in pieces
        assert client.receive()[1].message == "big"
        assert client.receive()[1].message == "after"
        sender.join(WAIT)
        # Each handed to the handler once, whole and in order (whether "after" came in the same
        # turn as the end of "big" depends on the scheduler, so batches are not compared).
        assert [name for batch in echo.batches for name in batch] == ["big", "after"]
    finally:
        service.shutdown("test over")


def test_handler_errors_reach_the_callers_and_the_service_serves_on(
        service: LoopedService, echo: Echo) -> None:
    client = Client(service)
    client.send(named("refused"))
    assert client.receive() == (False, "service cannot process request: refused by the handler")
    client.send(named("none"))
    assert client.receive() == (False, "service cannot process request: service handler "
                                       "returned None")
    echo.raise_on = "boom"
    client.send(named("boom"))
    assert client.receive() == (False, "error processing request: cannot answer boom")
    client.send(named("fine"))
    assert client.receive()[1].message == "fine"


def test_a_caller_that_does_not_read_its_long_answer_does_not_hold_up_the_others(
        service: LoopedService) -> None:
    slow = Client(service)
    slow.send(named("big", 8 << 20))  # 8 MiB back: far more than a socket buffer holds
    quick = Client(service)
    quick.send(named("small"))
    assert quick.receive()[1].message == "small"  # answered while "big" waits to be read
    ok, response = slow.receive()
    assert ok and response.message == "big" and len(response.outputs[0].data) == 8 << 20


def test_a_caller_that_leaves_mid_request_or_before_its_answer_harms_no_one(
        service: LoopedService, echo: Echo) -> None:
    half = Client(service)
    half.sock.sendall(frame(named("half"))[:7])
    half.sock.close()
    assert half.transport.closed.wait(WAIT)
    gone = Client(service)
    echo.go.clear()
    gone.send(named("gone"))
    assert echo.entered.wait(WAIT)
    gone.sock.close()
    echo.go.set()
    assert gone.transport.closed.wait(WAIT)
    other = Client(service)
    other.send(named("other"))
    assert other.receive()[1].message == "other"


def test_a_connection_closed_before_the_loop_takes_it_is_dropped_alone(
        service: LoopedService) -> None:
    ours, theirs = socket.socketpair()
    ours.close()
    theirs.close()  # what rospy hands over is already closed
    dead = Transport(theirs)
    service.handle(dead, {"persistent": "1"})
    assert dead.closed.wait(WAIT)
    gone = Transport(socket.socket())
    gone.socket = None  # type: ignore[assignment]  # a closed TCPROSTransport's socket
    gone.close = gone.closed.set  # type: ignore[method-assign]
    service.handle(gone, {"persistent": "1"})
    assert gone.closed.wait(WAIT)
    client = Client(service)
    client.send(named("alive"))
    assert client.receive()[1].message == "alive"


def test_a_name_already_served_is_refused_and_leaves_nothing_open(
        service: LoopedService, echo: Echo, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: List[socket.socket] = []
    pair = socket.socketpair

    def recorded() -> Tuple[socket.socket, socket.socket]:
        both = pair()
        opened.extend(both)
        return both

    monkeypatch.setattr(socket, "socketpair", recorded)
    with pytest.raises(rospy.ServiceException, match="already registered"):
        LoopedService(service.resolved_name, Predict, echo)
    assert len(opened) == 2 and all(s.fileno() == -1 for s in opened)  # closed


def test_shutdown_closes_every_connection_and_stops_the_thread(echo: Echo) -> None:
    service = LoopedService(f"/test_loop_{next(_names)}/predict", Predict, echo)
    clients = [Client(service) for _ in range(3)]
    clients[0].send(named("one"))
    assert clients[0].receive()[1].message == "one"
    service.shutdown("test")
    service.thread.join(WAIT)
    assert not service.thread.is_alive()
    assert all(c.transport.closed.is_set() and c.closed_by_server() for c in clients)
    late = Client(service)
    assert late.transport.closed.is_set()
