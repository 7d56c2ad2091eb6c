"""ml_bridge.core.sample_store: the durable, append-only store of recorded samples."""
import errno
import logging
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, List, Tuple

import numpy as np
import pytest

from ml_bridge.core import sample_store as samples
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.sample_store import SampleStore


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


def test_a_last_record_failing_its_checksum_is_a_torn_tail(tmp_path: Path) -> None:
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


def record_offsets(path: str) -> List[int]:
    """Byte offset of every record of a healthy store file."""
    with open(path, "rb") as f:
        blob = f.read()
    offsets, pos = [], 0
    while pos < len(blob):
        offsets.append(pos)
        pos += 12 + struct.unpack_from("<4sII", blob, pos)[1]
    return offsets


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x5A]))


@pytest.mark.parametrize("where, why", [(40, "checksum mismatch"), (1, "no record header"),
                                        (7, "runs past the end"), (8, "checksum mismatch")],
                         ids=["payload", "magic", "length", "crc"])
def test_a_damaged_record_in_the_middle_is_skipped_with_a_warning_and_the_rest_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, where: int, why: str) -> None:
    store = SampleStore(str(tmp_path))
    with store.deferred_sync():
        fill(store, "a", 1000)
    path = store.path("a")
    bad = record_offsets(path)[500]
    flip(path, bad + where)
    with caplog.at_level(logging.WARNING, logger="ml_bridge.core.sample_store"):
        data = store.load("a")
    assert len(data) == 999
    np.testing.assert_array_equal(data.inputs[0][:, 0], [i for i in range(1000) if i != 500])
    assert f"damaged record at byte {bad} (" in caplog.text and why in caplog.text
    assert "recorded dataset 'a'" in caplog.text


def test_an_append_after_mid_file_damage_removes_nothing(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    with store.deferred_sync():
        fill(store, "a", 1000)
    path = store.path("a")
    size = os.path.getsize(path)
    flip(path, record_offsets(path)[10] + 1)
    fresh = SampleStore(str(tmp_path))  # a restarted node: knows nothing about the file yet
    assert fresh.append("a", *sample(1000)) == 1000  # 999 good + this one
    assert os.path.getsize(path) > size  # appended after everything, nothing cut
    data = fresh.load("a")
    np.testing.assert_array_equal(data.inputs[0][:, 0], [i for i in range(1001) if i != 10])


def test_a_torn_tail_after_a_damaged_record_is_still_cut(tmp_path: Path) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 5)
    path = store.path("a")
    flip(path, record_offsets(path)[1] + 40)
    with open(path, "ab") as f:
        f.write(b"MLBS\x10\x00")  # a crash while writing the header of the sixth
    fresh = SampleStore(str(tmp_path))
    assert fresh.append("a", *sample(6)) == 5
    np.testing.assert_array_equal(fresh.load("a").inputs[0][:, 0], [0, 2, 3, 4, 6])


def test_appends_checksum_only_their_own_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SampleStore(str(tmp_path))
    with store.deferred_sync():
        fill(store, "a", 300)
    checksummed = [0]
    real_crc32 = zlib.crc32

    def crc32(data: Any, value: int = 0) -> int:
        checksummed[0] += len(data)
        return real_crc32(data, value)

    monkeypatch.setattr(samples.zlib, "crc32", crc32)
    size = os.path.getsize(store.path("a"))
    for i in range(100):
        store.append("a", *sample(i))
    added = os.path.getsize(store.path("a")) - size
    assert checksummed[0] <= added  # no append re-read the 300 records before it


def test_a_file_another_writer_appended_to_is_rescanned(tmp_path: Path) -> None:
    one, two = SampleStore(str(tmp_path)), SampleStore(str(tmp_path))
    assert one.append("a", *sample(0)) == 1
    assert two.append("a", *sample(1)) == 2
    assert one.append("a", *sample(2)) == 3
    np.testing.assert_array_equal(one.load("a").inputs[0][:, 0], [0, 1, 2])


def test_deferred_sync_fsyncs_each_file_once_when_the_block_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 1)
    synced: List[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(samples.os, "fsync", fsync)
    with store.deferred_sync():
        for i in range(50):
            store.append("a", *sample(i))
            store.append("b", *sample(i))
        assert synced == [store.directory]  # only the new file's directory entry, at once
    assert sorted(synced[1:]) == [store.path("a"), store.path("b")]
    assert len(store.load("a")) == 51 and len(store.load("b")) == 50


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left in data_root"),
                                         (errno.EROFS, r"is not writable \(Read-only file system\)")])
def test_a_full_or_read_only_data_root_is_a_dataset_error_and_leaves_no_torn_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, words: str) -> None:
    store = SampleStore(str(tmp_path))
    fill(store, "a", 2)
    size = os.path.getsize(store.path("a"))

    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(samples.os, "fsync", fsync)
    with pytest.raises(DatasetError, match=f"{words}.*the sample was not recorded") as info:
        store.append("a", *sample(9))
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert os.path.getsize(store.path("a")) >= size
    assert store.append("a", *sample(3)) == 3  # the store recovers once the disk does
