"""Bag files that are complete under their final name, or not there at all.

A recording is written to ``<name>.bag.active`` and renamed to ``<name>.bag`` once closed
(and synced), so a file with the final name is always a complete, indexed bag. A node killed
while writing leaves the ``.active`` file; the next start-up renames it aside to
``<name>.bag.unfinished`` with a warning (``rosbag reindex`` recovers what reached the
disk).

A writer holds an exclusive ``flock`` on its ``.active`` file while it writes: a node
starting up in the same directory leaves a live recording of another node alone. The lock
dies with the process, so a killed writer's file is recognised as a leftover.
"""
import fcntl
import logging
import os
import time
from typing import Any, Dict, List, Optional, Tuple

import genpy

ACTIVE = ".active"          # suffix of a bag being written
UNFINISHED = ".unfinished"  # suffix a leftover is renamed to at start-up

#: A serialized message: (type, bytes, md5sum, definition).
RawMessage = Tuple[str, bytes, str, str]
log = logging.getLogger(__name__)


def bag_path(directory: str, rule: str, event_time: float, taken: Any = ()) -> str:
    """``<dir>/<rule>_<YYYY-MM-DD-HH-MM-SS>.bag`` (local time, as ``rosbag record`` names
    them), with ``_2``, ``_3``, ... when that name is in ``taken`` or any form of it is on disk."""
    stem = os.path.join(directory, f"{rule}_{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(event_time))}")
    n = 1
    while True:
        path = f"{stem}.bag" if n == 1 else f"{stem}_{n}.bag"
        if path not in taken and not any(os.path.exists(path + s) for s in ("", ACTIVE, UNFINISHED)):
            return path
        n += 1


class _RawType:
    """What rosbag's raw write wants of a message class: its md5sum (checked) and text."""

    def __init__(self, msg_type: str, md5sum: str, definition: str) -> None:
        self._type = msg_type
        self._md5sum = md5sum
        self._full_text = definition


class BagFile:
    """One bag being written under ``<path>.active``; :meth:`close` renames it to ``path``."""

    def __init__(self, path: str) -> None:
        """Creates ``<path>.active`` (it must not exist) and locks it.

        Raises:
            OSError: the file cannot be created (a full or read-only directory).
        """
        self.path = path
        self.temp = path + ACTIVE
        self.messages = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self._lock_fd: Optional[int] = os.open(self.temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            import rosbag  # only nodes that record pay for importing it

            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._bag = rosbag.Bag(self.temp, "w")
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._types: Dict[str, _RawType] = {}

    def write(self, topic: str, t: float, raw: RawMessage, header: Dict[str, str]) -> None:
        """Appends one serialized message received at ``t`` (seconds).

        ``header`` is the publisher's connection header (callerid, latching are kept, so
        ``rosbag play`` latches what was latched); type, md5sum and definition come from ``raw``.
        """
        msg_type, data, md5sum, definition = raw
        pytype = self._types.get(topic)
        if pytype is None:
            pytype = self._types[topic] = _RawType(msg_type, md5sum, definition)
        connection = {k: v for k, v in header.items() if k in ("callerid", "latching")}
        connection.update(topic=topic, type=msg_type, md5sum=md5sum, message_definition=definition)
        self._bag.write(topic, (msg_type, data, md5sum, pytype), genpy.Time.from_sec(t), raw=True,
                        connection_header=connection)
        self.messages += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def close(self) -> None:
        """Writes the index, syncs the file and renames it to its final name."""
        if self._lock_fd is None:
            return
        self._bag.close()
        os.fsync(self._lock_fd)          # the data is on disk before the name says complete
        os.replace(self.temp, self.path)
        _sync_dir(os.path.dirname(self.path) or ".")
        os.close(self._lock_fd)          # releases the lock, after the rename
        self._lock_fd = None

    def abandon(self) -> str:
        """After a failed write: closes what can be closed and renames the file aside to
        ``<path>.unfinished``; returns that name."""
        aside = self.path + UNFINISHED
        try:
            self._bag.close()
        except Exception as err:  # the write error that brought us here is reported by the caller
            log.warning("closing %s after a failed write also failed: %s", self.temp, err)
        if self._lock_fd is not None:
            if os.path.exists(self.temp):
                os.replace(self.temp, aside)
            os.close(self._lock_fd)
            self._lock_fd = None
        return aside


def _sync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_aside_leftovers(directory: str) -> List[str]:
    """Renames every ``*.bag.active`` in ``directory`` that no live writer holds to
    ``*.bag.unfinished``; returns the new names. A missing directory has none."""
    renamed: List[str] = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return renamed
    for name in names:
        if not name.endswith(".bag" + ACTIVE):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its writer finished meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live node is writing it
            os.close(fd)
            continue
        try:
            aside = path[:-len(ACTIVE)] + UNFINISHED
            os.replace(path, aside)
            renamed.append(aside)
        finally:
            os.close(fd)
    return renamed
