"""A durable, append-only store of samples recorded at run time.

Each dataset is one file ``<root>/recorded/<name>.mlbs`` of records::

    magic b"MLBS" | payload length (uint32 LE) | crc32 of payload (uint32 LE) | payload

where the payload is an uncompressed .npz (``allow_pickle=False``) with arrays ``inputs_i``
and ``targets_i`` of one sample. An append is written, flushed and fsynced before it returns.
A crash can only leave a torn record at the end; readers stop at the first record that is
incomplete or fails its checksum, so what was stored before is never lost, and the next
append cuts the torn tail off first.
"""
import io
import os
import struct
import threading
import zlib
from typing import Dict, List, Sequence

import numpy as np

from ml_bridge.core.datasets import Dataset, check_name
from ml_bridge.core.errors import DatasetError

_MAGIC = b"MLBS"
_HEADER = struct.Struct("<4sII")
SUFFIX = ".mlbs"


class SampleStore:
    """Recorded datasets under ``root``; safe to use from several threads."""

    def __init__(self, root: str) -> None:
        self.directory = os.path.join(root, "recorded")
        self._lock = threading.Lock()

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

    def append(self, name: str, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> int:
        """Appends one sample durably; returns the number of samples now stored."""
        buf = io.BytesIO()
        arrays: Dict[str, np.ndarray] = {}
        # np.asarray, not ascontiguousarray: that makes a 0-d target (a class id) 1-d
        for i, a in enumerate(inputs):
            arrays[f"inputs_{i}"] = np.asarray(a)
        for i, t in enumerate(targets):
            arrays[f"targets_{i}"] = np.asarray(t)
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        payload = buf.getvalue()
        record = _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload
        path = self.path(name)
        with self._lock:
            os.makedirs(self.directory, exist_ok=True)
            created = not os.path.exists(path)
            count, good_end = _scan(path)
            with open(path, "ab") as f:
                if f.tell() != good_end:  # a torn record from a crash: cut it off first
                    f.truncate(good_end)
                f.write(record)
                f.flush()
                os.fsync(f.fileno())
            if created:  # make the new directory entry durable too
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return count + 1

    def load(self, name: str) -> Dataset:
        """All complete samples of ``name`` stacked into a Dataset."""
        path = self.path(name)
        if not os.path.isfile(path):
            raise DatasetError(f"no recorded dataset '{name}' in {self.directory}")
        samples = list(_read(path))
        if not samples:
            raise DatasetError(f"recorded dataset '{name}' is empty")
        first_in, first_tg = samples[0]
        for inputs, targets in samples:
            if len(inputs) != len(first_in) or len(targets) != len(first_tg) or any(
                    a.shape != b.shape or a.dtype != b.dtype
                    for a, b in zip(inputs + targets, first_in + first_tg)):
                raise DatasetError(f"recorded dataset '{name}' mixes samples of different shapes "
                                   "or dtypes")
        return Dataset(name, [np.stack([s[0][i] for s in samples]) for i in range(len(first_in))],
                       [np.stack([s[1][i] for s in samples]) for i in range(len(first_tg))])


def _scan(path: str) -> "tuple[int, int]":
    """(complete records, byte offset after the last complete record)."""
    count = end = 0
    if not os.path.exists(path):
        return 0, 0
    with open(path, "rb") as f:
        for _payload, offset in _records(f):
            count += 1
            end = offset
    return count, end


def _records(f: io.BufferedReader) -> "List[tuple[bytes, int]]":
    out = []
    while True:
        header = f.read(_HEADER.size)
        if len(header) < _HEADER.size:
            break
        magic, length, crc = _HEADER.unpack(header)
        if magic != _MAGIC:
            break
        payload = f.read(length)
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        out.append((payload, f.tell()))
    return out


def _read(path: str) -> "List[tuple[List[np.ndarray], List[np.ndarray]]]":
    samples = []
    with open(path, "rb") as f:
        for payload, _ in _records(f):
            with np.load(io.BytesIO(payload), allow_pickle=False) as data:
                n_in = sum(1 for k in data.files if k.startswith("inputs_"))
                n_tg = sum(1 for k in data.files if k.startswith("targets_"))
                samples.append(([data[f"inputs_{i}"] for i in range(n_in)],
                                [data[f"targets_{i}"] for i in range(n_tg)]))
    return samples
