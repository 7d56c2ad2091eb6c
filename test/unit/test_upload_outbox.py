"""The upload outbox (durable, bounded, one file per entry), the backoff and the header
variables; no network, no ROS."""
import errno
import gc
import json
import logging
import os
from typing import Any, List, Tuple

import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.core.outbox import Outbox, OutboxWriter
from ml_bridge.core.upload_http import MissingVariable, backoff, expand


def entry(i: int, pad: int = 0) -> dict:
    return {"url": "http://h/e", "headers": {}, "bag_path": "", "posted": False,
            "body": {"id": f"id{i}", "pad": "x" * pad}}


def put(box: Outbox, i: int, pad: int = 0) -> str:
    name = box.put(f"id{i}", entry(i, pad))
    assert name is not None
    return name


def test_each_entry_is_fsynced_in_its_own_file_and_renamed_before_put_returns(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Tuple[str, ...]] = []
    fsync, replace = os.fsync, os.replace

    def counted_fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def counted_replace(src: str, dst: str) -> None:
        calls.append(("replace", src, dst))
        replace(src, dst)

    box = Outbox(str(tmp_path), 1 << 20)
    monkeypatch.setattr(os, "fsync", counted_fsync)
    monkeypatch.setattr(os, "replace", counted_replace)
    first, second = box.put("id1", entry(1)), box.put("id2", entry(2))
    assert first is not None and second is not None
    final = str(tmp_path / first)
    assert calls[:3] == [("fsync", final + ".tmp"), ("replace", final + ".tmp", final),
                         ("fsync", str(tmp_path))]  # the data, then the name: both durable
    assert len(calls) == 6
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".json")) == [first, second]
    assert json.loads((tmp_path / first).read_text()) == entry(1)


def test_entries_outlive_an_outbox_dropped_without_close_and_stay_oldest_first(
        tmp_path: Any) -> None:
    box = Outbox(str(tmp_path), 1 << 20)
    names = [put(box, i) for i in range(3)]
    (tmp_path / "000000000099-half.json.tmp").write_text("{")  # a crash before the rename
    (tmp_path / "notes.json").write_text("{}")  # not an entry: left alone
    del box
    gc.collect()  # its lock goes with it, as with a killed process
    again = Outbox(str(tmp_path), 1 << 20)
    assert again.names() == names and len(again) == 3
    assert [(again.read(n) or {})["body"]["id"] for n in names] == ["id0", "id1", "id2"]
    assert not any(p.endswith(".tmp") for p in os.listdir(tmp_path))
    newer = put(again, 3)
    assert again.names() == names + [newer]
    again.remove(names[0])
    assert again.names() == names[1:] + [newer] and not (tmp_path / names[0]).exists()


def test_a_second_live_outbox_on_the_directory_is_refused(tmp_path: Any) -> None:
    box = Outbox(str(tmp_path), 1 << 20)
    with pytest.raises(InputError, match="in use by another running node"):
        Outbox(str(tmp_path), 1 << 20)
    box.close()
    Outbox(str(tmp_path), 1 << 20).close()


def test_a_full_outbox_drops_its_oldest_entries_and_counts_them(tmp_path: Any) -> None:
    size = len(json.dumps(entry(0, 100), sort_keys=True))
    box = Outbox(str(tmp_path), 3 * size)
    names = [put(box, i, 100) for i in range(5)]
    assert box.names() == names[2:] and box.dropped == 2 and box.total_bytes == 3 * size
    assert box.put("big", entry(9, 4 * size)) is None  # larger than the whole outbox
    assert box.names() == names[2:] and box.dropped == 3
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".json")) == names[2:]


def test_an_unreadable_entry_is_set_aside_and_counted(tmp_path: Any) -> None:
    box = Outbox(str(tmp_path), 1 << 20)
    name = put(box, 1)
    (tmp_path / name).write_text("[1, 2")
    assert box.read(name) is None and box.names() == [] and box.dropped == 1
    assert (tmp_path / f"{name}.bad").exists()


def test_backoff_doubles_from_one_second_and_never_passes_retry_max() -> None:
    low = [backoff(n, 60.0, rand=lambda: 0.0) for n in range(1, 10)]
    assert low == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]  # jitter takes up to half
    assert backoff(0, 60.0) == 0.0
    for n in (1, 5, 7, 100, 5000):  # no overflow however long the server stays away
        assert backoff(n, 60.0, rand=lambda: 0.999999) <= 60.0
        assert backoff(n, 0.05, rand=lambda: 0.999999) <= 0.05


def test_header_variables_come_from_the_environment_at_send_time() -> None:
    assert expand("Bearer ${TOKEN}", {"TOKEN": "abc"}) == "Bearer abc"
    assert expand("$TOKEN ${A}${B}", {"A": "1", "B": "2"}) == "$TOKEN 12"
    with pytest.raises(MissingVariable, match="^TOKEN$"):
        expand("Bearer ${TOKEN}", {})


def test_events_wait_in_memory_while_the_disk_fails_and_are_written_once_it_works(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    box = Outbox(str(tmp_path), 1 << 20)
    put_for_real = box.put
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def put(key: str, item: dict) -> Any:
        if failures:
            raise failures.pop()
        return put_for_real(key, item)

    monkeypatch.setattr(box, "put", put)
    written: List[str] = []
    writer = OutboxWriter(box, written.append)
    writer.start()
    writer.submit("id1", entry(1))
    writer.submit("id2", entry(2))
    assert writer.flush(30.0)
    writer.close()
    assert written == box.names() and writer.lost == 0
    assert [(box.read(n) or {})["body"]["id"] for n in written] == ["id1", "id2"]
    assert "cannot be written ([Errno 28] No space left on device): events wait" in caplog.text


def test_closing_while_the_disk_fails_tries_once_more_then_counts_what_is_lost(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    caplog.set_level(logging.ERROR)
    box = Outbox(str(tmp_path), 1 << 20)
    tries: List[str] = []

    def put(key: str, item: dict) -> Any:
        tries.append(key)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(box, "put", put)
    writer = OutboxWriter(box, lambda name: None)
    writer.start()
    writer.submit("id1", entry(1))
    writer.submit("id2", entry(2))
    writer.close(timeout=None)
    assert not writer.thread.is_alive() and writer.lost == 2 and writer.waiting() == 0
    assert tries[-2:] == ["id1", "id1"]  # the last try came after close
    assert "2 event(s) could not be written to the upload outbox" in caplog.text
