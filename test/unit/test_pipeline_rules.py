"""Rules (pipelines/rules.py) and their schedule (pipelines/schedule.py), without ROS."""
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import ModelStamp
from ml_bridge.pipelines.base import Classes, Frame, Result
from ml_bridge.pipelines.classify import rows_of
from ml_bridge.pipelines.rules import Rule, check_cameras, parse_rules
from ml_bridge.pipelines.schedule import EXTEND, FIRE, IGNORE, Schedule

EXAMPLE = {  # the example of INTERFACE.md "Rules"
    "name": "person_seen",
    "all": [{"key": "label", "op": "==", "value": "person"},
            {"key": "score", "op": ">=", "value": 0.8}],
    "any": [],
    "record": {"topics": ["/camera/image_raw", "~predictions"], "before": 5.0, "after": 5.0,
               "max": 60.0},
    "cooldown": 10.0,
}


def rule(**fields: Any) -> Rule:
    """One rule from its fields (name defaults to 'r')."""
    (parsed,) = parse_rules([dict({"name": "r"}, **fields)])
    return parsed


def cond(key: str, op: str, value: Any) -> Dict[str, Any]:
    return {"key": key, "op": op, "value": value}


def result(rows: List[Dict[str, Any]], version: int = 1, inference_ms: float = 2.5) -> Result:
    return Result(Frame(np.zeros((2, 2), np.uint8), 1.0, header="h"), ModelStamp(version),
                  inference_ms, rows=rows)


# -- parsing --------------------------------------------------------------------------------------
def test_the_documented_example_parses() -> None:
    (r,) = parse_rules([EXAMPLE])
    assert r.name == "person_seen"
    assert [(c.key, c.op, c.value) for c in r.all] == [("label", "==", "person"),
                                                       ("score", ">=", 0.8)]
    assert r.any == ()
    assert r.record is not None
    assert r.record.topics == ("/camera/image_raw", "~predictions")
    assert (r.record.before, r.record.after, r.record.max) == (5.0, 5.0, 60.0)
    assert r.cooldown == 10.0 and r.camera is None


@pytest.mark.parametrize("value", [None, "", []])
def test_no_rules(value: Any) -> None:
    assert parse_rules(value) == []


def test_record_defaults_and_no_record() -> None:
    r = rule(all=[cond("score", ">", 0.5)], record={"topics": ["~predictions"]})
    assert r.record is not None and (r.record.before, r.record.after, r.record.max) == (5, 5, 60)
    assert rule(any=[cond("score", ">", 0.5)]).record is None


def test_a_numeric_label_value_compares_as_text() -> None:
    r = rule(all=[cond("label", "==", 3)])  # yaml reads `value: 3` as an int; digits say "3"
    assert r.match(result([{"label": "3", "class_id": 3, "score": 0.9}])) is not None


BAD = [  # (rules, words the message must hold: the rule and the field)
    ({"name": "x"}, ["~rules must be a list"]),
    (["x"], ["~rules[0] must be a dict"]),
    ([{"all": [cond("score", ">", 0)]}], ["~rules[0]: name"]),
    ([{"name": "a b", "all": [cond("score", ">", 0)]}], ["~rules[0] 'a b': name: must be"]),
    ([{"name": "a", "all": [cond("score", ">", 0)]}, {"name": "a", "any": [cond("score", ">", 0)]}],
     ["~rules[1] 'a': name"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "recrod": {}}], ["~rules[0] 'r': recrod"]),
    ([{"name": "r"}], ["~rules[0] 'r': all", "no conditions"]),
    ([{"name": "r", "all": {"key": "score"}}], ["'r': all: must be a list"]),
    ([{"name": "r", "all": ["score > 1"]}], ["'r': all[0]: must be a dict"]),
    ([{"name": "r", "all": [cond("colour", "==", "red")]}], ["'r': all[0].key", "colour"]),
    ([{"name": "r", "all": [cond("score", "=~", 1)]}], ["'r': all[0].op", "=~"]),
    ([{"name": "r", "all": [cond("label", ">", "a")]}], ["'r': all[0].op", "text"]),
    ([{"name": "r", "all": [{"key": "score", "op": ">"}]}], ["'r': all[0].value: missing"]),
    ([{"name": "r", "all": [dict(cond("score", ">", 1), val=2)]}], ["'r': all[0].val: unknown"]),
    ([{"name": "r", "all": [cond("score", ">", "high")]}], ["'r': all[0].value", "'high'"]),
    ([{"name": "r", "all": [cond("score", ">", True)]}], ["'r': all[0].value"]),
    ([{"name": "r", "all": [cond("score", ">", float("nan"))]}], ["'r': all[0].value"]),
    ([{"name": "r", "all": [cond("label", "==", [1])]}], ["'r': all[0].value", "text"]),
    ([{"name": "r", "any": [cond("score", ">", 0), cond("lable", "==", "a")]}], ["'r': any[1].key"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": ["/a"]}], ["'r': record: must be"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {}}], ["'r': record.topics"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": "/a"}}],
     ["'r': record.topics"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": ["/a b"]}}],
     ["'r': record.topics", "'/a b'"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": ["/a"], "bfore": 1}}],
     ["'r': record.bfore: unknown"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": ["/a"], "before": -1}}],
     ["'r': record.before", ">= 0"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": ["/a"], "after": "5"}}],
     ["'r': record.after"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "record": {"topics": ["/a"], "max": 0}}],
     ["'r': record.max", "> 0"]),
    ([{"name": "r", "all": [cond("score", ">", 0)],
       "record": {"topics": ["/a"], "after": 10, "max": 5}}], ["'r': record.max", "record.after"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "cooldown": -1}], ["'r': cooldown"]),
    ([{"name": "r", "all": [cond("score", ">", 0)], "camera": 3}], ["'r': camera"]),
]


@pytest.mark.parametrize("rules,words", BAD, ids=[w[0] for _, w in BAD])
def test_an_invalid_rule_names_the_rule_and_the_field(rules: Any, words: List[str]) -> None:
    with pytest.raises(InputError) as err:
        parse_rules(rules)
    for word in words:
        assert word in str(err.value)


def test_a_camera_the_node_does_not_have_is_refused() -> None:
    rules = parse_rules([{"name": "l", "all": [cond("score", ">", 0)], "camera": "left"}])
    check_cameras(rules, ["left", "right"])
    with pytest.raises(InputError, match=r"~rules\[0\] 'l': camera: 'left'.*right, top"):
        check_cameras(rules, ["right", "top"])
    with pytest.raises(InputError, match="one image topic"):
        check_cameras(rules, [""])


# -- evaluation -----------------------------------------------------------------------------------
OP_CASES = [("==", 0.5, True), ("==", 0.6, False), ("!=", 0.6, True), ("!=", 0.5, False),
            (">", 0.4, True), (">", 0.5, False), (">=", 0.5, True), (">=", 0.6, False),
            ("<", 0.6, True), ("<", 0.5, False), ("<=", 0.5, True), ("<=", 0.4, False)]


@pytest.mark.parametrize("op,value,holds", OP_CASES)
def test_each_op_on_a_score_of_one_half(op: str, value: float, holds: bool) -> None:
    r = rule(all=[cond("score", op, value)])
    assert (r.match(result([{"label": "a", "class_id": 0, "score": 0.5}])) is not None) is holds


@pytest.mark.parametrize("op,value,holds", [("==", "cat", True), ("==", "dog", False),
                                            ("!=", "dog", True), ("!=", "cat", False)])
def test_label_ops(op: str, value: str, holds: bool) -> None:
    r = rule(all=[cond("label", op, value)])
    assert (r.match(result([{"label": "cat", "class_id": 1, "score": 0.9}])) is not None) is holds


def test_classify_a_threshold_reports_what_it_looked_at() -> None:
    r = rule(all=[cond("label", "==", "person"), cond("score", ">=", 0.8)])
    rows = rows_of(Classes([2], [0.8125], ["person"]))
    m = r.match(result(rows))
    assert m is not None and m.rule is r
    assert dict(zip(m.keys, m.values)) == {"label": "person", "score": "0.8125"}
    assert r.match(result(rows_of(Classes([2], [0.75], ["person"])))) is None
    assert r.match(result(rows_of(Classes([1], [0.95], ["car"])))) is None


def test_all_must_hold_on_the_same_row() -> None:
    r = rule(all=[cond("label", "==", "b"), cond("score", ">=", 0.8)])
    rows = [{"label": "a", "class_id": 0, "score": 0.9}, {"label": "b", "class_id": 1, "score": 0.5}]
    assert r.match(result(rows)) is None  # label b and a score >= 0.8, but not in one row


def test_any_needs_one_when_given() -> None:
    r = rule(all=[cond("score", ">", 0.5)],
             any=[cond("label", "==", "cat"), cond("label", "==", "dog")])
    assert r.match(result([{"label": "dog", "class_id": 1, "score": 0.7}])) is not None
    assert r.match(result([{"label": "cow", "class_id": 2, "score": 0.7}])) is None
    assert r.match(result([{"label": "cat", "class_id": 0, "score": 0.3}])) is None
    only_any = rule(any=[cond("class_id", "==", 2), cond("class_id", "==", 5)])
    assert only_any.match(result([{"label": "", "class_id": 5, "score": 0.1}])) is not None


def test_objects_fire_on_the_object_that_matches() -> None:
    objects = [{"label": "car", "class_id": 0, "score": 0.99},      # one row per detection
               {"label": "person", "class_id": 1, "score": 0.6},
               {"label": "person", "class_id": 1, "score": 0.91}]
    r = rule(all=[cond("label", "==", "person"), cond("score", ">", 0.9)])
    m = r.match(result(objects))
    assert m is not None and m.values == ("person", "0.91")


def test_segment_classes_present_with_their_pixel_fraction() -> None:
    classes = [{"label": "background", "class_id": 0, "score": 0.85},  # largest first
               {"label": "square", "class_id": 2, "score": 0.15}]
    big_square = rule(all=[cond("class_id", "==", 2), cond("score", ">=", 0.1)])
    m = big_square.match(result(classes))
    assert m is not None and dict(zip(m.keys, m.values)) == {"class_id": "2", "score": "0.15"}
    assert rule(all=[cond("label", "==", "square"), cond("score", ">=", 0.2)]).match(
        result(classes)) is None


def test_result_level_keys_combine_with_rows_and_stand_alone() -> None:
    r = rule(all=[cond("label", "==", "a"), cond("model_version", ">=", 2)])
    rows = [{"label": "a", "class_id": 0, "score": 0.5}]
    assert r.match(result(rows, version=1)) is None
    m = r.match(result(rows, version=2))
    assert m is not None and dict(zip(m.keys, m.values)) == {"label": "a", "model_version": "2"}
    slow = rule(all=[cond("inference_ms", ">", 100)])
    no_detections: List[Dict[str, Any]] = []  # an objects frame without detections
    m = slow.match(result(no_detections, inference_ms=150.25))
    assert m is not None and m.values == ("150.25",)
    assert slow.match(result(no_detections, inference_ms=50)) is None
    assert rule(all=[cond("label", "!=", "x")]).match(result(no_detections)) is None


def test_camera_restriction() -> None:
    r = rule(all=[cond("score", ">", 0)], camera="left")
    assert r.applies_to("left") and not r.applies_to("right")
    assert rule(all=[cond("score", ">", 0)]).applies_to("right")


# -- schedule (a fake clock: every call says what time it is) ------------------------------------
def recorder(after: float = 2.0, longest: float = 5.0, before: float = 1.0,
             cooldown: float = 3.0) -> Schedule:
    return Schedule(rule(all=[cond("score", ">", 0)], cooldown=cooldown,
                         record={"topics": ["/a"], "before": before, "after": after,
                                 "max": longest}))


def test_a_recording_spans_before_to_after() -> None:
    s = recorder()
    assert s.match(10.0) == FIRE
    assert (s.window_start, s.start, s.end) == (9.0, 10.0, 12.0)
    assert not s.poll(12.0)            # the end itself still belongs to the recording
    assert s.poll(12.01) and not s.recording


def test_matches_extend_the_end_up_to_max() -> None:
    s = recorder(after=2.0, longest=5.0)
    assert s.match(10.0) == FIRE
    assert s.match(11.5) == EXTEND and s.end == 13.5
    assert s.match(11.0) == EXTEND and s.end == 13.5   # an earlier match never shortens it
    assert s.match(13.4) == EXTEND and s.end == 15.0   # capped at 10 + max
    assert s.match(14.9) == EXTEND and s.end == 15.0
    assert not s.poll(15.0) and s.poll(15.1)


def test_cooldown_after_the_recording_ignores_matches() -> None:
    s = recorder(after=2.0, cooldown=3.0)
    assert s.match(10.0) == FIRE
    assert s.match(12.5) == IGNORE      # after the end (12): the recording is over, cooling
    assert not s.recording
    assert s.match(14.9) == IGNORE      # cooling until 12 + 3
    assert s.match(15.0) == FIRE and s.start == 15.0


def test_no_cooldown_fires_again_right_after_the_end() -> None:
    s = recorder(after=1.0, cooldown=0.0)
    assert s.match(10.0) == FIRE
    assert s.match(11.5) == FIRE and s.start == 11.5


def test_a_rule_without_record_fires_then_cools_down() -> None:
    s = Schedule(rule(all=[cond("score", ">", 0)], cooldown=2.0))
    assert s.match(1.0) == FIRE and not s.recording
    assert s.match(2.9) == IGNORE
    assert s.match(3.0) == FIRE
    every = Schedule(rule(all=[cond("score", ">", 0)]))
    assert [every.match(t) for t in (1.0, 1.0, 1.1)] == [FIRE, FIRE, FIRE]


def test_stop_ends_an_open_recording_now() -> None:
    s = recorder(after=5.0, longest=10.0, cooldown=1.0)
    s.match(10.0)
    s.stop(12.0)
    assert not s.recording and s.end == 12.0
    assert s.match(12.5) == IGNORE and s.match(13.0) == FIRE


def first_fire(s: Schedule, times: List[float]) -> Optional[float]:
    return next((t for t in times if s.match(t) == FIRE), None)


def test_frames_at_20_hz_with_matches_at_known_frames() -> None:
    s = recorder(before=2.0, after=1.5, longest=6.0, cooldown=100.0)
    frames = [i / 20 for i in range(200)]
    matches = {60, 70, 80}
    actions = [s.match(t) if i in matches else ("end" if s.poll(t) else "") for i, t in
               enumerate(frames)]
    assert actions[60] == FIRE and actions[70] == actions[80] == EXTEND
    assert s.window_start == pytest.approx(1.0) and s.end == pytest.approx(5.5)
    assert actions.index("end") == 111                        # the first frame after 5.5 s
    assert first_fire(s, frames) is None                      # cooling down for 100 s
