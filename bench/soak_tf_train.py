"""Soak: resident memory of a node's process over many one-epoch train goals (not in `make test`).

Each goal is ``ModelServer.fit("digits", epochs=1)`` with a checkpoint per goal, as ``~train``
does. Prints RSS after goal 1, 50 and 100 (or the last) and the slope from the second half of
the goals, in MB per goal, and exits 1 when the slope is above ``--max-slope``::

    python bench/soak_tf_train.py                     # tensorflow, 100 goals, ~2 minutes
    python bench/soak_tf_train.py --backend torch --goals 60
"""
import argparse
import gc
import os
import sys
import tempfile
from typing import List, Tuple

if __package__ in (None, ""):  # run as `python bench/soak_tf_train.py`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ml_bridge.core.server import ModelServer


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def slope(points: List[Tuple[int, float]]) -> float:
    """Least-squares slope of (goal, MB): MB per goal."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def main(argv: "List[str] | None" = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="tensorflow")
    parser.add_argument("--goals", type=int, default=100)
    parser.add_argument("--max-slope", type=float, default=0.5,
                        help="MB per goal over the second half above which the run fails")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as checkpoints:
        server = ModelServer.load(args.backend, "digits_mlp", checkpoint_dir=checkpoints)
        points: List[Tuple[int, float]] = []
        print(f"{args.backend}: RSS after load {rss_mb():.0f} MB", flush=True)
        for goal in range(1, args.goals + 1):
            server.fit("digits", epochs=1)
            gc.collect()  # what is left after a collection is a leak, not garbage not yet freed
            points.append((goal, rss_mb()))
            if goal in (1, 50, 100) or goal == args.goals or goal % 10 == 0:
                print(f"  goal {goal:4d}: RSS {points[-1][1]:7.1f} MB", flush=True)
        server.close()
    tail = points[len(points) // 2:]
    per_goal = slope(tail)
    print(f"{args.backend}: RSS goal 1 {points[0][1]:.0f} MB, goal {points[-1][0]} "
          f"{points[-1][1]:.0f} MB; slope over goals {tail[0][0]}-{tail[-1][0]}: "
          f"{per_goal:+.3f} MB/goal (limit {args.max_slope})")
    return 0 if per_goal <= args.max_slope else 1


if __name__ == "__main__":
    sys.exit(main())
