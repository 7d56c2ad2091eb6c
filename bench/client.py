"""One client process of the throughput figures: hammers ~predict services on a shared schedule.

``python -m bench.client WORKDIR NAME SECONDS REPS SERVICE...`` connects a persistent proxy to
every SERVICE, makes a few warm-up calls, writes ``WORKDIR/NAME.ready`` and waits for
``WORKDIR/start`` (a wall-clock time written by the benchmark once every client is ready).
From then on, window ``w`` (of ``REPS x len(SERVICE)``) lasts SECONDS and is spent calling
one service, the services taking turns in an order that alternates between repetitions (as
:func:`schedule` says); every client follows the same clock, so all hammer the same service at
once. One line per window is printed: ``window REP SERVICE CALLS``.
"""
import os
import sys
import time
from typing import List, Tuple

import numpy as np
import rospy
from ml_bridge.srv import Predict

from ml_bridge.ros.conversions import array_to_tensor

#: Seconds between two windows: the calls of one window end before the next begins.
GAP = 0.3


def schedule(services: List[str], reps: int) -> List[Tuple[int, str]]:
    """(repetition, service) of each window: every service once per repetition, the order
    reversed every other repetition so neither side always goes first."""
    out = []
    for rep in range(reps):
        order = services if rep % 2 == 0 else services[::-1]
        out += [(rep, s) for s in order]
    return out


def main() -> None:
    """Runs the schedule, then exits."""
    workdir, name, seconds, reps = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    services = sys.argv[5:]
    rospy.init_node(f"bench_client_{name}", disable_signals=True)
    # One digits_mlp row (64 pixels in [0, 1]) from a fixed seed: the values do not change the
    # cost, and eight clients starting at once are spared loading scikit-learn's digits.
    request = [array_to_tensor(np.random.default_rng(0).random((1, 64), dtype=np.float32))]
    proxies = {}
    for service in services:
        rospy.wait_for_service(service, timeout=120)
        proxies[service] = rospy.ServiceProxy(service, Predict, persistent=True)
        for _ in range(20):
            proxies[service](inputs=request)
    with open(os.path.join(workdir, f"{name}.ready"), "w") as f:
        f.write("ready\n")
    start_file = os.path.join(workdir, "start")
    deadline = time.time() + 300
    while not os.path.exists(start_file):
        if time.time() > deadline:
            raise SystemExit("no start time written in 300 s")
        time.sleep(0.02)
    time.sleep(0.05)  # the writer has finished the file
    with open(start_file) as f:
        start = float(f.read())
    for window, (rep, service) in enumerate(schedule(services, reps)):
        begin = start + window * (seconds + GAP)
        end = begin + seconds
        delay = begin - time.time()
        if delay > 0:
            time.sleep(delay)
        call = proxies[service]
        calls = 0
        while True:
            call(inputs=request)
            if time.time() > end:
                break  # the call that crossed the end is not counted
            calls += 1
        print(f"window {rep} {service} {calls}", flush=True)
    for proxy in proxies.values():
        proxy.close()


if __name__ == "__main__":
    main()
