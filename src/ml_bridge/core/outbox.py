"""A durable outbox: one JSON file per entry, on disk before anyone is told it exists; no rospy.

Each entry is written to a temporary name, fsynced, renamed to ``<seq>-<id>.json`` and the
directory fsynced, so an entry :meth:`Outbox.put` returned for survives a crash or a SIGKILL,
and a file with the final name is always whole. A temporary file left by a crash was never
acknowledged and is removed at the next start. Entries are listed oldest first (``seq`` grows
over restarts). Removing an entry does not sync the directory: after a crash a removed entry
may come back and be sent again, which "at least once" allows.

The outbox is bounded: a new entry that would take it past ``max_bytes`` drops the oldest
entries first, and counts them. An exclusive ``flock`` on ``.lock`` keeps a second process
out of the same directory (it dies with the process, so a killed node's outbox is taken over
by the next start). :class:`~ml_bridge.core.outbox_writer.OutboxWriter` puts entries in on a
thread of its own, so the thread an event comes from never waits on the disk.
"""
import fcntl
import json
import logging
import os
import re
import threading
from typing import IO, Any, Dict, List, Optional

from ml_bridge.core.errors import InputError

SUFFIX = ".json"
TMP = ".tmp"
log = logging.getLogger(__name__)
# An entry's name: its sequence number (oldest first when sorted) and the event's id.
_ENTRY = re.compile(r"^[0-9]{12,}-[0-9A-Za-z_-]+\.json$")


class Outbox:
    """The entries of one directory, their total size and what was dropped for room."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        """Opens (or creates) the outbox and takes its lock.

        Args:
            directory: where the entries live (created).
            max_bytes: the most bytes all entries may take together.

        Raises:
            InputError: the directory cannot be created or written, or another live process
                holds it.
        """
        self.directory = os.path.abspath(directory)
        self.max_bytes = int(max_bytes)
        self.dropped = 0
        self._lock = threading.Lock()
        try:
            os.makedirs(self.directory, exist_ok=True)
            # A file object: dropped without close, its finalizer closes it and frees the lock.
            self._lockfile: Optional[IO[bytes]] = open(os.path.join(self.directory, ".lock"), "ab")
        except OSError as err:
            raise InputError(f"the upload outbox {self.directory} cannot be created ({err}); "
                             "set ~record_dir to a writable directory") from err
        try:
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._lockfile.close()
            raise InputError(f"the upload outbox {self.directory} is in use by another running "
                             "node; give each node its own ~record_dir (or node name)") from err
        self._sizes: Dict[str, int] = {}
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.endswith(TMP):
                os.unlink(path)  # a crash before the rename: never acknowledged
            elif _ENTRY.match(name):
                self._sizes[name] = os.path.getsize(path)
            elif name.endswith(SUFFIX):
                log.warning("%s is not an outbox entry (<seq>-<id>.json): left alone, not sent",
                            path)
        names = sorted(self._sizes)
        self._seq = int(names[-1].split("-", 1)[0]) + 1 if names else 1

    def put(self, key: str, entry: Dict[str, Any]) -> Optional[str]:
        """Writes ``entry`` durably; returns its name, or None when it alone is larger than the
        whole outbox (dropped and counted). Older entries are dropped to make room.

        ``key`` must be a file-name-safe id (it is part of the name).
        """
        data = json.dumps(entry, sort_keys=True).encode()
        with self._lock:
            if len(data) > self.max_bytes:
                self.dropped += 1
                return None
            self._make_room(len(data))
            name = f"{self._seq:012d}-{key}{SUFFIX}"
            self._seq += 1
            self._write(name, data)
            self._sizes[name] = len(data)
            return name

    def names(self) -> List[str]:
        """Every entry, oldest first."""
        with self._lock:
            return sorted(self._sizes)

    def read(self, name: str) -> Optional[Dict[str, Any]]:
        """The entry ``name``; None when it is gone (dropped or removed meanwhile).

        A file that is not a JSON object (a disk fault) is set aside as ``<name>.bad`` and
        counted as dropped.
        """
        path = os.path.join(self.directory, name)
        try:
            with open(path, "rb") as f:
                entry = json.loads(f.read().decode())
            if isinstance(entry, dict):
                return entry
            raise ValueError(f"a JSON {type(entry).__name__}, not an object")
        except FileNotFoundError:
            self._forget(name)
            return None
        except (ValueError, UnicodeDecodeError) as err:
            self.set_aside(name, f"unreadable: {err}")
            return None

    def set_aside(self, name: str, problem: str) -> None:
        """Renames entry ``name`` to ``<name>.bad`` (it can never be sent), counted as dropped."""
        path = os.path.join(self.directory, name)
        log.error("upload outbox entry %s is set aside as %s.bad: %s", path, name, problem)
        with self._lock:
            if self._sizes.pop(name, None) is not None:
                self.dropped += 1
                os.replace(path, path + ".bad")

    def update(self, name: str, entry: Dict[str, Any]) -> bool:
        """Replaces entry ``name`` durably; False (nothing written) when it is gone."""
        data = json.dumps(entry, sort_keys=True).encode()
        with self._lock:
            if name not in self._sizes:
                return False
            self._write(name, data)
            self._sizes[name] = len(data)
            return True

    def remove(self, name: str) -> None:
        """Removes entry ``name`` (done with it); nothing when it is gone already."""
        with self._lock:
            if self._sizes.pop(name, None) is not None:
                self._unlink(name)

    @property
    def total_bytes(self) -> int:
        """The bytes the entries take."""
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)

    def close(self) -> None:
        """Releases the lock (the entries stay for the next start)."""
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    # -- under the lock -----------------------------------------------------------------------
    def _make_room(self, size: int) -> None:
        total = sum(self._sizes.values())
        for name in sorted(self._sizes):
            if total + size <= self.max_bytes:
                break
            total -= self._sizes.pop(name)
            self._unlink(name)
            self.dropped += 1
            log.warning("upload outbox full (%d bytes, ~upload_outbox_mb): dropped its oldest "
                        "entry %s unsent", self.max_bytes, name)

    def _write(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.directory, name + TMP)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.directory, name))
        except OSError:
            self._unlink(name + TMP)  # a full disk: no half-written file stays behind
            raise
        _sync_dir(self.directory)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass

    def _forget(self, name: str) -> None:
        with self._lock:
            self._sizes.pop(name, None)


def _sync_dir(directory: str) -> None:
    """Makes a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Re-exported: the writer lives in a module of its own (it imports nothing from here at run time).
from ml_bridge.core.outbox_writer import OutboxWriter  # noqa: E402

__all__ = ["Outbox", "OutboxWriter"]
