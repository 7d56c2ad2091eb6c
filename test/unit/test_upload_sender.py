"""The uploader against a real HTTP server on a thread: retries until 2xx, header variables
never logged, bags PUT once complete; no ROS."""
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from http_inbox import Inbox

from ml_bridge.core.outbox import Outbox
from ml_bridge.core.uploader import Uploader


def event(url: str, i: int, bag: str = "", headers: Any = None) -> Dict[str, Any]:
    return {"url": url, "headers": headers or {}, "bag_path": bag, "posted": False,
            "body": {"id": f"{i:032x}", "rule": "seen", "n": i}}


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(str(tmp_path / "outbox"), 1 << 20)
    yield box
    box.close()


def posted_ids(inbox: Inbox) -> List[str]:
    return [json.loads(r.body)["id"] for r in inbox.accepted("POST")]


def test_refused_tries_are_retried_until_every_event_is_taken(outbox: Outbox) -> None:
    inbox = Inbox(refuse=3)
    uploader = Uploader(outbox, retry_max=0.05)
    uploader.start()
    try:
        for i in range(5):
            uploader.submit(event(inbox.url, i))
        assert inbox.wait_for(lambda reqs: len([r for r in reqs if r.status == 200]) >= 5)
    finally:
        uploader.close(timeout=None)
        inbox.close()
    ids = posted_ids(inbox)
    assert sorted(ids) == [f"{i:032x}" for i in range(5)] and len(set(ids)) == 5
    assert [r.status for r in inbox.requests] == [503, 503, 503, 200, 200, 200, 200, 200]
    assert [r.headers["Content-Type"] for r in inbox.requests] == ["application/json"] * 8
    counters = uploader.counters()
    assert counters["upload_sent"] == 5 and counters["upload_failed_tries"] == 3
    assert counters["upload_pending"] == 0 and os.listdir(outbox.directory) == [".lock"]


def test_header_values_are_read_from_the_environment_and_never_logged_or_stored(
        outbox: Outbox, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    secret = "s3cr3t-4f9a"
    monkeypatch.setenv("UPLOAD_TEST_TOKEN", secret)
    caplog.set_level(logging.DEBUG)
    inbox = Inbox(refuse=1, refuse_status=401)
    uploader = Uploader(outbox, retry_max=0.05)
    uploader.start()
    try:
        uploader.submit(event(inbox.url, 1, headers={"Authorization": "Bearer ${UPLOAD_TOKEN}x",
                                                     "X-Key": "${UPLOAD_TEST_TOKEN}"}))
        uploader.submit(event(inbox.url, 2, headers={
            "Authorization": "Bearer ${UPLOAD_TEST_TOKEN}"}))
        assert inbox.wait_for(lambda reqs: len([r for r in reqs if r.status == 200]) >= 1)
    finally:
        uploader.close(timeout=None)
        inbox.close()
    stored = "".join(p.read_text() for p in Path(outbox.directory).glob("*.json"))
    assert "${UPLOAD_TEST_TOKEN}" in stored and secret not in stored  # the first still waits
    taken = inbox.accepted("POST")
    assert [r.headers["Authorization"] for r in taken] == [f"Bearer {secret}"]
    # The first event names a variable that is not set: it waits, and says which one.
    assert "header Authorization names ${UPLOAD_TOKEN}, which is not set" in uploader.last_problem
    assert "upload failed (header Authorization names ${UPLOAD_TOKEN}" in caplog.text
    assert "401" in caplog.text  # the refused try was logged
    assert secret not in caplog.text


def test_a_bag_is_put_once_it_has_its_final_name(outbox: Outbox, tmp_path: Path) -> None:
    inbox = Inbox()
    bag = tmp_path / "seen_2026-01-01-00-00-00.bag"
    (tmp_path / (bag.name + ".active")).write_bytes(b"half written")
    uploader = Uploader(outbox, retry_max=0.05)
    uploader.start()
    try:
        uploader.submit(event(inbox.url, 1, bag=str(bag)))
        assert inbox.wait_for(lambda reqs: any(r.method == "POST" for r in reqs))
        (tmp_path / "complete").write_bytes(b"the whole bag")
        os.replace(tmp_path / "complete", bag)  # as the recorder does: complete, then named
        os.unlink(tmp_path / (bag.name + ".active"))
        assert inbox.wait_for(lambda reqs: any(r.method == "PUT" for r in reqs))
    finally:
        uploader.close(timeout=None)
        inbox.close()
    put = inbox.accepted("PUT")
    assert [(r.path, r.body) for r in put] == [(f"/events/bags/{bag.name}", b"the whole bag")]
    assert len(inbox.accepted("POST")) == 1 and len(outbox) == 0
    assert uploader.counters()["upload_bags_sent"] == 1


def test_an_earlier_runs_event_whose_bag_never_completed_goes_without_it(
        outbox: Outbox, tmp_path: Path) -> None:
    inbox = Inbox()
    bag = tmp_path / "seen_2026-01-01-00-00-00.bag"
    Path(str(bag) + ".active").write_bytes(b"left by a killed node")
    outbox.put(f"{2:032x}", dict(event(inbox.url, 2, bag=str(bag)), posted=True))
    outbox.put(f"{3:032x}", event(inbox.url, 3, bag=str(tmp_path / "failed.bag")))
    uploader = Uploader(outbox, retry_max=0.05)
    uploader.start()
    try:
        assert inbox.wait_for(lambda reqs: len(reqs) >= 1)
    finally:
        uploader.close(timeout=None)
        inbox.close()
    assert posted_ids(inbox) == [f"{3:032x}"]  # the first was posted before the restart
    assert inbox.accepted("PUT") == [] and len(outbox) == 0
    assert uploader.counters()["upload_bags_missing"] == 2


def test_a_bag_is_put_once_complete_while_another_event_keeps_failing(
        outbox: Outbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UPLOAD_UNSET_VAR", raising=False)
    inbox = Inbox()
    bag = tmp_path / "seen_2026-01-01-00-00-01.bag"
    Path(str(bag) + ".active").write_bytes(b"")
    uploader = Uploader(outbox, retry_max=0.05)
    uploader.start()
    try:
        uploader.submit(event(inbox.url, 1, headers={"X-Key": "${UPLOAD_UNSET_VAR}"}))  # never sent
        uploader.submit(event(inbox.url, 2, bag=str(bag)))
        assert inbox.wait_for(lambda reqs: any(r.method == "POST" for r in reqs))
        bag.write_bytes(b"bag")
        os.unlink(str(bag) + ".active")
        assert inbox.wait_for(lambda reqs: any(r.method == "PUT" for r in reqs))
    finally:
        uploader.close(timeout=None)
        inbox.close()
    assert [r.body for r in inbox.accepted("PUT")] == [b"bag"]
    assert uploader.counters()["upload_failed_tries"] >= 1
    assert [n[-len(".json") - 32:-len(".json")] for n in outbox.names()] == [f"{1:032x}"]
