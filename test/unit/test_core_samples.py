"""ml_bridge.core.samples: the durable, append-only store of recorded samples."""
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from ml_bridge.core import samples
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.samples import SampleStore


def sample(i: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    return ([np.full(4, i, np.float32), np.full((2, 2), i, np.uint8)], [np.array(i % 3, np.int64)])


def fill(store: SampleStore, name: str, n: int) -> None:
    for i in range(n):
        ins, tgs = sample(i)
        assert store.append(name, ins, tgs) == i + 1


def test_append_then_load_round_trip(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    assert store.names() == [] and not store.exists("a")
    fill(store, "a", 5)
    data = store.load("a")
    assert data.name == "a" and len(data) == 5
    assert [a.dtype for a in data.inputs] == [np.float32, np.uint8]
    assert data.inputs[0].shape == (5, 4) and data.inputs[1].shape == (5, 2, 2)
    assert data.targets[0].dtype == np.int64 and data.targets[0].shape == (5,)
    np.testing.assert_array_equal(data.inputs[0][:, 0], np.arange(5))
    np.testing.assert_array_equal(data.targets[0], np.arange(5) % 3)
    assert store.names() == ["a"] and store.exists("a")
    assert store.path("a") == os.path.join(str(tmp_path), "recorded", "a.mlbs")


def test_records_are_checksummed_and_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: List[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(samples.os, "fsync", fsync)
    store = SampleStore(str(tmp_path))
    fill(store, "a", 1)
    assert len(synced) == 2  # the file, then the directory that got a new entry
    fill(store, "b", 1)
    synced.clear()
    store.append("a", *sample(9))
    assert len(synced) == 1  # existing file: the data only
    with open(store.path("a"), "rb") as f:
        blob = f.read()
    offset, count = 0, 0
    while offset < len(blob):
        magic, length, crc = struct.unpack_from("<4sII", blob, offset)
        payload = blob[offset + 12:offset + 12 + length]
        assert magic == b"MLBS" and len(payload) == length and zlib.crc32(payload) == crc
        assert payload[:2] == b"PK"  # an .npz
        offset += 12 + length
        count += 1
    assert offset == len(blob) and count == 2


def test_torn_tail_loses_nothing_before_it_and_next_append_works(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 3)
    path = store.path("a")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)  # a crash in the middle of the third record
    assert len(store.load("a")) == 2
    assert store.append("a", *sample(7)) == 3
    data = store.load("a")
    np.testing.assert_array_equal(data.inputs[0][:, 0], [0, 1, 7])
    assert os.path.getsize(path) == size  # the torn bytes were cut off, not kept


@pytest.mark.parametrize("garbage", [b"x", b"MLBS\xff\xff\xff\x00partial", b"\x00" * 40])
def test_garbage_tail_is_ignored_then_cut(tmp_path: Path, garbage: bytes) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 2)
    with open(store.path("a"), "ab") as f:
        f.write(garbage)
    assert len(store.load("a")) == 2
    assert store.append("a", *sample(5)) == 3
    np.testing.assert_array_equal(store.load("a").targets[0], [0, 1, 2])


def test_a_record_failing_its_checksum_ends_the_readable_part(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 2)
    with open(store.path("a"), "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"\x00\x01\x02")
    assert len(store.load("a")) == 1


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-x", "x" * 129, "a b", "foo\n"])
def test_invalid_dataset_names_are_refused(tmp_path: Path, name: str) -> None:
    store = SampleStore(str(tmp_path))
    with pytest.raises(DatasetError, match="invalid dataset name"):
        store.append(name, *sample(0))
    assert not os.path.exists(os.path.join(str(tmp_path), "recorded")) or store.names() == []


def test_load_errors(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    with pytest.raises(DatasetError, match="no recorded dataset 'none'"):
        store.load("none")
    store.append("mixed", [np.zeros(4, np.float32)], [np.array(0, np.int64)])
    store.append("mixed", [np.zeros(5, np.float32)], [np.array(0, np.int64)])
    with pytest.raises(DatasetError, match="mixes samples of different shapes"):
        store.load("mixed")
    os.makedirs(store.directory, exist_ok=True)
    open(store.path("empty"), "wb").close()
    with pytest.raises(DatasetError, match="is empty"):
        store.load("empty")


def test_concurrent_appends_are_all_kept(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))

    def writer(k: int) -> None:
        for i in range(10):
            store.append("a", [np.full(4, k * 100 + i, np.float32)], [np.array(k, np.int64)])

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = store.load("a")
    assert sorted(data.inputs[0][:, 0].tolist()) == sorted(k * 100 + i for k in range(6) for i in range(10))


def test_scalar_and_strided_arrays_keep_their_shape(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    strided = np.arange(8, dtype=np.float32)[::2]
    fortran = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    store.append("a", [strided, fortran, np.array(2.5, np.float32)], [np.array(4, np.int64)])
    data = store.load("a")
    np.testing.assert_array_equal(data.inputs[0], [[0, 2, 4, 6]])
    np.testing.assert_array_equal(data.inputs[1], [fortran])
    assert data.inputs[2].shape == (1,) and data.targets[0].shape == (1,)  # one scalar per sample
    assert data.targets[0][0] == 4
