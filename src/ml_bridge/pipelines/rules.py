"""Rules: conditions on results that fire events and recordings (``~rules``); no rospy.

A rule is a dict in the node's yaml::

    - name: person_seen
      all: [{key: label, op: "==", value: person}, {key: score, op: ">=", value: 0.8}]
      any: []                 # optional: at least one must hold when given
      record: {topics: [/camera/image_raw, ~predictions], before: 5.0, after: 5.0, max: 60.0}
      cooldown: 10.0          # seconds before the rule may fire again
      upload: {url: "https://example.com/events", headers: {}, bag: false}  # see rule_upload
      camera: left            # optional: only this camera's results ("" / absent: every camera)

A result is looked at row by row: a row is one class of a Prediction (one per batch row for
classify and clip, one per class present for segment with its pixel fraction as ``score``)
or one object of ObjectPredictions, with the result's ``model_version`` and ``inference_ms``
added. A rule holds when one row satisfies every ``all`` condition and, if ``any`` is given,
at least one ``any`` condition. A result without rows (no detections) is one row of the
result-level keys only, so a rule on ``inference_ms`` alone still sees it.

With ``~track``, the rows of confirmed tracks carry ``track_id``, ``track_duration``
(seconds), ``track_ended`` (true on the one row in which the track ends), ``count`` and
``total`` (of the row's label, see :mod:`ml_bridge.pipelines.track_stage`). Each such row a
rule holds on is a match of its own (one event per track, its ``track_id`` among the keys);
of the rows without a track, the first that holds is one match, as for any result.

When a rule acts is :class:`~ml_bridge.pipelines.schedule.Schedule`'s business.
"""
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.base import Result
from ml_bridge.pipelines.rule_upload import Upload, parse_upload

#: Keys a condition may test, and whether each is text (``label``), true/false or a number.
KEYS: Dict[str, str] = {"label": "text", "class_id": "number", "score": "number",
                        "model_version": "number", "inference_ms": "number",
                        "track_id": "number", "track_duration": "number", "track_ended": "bool",
                        "count": "number", "total": "number"}
OPS: Dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge,
    "<": operator.lt, "<=": operator.le}
RULE_FIELDS = ("name", "all", "any", "record", "cooldown", "camera", "upload")
RECORD_FIELDS = ("topics", "before", "after", "max")
CONDITION_FIELDS = ("key", "op", "value")
#: ``record`` defaults, in seconds.
DEFAULT_BEFORE = 5.0
DEFAULT_AFTER = 5.0
DEFAULT_MAX = 60.0
# Rule names end up in bag file names: keep them to characters every file system takes.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: The longest rule name: its longest bag file name, ``<name>_<YYYY-MM-DD-HH-MM-SS>_9999
#: .bag.unfinished`` (ml_bridge.ros.recording.bagfile), must fit the 255 bytes file systems allow a name.
MAX_NAME = 255 - len("_YYYY-MM-DD-HH-MM-SS_9999.bag.unfinished")
# A ROS graph name, relative, global or private (~).
_TOPIC = re.compile(r"^[~/]?[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Condition:
    """``key op value``, e.g. ``score >= 0.8``."""

    key: str
    op: str
    value: Union[str, float, bool]

    def holds(self, row: Mapping[str, Any]) -> bool:
        """True when the row has the key and its value satisfies the condition."""
        if self.key not in row:
            return False
        actual = row[self.key]
        kind = KEYS[self.key]
        actual = str(actual) if kind == "text" else bool(actual) if kind == "bool" else float(actual)
        return bool(OPS[self.op](actual, self.value))


@dataclass(frozen=True)
class Record:
    """What to record when the rule fires: ``topics`` from ``before`` seconds ahead of the
    event to ``after`` seconds after its last match, at most ``max`` seconds after the event."""

    topics: Tuple[str, ...]
    before: float = DEFAULT_BEFORE
    after: float = DEFAULT_AFTER
    max: float = DEFAULT_MAX


@dataclass(frozen=True)
class Match:
    """A rule that held on a result, with the keys it looked at and their values (as text)."""

    rule: "Rule"
    keys: Tuple[str, ...]
    values: Tuple[str, ...]
    row: Mapping[str, Any] = field(default_factory=dict)  # the row it held on, result keys too


@dataclass(frozen=True)
class Rule:
    """One validated rule; :func:`parse_rules` builds them."""

    name: str
    all: Tuple[Condition, ...] = ()
    any: Tuple[Condition, ...] = ()
    record: Optional[Record] = None
    cooldown: float = 0.0
    camera: Optional[str] = None   # None: every camera's results
    upload: Optional[Upload] = None

    @property
    def keys(self) -> Tuple[str, ...]:
        """The keys the rule tests, each once, in the order written."""
        return tuple(dict.fromkeys(c.key for c in self.all + self.any))

    def applies_to(self, camera: str) -> bool:
        """True when the rule looks at the results of ``camera`` ("" for a single camera)."""
        return self.camera is None or self.camera == camera

    def match(self, result: Result) -> Optional[Match]:
        """The first row of ``result`` the rule holds on, or None."""
        found = self.matches(result)
        return found[0] if found else None

    def matches(self, result: Result) -> List[Match]:
        """One match per track row the rule holds on, in row order, then the first other row
        it holds on (module docstring); [] when it holds on none."""
        level = {"model_version": result.model_version, "inference_ms": result.inference_ms}
        found: List[Match] = []
        untracked = False
        for row in result.rows or [{}]:
            tracked = "track_id" in row
            if untracked and not tracked:
                continue
            merged = dict(row)
            merged.update(level)
            if all(c.holds(merged) for c in self.all) and (
                    not self.any or any(c.holds(merged) for c in self.any)):
                keys = tuple(k for k in self.keys if k in merged)
                if tracked and "track_id" not in keys:
                    keys += ("track_id",)
                found.append(Match(self, keys, tuple(format_value(merged[k]) for k in keys), merged))
                untracked = untracked or not tracked
        return found


def format_value(value: Any) -> str:
    """A row value as Event text: integers plainly, floats with 6 significant digits,
    true/false as yaml writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def parse_rules(value: Any) -> List[Rule]:
    """Validates ``~rules``: a list of rule dicts (None or empty: no rules).

    Raises:
        InputError: naming the rule (index and name) and the field that is wrong.
    """
    if value is None or value == "" or value == []:
        return []
    if not isinstance(value, (list, tuple)):
        raise InputError(f"~rules must be a list of rules (dicts with name, all, any, record, "
                         f"cooldown), got {type(value).__name__} {value!r}")
    rules: List[Rule] = []
    for index, item in enumerate(value):
        rule = parse_rule(item, index)
        if any(r.name == rule.name for r in rules):
            raise InputError(f"~rules[{index}] '{rule.name}': name: another rule has this name; "
                             "give each rule its own")
        rules.append(rule)
    return rules


def parse_rule(item: Any, index: int) -> Rule:
    """One rule dict, validated; ``index`` is its position in ``~rules`` (for messages)."""
    if not isinstance(item, dict):
        raise InputError(f"~rules[{index}] must be a dict with name, all, any, record, cooldown; "
                         f"got {type(item).__name__} {item!r}")
    name = item.get("name")
    where = f"~rules[{index}]" + (f" '{name}'" if isinstance(name, str) and name else "")

    def fail(field: str, problem: str) -> InputError:
        return InputError(f"{where}: {field}: {problem}")

    for key in item:
        if key not in RULE_FIELDS:
            raise fail(str(key), f"unknown field; a rule has {', '.join(RULE_FIELDS)}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("name", f"must be letters, digits, '_', '-' or '.' (it names the bag files), "
                           f"got {name!r}")
    if len(name) > MAX_NAME:
        raise fail("name", f"{len(name)} characters is too long: at most {MAX_NAME}, so that "
                           "its bag file names fit the 255 bytes a file name may have")
    all_ = _conditions(item.get("all"), "all", fail)
    any_ = _conditions(item.get("any"), "any", fail)
    if not all_ and not any_:
        raise fail("all", "the rule has no conditions; give at least one in 'all' or 'any'")
    record = _record(item["record"], fail) if item.get("record") is not None else None
    cooldown = _seconds(item.get("cooldown", 0.0), "cooldown", fail)
    camera = item.get("camera")
    if camera is not None and not isinstance(camera, str):
        raise fail("camera", f"must be a camera name such as 'left', got {camera!r}")
    upload = (parse_upload(item["upload"], record is not None, fail)
              if item.get("upload") is not None else None)
    return Rule(name, all_, any_, record, cooldown, camera or None, upload)


Fail = Callable[[str, str], InputError]


def _conditions(value: Any, field: str, fail: Fail) -> Tuple[Condition, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise fail(field, f"must be a list of conditions {{key, op, value}}, got {value!r}")
    return tuple(_condition(c, f"{field}[{i}]", fail) for i, c in enumerate(value))


def _condition(value: Any, field: str, fail: Fail) -> Condition:
    if not isinstance(value, dict):
        raise fail(field, f"must be a dict {{key, op, value}}, got {value!r}")
    for name in value:
        if name not in CONDITION_FIELDS:
            raise fail(f"{field}.{name}", "unknown field; a condition has key, op, value")
    for name in CONDITION_FIELDS:
        if name not in value:
            raise fail(f"{field}.{name}", "missing")
    key, op, raw = value["key"], value["op"], value["value"]
    if key not in KEYS:
        raise fail(f"{field}.key", f"unknown key {key!r}; use one of {', '.join(KEYS)}")
    if op not in OPS:
        raise fail(f"{field}.op", f"unknown op {op!r}; use one of {' '.join(OPS)} "
                                  "(quote them in yaml)")
    if KEYS[key] == "bool":
        if op not in ("==", "!="):
            raise fail(f"{field}.op", f"'{key}' is true or false: use == or !=, not {op}")
        if not isinstance(raw, bool):
            raise fail(f"{field}.value", f"'{key}' compares with true or false, got {raw!r}")
        return Condition(key, op, raw)
    if KEYS[key] == "text":
        if op not in ("==", "!="):
            raise fail(f"{field}.op", f"'{key}' is text: use == or !=, not {op}")
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise fail(f"{field}.value", f"'{key}' compares with text, got {raw!r}")
        return Condition(key, op, str(raw))  # digits' labels are "0".."9": yaml reads 3 as int
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise fail(f"{field}.value", f"'{key}' compares with a finite number, got {raw!r}")
    return Condition(key, op, float(raw))


def _seconds(value: Any, field: str, fail: Fail, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise fail(field, f"must be a number of seconds {bound}, got {value!r}")
    return float(value)


def _record(value: Any, fail: Fail) -> Record:
    if not isinstance(value, dict):
        raise fail("record", f"must be a dict with topics, before, after, max; got {value!r}")
    for name in value:
        if name not in RECORD_FIELDS:
            raise fail(f"record.{name}", f"unknown field; record has {', '.join(RECORD_FIELDS)}")
    topics = value.get("topics")
    if not isinstance(topics, (list, tuple)) or not topics:
        raise fail("record.topics", f"must be a non-empty list of topic names, got {topics!r}")
    for topic in topics:
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            raise fail("record.topics", f"{topic!r} is not a ROS topic name "
                                        "(e.g. /camera/image_raw or ~predictions)")
    before = _seconds(value.get("before", DEFAULT_BEFORE), "record.before", fail)
    after = _seconds(value.get("after", DEFAULT_AFTER), "record.after", fail)
    longest = _seconds(value.get("max", DEFAULT_MAX), "record.max", fail, positive=True)
    if after > longest:
        raise fail("record.max", f"{longest:g} s is shorter than record.after ({after:g} s); "
                                 "max bounds the whole recording after the event")
    return Record(tuple(dict.fromkeys(topics)), before, after, longest)


def check_cameras(rules: Sequence[Rule], cameras: Sequence[str]) -> None:
    """Refuses a rule whose ``camera`` is not one of the node's cameras.

    Raises:
        InputError: naming the rule and the cameras there are.
    """
    for index, rule in enumerate(rules):
        if rule.camera is not None and rule.camera not in cameras:
            named = [c for c in cameras if c]
            there = (f"the cameras are {', '.join(named)}" if named else
                     "with one image topic (or none) there are no camera names: leave it out")
            raise InputError(f"~rules[{index}] '{rule.name}': camera: '{rule.camera}' is not a "
                             f"camera of this node; {there}")
