"""``make bench``: ml_bridge against the raw framework and the rospy floor, on a private master.

Every figure is a ratio measured side by side in this run (the median of several repetitions,
with the spread). Writes bench/results.json (each key a number, or null with the reason in
``_details``) and prints the table. About 10 minutes on a 2-core machine. ``--only PREFIXES``
runs only the figures whose keys start so and updates them in the results, keeping the rest.
"""
import argparse
import os
import platform
import shutil
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # the in-process sides as the node runs (scripts/server)

from bench import phases, trackfigs
from bench.common import Figure, merge_results, missing, table, write_results

#: Every key of results.json, with its goal (issue 5).
KEYS = [
    ("predict_vs_handwritten_latency", "<= 1.2"),
    ("predict_vs_handwritten_latency_tf", "<= 1.2"),
    ("predict_vs_handwritten_throughput", ">= 1.1"),
    ("predict_vs_handwritten_throughput_tf", ">= 1.1"),
    ("predict_overhead_ratio", "<= 1.3"),
    ("predict_overhead_ratio_tf", "<= 1.3"),
    ("tensor_bytes_speedup", ">= 10"),
    ("tensor_bytes_vs_memcpy", "<= 5"),
    ("image_fps_ratio", ">= 0.9"),
    ("image_latency_ratio", "<= 1.5"),
    ("image_fps_ratio_naive", "(report)"),
    ("image_latency_ratio_naive", "(report)"),
    ("batching_speedup", ">= 2"),
    ("train_overhead_ratio", "<= 1.05"),
    ("train_overhead_ratio_tf", "<= 1.05"),
    ("cancel_latency_batches", "<= 1 + 50 ms"),
    ("context_restore_us", "(report)"),
    ("context_restore_us_tf", "(report)"),
    ("segment_fps_ratio", ">= 0.9"),
    ("segment_prepost_share", "<= 0.25"),
    ("clip_frame_cost_share", "<= 0.1"),
    ("objects_batch_speedup", "(report)"),
    ("cameras_scaling", "(report)"),
    ("detect_fps_ratio", ">= 0.9"),
    ("detect_post_share", "<= 0.25"),
    ("detect_vs_handwritten_fps", ">= 1.0"),
    ("track_cost_share", "<= 0.1"),
]
GOALS = dict(KEYS)
HERE = os.path.dirname(os.path.abspath(__file__))


class Run:
    """Collects figures; a phase that fails leaves its keys null with the error as reason."""

    def __init__(self, only: Sequence[str] = ()) -> None:
        self.figures: Dict[str, Figure] = {}
        self.start = time.perf_counter()
        self.only = tuple(only)

    def wants(self, keys: Sequence[str]) -> bool:
        """Whether a phase that measures ``keys`` runs (``--only``: a key starts with one of
        its prefixes)."""
        return not self.only or any(k.startswith(self.only) for k in keys)

    def phase(self, name: str, keys: List[str], fn: Callable[[], List[Figure]]) -> None:
        """Runs one phase unless ``--only`` leaves it out; prints its duration; on error every
        key it owns gets the reason."""
        if not self.wants(keys):
            return
        t0 = time.perf_counter()
        print(f"== {name} ...", flush=True)
        try:
            for fig in fn():
                self.figures[fig.key] = fig
            print(f"   done in {time.perf_counter() - t0:.1f} s", flush=True)
        except Exception as err:
            traceback.print_exc()
            reason = f"{name} failed: {type(err).__name__}: {err}"
            print(f"   {reason}", flush=True)
            self.skip(keys, reason)

    def skip(self, keys: List[str], reason: str) -> None:
        """Marks ``keys`` not measured (unless already measured), with the reason."""
        for key in keys:
            if key not in self.figures or not self.figures[key].values:
                self.figures[key] = missing(key, GOALS[key], reason)

    def ordered(self) -> List[Figure]:
        """Every key of KEYS (``--only``: those it selects), in order; anything never reached
        is null."""
        return [self.figures.get(k) or missing(k, g, "not reached") for k, g in KEYS
                if self.wants([k])]


def _tf_unusable() -> Optional[str]:
    """Why the tensorflow backend cannot serve digits_mlp here, or None if it can."""
    try:
        from bench import local

        local.load("tensorflow", "digits_mlp")
        return None
    except Exception as err:
        return f"tensorflow backend not usable: {type(err).__name__}: {err}"


def main(argv: Optional[List[str]] = None) -> int:
    """Runs every phase, writes results.json, prints the table; 0 unless nothing ran."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the quick figures")
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(HERE), "build", "bench"))
    parser.add_argument("--output", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--image-seconds", type=float, default=4.0)
    parser.add_argument("--image-rate", type=float, default=0.0,
                        help="camera frames per second; 0 = as fast as the publisher can")
    parser.add_argument("--peer-seconds", type=float, default=2.0,
                        help="seconds of each side in each repetition of the throughput figure")
    parser.add_argument("--only", default="",
                        help="comma-separated key prefixes (e.g. detect_): run only the phases "
                             "of those figures and update them in --output, keeping the rest")
    args = parser.parse_args(argv)
    from ml_bridge.core import allocator

    allocator.keep_freed_buffers(allocator.DEFAULT_KEEP_MB)  # the in-process sides as the node runs
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    reps = max(1, args.reps)
    run = Run([p for p in args.only.split(",") if p])

    from bench import local

    def tensor() -> List[Figure]:
        return list(local.tensor_bytes(1_000_000, reps))

    def context_torch() -> List[Figure]:
        return [local.context_restore(local.load("torch", "digits_mlp")[1], "context_restore_us",
                                      20000, reps)]

    def batching() -> List[Figure]:
        import numpy as np

        model, context = local.load("torch", "image_cnn")
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        fig = local.batching(model, context, callers=8, calls=15, reps=3, image=frame)
        # Beside it, a model whose cost is per call rather than per row (the MLP: overhead-bound)
        mlp, mlp_context = local.load("torch", "digits_mlp")
        small = local.batching(mlp, mlp_context, callers=8, calls=200, reps=3,
                               image=np.zeros((8, 8), np.uint8))
        fig.details["digits_mlp_speedup"] = small.values
        return [fig]

    run.phase("tensor serialization (genpy, no master)",
              ["tensor_bytes_speedup", "tensor_bytes_vs_memcpy"], tensor)
    run.phase("context restore (torch)", ["context_restore_us"], context_torch)
    run.phase("micro-batching (image_cnn, 8 callers, in-process)", ["batching_speedup"], batching)
    run.phase("pipelines in-process (segment, clip, objects; 640x480 frames)",
              ["segment_prepost_share", "clip_frame_cost_share", "objects_batch_speedup"],
              lambda: phases.pipeline_figures(reps))
    run.phase("detect post-processing in-process (YOLOv8n-shaped output [1, 84, 8400])",
              ["detect_post_share"], lambda: phases.detect_post(reps))
    run.phase("tracking + counting in-process (50 tracks, 2 lines) vs shapes_det (torch)",
              ["track_cost_share"], lambda: trackfigs.track_cost_phase(reps))
    # TensorFlow goes last: once it has run in this process its thread pools compete with
    # torch's (measured: in-process image_cnn frames 50x slower after a Keras fit here).
    ros_phases(run, args, reps)
    if "predict_overhead_ratio_tf" not in run.figures:
        run.skip([f"{k}_tf" for k in phases.DIGITS_KEYS], "not reached")
    tf_wanted = run.wants(["context_restore_us_tf"])
    tf_reason = _tf_unusable() if tf_wanted else None  # TensorFlow takes a while to load
    if not tf_wanted:
        pass
    elif tf_reason is None:
        run.phase("context restore (tensorflow)", ["context_restore_us_tf"],
                  lambda: [local.context_restore(local.load("tensorflow", "digits_mlp")[1],
                                                 "context_restore_us_tf", 20000, reps)])
    else:
        print(f"== {tf_reason}: context_restore_us_tf is null")
        run.skip(["context_restore_us_tf"], tf_reason)

    figures = run.ordered()
    meta = {"machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()} "
                       f"{platform.release()}", "python": platform.python_version(),
            "seconds": round(time.perf_counter() - run.start, 1), "reps": reps}
    try:
        import torch

        meta["torch"] = f"{torch.__version__} (threads {torch.get_num_threads()}, cuda "
        meta["torch"] += f"{torch.cuda.is_available()})"
    except ImportError:
        pass
    if run.only:
        merge_results(args.output, figures, meta)
    else:
        write_results(args.output, figures, meta)
    print()
    print(table(figures))
    print(f"\n{sum(1 for f in figures if f.values)}/{len(figures)} figures measured in "
          f"{meta['seconds']} s; wrote {args.output}")
    return 0 if any(f.values for f in figures) else 1


def ros_phases(run: Run, args: argparse.Namespace, reps: int) -> None:
    """Everything that needs the private master; every process is stopped on the way out.
    Torch first, TensorFlow last (see main)."""
    from bench.harness import Group, free_port, start_master

    ros_keys = [k for k, _ in KEYS if k.startswith(("predict_", "image_", "train_", "cancel_",
                                                   "segment_fps", "cameras_", "detect_fps",
                                                   "detect_vs"))]
    if not run.wants(ros_keys):
        return
    group = Group(args.workdir)
    try:
        port = free_port()
        start_master(group, port)
        import rospy

        rospy.init_node("ml_bridge_bench", disable_signals=True)
        print(f"== private master on port {port}; logs in {args.workdir}", flush=True)
        tf_keys = [f"{k}_tf" for k in phases.DIGITS_KEYS]
        if run.wants([*phases.DIGITS_KEYS, "cancel_latency_batches"]):
            phases.digits_node(run, group, port, reps, "torch", args.peer_seconds)
        if run.wants(["image_fps_ratio", "image_latency_ratio"]):
            phases.image_node(run, group, port, args)
        if run.wants(["segment_fps_ratio", "cameras_scaling"]):
            phases.segment_node(run, group, port, max(3, reps - 2), args.image_seconds)
        if run.wants(["detect_fps_ratio", "detect_vs_handwritten_fps"]):
            phases.detect_node(run, group, port, max(3, reps - 2), args.image_seconds)
        tf_reason = _tf_unusable() if run.wants(tf_keys) else None  # TensorFlow takes a while
        if not run.wants(tf_keys):
            pass
        elif tf_reason is None:
            phases.digits_node(run, group, port, reps, "tensorflow", args.peer_seconds)
        else:
            print(f"== {tf_reason}: the _tf figures are null")
            run.skip([f"{k}_tf" for k in phases.DIGITS_KEYS], tf_reason)
    except Exception as err:
        traceback.print_exc()
        run.skip(ros_keys, f"ROS set-up: {type(err).__name__}: {err}")
    finally:
        group.close()
        try:
            import rospy

            rospy.signal_shutdown("benchmark finished")
        except ImportError:
            pass

if __name__ == "__main__":
    sys.exit(main())
