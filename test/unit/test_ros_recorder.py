"""The rules' recorder without a master: ring buffer, bags under a temporary name, leftovers,
and whole recordings driven by a fake clock (messages handed in as rospy would)."""
import io
import logging
import os
from typing import Any, Dict, List, Tuple

import pytest
import rosbag
import rospy
from std_msgs.msg import String

from ml_bridge.core.errors import InputError
from ml_bridge.core.threads import ClosedError
from ml_bridge.pipelines.rules import parse_rules
from ml_bridge.ros.recording.bagfile import ACTIVE, UNFINISHED, BagFile, claim, set_aside_leftovers
from ml_bridge.ros.recording.recorder import Message, Recorder, Ring, serialized
from ml_bridge.ros.recording.rule_actions import RosRules


def raw_string(text: str) -> Tuple[str, bytes, str, str]:
    buff = io.BytesIO()
    String(text).serialize(buff)
    return (String._type, buff.getvalue(), String._md5sum, String._full_text)


def any_msg(msg: Any, callerid: str = "/cam") -> rospy.AnyMsg:
    """What rospy hands an AnyMsg subscriber: the bytes and the publisher's connection header."""
    buff = io.BytesIO()
    msg.serialize(buff)
    m = rospy.AnyMsg()
    m._buff = buff.getvalue()
    m._connection_header = {"type": msg._type, "md5sum": msg._md5sum, "callerid": callerid,
                            "message_definition": msg._full_text, "latching": "0"}
    return m


def read(path: str) -> List[Tuple[str, Any, float]]:
    with rosbag.Bag(path) as bag:
        return [(topic, msg, t.to_sec()) for topic, msg, t in bag.read_messages()]


# -- ring buffer --------------------------------------------------------------------------------
def test_the_ring_keeps_the_horizon_and_counts_drops_only_for_the_byte_bound() -> None:
    ring = Ring(horizon=2.0, limit=10_000)
    for i in range(50):  # 0.1 s apart, 100 bytes each
        ring.add(Message("/a", i * 0.1, ("t", b"x" * 100, "m", ""), {}))
    assert [round(m.t, 1) for m in ring.since(0.0, frozenset({"/a"}))][0] == 2.9  # 4.9 - 2.0
    assert ring.dropped == 0 and ring.bytes == 100 * len(ring)
    small = Ring(horizon=100.0, limit=1_000)
    for i in range(25):
        small.add(Message("/a" if i % 2 else "/b", float(i), ("t", b"x" * 100, "m", ""), {}))
    assert small.bytes <= 1_000 and len(small) == 10 and small.dropped == 15
    assert [m.t for m in small.since(20.0, frozenset({"/b"}))] == [20.0, 22.0, 24.0]


def test_a_message_bigger_than_the_buffer_is_dropped_not_kept() -> None:
    ring = Ring(horizon=10.0, limit=50)
    ring.add(Message("/a", 1.0, ("t", b"x" * 100, "m", ""), {}))
    assert len(ring) == 0 and ring.dropped == 1 and ring.bytes == 0


def test_typed_and_raw_messages_serialize_alike() -> None:
    raw, header = serialized(any_msg(String("hi")))
    assert raw == raw_string("hi") and header["callerid"] == "/cam"
    typed, _ = serialized(String("hi"))
    assert typed == raw


# -- bag files ----------------------------------------------------------------------------------
def test_a_bag_has_its_final_name_only_once_complete(tmp_path: Any) -> None:
    path = str(tmp_path / "r_1.bag")
    bag = BagFile(path)
    bag.write("/text", 10.5, raw_string("one"), {"callerid": "/cam", "latching": "1"})
    bag.write("/text", 10.75, raw_string("two"), {"callerid": "/cam", "latching": "1"})
    assert os.path.exists(path + ACTIVE) and not os.path.exists(path)
    bag.close()
    assert os.path.exists(path) and not os.path.exists(path + ACTIVE)
    got = read(path)
    assert [(t, m.data, s) for t, m, s in got] == [("/text", "one", 10.5), ("/text", "two", 10.75)]
    with rosbag.Bag(path) as b:
        info = b.get_type_and_topic_info().topics["/text"]
        assert (info.msg_type, info.message_count) == ("std_msgs/String", 2)
        (conn,) = b._connections.values()
        assert conn.header["latching"] in ("1", b"1")  # rosbag play latches what was latched


def test_names_do_not_collide(tmp_path: Any) -> None:
    first = claim(str(tmp_path), "r", 1000.0)
    assert os.path.basename(first.path).startswith("r_") and first.path.endswith(".bag")
    second = claim(str(tmp_path), "r", 1000.0)        # the first is being written
    assert second.path == first.path[:-4] + "_2.bag"
    first.close()
    os.rename(second.temp, second.path + UNFINISHED)  # a leftover of the second name
    assert claim(str(tmp_path), "r", 1000.0).path == first.path[:-4] + "_3.bag"


def test_leftovers_are_set_aside_but_a_live_writer_is_left_alone(tmp_path: Any) -> None:
    dead = tmp_path / "old_2024-01-01-00-00-00.bag.active"
    dead.write_bytes(b"#ROSBAG V2.0\n")
    (tmp_path / "done.bag").write_bytes(b"x")
    live = BagFile(str(tmp_path / "live.bag"))
    try:
        renamed = set_aside_leftovers(str(tmp_path))
        assert renamed == [str(tmp_path / ("old_2024-01-01-00-00-00.bag" + UNFINISHED))]
        assert os.path.exists(live.temp) and (tmp_path / "done.bag").exists()
    finally:
        live.close()
    assert sorted(os.listdir(tmp_path)) == ["done.bag", "live.bag",
                                            "old_2024-01-01-00-00-00.bag.unfinished"]
    assert set_aside_leftovers(str(tmp_path / "missing")) == []


# -- whole recordings with a fake clock ---------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder(tmp_path: Any, clock: Clock, buffer_bytes: int = 1 << 20, **record: Any) -> Recorder:
    spec = {"topics": ["/cam/text", "~predictions"], "before": 1.0, "after": 0.5, "max": 2.0}
    spec.update(record)
    rules = parse_rules([{"name": "seen", "all": [{"key": "score", "op": ">", "value": 0.5}],
                          "record": spec, "cooldown": 5.0}])
    return Recorder(rules, str(tmp_path), buffer_bytes, clock=clock,
                    resolve=lambda name: name.replace("~", "/node/"))


def feed(rec: Recorder, clock: Clock, until: float, fires: Dict[float, Any]) -> List[Any]:
    """Messages on both topics every 1/8 s (exact in binary) from clock.now to ``until``; the
    rule matches at the times in ``fires``; the writer steps after each. Returns what the
    triggers returned."""
    got = []
    while clock.now <= until:
        t = clock.now
        rec.receive(any_msg(String(f"img {t:.3f}")), "/cam/text")
        rec.receive(String(f"pred {t:.3f}"), "/node/predictions")  # typed: the node's own sub
        if t in fires:
            got.append(rec.trigger("seen"))
        rec.step()
        clock.now += 0.125
    return got


def test_a_recording_holds_before_to_after_the_last_match(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    assert rec.topics == ["/cam/text", "/node/predictions"]
    paths = feed(rec, clock, 106.0, {103.0: True, 103.5: True})
    assert paths[0].startswith(str(tmp_path)) and paths[1] is None  # fired, then extended
    (path,) = [os.path.join(tmp_path, n) for n in os.listdir(tmp_path)]
    assert path == paths[0]
    got = read(path)
    times = sorted({t for _, _, t in got})
    assert times[0] == 102.0 and times[-1] == 104.0   # 103 - before .. 103.5 + after
    assert {topic for topic, _, _ in got} == {"/cam/text", "/node/predictions"}
    assert ("/cam/text", "img 102.000") in [(topic, m.data) for topic, m, _ in got]
    assert ("/node/predictions", "pred 104.000") in [(topic, m.data) for topic, m, _ in got]
    assert rec.counters()["recordings_written"] == 1


def test_max_bounds_the_recording_and_cooldown_follows(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, max=1.0)
    matches = {100.0 + i * 0.125: True for i in range(24)}  # every message until 102.875
    results = feed(rec, clock, 110.0, matches)
    assert isinstance(results[0], str) and results[0]
    assert all(r is None for r in results[1:])          # extended, then cooling down (5 s)
    (path,) = [os.path.join(tmp_path, n) for n in os.listdir(tmp_path)]
    times = [t for _, _, t in read(path)]
    assert max(times) == pytest.approx(101.0) and min(times) == pytest.approx(100.0)
    clock.now = 106.1  # the recording ended at 101.0: cooled down at 106.0
    assert rec.trigger("seen")


def test_close_writes_an_open_recording_complete(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, after=2.0, max=10.0)
    feed(rec, clock, 101.0, {100.5: True})
    rec.close()
    (name,) = os.listdir(tmp_path)
    assert name.endswith(".bag")
    assert max(t for _, _, t in read(os.path.join(tmp_path, name))) == pytest.approx(101.0)


def test_the_writer_thread_is_closed_once_and_cannot_start_again(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    unregistered: List[str] = []

    class Subscriber:
        def __init__(self, topic: str, *_a: Any, **_kw: Any) -> None:
            self.topic = topic

        def unregister(self) -> None:
            unregistered.append(self.topic)

    monkeypatch.setattr(rospy, "Subscriber", Subscriber)
    rec = recorder(tmp_path, Clock())
    rec.start()
    assert rec.thread.is_alive()
    rec.close()
    rec.close()  # the second returns at once: nothing unsubscribed twice
    assert not rec.thread.is_alive()
    assert sorted(unregistered) == ["/cam/text", "/node/predictions"]
    with pytest.raises(ClosedError, match="make a new Recorder"):
        rec.start()


def test_a_full_buffer_drops_the_oldest_and_says_so(tmp_path: Any) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock, buffer_bytes=200)
    feed(rec, clock, 101.0, {})
    counters = rec.counters()
    assert counters["buffer_dropped"] > 0 and counters["buffer_bytes"] <= 200


def test_leftovers_are_set_aside_with_a_warning_at_start_up(tmp_path: Any, caplog: Any) -> None:
    (tmp_path / "seen_x.bag.active").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="ml_bridge"):
        recorder(tmp_path, Clock())
    assert os.listdir(tmp_path) == ["seen_x.bag.unfinished"]
    assert "seen_x.bag.unfinished" in caplog.text and "did not stop cleanly" in caplog.text


def test_an_unwritable_record_dir_is_refused(tmp_path: Any) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="~record_dir"):
        recorder(blocker / "sub", Clock())


@pytest.mark.parametrize("mb", [0, -1, "big", True])
def test_record_buffer_mb_must_be_positive(mb: Any, tmp_path: Any) -> None:
    with pytest.raises(InputError, match="~record_buffer_mb"):
        RosRules([], str(tmp_path), mb, [""])
