"""The ``upload`` action in the rules: its schema, the checks at start-up, the event body's
values, and what /diagnostics says; no master."""
import math
import os
import threading
from types import SimpleNamespace
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from diagnostic_msgs.msg import DiagnosticStatus

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.rules import parse_rules
from ml_bridge.ros.recording.rule_actions import RosRules
from ml_bridge.ros.recording.uploads import event_entry, json_value

SEEN = {"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}]}


def rule(**upload: Any) -> Dict[str, Any]:
    return dict(SEEN, upload=dict({"url": "https://example.com/events"}, **upload))


@pytest.mark.parametrize("upload, field, problem", [
    ({"url": "ftp://example.com/x"}, "upload.url", "http:// or https://"),
    ({"url": "https:///x"}, "upload.url", "with a host"),
    ({"url": "https://h/x", "retries": 3}, "upload.retries", "unknown field"),
    ({"url": "https://h/x", "headers": ["a"]}, "upload.headers", "must be a dict"),
    ({"url": "https://h/x", "headers": {"Bad Name": "v"}}, "upload.headers.Bad Name",
     "not an HTTP header name"),
    ({"url": "https://h/x", "headers": {"A": "x\r\nB: y"}}, "upload.headers.A", "line break"),
    ({"url": "https://h/x", "headers": {"A": "${1TOKEN}"}}, "upload.headers.A",
     "not an environment variable's name"),
    ({"url": "https://h/x", "bag": "yes"}, "upload.bag", "true or false"),
    ({"url": "https://h/x", "bag": True}, "upload.bag", "records none: add 'record'"),
])
def test_an_invalid_upload_is_refused_naming_the_rule_and_the_field(
        upload: Dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InputError, match=r"^~rules\[0\] 'seen': ") as err:
        parse_rules([dict(SEEN, upload=upload)])
    assert f": {field}: " in str(err.value) and problem in str(err.value)


def test_a_valid_upload_is_kept_with_its_header_templates() -> None:
    [parsed] = parse_rules([dict(rule(headers={"Authorization": "Bearer ${TOKEN}", "X-N": 2},
                                      bag=True), record={"topics": ["/cam"]})])
    assert parsed.upload is not None and parsed.upload.bag
    assert parsed.upload.header_dict == {"Authorization": "Bearer ${TOKEN}", "X-N": "2"}


def test_a_header_naming_an_unset_variable_stops_start_up(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    monkeypatch.delenv("UPLOAD_UNSET_TOKEN", raising=False)
    with pytest.raises(InputError, match=(
            r"~rules\[0\] 'seen': upload.headers.Authorization: \$\{UPLOAD_UNSET_TOKEN\} is not "
            "set in the node's environment; export it")):
        RosRules([rule(headers={"Authorization": "Bearer ${UPLOAD_UNSET_TOKEN}"})],
                 str(tmp_path), 1, [""])
    with pytest.raises(InputError, match="~upload_retry_max must be a number > 0, got 0"):
        RosRules([rule()], str(tmp_path), 1, [""], upload_retry_max=0)


def test_the_body_holds_the_row_that_fired_as_json_values() -> None:
    [parsed] = parse_rules([rule()])
    result = Result(Frame(np.zeros((2, 2), np.uint8), stamp=12.5), ModelStamp(4), 2.0,
                    rows=[{"label": "cat", "class_id": np.int64(1), "score": np.float32(0.75),
                           "box": np.array([1.0, 2.0, 3.0, 4.0]), "track_ended": True}])
    [match] = parsed.matches(result)
    entry = event_entry(match, "left", result, "digits_mlp", "")
    body = entry["body"]
    assert body["rows"] == [{"label": "cat", "class_id": 1, "score": 0.75, "track_ended": True,
                             "box": [1.0, 2.0, 3.0, 4.0], "model_version": 4,
                             "inference_ms": 2.0}]
    assert (body["keys"], body["values"], body["stamp"], body["camera"]) == (
        ["score"], ["0.75"], 12.5, "left")
    assert len(body["id"]) == 32 and entry["bag_path"] == "" and not entry["posted"]
    assert json_value(math.nan) is None and json_value(np.float64(math.inf)) is None


def test_diagnostics_count_uploads_and_warn_while_they_fail_or_were_dropped(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    node = RosRules([rule()], str(tmp_path), 1, [""])
    assert node.uploader is not None
    assert {k: v for k, v in node.counters().items() if k.startswith("upload_")} == {
        "upload_pending": 0, "upload_sent": 0, "upload_bags_sent": 0, "upload_failed_tries": 0,
        "upload_bags_missing": 0, "upload_dropped": 0}
    assert node.problems() == []
    node.uploader.failing, node.uploader.last_problem = True, "POST https://h/e: HTTP 503 x"
    node.uploader.outbox.dropped = 2
    assert node.problems() == [
        (DiagnosticStatus.WARN, "uploads fail, the last: POST https://h/e: HTTP 503 x; 0 event(s) "
         f"wait in {tmp_path}/outbox/unnamed and are retried (check the url, the server and "
         "the network)"),
        (DiagnosticStatus.WARN, "2 event(s) dropped unsent: the outbox was full or could not be "
         "written; raise ~upload_outbox_mb, free space in ~record_dir")]
    node.uploader.close()  # (the recorder needs ROS time to close)


class Events:
    """A ``~events`` publisher that notes, for each event, whether its outbox entry was on the
    disk when it was published."""

    def __init__(self, outbox_dir: Any) -> None:
        self.outbox_dir = outbox_dir
        self.published: List[Tuple[str, List[str]]] = []
        self.cond = threading.Condition()

    def publish(self, event: Any) -> None:
        with self.cond:
            self.published.append((event.rule, sorted(os.listdir(self.outbox_dir))))
            self.cond.notify_all()


def fire(node: RosRules, score: float) -> None:
    stream = SimpleNamespace(camera="", topic="/cam", pipeline=SimpleNamespace(model_source="m"))
    node.on_result(stream, Result(  # type: ignore[arg-type]
        Frame(np.zeros((2, 2), np.uint8), stamp=1.0), ModelStamp(1), 1.0,
        rows=[{"label": "cat", "score": score}]))


def test_an_uploading_event_is_announced_only_once_its_outbox_entry_is_durable(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    node = RosRules([rule()], str(tmp_path), 1, [""])
    assert node.uploader is not None
    outbox = node.uploader.outbox
    node.events = events = Events(outbox.directory)  # type: ignore[assignment]
    monkeypatch.setattr(node.recorder, "trigger", lambda name: "")
    entered, release = threading.Event(), threading.Event()
    put_for_real = outbox.put

    def slow_put(key: str, entry: Dict[str, Any]) -> Any:  # a disk that takes its time
        entered.set()
        assert release.wait(30.0)
        return put_for_real(key, entry)

    monkeypatch.setattr(outbox, "put", slow_put)
    node.uploader.writer.start()  # the writer only: no sender takes entries away
    try:
        fire(node, 0.9)  # the stream's thread does not wait for the disk
        assert entered.wait(30.0)
        assert events.published == []  # not durable yet: a SIGKILL now loses nothing announced
        release.set()
        with events.cond:
            assert events.cond.wait_for(lambda: events.published, 30.0)
        [(name, on_disk)] = events.published
        assert name == "seen" and [n for n in on_disk if n.endswith(".json")] == outbox.names()
        assert len(outbox.names()) == 1
    finally:
        release.set()
        node.uploader.writer.close(None)
        node.uploader.outbox.close()


def test_an_event_whose_entry_cannot_be_kept_is_logged_not_announced(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    errors: List[str] = []
    monkeypatch.setattr("rospy.logerr", lambda text, *args: errors.append(text % args))
    node = RosRules([rule()], str(tmp_path), 1, [""])
    assert node.uploader is not None
    node.events = events = Events(node.uploader.outbox.directory)  # type: ignore[assignment]
    monkeypatch.setattr(node.recorder, "trigger", lambda name: "")
    node.uploader.outbox.max_bytes = 10  # no entry fits
    node.uploader.writer.start()
    try:
        fire(node, 0.9)
        assert node.uploader.flush(30.0)
        assert events.published == [] and node.counters()["upload_dropped"] == 1
        [error] = errors
        assert "rule 'seen' fired on /cam (score=0.9), but its event was not announced" in error
        assert "raise ~upload_outbox_mb" in error
    finally:
        node.uploader.writer.close(None)
        node.uploader.outbox.close()


def test_an_event_kept_after_events_closed_is_logged_and_the_writer_goes_on(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import rospy

    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    warnings: List[str] = []
    monkeypatch.setattr("rospy.logwarn", lambda text, *args: warnings.append(text % args))
    node = RosRules([rule()], str(tmp_path), 1, [""])
    assert node.uploader is not None

    class Closed:
        def publish(self, event: Any) -> None:
            raise rospy.ROSException("publish() to a closed topic")

    node.events = Closed()  # type: ignore[assignment]
    monkeypatch.setattr(node.recorder, "trigger", lambda name: "")
    node.uploader.writer.start()
    try:
        fire(node, 0.9)
        fire(node, 0.8)
        assert node.uploader.flush(30.0)
        assert len(node.uploader.outbox.names()) == 2   # both kept: they are uploaded
        assert len(warnings) == 2 and "could not be published on ~events" in warnings[0]
    finally:
        node.uploader.writer.close(None)
        node.uploader.outbox.close()
