"""The tracking part of ``make demo-vision``: ``shapes_det`` with ``~track`` and a count line.

After the detection part (:mod:`ml_bridge.ros.demo_detect`) has trained ``shapes_det``, a
detect node restores that checkpoint with ``~track: true`` and one count line down the middle
of the frame. A scripted camera (this module) shows circles, squares and triangles crossing
the line at known frames; each frame is published once the node has answered the previous one
on ``~counts``, so none is dropped.

The shapes are drawn as ``shape_scenes`` (the detector's training set) draws them: a textured
ground, sizes in the middle of its range, colours that contrast with the ground. The node runs
with the contract's tracking defaults (``~track_iou`` 0.3, ``~track_max_age`` 1 s), which suit
this scene: a shape moves 2 px a frame and its box is at least 36 px wide, so its box still
overlaps its track's last box with IoU above 0.3 after ``MAX_GAP`` frames without a detection
(within the 10 frames of ``~track_max_age``), and a shape that left the view has its track
ended by the ``TAIL`` frames. The demo prints the node's counts per label and its line
crossings next to the truth, and saves ``~overlay`` PNGs (boxes with track ids, the line and
the counts) under the work directory.
"""
import argparse
import functools
import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ml_bridge.ros.demo_vision import CAMERA, NS, Frames

SIZE = 128                 # shapes_det's input: frames need no resizing
PERIOD_NS = 100_000_000    # stamps 0.1 s apart (a 10 Hz camera)
LINE = {"name": "middle", "points": [[SIZE // 2, 0], [SIZE // 2, SIZE]]}
LABELS = ("circle", "square", "triangle")   # shapes_det's class ids 0..2
#: Frames after the last shape: more than ~track_max_age (1 s) so every track ends.
TAIL = 14
#: The frames whose overlay is saved (shapes on both sides of the line, or on it).
SHOT_FRAMES = (12, 30, 60, 75)
#: The seed of the textured ground (``shape_scenes``' backgrounds) and of the colours.
SEED = 7
#: The farthest a shape's outline reaches from its centre, relative to its size.
REACH = 0.72
#: Frames in a row a shape may go undetected and still be matched to its track.
MAX_GAP = 8


@dataclass(frozen=True)
class Mover:
    """A shape ``label`` in view on frames ``first`` .. ``last``, its centre at (``x``, ``y``)
    on frame ``first``, moving ``step`` pixels a frame along x."""

    label: str
    first: int
    last: int
    y: float
    x: float
    step: float
    size: float = 36.0   # 0.28 of the frame: shape_scenes draws 0.14 .. 0.45
    angle: float = 0.3

    def centre(self, frame: int) -> Tuple[float, float]:
        """The shape's centre (x, y) in pixels on frame ``frame``."""
        return self.x + self.step * (frame - self.first), self.y

    @property
    def direction(self) -> str:
        """"forward" (left to right: the line is drawn top to bottom) or "backward"."""
        return "forward" if self.step > 0 else "backward"


#: Two rows 64 pixels apart, more than two shapes' reach (2 x 0.72 x 36): shapes in view at
#: the same time are on different rows and never touch, so each stays one box; a row's next
#: shape comes in after its last one has left.
MOVERS = (
    Mover("circle", 0, 38, 32, 26, 2),
    Mover("square", 8, 46, 96, 102, -2),
    Mover("triangle", 42, 80, 32, 26, 2),
    Mover("circle", 50, 88, 96, 102, -2),
)
FRAMES = max(m.last for m in MOVERS) + TAIL


def truth() -> Tuple[Dict[str, int], Dict[str, int]]:
    """(shapes per label, crossings of LINE per direction) the video shows."""
    totals: Dict[str, int] = {}
    crossings = {"forward": 0, "backward": 0}
    for mover in MOVERS:
        totals[mover.label] = totals.get(mover.label, 0) + 1
        crossings[mover.direction] += 1
    return totals, crossings


@functools.lru_cache(maxsize=1)
def scenery() -> Tuple[np.ndarray, Tuple[np.ndarray, ...]]:
    """(the textured ground, each mover's colour): a colour contrasts with the ground's mean
    along the mover's path, as ``shape_scenes`` picks colours against the ground behind."""
    from ml_bridge.core.synthetic import contrasting_color
    from ml_bridge.core.synthetic_textures import textured_background

    rng = np.random.default_rng(SEED)
    ground = textured_background(rng, SIZE, SIZE)
    colours = []
    for mover in MOVERS:
        half = int(mover.size / 2)
        row = ground[int(mover.y) - half:int(mover.y) + half].reshape(-1, 3)
        colours.append(contrasting_color(rng, row.mean(axis=0).astype(np.float64), 150.0))
    ground.flags.writeable = False
    return ground, tuple(colours)


def frame(index: int) -> np.ndarray:
    """Frame ``index``: the shapes in view on the textured ground with a little sensor noise
    (sigma 4 grey levels, as ``shape_scenes`` adds)."""
    from ml_bridge.core.synthetic import draw_shape

    ground, colours = scenery()
    image = ground.copy()
    for mover, colour in zip(MOVERS, colours):
        if mover.first <= index <= mover.last:
            draw_shape(image, None, LABELS.index(mover.label) + 1, mover.centre(index),
                       mover.size, colour, mover.angle)
    rng = np.random.default_rng(abs(index))
    noise = rng.normal(0.0, 4.0, (SIZE, SIZE, 1))
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def start_node(port: int, args: argparse.Namespace) -> "subprocess.Popen[bytes]":
    """The detect node with tracking, restoring the checkpoint the detection part saved."""
    params = {"backend": args.backend, "model": "shapes_det", "pipeline": "detect",
              "image": CAMERA, "checkpoint_dir": f"{args.workdir}/checkpoints/shapes_det",
              "data_root": f"{args.workdir}/data", "track": True, "count_lines": [LINE],
              # the contract's defaults, named here because the scene is made for them
              "track_iou": 0.3, "track_max_age": 1.0}
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}")
    with open(os.path.join(args.workdir, "track.log"), "wb") as log:
        return subprocess.Popen(
            ["rosrun", "ml_bridge", "server", f"__name:={NS.strip('/')}"] +
            # JSON is YAML, which is how rospy reads a private parameter from the command line
            [f"_{name}:={json.dumps(value)}" for name, value in params.items()],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def track_story(node: "subprocess.Popen[bytes]", args: argparse.Namespace) -> bool:
    """Plays the scripted camera to the node, prints the counts, saves overlays; True when
    the node answered every frame, every count equals the truth (the demo's own bar: the
    scene is scripted, so its truth is known) and every overlay was saved."""
    import cv2
    import rospy
    from sensor_msgs.msg import Image

    from ml_bridge.msg import Counts
    from ml_bridge.ros.conversions import array_to_image, image_to_array
    from ml_bridge.ros.processes import wait_for_node

    if not wait_for_node(node, NS + "/info", "ml_bridge_demo_vision"):
        print(f"the tracking node did not come up; see {os.path.join(args.workdir, 'track.log')}")
        return False
    print(f"== tracking: {len(MOVERS)} shapes cross the line x = {SIZE // 2} of {SIZE} x {SIZE} "
          f"frames on {CAMERA} ({FRAMES} frames, 10 Hz stamps)")
    publisher = rospy.Publisher(CAMERA, Image, queue_size=2)
    counts = Frames(NS + "/counts", Counts)
    overlays = Frames(NS + "/overlay", Image)
    base = rospy.Time(300000)

    def send(index: int, wait: float) -> Optional[Any]:
        msg = array_to_image(frame(index), "rgb8")
        msg.header.stamp = base + rospy.Duration(0, (index + 20) * PERIOD_NS)
        publisher.publish(msg)
        return counts.wait(msg.header.stamp, wait)

    deadline = time.time() + 60
    while send(-1, 0.5) is None:  # frame -1 is empty: sent until the connections are up
        if time.time() > deadline:
            print("   the node did not answer the first frame")
            return False
    last: Any = None
    saved: List[str] = []
    for index in range(FRAMES):
        last = send(index, 30.0)
        if last is None:
            print(f"   no ~counts for frame {index}")
            return False
        if index in SHOT_FRAMES:
            overlay = overlays.wait(last.header.stamp, 30.0)
            if overlay is not None:
                path = os.path.join(args.workdir, f"track_{len(saved)}_overlay.png")
                cv2.imwrite(path, cv2.cvtColor(image_to_array(overlay), cv2.COLOR_RGB2BGR))
                saved.append(path)
    for sub in (counts, overlays):
        sub.sub.unregister()
    publisher.unregister()
    totals, crossings = truth()
    found = dict(zip(last.labels, last.total))
    print("== counts per label (tracks since start; the video has): " + ", ".join(
        f"{label} {found.get(label, 0)} ({totals.get(label, 0)})"
        for label in sorted(set(found) | set(totals))))
    for name, forward, backward in zip(last.lines, last.forward, last.backward):
        print(f"== line '{name}': forward {forward} ({crossings['forward']}), backward "
              f"{backward} ({crossings['backward']})")
    exact = found == totals and [crossings["forward"], crossings["backward"]] == [
        last.forward[0], last.backward[0]]
    print("   " + ("every count equals the truth" if exact else
                    "the counts differ from the truth: a missed or misclassified box splits a "
                    "track (see the overlays)"))
    for path in saved:
        print(f"   {path}")
    return exact and len(saved) == len(SHOT_FRAMES)
