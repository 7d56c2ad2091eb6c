"""The peer figures: ``~predict`` against the node a user would write by hand (bench.handwritten).

Both serve digits_mlp with the same weights and the same service type on the private master,
and are measured in the same repetitions, the order alternating:

- latency: p50 round trip of batch-1 requests from one persistent client (this process);
- throughput: calls per second of ``clients`` client processes (bench.client) calling at once,
  each with its own persistent connection.
"""
import functools
import glob
import os
import subprocess
import time
from typing import Dict, List, Tuple

import rospy
from ml_bridge.srv import Predict

from bench.client import GAP, schedule
from bench.common import Figure, p50, time_calls
from bench.harness import Group
from ml_bridge.core.datasets import digits
from ml_bridge.ros.conversions import array_to_tensor

OURS = "/ml_bridge/predict"
HANDWRITTEN = "/bench_handwritten/predict"


def start_handwritten(group: Group, backend: str) -> "subprocess.Popen[bytes]":
    """Starts the hand-written node (``backend``) and waits for its service."""
    proc = group.python(f"handwritten_{backend}", "bench.handwritten", backend)
    deadline = time.time() + 180
    while True:
        try:
            rospy.wait_for_service(HANDWRITTEN, timeout=1.0)
            return proc
        except rospy.ROSException:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the hand-written {backend} node did not come up; see "
                                   f"{group.workdir}/handwritten_{backend}.log") from None


def latency(key: str, reps: int, calls: int) -> Figure:
    """p50 round trip of ~predict / p50 of the hand-written node, one persistent client each,
    the two called in turns."""
    request = [array_to_tensor(digits(heldout=True).inputs[0][:1])]
    ours = rospy.ServiceProxy(OURS, Predict, persistent=True)
    hand = rospy.ServiceProxy(HANDWRITTEN, Predict, persistent=True)
    fig = Figure(key, "<= 1.2", details={"calls_per_rep": calls, "ours_us": [],
                                         "handwritten_us": []})
    try:
        for _ in range(50):  # warm both paths (connections, first-call costs)
            ours(inputs=request), hand(inputs=request)
        if not ours(inputs=request).success:
            raise RuntimeError("~predict failed on the benchmark's request")
        for _ in range(reps):
            # Call by call, in turns (the first of each pair alternating): both sides see the
            # same moments of a shared machine, whose speed drifts within a second.
            times: Dict[str, List[float]] = {"ours": [], "hand": []}
            call = {"ours": functools.partial(ours, inputs=request),
                    "hand": functools.partial(hand, inputs=request)}
            for i in range(calls):
                for side in (("ours", "hand") if i % 2 == 0 else ("hand", "ours")):
                    times[side] += time_calls(call[side], 1)
            t_ours, t_hand = p50(times["ours"]), p50(times["hand"])
            fig.values.append(t_ours / t_hand)
            fig.details["ours_us"].append(t_ours * 1e6)
            fig.details["handwritten_us"].append(t_hand * 1e6)
    finally:
        ours.close()
        hand.close()
    return fig


def throughput(group: Group, key: str, reps: int, clients: int, seconds: float) -> Figure:
    """Calls per second of ~predict / of the hand-written node, ``clients`` processes at once."""
    work = os.path.join(group.workdir, key)
    os.makedirs(work, exist_ok=True)
    for stale in glob.glob(os.path.join(work, "*")):
        os.remove(stale)
    services = [OURS, HANDWRITTEN]
    names = [f"{key}_client{i}" for i in range(clients)]
    procs = [group.python(name, "bench.client", work, name, str(seconds), str(reps), *services)
             for name in names]
    try:
        deadline = time.time() + 300
        while len(glob.glob(os.path.join(work, "*.ready"))) < clients:
            if any(p.poll() not in (None, 0) for p in procs) or time.time() > deadline:
                raise RuntimeError(f"the {clients} clients did not get ready; see "
                                   f"{group.workdir}/{names[0]}.log")
            time.sleep(0.1)
        tmp = os.path.join(work, "start.tmp")
        with open(tmp, "w") as f:
            f.write(repr(time.time() + 1.0))
        os.rename(tmp, os.path.join(work, "start"))  # the clients never see half a file
        total = 1.0 + len(schedule(services, reps)) * (seconds + GAP) + 60
        for proc in procs:
            proc.wait(max(1.0, total))
            total = 1.0
    finally:
        for proc in procs:
            group.stop(proc)
    calls = _windows(group.workdir, names)
    fig = Figure(key, ">= 1.1", details={"clients": clients, "seconds": seconds,
                                         "ours_calls_per_s": [], "handwritten_calls_per_s": []})
    for rep in range(reps):
        ours = calls.get((rep, OURS), 0) / seconds
        hand = calls.get((rep, HANDWRITTEN), 0) / seconds
        if not hand:
            raise RuntimeError(f"no calls counted for the hand-written node in repetition {rep}")
        fig.values.append(ours / hand)
        fig.details["ours_calls_per_s"].append(ours)
        fig.details["handwritten_calls_per_s"].append(hand)
    return fig


def _windows(workdir: str, names: List[str]) -> Dict[Tuple[int, str], int]:
    """Calls per (repetition, service), summed over the clients' logs."""
    out: Dict[Tuple[int, str], int] = {}
    for name in names:
        with open(os.path.join(workdir, f"{name}.log")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and parts[0] == "window":
                    key = (int(parts[1]), parts[2])
                    out[key] = out.get(key, 0) + int(parts[3])
    return out
