"""Rules on tracks: the keys track_id, track_duration, track_ended, count, total; one match
(one event) per track; the tracking step's rows and parameters (pipelines/track_stage.py)."""
import types
from typing import Any, Dict, List

import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Frame, Result
from ml_bridge.pipelines.rules import format_value, parse_rules
from ml_bridge.pipelines.track_stage import Tracking, TrackList
from ml_bridge.ros.recording.recorder import Recorder
from ml_bridge.ros.recording.rule_actions import RosRules

BASE_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 100_000_000
#: The seed's rule: a tracked object ended after >= 1.3 s (INTERFACE.md, Rules, new keys).
ENDED_LONG = {"name": "stayed", "all": [{"key": "track_ended", "op": "==", "value": True},
                                        {"key": "track_duration", "op": ">=", "value": 1.3}]}


def result(rows: List[Dict[str, Any]]) -> Result:
    return Result(Frame(np.zeros((2, 2), np.uint8), 1.0, header=None), ModelStamp(3), 1.0,
                  rows=rows)


def tracking(**given: Any) -> Tracking:
    return Tracking(dict({"track": True}, **given))


def test_track_ended_compares_with_true_or_false_only() -> None:
    (r,) = parse_rules([ENDED_LONG])
    assert r.all[0].value is True
    with pytest.raises(InputError, match=r"all\[0\].value: 'track_ended' compares with true or false"):
        parse_rules([{"name": "x", "all": [{"key": "track_ended", "op": "==", "value": "yes"}]}])
    with pytest.raises(InputError, match="'track_ended' is true or false: use == or !=, not >"):
        parse_rules([{"name": "x", "all": [{"key": "track_ended", "op": ">", "value": True}]}])
    assert format_value(True) == "true" and format_value(False) == "false"


def test_each_track_row_that_holds_is_a_match_with_its_track_id() -> None:
    (r,) = parse_rules([{"name": "cars", "all": [{"key": "label", "op": "==", "value": "car"},
                                                  {"key": "count", "op": ">=", "value": 2}]}])
    rows = [{"label": "car", "score": 0.9},                       # a box without a track
            {"label": "car", "score": 0.8},
            {"label": "car", "track_id": 7, "count": 2, "total": 5, "track_ended": False},
            {"label": "person", "track_id": 8, "count": 1, "total": 1, "track_ended": False},
            {"label": "car", "track_id": 9, "count": 2, "total": 5, "track_ended": False}]
    found = r.matches(result(rows))
    assert [(m.keys, m.values) for m in found] == [
        (("label", "count", "track_id"), ("car", "2", "7")),
        (("label", "count", "track_id"), ("car", "2", "9"))]
    (plain,) = parse_rules([{"name": "any_car", "all": [{"key": "label", "op": "==", "value": "car"}]}])
    assert [m.values for m in plain.matches(result(rows))] == [("car",), ("car", "7"), ("car", "9")]
    assert plain.match(result(rows)) is not None and plain.matches(result([])) == []


def test_the_seed_rule_fires_once_per_track_that_stayed_long_enough() -> None:
    (r,) = parse_rules([ENDED_LONG])
    stage = tracking(track_min_hits=2, track_max_age=0.3)
    state = stage.new_state()
    assert state is not None
    fired: List[List[str]] = []
    for i in range(40):
        dets = []
        if i < 20:          # a car seen 1.9 s
            dets.append((20.0 + i, 30.0, 0))
        if 5 <= i < 12:     # a person seen 0.6 s
            dets.append((90.0, 90.0 + i, 1))
        boxes = np.array([[x - 8, y - 8, x + 8, y + 8] for x, y, _ in dets], np.float32)
        classes = [c for _, _, c in dets]
        labels = ["car" if c == 0 else "person" for c in classes]
        step = stage.step(state, BASE_NS + i * STEP_NS, boxes, classes, [0.9] * len(dets), labels)
        rows = stage.rows([{"label": n, "class_id": c, "score": 0.9} for n, c in zip(labels, classes)],
                          step)
        fired += [list(m.values) for m in r.matches(result(rows))]
    assert len(fired) == 1
    ended, duration, track_id = fired[0]
    assert ended == "true" and float(duration) == pytest.approx(1.9) and int(track_id) > 0


def test_rows_carry_track_keys_and_counts_and_one_row_per_ended_track() -> None:
    stage = tracking(track_min_hits=1, track_max_age=0.1)
    state = stage.new_state()
    assert state is not None
    box = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    first = stage.step(state, BASE_NS, box, [0, 0], [0.5, 0.6], ["car", "car"])
    rows = stage.rows([{"label": "car", "score": 0.5}, {"label": "car", "score": 0.6}], first)
    assert [(row["count"], row["total"], row["track_ended"], row["track_duration"]) for row in rows] \
        == [(2, 2, False, 0.0), (2, 2, False, 0.0)]
    later = stage.step(state, BASE_NS + 5 * STEP_NS, box[:1], [0], [0.7], ["car"])
    rows = stage.rows([{"label": "car", "score": 0.7}], later)
    assert [(row["track_ended"], row["count"], row["total"]) for row in rows] == \
        [(False, 1, 3), (True, 1, 3), (True, 1, 3)]
    assert rows[0]["track_id"] not in (rows[1]["track_id"], rows[2]["track_id"])
    out = stage.outputs(later, frozenset({"tracks", "counts"}), {rows[0]["track_id"]: "taxi"})
    assert isinstance(out["tracks"], TrackList) and out["tracks"].labels == ["taxi", "car", "car"]
    assert out["counts"].total == [3] and stage.outputs(later, frozenset()) == {}


def test_tracking_parameters_are_declared_and_checked() -> None:
    off = Tracking({})
    assert not off.enabled and off.new_state() is None and off.lines == []
    on = tracking(count_lines=[{"name": "door", "points": [[1, 0], [1, 9]]}], track_iou="0.5")
    assert on.settings.iou == 0.5 and [line.name for line in on.lines] == ["door"]
    with pytest.raises(InputError, match=r"~count_lines\[0\] 'door': points must be two points"):
        tracking(count_lines=[{"name": "door", "points": [1, 2, 3]}])
    with pytest.raises(InputError, match="parameter ~track_iou must be"):
        tracking(track_iou=0)
    with pytest.raises(InputError, match="parameter ~track_min_hits must be"):
        tracking(track_min_hits=0)


def test_the_node_publishes_one_event_per_track(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Any) -> None:
    published: List[Any] = []
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: types.SimpleNamespace(
        publish=published.append))
    node = RosRules([ENDED_LONG], str(tmp_path), 1, [""])
    node.recorder = Recorder(node.rules, str(tmp_path), 1 << 20, clock=lambda: 100.0,
                             resolve=lambda name: name)   # a fake clock: no ROS time needed
    rows = [{"label": "car", "track_id": 4, "track_duration": 2.0, "track_ended": True},
            {"label": "car", "track_id": 5, "track_duration": 1.0, "track_ended": True},
            {"label": "bus", "track_id": 6, "track_duration": 1.5, "track_ended": True}]
    node.on_result(types.SimpleNamespace(camera="", topic="/image"), result(rows))  # type: ignore[arg-type]
    assert [(e.rule, e.keys, e.values) for e in published] == [
        ("stayed", ["track_ended", "track_duration", "track_id"], ["true", "2", "4"]),
        ("stayed", ["track_ended", "track_duration", "track_id"], ["true", "1.5", "6"])]
    assert node.counters()["events"] == 2
