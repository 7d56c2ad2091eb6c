"""Recordings against what disks and directories do in the field: a full disk, a directory
moved away or read-only, two nodes sharing one, a long rule name; and what /diagnostics says.

The recorder is driven with a fake ROS clock as in test_ros_recorder (messages handed in as
rospy would, the writer stepped by hand), so every file operation has happened when a test
looks.
"""
import errno
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List

import pytest
import rosbag
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import String
from test_ros_recorder import Clock, any_msg, read

from ml_bridge.core.errors import InputError
from ml_bridge.pipelines.rules import MAX_NAME, parse_rules
from ml_bridge.ros.recording.bagfile import MAX_SUFFIX, UNFINISHED, bag_name, claim, set_aside_leftovers
from ml_bridge.ros.recording.recorder import Recorder
from ml_bridge.ros.recording.rule_actions import RosRules

HERE = os.path.dirname(os.path.abspath(__file__))


def rules(name: str = "seen", **record: Any) -> Any:
    spec = {"topics": ["/t"], "before": 1.0, "after": 0.5, "max": 2.0}
    spec.update(record)
    return parse_rules([{"name": name, "all": [{"key": "score", "op": ">", "value": 0.5}],
                         "record": spec}])


def recorder(directory: Any, clock: Clock, buffer_bytes: int = 1 << 20) -> Recorder:
    return Recorder(rules(), str(directory), buffer_bytes, clock=clock, resolve=lambda n: n)


def feed(rec: Recorder, clock: Clock, until: float, fire: float = -1.0) -> List[Any]:
    """A message every 1/8 s up to ``until``, the rule firing at ``fire``, the writer stepped
    after each; returns what the trigger announced."""
    got = []
    while clock.now <= until:
        rec.receive(any_msg(String(f"m {clock.now:.3f}")), "/t")
        if clock.now == fire:
            got.append(rec.trigger("seen"))
        rec.step()
        clock.now += 0.125
    return got


# -- a full disk --------------------------------------------------------------------------------
def test_a_full_disk_fails_one_recording_frees_its_file_and_the_next_one_records(tmp_path: Any) -> None:
    out = subprocess.run([sys.executable, os.path.join(HERE, "full_disk.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen: Dict[str, Any] = json.loads(out.stdout)
    full, after = seen["full"], seen["after"]
    # No descriptor keeps the failed file: deleting it gives its space back.
    assert full["open"] == []
    assert [n for n in full["files"] if not n.endswith(".bag" + UNFINISHED)] == []
    assert full["counters"]["record_errors"] == 1 and full["failing"]
    assert "File too large" in full["last_error"]
    # Space is back: the next recording is written, and the status no longer says failing.
    assert after["counters"]["recordings_written"] == 1 and not after["failing"]
    (done,) = [n for n in after["files"] if n.endswith(".bag")]
    assert len(read(str(tmp_path / done))) == 13  # 103 .. 104.5 every 1/8 s


def test_a_bag_that_cannot_start_leaves_no_file_and_the_event_names_none(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_args: Any, **_kw: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    clock = Clock()
    rec = recorder(tmp_path, clock)
    monkeypatch.setattr(rosbag, "Bag", full)
    announced = feed(rec, clock, 102.0, fire=101.0)
    assert announced == [""]  # no bag will appear under any name
    assert os.listdir(tmp_path) == []
    assert rec.counters()["record_errors"] == 1 and "No space left" in rec.last_error


# -- the directory --------------------------------------------------------------------------------
def test_a_record_dir_moved_away_is_made_again_for_the_next_recording(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path / "rec", clock)
    (first,) = feed(rec, clock, 102.0, fire=101.0)
    os.rename(tmp_path / "rec", tmp_path / "offloaded")  # a routine offload
    (second,) = feed(rec, clock, 105.0, fire=104.0)
    assert os.path.dirname(second) == str(tmp_path / "rec")
    assert [m.data for _, m, _ in read(second)][0] == "m 103.000"
    assert os.path.exists(tmp_path / "offloaded" / os.path.basename(first))
    assert rec.counters()["record_errors"] == 0


def test_a_record_dir_moved_during_a_recording_gets_the_bag_complete(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path / "rec", clock)
    (path,) = feed(rec, clock, 101.25, fire=101.0)
    os.rename(tmp_path / "rec", tmp_path / "offloaded")
    feed(rec, clock, 102.0)
    assert rec.counters()["recordings_written"] == 1
    assert os.listdir(tmp_path / "offloaded") == [os.path.basename(path)]
    assert max(t for _, _, t in read(str(tmp_path / "offloaded" / os.path.basename(path)))) == 101.5


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs")
def test_a_record_dir_where_no_file_can_be_created_is_refused_at_start_up() -> None:
    # sysfs takes no new files, not even from root (who ignores mode bits): a read-only
    # directory that is really there.
    with pytest.raises(InputError, match=r"~record_dir /sys/kernel .*writable directory"):
        recorder("/sys/kernel", Clock())


def test_a_full_record_dir_at_start_up_is_warned_of_not_refused(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    real_open = os.open

    def full(path: Any, *args: Any, **kw: Any) -> int:
        if os.path.basename(str(path)).startswith(".ml_bridge-probe"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", full)
    with caplog.at_level(logging.WARNING, logger="ml_bridge"):
        recorder(tmp_path, Clock())  # space may be freed while the node serves
    assert "is full" in caplog.text and "recordings fail until space is freed" in caplog.text


# -- two nodes, one directory ------------------------------------------------------------------
def test_a_name_set_aside_by_a_node_starting_up_before_it_was_locked_is_given_up(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    real_flock = fcntl.flock
    raced: List[int] = []

    def racing(fd: int, op: int) -> None:
        if not raced:  # between our exclusive create and our lock: the other node's start-up
            raced.append(fd)
            assert len(set_aside_leftovers(str(tmp_path))) == 1
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", racing)
    with caplog.at_level(logging.WARNING, logger="ml_bridge"):
        bag = claim(str(tmp_path), "r", 1000.0)
    assert bag.path.endswith("_2.bag") and caplog.text == ""
    bag.close()
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(bag.path).replace("_2.bag", ".bag")
                                            + UNFINISHED, os.path.basename(bag.path)]


def test_two_nodes_firing_in_the_same_second_announce_and_write_their_own_bags(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    second = time.localtime(1_700_000_000)
    monkeypatch.setattr(time, "localtime", lambda *_a: second)  # both fire in this second
    clocks = [Clock(), Clock()]
    nodes = [recorder(tmp_path, clock) for clock in clocks]
    announced = []
    while clocks[0].now <= 102.0:  # one frame seen by both, messages of each their own
        for rec, clock, text in zip(nodes, clocks, ("a", "b")):
            rec.receive(any_msg(String(f"{text} {clock.now:.3f}")), "/t")
            if clock.now == 101.0:
                announced.append(rec.trigger("seen"))
        for rec, clock in zip(nodes, clocks):
            rec.step()
            clock.now += 0.125
    assert announced[0] != announced[1]
    for path, text in zip(announced, ("a", "b")):
        assert {m.data[0] for _, m, _ in read(path)} == {text}
    assert [rec.counters()["record_errors"] for rec in nodes] == [0, 0]


def test_a_node_process_sharing_the_directory_writes_its_own_bag_beside_a_live_one(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    second = time.localtime(1_700_000_000)  # shared_dir_node.SECOND: both name bags by it
    monkeypatch.setattr(time, "localtime", lambda *_a: second)
    clock = Clock()
    rec = recorder(tmp_path, clock)
    feed(rec, clock, 100.875)
    rec.receive(any_msg(String("m 101.000")), "/t")
    ours = rec.trigger("seen")  # the event is out; the other node fires before our writer runs
    out = subprocess.run([sys.executable, os.path.join(HERE, "shared_dir_node.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    other = json.loads(out.stdout)
    feed(rec, clock, 102.0)
    assert other["errors"] == 0 and other["announced"] != ours
    assert {m.data[0] for _, m, _ in read(other["announced"])} == {"b"}
    assert {m.data[0] for _, m, _ in read(ours)} == {"m"}  # its start-up left our bag alone
    assert rec.counters()["record_errors"] == 0


# -- names -------------------------------------------------------------------------------------
def test_a_rule_name_is_bounded_so_that_its_longest_file_name_fits(tmp_path: Any) -> None:
    with pytest.raises(InputError, match=f"name: {MAX_NAME + 1} characters is too long: at most {MAX_NAME}"):
        rules("r" * (MAX_NAME + 1))
    (rule,) = rules("r" * MAX_NAME)
    longest = tmp_path / (bag_name(rule.name, time.time(), MAX_SUFFIX) + UNFINISHED)
    longest.write_bytes(b"")  # the file system takes it
    bag = claim(str(tmp_path), rule.name, time.time())
    bag.close()
    assert os.path.exists(bag.path)


def test_bags_are_named_by_the_wall_clock_like_rosbag_record(tmp_path: Any) -> None:
    clock = Clock()  # ROS time 100 s: a simulator's clock, far from the wall clock's date
    rec = recorder(tmp_path, clock)
    before = time.time()
    (path,) = feed(rec, clock, 101.0, fire=101.0)
    after = time.time()
    stamp = os.path.basename(path)[len("seen_"):-len(".bag")]
    named = time.mktime(time.strptime(stamp, "%Y-%m-%d-%H-%M-%S"))
    assert int(before) - 1 <= named <= after


# -- /diagnostics --------------------------------------------------------------------------------
def test_diagnostics_say_error_while_recordings_fail_and_warn_once_one_failed_or_lost_messages(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rospy.Publisher", lambda *_a, **_kw: None)
    node = RosRules([{"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
                      "record": {"topics": ["/t"], "after": 0.5}}], str(tmp_path / "rec"), 1, [""])
    clock = Clock()
    node.recorder = rec = recorder(tmp_path / "rec", clock)
    assert node.problems() == []
    (tmp_path / "rec").rmdir()
    (tmp_path / "rec").write_text("")  # the directory cannot be made: recordings fail
    feed(rec, clock, 102.0, fire=101.0)
    assert node.problems() == [(DiagnosticStatus.ERROR, (
        "recordings fail, the last: rule 'seen': FileExistsError: [Errno 17] File exists: "
        f"'{tmp_path}/rec'; check ~record_dir {tmp_path}/rec (free space, permissions)"))]
    (tmp_path / "rec").unlink()
    feed(rec, clock, 105.0, fire=104.0)
    assert rec.counters()["recordings_written"] == 1  # recorded again: no longer failing
    assert [(level, text.split(",")[0]) for level, text in node.problems()] == [
        (DiagnosticStatus.WARN, "1 recording(s) failed")]
    feed(rec, clock, 107.0, fire=107.0)
    rec.limit = 30  # room for two messages waiting: the writer, not stepped, falls behind
    for _ in range(4):
        rec.receive(any_msg(String("m 107.000")), "/t")
    assert [(level, text.split(":")[0]) for level, text in node.problems()] == [
        (DiagnosticStatus.WARN, "1 recording(s) failed, the last"),
        (DiagnosticStatus.WARN, "recordings lost 2 messages")]
