"""The phases of ``make bench`` that need more than a function call: the nodes on the private
master (digits_mlp with the hand-written peer, image_cnn, the four-camera segment node) and
the in-process pipeline figures. Each records its figures in a :class:`bench.run.Run`.
"""
import argparse
import contextlib
import traceback
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple

from bench.common import Figure

if TYPE_CHECKING:
    from bench.run import Run

#: Keys measured against the digits_mlp node of each backend ("" torch, "_tf" tensorflow).
DIGITS_KEYS = ("predict_vs_handwritten_latency", "predict_vs_handwritten_throughput",
               "predict_overhead_ratio", "train_overhead_ratio")
IMAGE_THREADS = 1  # torch intra-op threads for both sides of the image and pipeline figures
PEER_CLIENTS = 8  # client processes of the throughput figure
#: Repetitions of the peer figures beyond ``--reps``: each pairs two fresh processes, and which
#: pair a repetition gets moves its ratio more than anything measured inside it (bench/NOTES.md).
PEER_EXTRA_REPS = 2


def pipeline_figures(reps: int) -> List[Figure]:
    """segment_prepost_share, clip_frame_cost_share and objects_batch_speedup, in-process
    (torch, one intra-op thread as in the stream figures)."""
    import torch

    from bench import local, pipelines
    from bench.segnode import MODEL

    before = torch.get_num_threads()
    torch.set_num_threads(IMAGE_THREADS)
    try:
        seg, seg_context = local.load("torch", MODEL)
        figures = [pipelines.segment_prepost(seg, seg_context, reps, 20)]
        clip, clip_context = local.load("torch", "motion_clip")
        figures.append(pipelines.clip_frame_cost(clip, clip_context, reps, 40))
        crop, crop_context = local.load("torch", "shapes_crop")
        figures.append(pipelines.objects_batch(crop, crop_context, reps, 8, 20))
        return figures
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _node_phases(run: "Run", group: Any, keys: List[str], what: str) -> Iterator[List[Any]]:
    """Where the phases against a node run: the processes appended to the yielded list are
    stopped on the way out, and an error (the node did not start, ...) leaves ``keys`` null
    with the reason instead of ending the benchmark."""
    started: List[Any] = []
    try:
        yield started
    except Exception as err:
        traceback.print_exc()
        run.skip(keys, f"{what}: {type(err).__name__}: {err}")
    finally:
        for proc in started:
            group.stop(proc)


def digits_node(run: "Run", group: Any, port: int, reps: int, backend: str,
                peer_seconds: float) -> None:
    """The peer figures, predict and train overhead (and, for torch, cancel latency) against
    a digits_mlp node; the hand-written node runs beside it for the peer figures."""
    from bench import rosfigs
    from bench.harness import start_node

    suffix = "_tf" if backend == "tensorflow" else ""
    latency, throughput, overhead, train = (f"{k}{suffix}" for k in DIGITS_KEYS)
    keys = [overhead, train]
    if not suffix:
        keys.append("cancel_latency_batches")
    with _node_phases(run, group, keys, f"{backend} node") as started:
        started.append(start_node(group, port, backend, "digits_mlp"))
        run.phase(f"~predict overhead ({backend} digits_mlp)", [overhead],
                  lambda: [rosfigs.predict_overhead(group, backend, overhead, reps, 200)])
        run.phase(f"~train overhead ({backend}, 5 epochs)", [train],
                  lambda: [rosfigs.train_overhead(group, backend, train, 9)])
        if not suffix:
            run.phase("cancel latency (torch)", ["cancel_latency_batches"],
                      lambda: [rosfigs.cancel_latency("torch", 3)])
    run.phase(f"~predict vs the hand-written node ({backend} digits_mlp, both started afresh "
              "for each repetition)", [latency, throughput],
              lambda: _peer(group, port, backend, (latency, throughput), reps + PEER_EXTRA_REPS,
                            peer_seconds))


def _peer(group: Any, port: int, backend: str, keys: Tuple[str, str], reps: int,
          seconds: float) -> List[Figure]:
    """The latency and throughput figures, each repetition against a node and a hand-written
    node started for it, so that the repetitions share no pair of processes and their state
    (the throughput windows' order alternating)."""
    from bench import peer
    from bench.harness import node_pid, start_node

    totals: List[Optional[Figure]] = [None, None]
    for rep in range(reps):
        node = start_node(group, port, backend, "digits_mlp")
        handwritten = None
        try:
            handwritten = peer.start_handwritten(group, backend)
            figures = [peer.latency(keys[0], 1, 400),
                       peer.throughput(group, keys[1], 1, PEER_CLIENTS, seconds,
                                       {peer.OURS: node_pid(node.pid),
                                        peer.HANDWRITTEN: handwritten.pid},
                                       hand_first=rep % 2 == 1)]
        finally:
            if handwritten is not None:
                group.stop(handwritten)
            group.stop(node)
        totals = [_merged(total, fig) for total, fig in zip(totals, figures)]
    return [fig for fig in totals if fig is not None]


def _merged(total: Optional[Figure], fig: Figure) -> Figure:
    """``fig``'s repetitions appended to ``total``'s (its details lists too)."""
    if total is None:
        fig.details["fresh_processes_per_repetition"] = True
        return fig
    total.values += fig.values
    for name, value in fig.details.items():
        if isinstance(value, list):
            total.details[name] += value
    return total


def segment_node(run: "Run", group: Any, port: int, reps: int, seconds: float) -> None:
    """segment_fps_ratio and cameras_scaling against a four-camera segment node."""
    import torch

    from bench import local, segnode
    from bench.harness import node_pid, start_node

    keys = ["segment_fps_ratio", "cameras_scaling"]
    before = torch.get_num_threads()
    try:
        with _node_phases(run, group, keys, "segment node") as started:
            node = start_node(group, port, "torch", segnode.MODEL,
                              image=" ".join(segnode.CAMERAS),
                              env={"OMP_NUM_THREADS": str(IMAGE_THREADS)},
                              args=["pipeline:=segment"])
            started.append(node)
            pid = node_pid(node.pid)
            torch.set_num_threads(IMAGE_THREADS)
            model, context = local.load("torch", segnode.MODEL)
            run.phase("segment stream (shapes_seg at 128x128, 640x480 rgb8, 1 and 4 cameras)",
                      keys,
                      lambda: segnode.segment_figures(group, model, context, reps, seconds, pid))
    finally:
        torch.set_num_threads(before)


def image_node(run: "Run", group: Any, port: int, args: argparse.Namespace) -> None:
    """The image stream figures against an image_cnn node."""
    from bench import rosfigs
    from bench.harness import start_node

    keys = ["image_fps_ratio", "image_latency_ratio", "image_fps_ratio_naive",
            "image_latency_ratio_naive"]
    with _node_phases(run, group, keys, "image node") as started:
        # One torch thread on both sides (node, in-process reference, naive subscriber): on two
        # cores the other one is the camera's and rospy's. With two threads each, the camera
        # process takes CPU from the node that the in-process reference never had to share.
        started.append(start_node(group, port, "torch", "image_cnn", image="/bench/image",
                                  env={"OMP_NUM_THREADS": str(IMAGE_THREADS)}))
        run.phase("image stream (torch image_cnn, 640x480 rgb8)", keys,
                  lambda: rosfigs.image_figures(group, "/bench/image", 5, args.image_seconds,
                                                args.image_rate, threads=IMAGE_THREADS))


def detect_post(reps: int) -> List[Figure]:
    """detect_post_share in-process (torch, one intra-op thread as in the stream figures)."""
    import torch

    from bench import detfigs, local

    before = torch.get_num_threads()
    torch.set_num_threads(IMAGE_THREADS)
    try:
        model, context = local.load("torch", detfigs.MODEL)
        return [detfigs.detect_post(model, context, reps, 20)]
    finally:
        torch.set_num_threads(before)


def detect_node(run: "Run", group: Any, port: int, reps: int, seconds: float) -> None:
    """detect_fps_ratio and detect_vs_handwritten_fps against a detect node and the
    hand-written detector node, both running for the whole phase (one torch thread each)."""
    import sys

    import torch

    from bench import detfigs, detnode, local
    from bench.harness import node_pid, start_node

    keys = ["detect_fps_ratio", "detect_vs_handwritten_fps"]
    threads = {"OMP_NUM_THREADS": str(IMAGE_THREADS)}
    before = torch.get_num_threads()
    try:
        with _node_phases(run, group, keys, "detect nodes") as started:
            node = start_node(group, port, "torch", detfigs.MODEL, image=detnode.OURS_TOPIC,
                              env=threads, args=["pipeline:=detect"])
            started.append(node)
            hand = group.start("handwritten_detect", [sys.executable, "-m",
                                                      "bench.handwritten_detect",
                                                      detnode.HAND_TOPIC], env=threads)
            started.append(hand)
            detnode.wait_for_topic(detnode.HAND[0], hand, 120)
            pids = {"ours": node_pid(node.pid), "hand": hand.pid}
            torch.set_num_threads(IMAGE_THREADS)
            model, context = local.load("torch", detfigs.MODEL)
            run.phase("detect stream (YOLOv8n-shaped at 640x640, 640x480 rgb8; the node, "
                      "in-process and the hand-written node)", keys,
                      lambda: detnode.detect_figures(group, model, context, reps, seconds, pids))
    finally:
        torch.set_num_threads(before)
