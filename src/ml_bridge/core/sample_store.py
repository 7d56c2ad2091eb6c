"""A durable, append-only store of samples recorded at run time.

Each dataset is one file ``<root>/recorded/<name>.mlbs`` of records::

    magic b"MLBS" | payload length (uint32 LE) | crc32 of payload (uint32 LE) | payload

where the payload is an uncompressed .npz (``allow_pickle=False``) with arrays ``inputs_i``
and ``targets_i`` of one sample. An append is written, flushed and fsynced before it returns
(inside :meth:`SampleStore.deferred_sync`, when the block ends: one fsync for a burst).

Damage is contained to the record it hits. A crash can only leave a torn record at the end:
whatever follows the last good record is a torn tail, which readers ignore and the next
append cuts off. A damaged record with good records after it (a flipped byte, a bad sector)
is skipped with a warning naming its byte offset, and reading goes on at the next good
record; no append ever removes it or anything after it. The store remembers where each file
ends, so an append costs the same at the 10th sample as at the 100000th.
"""
import contextlib
import errno
import functools
import io
import logging
import mmap
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Sequence, Set, Tuple, Union

import numpy as np

from ml_bridge.core.box_targets import stack_targets
from ml_bridge.core.datasets import Dataset, check_name
from ml_bridge.core.errors import DatasetError

log = logging.getLogger(__name__)
_MAGIC = b"MLBS"
_HEADER = struct.Struct("<4sII")
SUFFIX = ".mlbs"
Sample = Tuple[List[np.ndarray], List[np.ndarray]]
Buffer = Union[mmap.mmap, bytes]


@dataclass
class Layout:
    """Where the good records of a file are, what was skipped, and where its good part ends."""

    records: List[Tuple[int, int]] = field(default_factory=list)  # payload [start, end)
    damaged: List[Tuple[int, str]] = field(default_factory=list)  # (offset, why) mid-file
    end: int = 0  # after the last good record: a torn tail, if any, starts here


@dataclass
class _End:
    """What the store knows about a file it appended to: valid while size and inode match."""

    size: int
    count: int
    inode: int


class StoreWriteError(DatasetError):
    """A sample fitted but could not be written: the data root is full, read-only or failing."""


class SampleStore:
    """Recorded datasets under ``root``; safe to use from several threads."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.directory = os.path.join(root, "recorded")
        self._lock = threading.Lock()
        self._ends: Dict[str, _End] = {}
        self._local = threading.local()  # .pending: paths this thread wrote but did not fsync

    def path(self, name: str) -> str:
        """File of dataset ``name``."""
        return os.path.join(self.directory, check_name(name) + SUFFIX)

    def names(self) -> List[str]:
        """Recorded datasets, sorted."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(f[:-len(SUFFIX)] for f in os.listdir(self.directory) if f.endswith(SUFFIX))

    def exists(self, name: str) -> bool:
        """True if ``name`` has been recorded to."""
        return os.path.isfile(self.path(name))

    @contextlib.contextmanager
    def deferred_sync(self) -> Iterator[None]:
        """Appends made on this thread inside the block are fsynced once, when it ends.

        A burst of samples then costs one fsync per file instead of one per sample. Nothing
        appended inside the block is durable before the block has ended (without error).
        """
        if getattr(self._local, "pending", None) is not None:  # nested: the outer block syncs
            yield
            return
        self._local.pending = set()
        try:
            yield
        finally:
            pending: Set[str] = self._local.pending
            self._local.pending = None
            for path in sorted(pending):
                self._guarded(functools.partial(_fsync_path, path, os.O_RDONLY))

    def append(self, name: str, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> int:
        """Appends one sample durably; returns the number of samples now stored.

        Raises:
            DatasetError: invalid name.
            StoreWriteError: the data root cannot be written (full, read-only).
        """
        path = self.path(name)
        record = _record(inputs, targets)
        with self._lock:
            return self._guarded(lambda: self._append(name, path, record))

    def _append(self, name: str, path: str, record: bytes) -> int:
        os.makedirs(self.directory, exist_ok=True)
        created = not os.path.exists(path)
        with open(path, "ab") as f:
            st = os.fstat(f.fileno())
            known = self._ends.get(name)
            if known is None or known.size != st.st_size or known.inode != st.st_ino:
                layout = _layout_of(path)  # first append here, or someone else wrote the file
                known = _End(layout.end, len(layout.records), st.st_ino)
            self._ends.pop(name, None)  # until this append is complete
            if st.st_size != known.size:
                f.truncate(known.size)  # only ever a torn tail: nothing good follows it
            pending = getattr(self._local, "pending", None)
            try:
                f.write(record)
                f.flush()
                if pending is None:
                    os.fsync(f.fileno())
            except OSError:
                f.truncate(known.size)  # a sample reported as not recorded must not appear later
                raise
            if pending is not None:
                pending.add(path)
        if created:  # make the new directory entry durable too
            _fsync_path(self.directory, os.O_RDONLY)
        self._ends[name] = _End(known.size + len(record), known.count + 1, st.st_ino)
        return known.count + 1

    def _guarded(self, write: Callable[[], int]) -> int:
        """Runs ``write``; a file-system error becomes a DatasetError that names the data root."""
        try:
            return write()
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                why = f"no space left in data_root ({self.root})"
            elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                why = f"data_root ({self.root}) is not writable ({os.strerror(err.errno)})"
            else:
                why = f"cannot write to data_root ({self.root}): {err}"
            raise StoreWriteError(f"{why}; the sample was not recorded") from err

    def load(self, name: str) -> Dataset:
        """All good samples of ``name`` stacked into a Dataset; damaged records are skipped."""
        path = self.path(name)
        if not os.path.isfile(path):
            raise DatasetError(f"no recorded dataset '{name}' in {self.directory}")
        samples = _read(path, name)
        if not samples:
            raise DatasetError(f"recorded dataset '{name}' is empty")
        first_in, first_tg = samples[0]
        for inputs, targets in samples:
            # A detector's boxes are [K, 5] with K per frame: they may differ in K alone.
            if len(inputs) != len(first_in) or len(targets) != len(first_tg) or any(
                    a.shape != b.shape or a.dtype != b.dtype
                    for a, b in zip(inputs, first_in)) or any(
                    a.dtype != b.dtype or a.shape[1:] != b.shape[1:]
                    or (a.shape != b.shape and a.ndim != 2)
                    for a, b in zip(targets, first_tg)):
                raise DatasetError(f"recorded dataset '{name}' mixes samples of different shapes "
                                   "or dtypes")
        return Dataset(name, [np.stack([s[0][i] for s in samples]) for i in range(len(first_in))],
                       [stack_targets([s[1][i] for s in samples]) for i in range(len(first_tg))])


def _record(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    arrays: Dict[str, np.ndarray] = {}
    # np.asarray, not ascontiguousarray: that makes a 0-d target (a class id) 1-d
    for i, a in enumerate(inputs):
        arrays[f"inputs_{i}"] = np.asarray(a)
    for i, t in enumerate(targets):
        arrays[f"targets_{i}"] = np.asarray(t)
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    payload = buf.getvalue()
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _fsync_path(path: str, flags: int) -> int:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return 0


def _problem(buf: Buffer, pos: int) -> str:
    """Why no good record starts at ``pos`` ("" if one does)."""
    if len(buf) - pos < _HEADER.size:
        return "truncated header"
    magic, length, crc = _HEADER.unpack_from(buf, pos)
    if magic != _MAGIC:
        return "no record header"
    start = pos + _HEADER.size
    if start + length > len(buf):
        return f"record of {length} bytes runs past the end of the file"
    with memoryview(buf) as view, view[start:start + length] as payload:  # no copy
        good = zlib.crc32(payload) == crc
    return "" if good else "checksum mismatch"


def _next_good(buf: Buffer, pos: int) -> int:
    """Offset of the first good record after the damaged one at ``pos``, or -1 if none."""
    if len(buf) - pos >= _HEADER.size:
        magic, length, _ = _HEADER.unpack_from(buf, pos)
        skip = pos + _HEADER.size + length
        if magic == _MAGIC and skip < len(buf) and not _problem(buf, skip):
            return skip  # only the payload was hit: its header still says where the next is
    found = buf.find(_MAGIC, pos + 1)
    while found >= 0:
        if not _problem(buf, found):
            return found
        found = buf.find(_MAGIC, found + 1)
    return -1


def layout(buf: Buffer) -> Layout:
    """The good records of a store file's bytes, the damaged ones between them, and the end."""
    out = Layout()
    pos = 0
    while pos < len(buf):
        why = _problem(buf, pos)
        if not why:
            _, length, _ = _HEADER.unpack_from(buf, pos)
            out.records.append((pos + _HEADER.size, pos + _HEADER.size + length))
            pos += _HEADER.size + length
            continue
        following = _next_good(buf, pos)
        if following < 0:
            break  # nothing good after it: a torn tail
        out.damaged.append((pos, why))
        pos = following
    out.end = out.records[-1][1] if out.records else 0
    return out


@contextlib.contextmanager
def _mapped(path: str) -> Iterator[Buffer]:
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            yield mm


def _layout_of(path: str) -> Layout:
    if not os.path.exists(path):
        return Layout()
    with _mapped(path) as buf:
        return layout(buf)


def _read(path: str, name: str) -> List[Sample]:
    samples = []
    with _mapped(path) as buf:
        found = layout(buf)
        for offset, why in found.damaged:
            log.warning("recorded dataset '%s' (%s): skipped a damaged record at byte %d (%s); "
                        "the samples after it are read", name, path, offset, why)
        for start, end in found.records:
            with np.load(io.BytesIO(buf[start:end]), allow_pickle=False) as data:
                n_in = sum(1 for k in data.files if k.startswith("inputs_"))
                n_tg = sum(1 for k in data.files if k.startswith("targets_"))
                samples.append(([data[f"inputs_{i}"] for i in range(n_in)],
                                [data[f"targets_{i}"] for i in range(n_tg)]))
    return samples
