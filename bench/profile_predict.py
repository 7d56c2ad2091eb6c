"""Profiles the ``~predict`` path: where a batch-1 request spends its time in the node.

``python -m bench.profile_predict [--backend torch] [--seconds 10] [--gil]`` starts a private
master and the node, hammers ``~predict`` with a persistent proxy (digits_mlp, batch 1) and
samples the node with py-spy: wall time, waits included, of the threads a request passes through
(the node's serving thread and the model thread). It prints the heaviest stacks of the node and
writes the raw collapsed stacks to ``build/bench/profile_<backend>_<name>.txt``; the same is done
for the hand-written peer (``bench.handwritten``) and the bare rospy echo service
(``bench.echo``), so the three can be compared side by side.

With ``--gil`` only the thread holding the GIL is sampled, in every thread: the time a request
costs the process's one Python core (what bounds its throughput with many clients), printed
per call and split by function.
"""
import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from io import BytesIO
from typing import Any, Callable, Dict, List, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

HERE = os.path.dirname(os.path.abspath(__file__))
#: The threads a request passes through: rospy's service connection threads (the peer, the
#: echo), the node's one serving thread (LoopedService) and the model thread.
SERVING_THREADS = ("(handle)", "service /", "ml_bridge-model")


def _py_spy() -> str:
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(exe):
        raise SystemExit("py-spy is not installed (it is in requirements.txt: run `make setup`)")
    return exe


def _hammer(call: Callable[[], Any], seconds: float) -> Tuple[int, float]:
    """Calls ``call()`` back to back for ``seconds``; returns (calls, mean seconds per call)."""
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        count += 1
    return count, (time.perf_counter() - start) / max(count, 1)


RATE = 1000  # py-spy samples per second


def _record(pid: int, seconds: int, out: str, gil: bool = False) -> "subprocess.Popen[bytes]":
    what = ["--gil"] if gil else ["--idle"]
    return subprocess.Popen([_py_spy(), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", str(RATE), "--format", "raw", "--output", out, "--threads",
                             *what, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def samples(path: str) -> int:
    """Samples in a py-spy raw (collapsed stacks) file."""
    total = 0
    with open(path) as f:
        for line in f:
            match = re.match(r"^.* (\d+)$", line.rstrip("\n"))
            total += int(match.group(1)) if match else 0
    return total


def summarize(path: str, top: int = 20, threads: Tuple[str, ...] = ()) -> str:
    """Per thread (those whose name contains one of ``threads``; all if empty): the share of its
    samples in each function, inclusive (with what it calls) and self, file:line stripped."""
    per_thread: Dict[str, Tuple[Counter, Counter, List[int]]] = {}
    with open(path) as f:
        for line in f:
            match = re.match(r"^(.*) (\d+)$", line.rstrip("\n"))
            if match is None:  # a stack py-spy could not finish reading
                continue
            frames = match.group(1).split(";")
            count = int(match.group(2))
            if threads and not any(t in frames[0] for t in threads):
                continue
            inclusive, own, total = per_thread.setdefault(frames[0], (Counter(), Counter(), [0]))
            total[0] += count
            names = [f"{fr.split(' (')[0]} ({os.path.basename(fr.rsplit(' (', 1)[-1].split(':')[0])})"
                     for fr in frames[1:]]
            for name in set(names):
                inclusive[name] += count
            if names:
                own[names[-1]] += count
    if not per_thread:
        return "no samples"
    lines = []
    for thread, (inclusive, own, total) in sorted(per_thread.items(), key=lambda kv: -kv[1][2][0]):
        lines.append(f"{thread}: {total[0]} samples (wall time, waits included)")
        lines.append("  inclusive:")
        lines += [f"    {100 * n / total[0]:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
        lines.append("  self:")
        lines += [f"    {100 * n / total[0]:5.1f}%  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    """Profiles the node, then the echo service, and prints both summaries."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--gil", action="store_true", help="sample the GIL holder only")
    parser.add_argument("--workdir", default=os.path.join(os.path.dirname(HERE), "build", "bench"))
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)

    import rospy
    from ml_bridge.srv import Predict

    from bench.harness import Group, free_port, node_pid, start_master, start_node
    from bench.peer import HANDWRITTEN, start_handwritten
    from ml_bridge.core.datasets import digits
    from ml_bridge.ros.conversions import array_to_tensor

    request = [array_to_tensor(digits(heldout=True).inputs[0][:1])]
    with Group(args.workdir) as group:
        port = free_port()
        start_master(group, port)
        rospy.init_node("ml_bridge_profile", disable_signals=True)
        node = start_node(group, port, args.backend, "digits_mlp")
        handwritten = start_handwritten(group, args.backend)
        hand = rospy.ServiceProxy(HANDWRITTEN, Predict, persistent=True)
        proxy = rospy.ServiceProxy("/ml_bridge/predict", Predict, persistent=True)
        response = proxy(inputs=request)
        path = os.path.join(args.workdir, "echo_response_profile.bin")
        buff = BytesIO()
        response.serialize(buff)
        with open(path, "wb") as f:
            f.write(buff.getvalue())
        echo_proc = group.python("echo_profile", "bench.echo", path)
        rospy.wait_for_service("/bench_echo/predict", timeout=60)
        echo = rospy.ServiceProxy("/bench_echo/predict", Predict, persistent=True)
        results: List[str] = []
        targets = (("node", node_pid(node.pid), proxy), ("handwritten", handwritten.pid, hand),
                   ("echo", echo_proc.pid, echo))
        for name, pid, target in targets:
            call = functools.partial(target, inputs=request)
            _hammer(call, 1.0)  # warm
            suffix = "_gil" if args.gil else ""
            out = os.path.join(args.workdir, f"profile_{args.backend}_{name}{suffix}.txt")
            spy = _record(pid, args.seconds, out, args.gil)
            calls, mean = _hammer(call, args.seconds)
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0 or not os.path.exists(out):
                raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
            head = f"== {name}: {calls} calls, mean round trip {mean * 1e6:.0f} us; stacks in {out}"
            if args.gil:
                held = samples(out) / RATE / calls * 1e6
                head += f"\nGIL held {held:.0f} us per call (all threads)"
            results.append(f"{head}\n{summarize(out, threads=() if args.gil else SERVING_THREADS)}")
        for each in (proxy, hand, echo):
            each.close()
        rospy.signal_shutdown("profile done")
    print("\n\n".join(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
