"""``rosrun ml_bridge camera``: publishes stamped rgb8 frames on ``image`` (remap it).

Sources: a folder of images (PNG/JPEG, in name order), a video file (anything OpenCV reads),
or ``synthetic``: the built-in ``shapes`` scenes with the shapes moving, so a pipeline can be
tried without a robot or a camera::

    rosrun ml_bridge camera --source synthetic --rate 10 image:=/camera/image_raw
    rosrun ml_bridge camera --source ~/frames --loop --frame-id camera_optical
    rosrun ml_bridge camera --source run.mp4 --rate 30

Subscribers registered when it starts get every frame: it waits (``--wait`` seconds at most)
until they are connected before the first frame, and publishes synchronously, so a frame is
in the socket when ``publish`` returns and the last frames are not lost when it exits.
"""
import argparse
import os
import sys
import threading
import warnings
from typing import Any, Iterator, List, Optional, Set

import numpy as np
import rosgraph
import rospy
from sensor_msgs.msg import Image

from ml_bridge.ros.conversions import array_to_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: ``--wait`` default: seconds the subscribers registered at start have to connect.
DEFAULT_WAIT = 5.0


class SourceError(Exception):
    """The source cannot be read: names it and why."""


def parse_args(argv: List[str]) -> argparse.Namespace:
    """Command-line arguments (ROS remappings already stripped)."""
    p = argparse.ArgumentParser(prog="rosrun ml_bridge camera", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="a folder of images, a video file, or 'synthetic'")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second (default 10)")
    p.add_argument("--loop", action="store_true", help="start again at the end of a folder or video")
    p.add_argument("--frame-id", default="camera", help="header.frame_id of the frames")
    p.add_argument("--width", type=int, default=320, help="synthetic: frame width (default 320)")
    p.add_argument("--height", type=int, default=240, help="synthetic: frame height (default 240)")
    p.add_argument("--seed", type=int, default=0, help="synthetic: scene seed")
    p.add_argument("--count", type=int, default=0, help="stop after this many frames (0 = never)")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT,
                   help="seconds to wait for the subscribers registered at start to connect "
                        f"before the first frame (default {DEFAULT_WAIT:g}; 0 = do not wait)")
    args = p.parse_args(argv)
    if not args.rate > 0:
        p.error(f"--rate must be > 0, got {args.rate}")
    if not args.wait >= 0:
        p.error(f"--wait must be >= 0 seconds, got {args.wait}")
    if args.width < 8 or args.height < 8:
        p.error("--width and --height must be at least 8")
    return args


def frames(source: str, loop: bool = False, width: int = 320, height: int = 240,
           seed: int = 0) -> Iterator[np.ndarray]:
    """RGB uint8 frames from ``source``: a folder, a video file or ``synthetic`` (endless).

    Raises:
        SourceError: the folder has no images, or the file cannot be opened as a video.
    """
    if source == "synthetic":
        from ml_bridge.core.synthetic import moving_scenes

        yield from moving_scenes(height, width, seed)
        return
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        yield from _folder(path, loop)
    elif os.path.isfile(path):
        yield from _video(path, loop)
    else:
        raise SourceError(f"source '{source}' is neither a folder, a video file nor 'synthetic'")


def _folder(path: str, loop: bool) -> Iterator[np.ndarray]:
    import cv2

    names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise SourceError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    unreadable: Set[str] = set()  # named once: a looped folder would repeat them every pass
    while True:
        read = 0
        for name in names:
            image = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
            if image is None:
                if name not in unreadable:
                    unreadable.add(name)
                    rospy.logwarn(f"camera: {name} is not a readable image; skipped (named once)")
                continue
            read += 1
            yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if not read:  # with --loop, another pass would spin without ever yielding a frame
            raise SourceError(f"none of the {len(names)} image file(s) in {path} could be read "
                              f"(e.g. {names[0]}); give a folder of PNG, JPEG or BMP images "
                              "OpenCV can decode")
        if not loop:
            return


def _video(path: str, loop: bool) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SourceError(f"cannot open {path} as a video (OpenCV could not decode it)")
    try:
        produced = 0
        while True:
            ok, image = capture.read()
            if not ok:
                if not loop or produced == 0:
                    return
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            produced += 1
            yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class Connections(rospy.SubscribeListener):
    """Wakes :func:`wait_for_subscribers` when a subscriber connects or ROS shuts down."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.stopped = False

    def peer_subscribe(self, topic_name: str, topic_publish: Any, peer_publish: Any) -> None:
        """Called by rospy when a subscriber's connection is up."""
        with self.cond:
            self.cond.notify_all()

    def stop(self) -> None:
        """The rospy shutdown hook: no more waiting."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def registered_subscribers(topic: str) -> List[str]:
    """The nodes other than this one that the master lists as subscribers of ``topic``.

    Raises:
        OSError, rosgraph.MasterException: the master cannot be asked.
    """
    me = rospy.get_name()
    _, subscribers, _ = rosgraph.Master(me).getSystemState()
    return sorted({node for name, nodes in subscribers if name == topic
                   for node in nodes if node != me})


def wait_for_subscribers(pub: Any, connections: Connections, expected: List[str],
                         timeout: float) -> bool:
    """Waits until ``pub`` has a connection per node in ``expected``, ``timeout`` passes or
    ROS shuts down.

    Returns:
        True when every expected subscriber is connected (or none is expected).
    """
    def ready() -> bool:
        return connections.stopped or pub.get_num_connections() >= len(expected)

    with connections.cond:
        connections.cond.wait_for(ready, timeout)
    return pub.get_num_connections() >= len(expected)


def publish(args: argparse.Namespace) -> int:
    """Publishes frames until the source ends, ``--count`` is reached or ROS shuts down."""
    connections = Connections()
    rospy.on_shutdown(connections.stop)
    with warnings.catch_warnings():
        # No queue_size: publish() writes to each connection before it returns (rospy warns
        # about that), so no frame waits in a queue thread when the process exits.
        warnings.simplefilter("ignore", SyntaxWarning)
        pub = rospy.Publisher("image", Image, subscriber_listener=connections)
    try:
        expected = registered_subscribers(pub.resolved_name) if args.wait > 0 else []
    except (rosgraph.MasterException, OSError) as err:  # only the wait is lost: go on
        rospy.logwarn(f"camera: cannot list the subscribers of {pub.resolved_name} ({err}); "
                      "the first frames may reach only those already connected")
        expected = []
    if expected and not wait_for_subscribers(pub, connections, expected, args.wait):
        rospy.logwarn(f"camera: {pub.get_num_connections()} of the {len(expected)} subscriber(s) "
                      f"of {pub.resolved_name} ({', '.join(expected)}) connected within "
                      f"{args.wait:g} s; publishing anyway (--wait sets the bound)")
    rate = rospy.Rate(args.rate, reset=True)  # under sim time, a jump back starts it over
    sent = 0
    for rgb in frames(args.source, args.loop, args.width, args.height, args.seed):
        if rospy.is_shutdown():
            break
        msg = array_to_image(rgb, "rgb8")
        msg.header.stamp = rospy.Time.now()
        msg.header.frame_id = args.frame_id
        msg.header.seq = sent
        pub.publish(msg)
        sent += 1
        if args.count and sent >= args.count:
            break
        rate.sleep()
    rospy.loginfo(f"camera: published {sent} frame(s) on {pub.resolved_name}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``rosrun ml_bridge camera``: returns the exit code."""
    args = parse_args(rospy.myargv(argv if argv is not None else sys.argv)[1:])
    rospy.init_node("camera", anonymous=True)
    try:
        return publish(args)
    except SourceError as err:
        rospy.logerr(f"camera: {err}")
        return 2
    except rospy.ROSInterruptException:
        return 0
