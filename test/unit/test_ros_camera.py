"""rosrun ml_bridge camera: its frame sources and arguments, without a master; and, on a
private master, that a subscriber already listening gets every frame of a folder."""
import itertools
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List

import cv2
import numpy as np
import pytest

from ml_bridge.ros import camera as module
from ml_bridge.ros.camera import Connections, SourceError, frames, parse_args, wait_for_subscribers
from ml_bridge.ros.processes import free_port, stop

#: Bound on each wait for a process (start-up on a loaded machine).
WAIT = 60.0


def _write_images(folder: Path) -> "list[np.ndarray]":
    rgb = []
    for i, name in enumerate(["b.png", "a.png", "c.jpg"]):  # name order: a, b, c
        image = np.zeros((12, 16, 3), np.uint8)
        image[:, :, 0] = 40 * (i + 1)        # red channel tells them apart
        image[:, :, 2] = 200
        cv2.imwrite(str(folder / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rgb.append(image)
    (folder / "notes.txt").write_text("not an image")
    return [rgb[1], rgb[0], rgb[2]]


def test_a_folder_gives_its_images_in_name_order_as_rgb(tmp_path: Path) -> None:
    expected = _write_images(tmp_path)
    got = list(frames(str(tmp_path)))
    assert len(got) == 3
    for frame, want in zip(got, expected):
        assert frame.shape == (12, 16, 3) and frame.dtype == np.uint8
        np.testing.assert_allclose(frame.astype(int), want.astype(int), atol=3)  # jpeg


def test_loop_starts_the_folder_again(tmp_path: Path) -> None:
    _write_images(tmp_path)
    got = list(itertools.islice(frames(str(tmp_path), loop=True), 7))
    assert [int(f[0, 0, 0]) // 40 for f in got] == [2, 1, 3, 2, 1, 3, 2]


def test_a_video_file_gives_its_frames(tmp_path: Path) -> None:
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    got = list(frames(path))
    assert len(got) == 5 and got[0].shape == (24, 32, 3)
    assert [int(f.mean()) // 10 for f in got] == [0, 4, 8, 12, 16]


def test_synthetic_scenes_move_at_the_size_asked_for() -> None:
    first, second = itertools.islice(frames("synthetic", width=80, height=60), 2)
    assert first.shape == (60, 80, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, second)


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="neither a folder, a video file nor 'synthetic'"):
        next(frames(str(tmp_path / "missing")))
    with pytest.raises(SourceError, match="holds no images"):
        next(frames(str(tmp_path)))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        next(frames(str(tmp_path / "junk.mp4")))


def test_arguments_are_checked() -> None:
    args = parse_args(["--source", "synthetic", "--rate", "5", "--loop", "--frame-id", "cam"])
    assert args.rate == 5 and args.loop and args.frame_id == "cam"
    with pytest.raises(SystemExit):
        parse_args(["--source", "synthetic", "--rate", "0"])


def unreadable_folder(folder: Path, good: int = 0) -> None:
    """Three files named like images that OpenCV cannot read, and ``good`` real ones."""
    for name in ("a.png", "b.jpg", "c.png"):
        (folder / name).write_bytes(b"not an image")
    for i in range(good):
        cv2.imwrite(str(folder / f"good{i}.png"), np.full((8, 8, 3), 60 * i, np.uint8))


def test_a_looped_folder_that_reads_no_image_is_an_error_not_a_spin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unreadable_folder(tmp_path)
    reads: List[str] = []
    real = cv2.imread

    def counting(path: str, flags: int) -> Any:
        reads.append(path)
        assert len(reads) <= 30, "the looped folder is read over and over without a frame"
        return real(path, flags)
    monkeypatch.setattr(cv2, "imread", counting)
    monkeypatch.setattr(module.rospy, "logwarn", lambda text: None)
    with pytest.raises(SourceError, match=r"none of the 3 image file\(s\) in .* could be read"):
        next(frames(str(tmp_path), loop=True))
    assert len(reads) == 3  # one pass
    with pytest.raises(SourceError, match="could be read"):
        list(frames(str(tmp_path)))  # without --loop too: not a silent end with 0 frames


def test_each_unreadable_image_is_named_once_however_often_the_folder_loops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unreadable_folder(tmp_path, good=1)
    warned: List[str] = []
    monkeypatch.setattr(module.rospy, "logwarn", warned.append)
    got = list(itertools.islice(frames(str(tmp_path), loop=True), 10))  # 10 passes
    assert len(got) == 10
    assert sorted(w.split()[1] for w in warned) == ["a.png", "b.jpg", "c.png"]


class FakePublisher:
    """get_num_connections as rospy's Publisher has it, set by the test."""

    def __init__(self) -> None:
        self.connections = 0

    def get_num_connections(self) -> int:
        return self.connections


def test_the_first_frame_waits_for_the_subscribers_registered_at_start() -> None:
    pub, connections = FakePublisher(), Connections()
    done = threading.Event()
    result: List[bool] = []

    def waiter() -> None:
        result.append(wait_for_subscribers(pub, connections, ["/a", "/b"], WAIT))
        done.set()
    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    for _ in range(2):  # rospy calls peer_subscribe once a connection is up
        assert not done.is_set()
        pub.connections += 1
        connections.peer_subscribe("/image", None, None)
    assert done.wait(WAIT) and result == [True]
    # A subscriber that never connects: the wait ends at its bound, saying so.
    assert not wait_for_subscribers(pub, connections, ["/a", "/b", "/gone"], 0.05)


def test_shutdown_ends_the_wait_for_subscribers() -> None:
    pub, connections = FakePublisher(), Connections()
    done = threading.Event()

    def waiter() -> None:
        wait_for_subscribers(pub, connections, ["/a"], WAIT)
        done.set()
    threading.Thread(target=waiter, daemon=True).start()
    connections.stop()  # what rospy's shutdown hook calls (Ctrl-C)
    assert done.wait(WAIT)


SUBSCRIBER = """
import sys, rospy
from sensor_msgs.msg import Image
rospy.init_node("listener")
rospy.Subscriber("/cam/image", Image, lambda m: print("frame", m.data[0], flush=True),
                 queue_size=100)
print("subscribed", flush=True)
rospy.spin()
"""


class Lines:
    """A process's output lines, read on a thread; waits for a condition on them."""

    def __init__(self, proc: "subprocess.Popen[str]") -> None:
        self.lines: List[str] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: "subprocess.Popen[str]") -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.strip())
                self.cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(lambda: predicate(self.lines), timeout))


def test_a_subscriber_already_listening_gets_every_frame_of_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    count = 6
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:02d}.png"), np.full((24, 32, 3), 30 * i, np.uint8))
    port = free_port()
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/",
               ROS_HOME=str(tmp_path / "ros"), ROS_LOG_DIR=str(tmp_path / "log"))
    procs: List[Any] = []

    def start(cmd: List[str], **kwargs: Any) -> Any:
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True, **kwargs))
        return procs[-1]
    try:
        start(["rosmaster", "--core", "-p", str(port)], stdout=subprocess.DEVNULL,
              stderr=subprocess.DEVNULL)
        listener = start([sys.executable, "-c", SUBSCRIBER], stdout=subprocess.PIPE, text=True)
        out = Lines(listener)
        assert out.wait_for(lambda lines: "subscribed" in lines), out.lines
        script = Path(__file__).resolve().parents[2] / "scripts" / "camera"
        cam = start([sys.executable, str(script), "--source", str(folder), "--rate", "50",
                     "--frame-id", "cam", "image:=/cam/image"], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)
        cam_out, _ = cam.communicate(timeout=WAIT)
        assert cam.returncode == 0, cam_out
        expected = [f"frame {30 * i}" for i in range(count)]  # each frame's grey level
        assert out.wait_for(lambda lines: [x for x in lines if x.startswith("frame")] == expected,
                            timeout=10.0), (out.lines, cam_out)
    finally:
        for proc in reversed(procs):
            stop(proc, grace=5.0)


def test_frames_keep_coming_after_ros_time_goes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under sim time, ROS time going back (a bag loop with --clock, a simulator reset) does not
    stop the camera: rospy's Rate raises on it unless it is made to start over."""
    import time

    import genpy
    import rospy

    stamps: List[float] = []
    published = threading.Condition()

    class Publisher:
        resolved_name = "/image"

        def __init__(self, *_args: Any, **_kwargs: Any) -> None:
            pass

        def publish(self, msg: Any) -> None:
            with published:
                stamps.append(msg.header.stamp.to_sec())
                published.notify_all()

        def get_num_connections(self) -> int:
            return 0

    monkeypatch.setattr(rospy, "Publisher", Publisher)
    monkeypatch.setattr(rospy, "on_shutdown", lambda _hook: None)
    monkeypatch.setattr(rospy.rostime, "_rostime_initialized", True)
    monkeypatch.setattr(rospy.rostime, "_rostime_current", None)  # undone: wall-clock time again
    now = 1000.0
    rospy.rostime._set_rostime(genpy.Time.from_sec(now))  # what rospy's /clock subscriber does
    args = parse_args(["--source", "synthetic", "--rate", "10", "--count", "8", "--wait", "0",
                       "--width", "32", "--height", "24"])
    done = threading.Event()
    outcome: List[Any] = []

    def run() -> None:
        try:
            outcome.append(module.publish(args))
        except BaseException as err:  # reported by the assertion below
            outcome.append(err)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    jumped = False
    deadline = time.monotonic() + WAIT
    while not done.wait(0.01) and time.monotonic() < deadline:  # each turn advances the clock
        with published:
            if len(stamps) >= 4 and not jumped:
                now, jumped = 10.0, True
        now += 0.05
        rospy.rostime._set_rostime(genpy.Time.from_sec(now))
    assert outcome == [0] and len(stamps) == 8, outcome
    assert any(stamp < 1000.0 for stamp in stamps)  # frames after the jump, on the new timeline
