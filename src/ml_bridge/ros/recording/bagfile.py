"""Bag files that are complete under their final name, or not there at all.

A recording is written to ``<name>.bag.active`` and renamed to ``<name>.bag`` once closed
(and synced), so a file with the final name is always a complete, indexed bag. A node killed
while writing leaves the ``.active`` file; the next start-up renames it aside to
``<name>.bag.unfinished`` with a warning (``rosbag reindex`` recovers what reached the
disk).

A writer holds an exclusive ``flock`` on its ``.active`` file while it writes: a node
starting up in the same directory leaves a live recording of another node alone. The lock
dies with the process, so a killed writer's file is recognised as a leftover.

A name is claimed when the rule fires (:func:`claim`): the ``.active`` file is created with
``O_EXCL``, and the name is kept only if no finished form of it (``.bag``, ``.unfinished``)
exists after that. Only the owner of a name's ``.active`` ever makes those forms, by renaming
it, so nodes sharing a directory never write or announce the same bag. Names carry the wall
clock's local time, as ``rosbag record`` names bags, under sim time too.

A write or close that fails (a full disk) closes the file for sure: rosbag's own ``close``
raises before it closes the file, and a ``rosbag.Bag`` sits in a reference cycle, so its
descriptor would keep the disk space of the file even once deleted. What reached the disk is
then set aside as ``<name>.bag.unfinished``, or removed when that is no more than the header.
"""
import errno
import fcntl
import io
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


#: The most bags of one rule named in one second (``_2`` ... ``_9999``). Rule names are
#: bounded so that the longest file name fits (``ml_bridge.pipelines.rules.MAX_NAME``).
MAX_SUFFIX = 9999
#: Size of a bag without messages: the version line and the header record (4096 bytes padded).
_HEADER_BYTES = len(b"#ROSBAG V2.0\n") + 4 + 4096 + 4


def bag_name(rule: str, stamp: float, n: int = 1) -> str:
    """``<rule>_<YYYY-MM-DD-HH-MM-SS>.bag`` in the local time of ``stamp`` (wall-clock seconds,
    as ``rosbag record`` names bags), with ``_<n>`` before ``.bag`` from the second on."""
    stem = f"{rule}_{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(stamp))}"
    return f"{stem}.bag" if n == 1 else f"{stem}_{n}.bag"


def prepare(directory: str) -> List[str]:
    """Start-up of a node that records into ``directory``: creates it, proves that a file can
    be created in it, loads rosbag (not on a stream's thread when a rule first fires) and sets
    leftovers aside; returns their new names.

    A full disk is not refused, only warned of: space may be freed while the node serves, and
    each recording that fails meanwhile is reported.

    Raises:
        OSError: the directory cannot be created, or no file can be created in it.
    """
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".ml_bridge-probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644))
        os.unlink(probe)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("~record_dir %s is full (%s): recordings fail until space is freed",
                    directory, err)
    import rosbag  # noqa: F401  (only nodes that record pay for importing it)

    return set_aside_leftovers(directory)


def claim(directory: str, rule: str, stamp: float) -> "BagFile":
    """The bag of a rule that fires now: the first ``bag_name(rule, stamp, n)`` in
    ``directory`` whose ``.active`` this call creates and of which no finished form exists
    then. ``directory`` is created again when it is missing (moved away by an offload).

    Raises:
        OSError: the directory or the file cannot be created (FileExistsError once
            ``MAX_SUFFIX`` names are taken).
    """
    os.makedirs(directory, exist_ok=True)
    path = directory
    for n in range(1, MAX_SUFFIX + 1):
        path = os.path.join(directory, bag_name(rule, stamp, n))
        if _finished(path):
            continue
        try:
            bag = BagFile(path)
        except FileExistsError:  # being written, by this node or another
            continue
        # Looked at again after the claim: a writer that finished this name before it left
        # its finished form, and so did a node starting up that set our .active aside before
        # we locked it; none can appear later (only our locked .active could become one).
        if not _finished(path):
            return bag
        bag.give_up()
    raise FileExistsError(errno.EEXIST, f"rule '{rule}' has {MAX_SUFFIX} bags named in this "
                          "second already", path)


def _finished(path: str) -> bool:
    return os.path.lexists(path) or os.path.lexists(path + UNFINISHED)


class _RawType:
    """What rosbag's raw write wants of a message class: its md5sum (checked) and text."""

    def __init__(self, msg_type: str, md5sum: str, definition: str) -> None:
        self._type = msg_type
        self._md5sum = md5sum
        self._full_text = definition


class BagFile:
    """One bag being written under ``<path>.active``; :meth:`close` renames it to ``path``.

    Its files are named relative to a descriptor of the directory: a directory renamed while
    the bag is written (an offload) gets the bag complete, in its new place.
    """

    def __init__(self, path: str) -> None:
        """Creates ``<path>.active`` (it must not exist), locks it and starts the bag in it
        (the header stays in memory until the first messages are flushed).

        Raises:
            FileExistsError: ``<path>.active`` exists.
            OSError: the file cannot be created (a missing, full or read-only directory).
        """
        import rosbag  # loaded by prepare() already in a recording node

        self.path = path
        self.temp = path + ACTIVE
        self.messages = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self._name = os.path.basename(path)
        self._file: Optional[io.BufferedRandom] = None
        self._raw: Optional[io.FileIO] = None
        self._lock_fd: Optional[int] = None
        self._dir_fd: Optional[int] = os.open(os.path.dirname(path) or ".",
                                              os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._lock_fd = os.open(self._name + ACTIVE, os.O_CREAT | os.O_EXCL | os.O_RDWR,
                                    0o644, dir_fd=self._dir_fd)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # rosbag writes to a file object of ours, so a failure can close it for sure; that
            # has a descriptor of its own, and ours keeps the lock until after the rename.
            self._raw = io.FileIO(os.dup(self._lock_fd), "r+")
            self._file = io.BufferedRandom(self._raw)
            self._bag = rosbag.Bag(self._file, "w")
        except BaseException:
            self._release(remove=self._lock_fd is not None)  # a file we created, nothing in it
            raise
        # (topic, type, md5sum, callerid, latching) -> rosbag's connection and our type
        self._connections: Dict[Tuple[str, ...], Tuple[Any, _RawType]] = {}

    def write(self, topic: str, t: float, raw: RawMessage, header: Dict[str, str]) -> None:
        """Appends one serialized message received at ``t`` (seconds).

        ``header`` is the publisher's connection header (callerid, latching are kept, so
        ``rosbag play`` latches what was latched); type, md5sum and definition come from ``raw``.
        Each type and publisher of a topic has its own connection, as ``rosbag record`` writes
        them: a reader decodes each message with its own type, and a player latches each
        latching publisher's message (several ``/tf_static`` publishers each keep theirs).
        """
        msg_type, data, md5sum, definition = raw
        callerid, latching = header.get("callerid", ""), header.get("latching", "")
        key = (topic, msg_type, md5sum, callerid, latching)
        known = self._connections.get(key)
        # rosbag's write files every message of a topic under the topic's first connection;
        # putting this message's connection in that place (none: rosbag makes a new one) is
        # what gives a topic several.
        if known is None:
            pytype = _RawType(msg_type, md5sum, definition)
            self._bag._topic_connections.pop(topic, None)
        else:
            self._bag._topic_connections[topic], pytype = known
        connection = {k: v for k, v in (("callerid", callerid), ("latching", latching)) if v}
        connection.update(topic=topic, type=msg_type, md5sum=md5sum, message_definition=definition)
        self._bag.write(topic, (msg_type, data, md5sum, pytype), genpy.Time.from_sec(t), raw=True,
                        connection_header=connection)
        if known is None:
            self._connections[key] = (self._bag._topic_connections[topic], pytype)
        self.messages += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def close(self) -> None:
        """Writes the index, syncs the file and renames it to its final name.

        Raises:
            OSError: the bag could not be completed; :meth:`abandon` closes it then.
        """
        if self._lock_fd is None or self._dir_fd is None:
            return
        self._bag.close()                # closes our file object too
        os.fsync(self._lock_fd)          # the data is on disk before the name says complete
        os.replace(self._name + ACTIVE, self._name, src_dir_fd=self._dir_fd,
                   dst_dir_fd=self._dir_fd)
        os.fsync(self._dir_fd)           # and so is the name
        self._release(remove=False)      # the lock goes after the rename

    def abandon(self) -> Optional[str]:
        """After a failed write or close: closes the file for sure, without trying rosbag's
        close again (its state is unknown), and renames it aside to ``<path>.unfinished``
        (``rosbag reindex`` recovers what reached the disk); returns where what it holds is
        kept, or None when nothing past the header reached the disk (the file is removed)."""
        if self._lock_fd is None:
            return None
        kept: Optional[str] = self.path + UNFINISHED
        try:
            self._close_file()
            if os.fstat(self._lock_fd).st_size > _HEADER_BYTES:
                os.replace(self._name + ACTIVE, self._name + UNFINISHED,
                           src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            else:
                kept = None
                os.unlink(self._name + ACTIVE, dir_fd=self._dir_fd)
        except OSError as err:  # left as .active: the next start-up sets it aside
            log.warning("%s could not be set aside after the failure: %s", self.temp, err)
            kept = self.temp
        finally:
            self._release(remove=False)
        return kept

    def give_up(self) -> None:
        """Gives the name up before anything was written: removes the ``.active``."""
        self._release(remove=True)

    def _close_file(self) -> None:
        """Closes rosbag's file whatever state a failure left it in. A buffered file's close
        closes its descriptor even when the flush before fails; that failure is the one the
        caller reports already, so it is only logged at debug level here."""
        for f in (self._file, self._raw):
            if f is not None:
                try:
                    f.close()
                except OSError as err:
                    log.debug("closing %s: %s", self.temp, err)
        self._file = self._raw = None

    def _release(self, remove: bool) -> None:
        """Closes the file and the descriptors (the lock goes with them); with ``remove``,
        removes the ``.active`` first, while the lock still keeps other nodes off it."""
        self._close_file()
        if remove and self._dir_fd is not None:
            try:
                os.unlink(self._name + ACTIVE, dir_fd=self._dir_fd)
            except FileNotFoundError:  # a node starting up set it aside before we locked it
                pass
            except OSError as err:
                log.warning("%s could not be removed: %s", self.temp, err)
        for fd in (self._lock_fd, self._dir_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._dir_fd = None


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
