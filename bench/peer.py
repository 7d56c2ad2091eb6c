"""The peer figures: ``~predict`` against the node a user would write by hand (bench.handwritten).

Both serve digits_mlp with the same weights and the same service type on the private master,
and are measured in the same repetitions, the order alternating:

- latency: p50 round trip of batch-1 requests from one persistent client (this process);
- throughput: calls per second of ``clients`` client processes (bench.client) calling at once,
  each with its own persistent connection.
"""
import contextlib
import functools
import glob
import os
import subprocess
import time
from typing import Dict, List, Optional, Tuple

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


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(group: Group, key: str, reps: int, clients: int, seconds: float,
               pids: Optional[Dict[str, int]] = None, hand_first: bool = False) -> Figure:
    """Calls per second of ~predict / of the hand-written node, ``clients`` processes at once.

    ``pids`` (service -> serving process): the CPU time each node spends per call in its
    windows goes into the details (what bounds throughput when the clients share the cores).
    ``hand_first``: the hand-written node's window first in the first repetition.
    """
    work = os.path.join(group.workdir, key)
    os.makedirs(work, exist_ok=True)
    for stale in glob.glob(os.path.join(work, "*")):
        os.remove(stale)
    services = [HANDWRITTEN, OURS] if hand_first else [OURS, HANDWRITTEN]
    names = [f"{key}_client{i}" for i in range(clients)]
    for name in names:  # the logs are appended to: a figure taken before must not count
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(group.workdir, f"{name}.log"))
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
        start = time.time() + 1.0
        with open(tmp, "w") as f:
            f.write(repr(start))
        os.rename(tmp, os.path.join(work, "start"))  # the clients never see half a file
        cpu = _window_cpu(start, services, reps, seconds, pids or {})
        total = 1.0 + 60
        for proc in procs:
            proc.wait(max(1.0, total))
            total = 1.0
    finally:
        for proc in procs:
            group.stop(proc)
    calls = _windows(group.workdir, names)
    fig = Figure(key, ">= 1.1", details={"clients": clients, "seconds": seconds,
                                         "ours_calls_per_s": [], "handwritten_calls_per_s": [],
                                         "ours_cpu_us_per_call": [],
                                         "handwritten_cpu_us_per_call": []})
    for rep in range(reps):
        ours = calls.get((rep, OURS), 0) / seconds
        hand = calls.get((rep, HANDWRITTEN), 0) / seconds
        if not hand:
            raise RuntimeError(f"no calls counted for the hand-written node in repetition {rep}")
        fig.values.append(ours / hand)
        fig.details["ours_calls_per_s"].append(ours)
        fig.details["handwritten_calls_per_s"].append(hand)
        for service, side, rate in ((OURS, "ours", ours), (HANDWRITTEN, "handwritten", hand)):
            if (rep, service) in cpu and rate:
                fig.details[f"{side}_cpu_us_per_call"].append(
                    cpu[(rep, service)] / (rate * seconds) * 1e6)
    return fig


def _window_cpu(start: float, services: List[str], reps: int, seconds: float,
                pids: Dict[str, int]) -> Dict[Tuple[int, str], float]:
    """CPU seconds the serving process of each window's service spent in that window (read
    from /proc at the window's start and end, on the clients' shared clock)."""
    spent: Dict[Tuple[int, str], float] = {}
    for window, (rep, service) in enumerate(schedule(services, reps)):
        begin = start + window * (seconds + GAP)
        time.sleep(max(0.0, begin - time.time()))
        pid = pids.get(service)
        before = process_cpu_seconds(pid) if pid else 0.0
        time.sleep(max(0.0, begin + seconds - time.time()))
        if pid:
            spent[(rep, service)] = process_cpu_seconds(pid) - before
    return spent


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
