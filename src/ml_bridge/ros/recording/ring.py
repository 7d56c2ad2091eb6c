"""What the recorder keeps in memory: the last seconds of every recorded topic, and the last
message of every latching publisher.

Messages stay serialized (the bytes rospy received) with their receive time. The
:class:`Ring` holds the last ``horizon`` seconds, at most ``limit`` bytes; the :class:`Latched`
store holds, apart from that bound, the last message of each latching publisher (connection
header ``latching: '1'``) of each recorded topic, so a ``/tf_static`` or a map published once
is at the start of every bag made later, as ``rosbag record`` has it.
"""
import collections
import io
from dataclasses import dataclass
from typing import Any, Deque, Dict, FrozenSet, List, Tuple

import rospy

from ml_bridge.ros.recording.bagfile import RawMessage


@dataclass
class Message:
    """One received message, serialized, with its receive time (seconds)."""

    topic: str
    t: float
    raw: RawMessage
    header: Dict[str, str]

    @property
    def size(self) -> int:
        return len(self.raw[1])


def serialized(msg: Any) -> Tuple[RawMessage, Dict[str, str]]:
    """(type, bytes, md5sum, definition) and the connection header of a received message."""
    header: Dict[str, str] = getattr(msg, "_connection_header", None) or {}
    if isinstance(msg, rospy.AnyMsg):
        return (header["type"], bytes(msg._buff), header["md5sum"],
                header.get("message_definition", "")), header
    buff = io.BytesIO()
    msg.serialize(buff)
    return (msg._type, buff.getvalue(), msg._md5sum, msg._full_text), header


class Ring:
    """The last ``horizon`` seconds of messages, at most ``limit`` bytes (oldest dropped)."""

    def __init__(self, horizon: float, limit: int) -> None:
        self.horizon = horizon
        self.limit = limit
        self.bytes = 0
        self.dropped = 0   # messages dropped because of ``limit`` (not of age)
        self._items: Deque[Message] = collections.deque()

    def add(self, msg: Message) -> None:
        self._items.append(msg)
        self.bytes += msg.size
        while self._items and self._items[0].t < msg.t - self.horizon:
            self.bytes -= self._items.popleft().size
        while self.bytes > self.limit:
            self.bytes -= self._items.popleft().size
            self.dropped += 1

    def since(self, start: float, topics: FrozenSet[str]) -> List[Message]:
        """The messages of ``topics`` received at ``start`` or later, oldest first."""
        return [m for m in self._items if m.t >= start and m.topic in topics]

    def clear(self) -> None:
        """Forgets every message (their times belong to a timeline that ended)."""
        self._items.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


class Latched:
    """The last message of each latching publisher, by (topic, callerid), as ``rosbag record``
    keys them: several static transform publishers on ``/tf_static`` each keep theirs."""

    def __init__(self) -> None:
        self._last: Dict[Tuple[str, str], Message] = {}

    def add(self, msg: Message) -> None:
        """Keeps ``msg`` if its publisher latches (replacing that publisher's previous one)."""
        if msg.header.get("latching") == "1":
            self._last[(msg.topic, msg.header.get("callerid", ""))] = msg

    def opening(self, topics: FrozenSet[str], window: List[Message], t: float) -> List[Message]:
        """What a bag holding ``window`` (messages of ``topics``) starts with: the kept messages
        of ``topics`` it lacks, stamped ``t`` (the bag's start). Their own receive times are
        not kept: they may lie long before the bag (a gap ``rosbag play`` would sleep through)
        or in a timeline that went back since."""
        inside = {id(m) for m in window}
        return [Message(m.topic, t, m.raw, m.header) for key, m in sorted(self._last.items())
                if m.topic in topics and id(m) not in inside]

    def __len__(self) -> int:
        return len(self._last)
