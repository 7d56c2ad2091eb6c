"""Plays :mod:`crossing_video` to a detect node with ``~track`` and collects what it answers.

Used by the track_chain rostest's test node and, as a process of its own, by
test_track_upload_restart.py: ``python crossing_feed.py NODE`` (e.g. ``/chain``) plays the
video to the node NODE (which subscribes to IMAGE_TOPIC), waits for one ``~events`` message
per qualifying track and prints one JSON line ``{"track_ids": [...]}``: the tracks whose
events the node published.

Each frame is published once the node has answered the previous one on ``~tracks`` and
``~counts``: the node's latest-frame queue then drops none, and the truth is exact.
"""
import json
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import crossing_video as video
import rospy
from ml_bridge.msg import Counts, Event, Tracks
from sensor_msgs.msg import Image

from ml_bridge.ros.conversions import array_to_image

IMAGE_TOPIC = "/crossing/image_raw"
BASE = 1_800_000_000   # the video's first stamp, seconds
#: Bound on each wait: a node answering a frame, or starting, on a loaded machine.
WAIT = 120.0


def stamp_of(index: int) -> rospy.Time:
    """Frame ``index``'s stamp: BASE + index periods, exact in nanoseconds."""
    return rospy.Time(BASE) + rospy.Duration(0, index * int(round(video.PERIOD * 1e9)))


class Topic:
    """Every message of a topic in arrival order, and by stamp; waits on a condition."""

    def __init__(self, topic: str, msg_type: Any) -> None:
        self.cond = threading.Condition()
        self.messages: List[Any] = []
        self.by_stamp: Dict[rospy.Time, Any] = {}
        self.sub = rospy.Subscriber(topic, msg_type, self._got, queue_size=500)

    def _got(self, msg: Any) -> None:
        with self.cond:
            self.messages.append(msg)
            self.by_stamp[msg.header.stamp] = msg
            self.cond.notify_all()

    def wait(self, stamp: rospy.Time, timeout: float) -> Optional[Any]:
        """The message stamped ``stamp``, or None after ``timeout`` seconds."""
        with self.cond:
            self.cond.wait_for(lambda: stamp in self.by_stamp, timeout)
            return self.by_stamp.get(stamp)

    def wait_for(self, test: Callable[[List[Any]], bool], timeout: float) -> bool:
        """Whether ``test(messages)`` came true within ``timeout`` seconds."""
        with self.cond:
            return self.cond.wait_for(lambda: test(self.messages), timeout)


class Feed:
    """The video's publisher and the node's ``~tracks``, ``~counts`` and ``~events``."""

    def __init__(self, node: str) -> None:
        self.pub = rospy.Publisher(IMAGE_TOPIC, Image, queue_size=10)
        self.tracks = Topic(node + "/tracks", Tracks)
        self.counts = Topic(node + "/counts", Counts)
        self.events = Topic(node + "/events", Event)

    def publish(self, index: int) -> rospy.Time:
        """Publishes frame ``index``; returns its stamp."""
        msg = array_to_image(video.frame(index), "rgb8")
        msg.header.stamp, msg.header.frame_id = stamp_of(index), "crossing_cam"
        self.pub.publish(msg)
        return msg.header.stamp

    def warm_up(self) -> None:
        """Publishes an empty frame (no square: nothing to track, stamped before the video)
        until the node answers it and ``~events`` is connected."""
        deadline = time.time() + WAIT
        while True:
            stamp = self.publish(-20)
            if (self.tracks.wait(stamp, 0.5) is not None and self.counts.wait(stamp, 0.5)
                    is not None and self.events.sub.get_num_connections() > 0):
                return
            if time.time() > deadline:
                raise AssertionError("the node did not answer the warm-up frame")

    def play(self) -> None:
        """Publishes every frame of the video, each once the previous one was answered."""
        for index in range(video.FRAMES):
            stamp = self.publish(index)
            for topic in (self.tracks, self.counts):
                if topic.wait(stamp, WAIT) is None:
                    raise AssertionError(f"{topic.sub.name}: no answer to frame {index}")

    def fired(self) -> List[int]:
        """The ``track_id`` of each ``~events`` message so far, in arrival order."""
        with self.events.cond:
            return [int(e.values[e.keys.index("track_id")]) for e in self.events.messages]


def main(node: str) -> None:
    rospy.init_node("crossing_feed", disable_signals=True)
    rospy.wait_for_service(node + "/info", timeout=WAIT)
    feed = Feed(node)
    feed.warm_up()
    feed.play()
    wanted = len(video.qualifying())
    if not feed.events.wait_for(lambda msgs: len(msgs) >= wanted, WAIT):
        raise AssertionError(f"{len(feed.fired())} of {wanted} events")
    print(json.dumps({"track_ids": feed.fired()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
