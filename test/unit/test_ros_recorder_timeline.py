"""The recorder under field time and content, without a master: ROS time that goes back (a
looping ``/clock``) or stops, latched topics, and topics with publishers of several types.
Bags are read back with rosbag."""
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import rosbag
import rospy
from std_msgs.msg import Int32, String
from test_ros_recorder import any_msg

from ml_bridge.pipelines.rules import parse_rules
from ml_bridge.ros.recording.bagfile import BagFile
from ml_bridge.ros.recording.recorder import Recorder


class Clock:
    """A clock the test moves (ROS time, or with ``start`` the monotonic wall clock)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def text(value: Any) -> str:
    """A connection header field as read back (rosbag gives bytes)."""
    return value.decode() if isinstance(value, bytes) else value


def read(path: str) -> List[Tuple[str, Any, float]]:
    with rosbag.Bag(path) as bag:
        return [(topic, msg, t.to_sec()) for topic, msg, t in bag.read_messages()]


def recorder(tmp_path: Any, clock: Clock, wall: Optional[Callable[[], float]] = None,
             **record: Any) -> Recorder:
    """Rule "seen" (cooldown 5 s) recording ``record`` (default: /cam/text and ~predictions)."""
    spec = {"topics": ["/cam/text", "~predictions"], "before": 1.0, "after": 0.5, "max": 2.0}
    spec.update(record)
    rules = parse_rules([{"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
                          "record": spec, "cooldown": 5.0}])
    extra = {} if wall is None else {"wall": wall}
    return Recorder(rules, str(tmp_path), 1 << 20, clock=clock,
                    resolve=lambda name: name.replace("~", "/node/"), **extra)


def bags(directory: Any) -> List[str]:
    """The complete bags in ``directory``, oldest name first."""
    return sorted(os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".bag"))


def latched(msg: Any, callerid: str) -> rospy.AnyMsg:
    m = any_msg(msg, callerid)
    m._connection_header["latching"] = "1"
    return m


def tick(rec: Recorder, clock: Clock, until: float, fires: Tuple[float, ...] = (),
         topics: Tuple[str, ...] = ("/cam/text", "/node/predictions")) -> List[Any]:
    """A message on each of ``topics`` every 1/8 s from clock.now to ``until``, the rule
    matching at ``fires``, the writer stepping after each; returns what the triggers returned."""
    got = []
    while clock.now <= until:
        for topic in topics:
            rec.receive(any_msg(String(f"{topic} {clock.now:.3f}")), topic)
        if clock.now in fires:
            got.append(rec.trigger("seen"))
        rec.step()
        clock.now += 0.125
    return got


def test_time_going_back_closes_the_recording_and_starts_a_new_window(tmp_path: Any,
                                                                       caplog: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, before=1.0, after=5.0, max=10.0)  # cooldown 5 s
    first = tick(rec, clock, 103.0, fires=(102.0,))
    assert first[0] and bags(tmp_path) == []          # open: its end (107) is ahead
    clock.now = 50.0                                  # the bag loops: back to its start
    with caplog.at_level(logging.WARNING, logger="ml_bridge"):
        second = tick(rec, clock, 52.0, fires=(51.5,))
    # The jump closed the first recording at once, and the rule fired again in the new
    # timeline: neither the old end (107) nor the old cooldown (until 112) holds it.
    assert bags(tmp_path) == [first[0]]
    assert "went back from 103.000 to 50.000" in caplog.text and "seen" in caplog.text
    assert second[0] and second[0] != first[0]
    rec.close()
    assert bags(tmp_path) == sorted([first[0], second[0]])
    old = read(first[0])
    assert min(t for _, _, t in old) == 101.0 and max(t for _, _, t in old) == 103.0
    assert {m.data.split()[1] for _, m, _ in old} >= {"101.000", "103.000"}
    new = read(second[0])
    # Only the new timeline: from 51.5 - before, nothing the ring held of the old one.
    assert min(t for _, _, t in new) == 50.5 and max(t for _, _, t in new) == 52.0
    assert all(50.5 <= float(m.data.split()[1]) <= 52.0 for _, m, _ in new)
    assert rec.counters()["time_jumps"] == 1


def test_a_stopped_clock_ends_a_recording_after_max_seconds_of_wall_time(tmp_path: Any) -> None:
    clock, wall = Clock(), Clock(5000.0)
    rec = recorder(tmp_path, clock, wall, after=1.0, max=2.0)
    rec.receive(any_msg(String("before the event")), "/cam/text")
    path = rec.trigger("seen")
    assert path
    for i in range(15):            # /clock paused at 100.0; 0.125 s of wall time apart
        rec.receive(any_msg(String(f"paused {i}")), "/cam/text")
        rec.trigger("seen")        # still matching: would extend it
        rec.step()
        wall.now += 0.125          # the last one arrives 1.75 s after the event
    assert bags(tmp_path) == []
    wall.now += 0.5                # 2.25 s of wall time: past max
    rec.step()
    assert bags(tmp_path) == [path]
    rec.receive(any_msg(String("after the end")), "/cam/text")
    rec.close()
    got = [m.data for _, m, _ in read(path)]
    assert got == ["before the event"] + [f"paused {i}" for i in range(15)]


def test_every_bag_starts_with_the_last_message_of_each_latching_publisher(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, topics=["/tf_static", "/cam/text"], before=1.0, after=0.5,
                   max=2.0)
    rec.receive(latched(String("a old"), "/static_a"), "/tf_static")
    rec.receive(latched(String("b"), "/static_b"), "/tf_static")
    clock.now = 100.5
    rec.receive(latched(String("a"), "/static_a"), "/tf_static")   # replaces "a old"
    rec.receive(any_msg(String("not latched"), "/other"), "/tf_static")
    clock.now = 103.0
    first = tick(rec, clock, 105.0, fires=(104.0,), topics=("/cam/text",))[0]
    second = tick(rec, clock, 120.0, fires=(115.0,), topics=("/cam/text",))[0]
    clock.now = 20.0                          # time went back: the kept messages stay valid
    third = tick(rec, clock, 22.0, fires=(21.0,), topics=("/cam/text",))[0]
    rec.close()
    for path, start in ((first, 103.0), (second, 114.0), (third, 20.0)):
        got = read(path)
        static = [(m.data, t) for topic, m, t in got if topic == "/tf_static"]
        assert sorted(static) == [("a", start), ("b", start)], path   # at the bag's start
        assert min(t for _, _, t in got) == start
        with rosbag.Bag(path) as bag:
            headers = [c.header for c in bag._connections.values() if c.topic == "/tf_static"]
        assert sorted((text(h["callerid"]), text(h["latching"])) for h in headers) == [
            ("/static_a", "1"), ("/static_b", "1")]   # rosbag play latches each of them


def test_a_latched_message_inside_the_window_is_not_written_twice(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, topics=["/map"], before=1.0, after=0.5, max=2.0)
    tick(rec, clock, 101.0, topics=("/map",))
    rec.receive(latched(String("map"), "/map_server"), "/map")      # at 101.125
    path = tick(rec, clock, 102.0, fires=(101.5,), topics=("/map",))[0]
    rec.close()
    got = [(m.data, t) for _, m, t in read(path)]
    assert got.count(("map", 101.125)) == 1 and [d for d, _ in got].count("map") == 1


def test_each_type_and_publisher_of_a_topic_has_its_own_connection(tmp_path: Any) -> None:
    sent: List[Tuple[str, Any]] = [("/pub_s", String("one")), ("/pub_i", Int32(7)),
                                   ("/pub_s", String("two")), ("/pub_i", Int32(-3)),
                                   ("/pub_s2", String("three"))]
    path = str(tmp_path / "mixed.bag")
    bag = BagFile(path)
    for i, (callerid, msg) in enumerate(sent):
        m = any_msg(msg, callerid)
        raw = (msg._type, bytes(m._buff), msg._md5sum, msg._full_text)
        bag.write("/mixed", 10.0 + i, raw, m._connection_header)
    bag.close()
    got = read(path)
    assert [(m._type, m.data) for _, m, _ in got] == [(m._type, m.data) for _, m in sent]
    with rosbag.Bag(path) as b:
        conns: Dict[str, str] = {text(c.header["callerid"]): text(c.header["type"])
                                 for c in b._connections.values()}
    assert conns == {"/pub_s": "std_msgs/String", "/pub_i": "std_msgs/Int32",
                     "/pub_s2": "std_msgs/String"}


def test_a_recorded_topic_with_two_types_reads_back_both(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, topics=["/mixed"], before=1.0, after=0.5, max=2.0)
    rec.receive(any_msg(String("text"), "/a"), "/mixed")
    rec.receive(any_msg(Int32(42), "/b"), "/mixed")
    path = rec.trigger("seen")
    assert path
    clock.now += 0.25
    rec.receive(any_msg(Int32(43), "/b"), "/mixed")
    rec.close()
    assert [m.data for _, m, _ in read(path)] == ["text", 42, 43]
