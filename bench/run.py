"""``make bench``: ml_bridge against the raw framework and the rospy floor, on a private master.

Every figure is a ratio measured side by side in this run (the median of several repetitions,
with the spread). Writes bench/results.json (each key a number, or null with the reason in
``_details``) and prints the table. About 3 minutes on a 2-core machine.
"""
import argparse
import os
import platform
import shutil
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import Figure, missing, table, write_results

#: Every key of results.json, with its goal (issue 5).
KEYS = [
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
]
GOALS = dict(KEYS)
HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_THREADS = 1  # torch intra-op threads for both sides of the image figures


class Run:
    """Collects figures; a phase that fails leaves its keys null with the error as reason."""

    def __init__(self) -> None:
        self.figures: Dict[str, Figure] = {}
        self.start = time.perf_counter()

    def phase(self, name: str, keys: List[str], fn: Callable[[], List[Figure]]) -> None:
        """Runs one phase; prints its duration; on error every key it owns gets the reason."""
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
        """Every key of KEYS, in order; anything never reached is null."""
        return [self.figures.get(k) or missing(k, g, "not reached") for k, g in KEYS]


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
    args = parser.parse_args(argv)
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    reps = max(1, args.reps)
    run = Run()

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
    # TensorFlow goes last: once it has run in this process its thread pools compete with
    # torch's (measured: in-process image_cnn frames 50x slower after a Keras fit here).
    ros_phases(run, args, reps)
    if "predict_overhead_ratio_tf" not in run.figures:
        run.skip(["predict_overhead_ratio_tf", "train_overhead_ratio_tf"], "not reached")
    tf_reason = _tf_unusable()
    if tf_reason is None:
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
    write_results(args.output, figures, meta)
    print()
    print(table(figures))
    print(f"\n{sum(1 for f in figures if f.values)}/{len(figures)} figures measured in "
          f"{meta['seconds']} s; wrote {args.output}")
    return 0 if any(f.values for f in figures) else 1


def _digits_node(run: Run, group: Any, port: int, reps: int, backend: str) -> None:
    """predict and train overhead (and, for torch, cancel latency) against a digits_mlp node."""
    from bench import rosfigs
    from bench.harness import start_node

    suffix = "_tf" if backend == "tensorflow" else ""
    keys = [f"predict_overhead_ratio{suffix}", f"train_overhead_ratio{suffix}"]
    if not suffix:
        keys.append("cancel_latency_batches")
    node = None
    try:
        node = start_node(group, port, backend, "digits_mlp")
        run.phase(f"~predict overhead ({backend} digits_mlp)", keys[:1],
                  lambda: [rosfigs.predict_overhead(group, backend, keys[0], reps, 200)])
        run.phase(f"~train overhead ({backend}, 5 epochs)", keys[1:2],
                  lambda: [rosfigs.train_overhead(group, backend, keys[1], 9)])
        if not suffix:
            run.phase("cancel latency (torch)", ["cancel_latency_batches"],
                      lambda: [rosfigs.cancel_latency("torch", 3)])
    except Exception as err:
        traceback.print_exc()
        run.skip(keys, f"{backend} node: {type(err).__name__}: {err}")
    finally:
        if node is not None:
            group.stop(node)


def _image_node(run: Run, group: Any, port: int, args: argparse.Namespace) -> None:
    """The image stream figures against an image_cnn node."""
    from bench import rosfigs
    from bench.harness import start_node

    keys = [k for k, _ in KEYS if k.startswith("image_")]
    node = None
    try:
        # One torch thread on both sides (node, in-process reference, naive subscriber): on two
        # cores the other one is the camera's and rospy's. With two threads each, the camera
        # process takes CPU from the node that the in-process reference never had to share.
        node = start_node(group, port, "torch", "image_cnn", image="/bench/image",
                          env={"OMP_NUM_THREADS": str(IMAGE_THREADS)})
        run.phase("image stream (torch image_cnn, 640x480 rgb8)", keys,
                  lambda: rosfigs.image_figures(group, "/bench/image", 5, args.image_seconds,
                                                args.image_rate, threads=IMAGE_THREADS))
    except Exception as err:
        traceback.print_exc()
        run.skip(keys, f"image node: {type(err).__name__}: {err}")
    finally:
        if node is not None:
            group.stop(node)


def ros_phases(run: Run, args: argparse.Namespace, reps: int) -> None:
    """Everything that needs the private master; every process is stopped on the way out.
    Torch first, TensorFlow last (see main)."""
    from bench.harness import Group, free_port, start_master

    ros_keys = [k for k, _ in KEYS if k.startswith(("predict_", "image_", "train_", "cancel_"))]
    group = Group(args.workdir)
    try:
        port = free_port()
        start_master(group, port)
        import rospy

        rospy.init_node("ml_bridge_bench", disable_signals=True)
        print(f"== private master on port {port}; logs in {args.workdir}", flush=True)
        _digits_node(run, group, port, reps, "torch")
        _image_node(run, group, port, args)
        tf_reason = _tf_unusable()
        if tf_reason is None:
            _digits_node(run, group, port, reps, "tensorflow")
        else:
            print(f"== {tf_reason}: the _tf figures are null")
            run.skip(["predict_overhead_ratio_tf", "train_overhead_ratio_tf"], tf_reason)
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
