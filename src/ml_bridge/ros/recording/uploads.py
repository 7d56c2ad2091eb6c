"""The rules' ``upload`` action in the node: the uploader, what an event sends, diagnostics.

Events of rules with ``upload`` are handed to an :class:`~ml_bridge.core.uploader.Uploader`
whose outbox is ``<~record_dir>/outbox/<node name>``: a node restarted under its name sends
what it left, and two nodes sharing ``~record_dir`` do not send each other's events.
"""
import math
import os
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

import rospy
from diagnostic_msgs.msg import DiagnosticStatus

from ml_bridge.core.errors import InputError
from ml_bridge.core.outbox import Outbox
from ml_bridge.core.upload_http import variables
from ml_bridge.core.uploader import Uploader
from ml_bridge.pipelines.base import Result
from ml_bridge.pipelines.rules import Match, Rule
from ml_bridge.ros.recording.bagfile import ACTIVE


def make_uploader(rules: Sequence[Rule], record_dir: str, retry_max: Any,
                  outbox_mb: Any) -> Optional[Uploader]:
    """The uploader of ``rules`` (None when no rule uploads), not started.

    Raises:
        InputError: ``~upload_retry_max`` or ``~upload_outbox_mb`` is not a positive number, a
            header names an environment variable that is not set, or the outbox cannot be
            created (or another running node uses it).
    """
    if not any(rule.upload for rule in rules):
        return None
    for name, value in (("upload_retry_max", retry_max), ("upload_outbox_mb", outbox_mb)):
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value) or value <= 0):
            raise InputError(f"~{name} must be a number > 0, got {value!r}")
    for index, rule in enumerate(rules):
        for header, text in rule.upload.headers if rule.upload else ():
            for var in variables(text):
                if var not in os.environ:
                    raise InputError(
                        f"~rules[{index}] '{rule.name}': upload.headers.{header}: ${{{var}}} is "
                        "not set in the node's environment; export it before starting the node "
                        "(it is read at each send and never logged)")
    node = rospy.get_name().strip("/").replace("/", ".") or "node"
    directory = os.path.join(os.path.abspath(os.path.expanduser(record_dir)), "outbox", node)
    outbox = Outbox(directory, int(outbox_mb * (1 << 20)))
    return Uploader(outbox, float(retry_max), writing_suffix=ACTIVE)


def json_value(value: Any) -> Any:
    """A row value as JSON has it: numbers (numpy's too), text, true/false, lists; a number
    that is not finite is null (JSON has no NaN)."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_value(value.tolist())
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def event_entry(match: Match, camera: str, result: Result, model: str,
                bag: str) -> Dict[str, Any]:
    """The outbox entry of an event of ``match.rule`` (which uploads): the JSON body as the
    interface lists it, where it goes and, with ``bag: true``, the bag to PUT after it."""
    upload = match.rule.upload
    assert upload is not None
    body = {
        "id": uuid.uuid4().hex, "rule": match.rule.name, "stamp": float(result.frame.stamp),
        "camera": camera, "keys": list(match.keys), "values": list(match.values),
        "rows": [{key: json_value(value) for key, value in match.row.items()}],
        "model": model, "model_version": int(result.model_version), "node": rospy.get_name(),
        "bag": os.path.basename(bag)}
    return {"url": upload.url, "headers": upload.header_dict, "body": body,
            "bag_path": bag if upload.bag else "", "posted": False}


def upload_problems(uploader: Optional[Uploader]) -> List[Tuple[int, str]]:
    """What ``/diagnostics`` says of uploads, as (level, message): WARN while tries fail and
    once events were dropped unsent; each with its cause and what to do."""
    if uploader is None:
        return []
    counters = uploader.counters()
    found: List[Tuple[int, str]] = []
    if uploader.failing:
        found.append((DiagnosticStatus.WARN, (
            f"uploads fail, the last: {uploader.last_problem}; {counters['upload_pending']} "
            f"event(s) wait in {uploader.outbox.directory} and are retried (check the url, "
            "the server and the network)")))
    if counters["upload_dropped"]:
        found.append((DiagnosticStatus.WARN, (
            f"{counters['upload_dropped']} event(s) dropped unsent: the outbox was full or "
            "could not be written; raise ~upload_outbox_mb, free space in ~record_dir")))
    return found
