"""``make demo``: the whole story on a private master, then everything is stopped.

Serve digits_mlp, train it 15 epochs with a progress bar, start and cancel a second goal
(PREEMPTED, version unchanged), predict the held-out digits and print the accuracy.
"""
import argparse
import os
import subprocess
import sys
import threading
import time
from typing import Any, List, Optional

from ml_bridge.ros.processes import private_master, stop, wait_for_node


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the demo; returns 0 when every step did what it should."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="torch", choices=["torch", "tensorflow"])
    parser.add_argument("--workdir", default=os.path.join(os.getcwd(), "build", "demo"))
    args = parser.parse_args(argv)
    port = private_master(args.workdir)
    log = open(os.path.join(args.workdir, "server.log"), "wb")
    print(f"== starting a private master on port {port} and the ml_bridge node "
          f"(backend {args.backend}); log: {log.name}")
    launch = subprocess.Popen(["roslaunch", "-p", str(port), "ml_bridge", "demo.launch",
                               f"backend:={args.backend}", f"workdir:={args.workdir}"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return _story(launch)
    finally:
        stop(launch)
        log.close()
        print("== stopped the node and the master")


def _story(launch: "subprocess.Popen[bytes]") -> int:
    import actionlib
    import numpy as np
    import rospy
    from actionlib_msgs.msg import GoalStatus

    from ml_bridge.core.datasets import digits
    from ml_bridge.msg import TrainAction, TrainGoal
    from ml_bridge.ros.cli_train import TrainClient, format_metrics, state_name
    from ml_bridge.ros.conversions import array_to_tensor
    from ml_bridge.srv import GetInfo, Predict

    if not wait_for_node(launch, "/ml_bridge/info", "ml_bridge_demo"):
        print("the node did not come up; see the log above")
        return 1
    info = rospy.ServiceProxy("/ml_bridge/info", GetInfo)()
    print(f"== serving {info.model} on {info.backend} {info.framework_version} ({info.device}), "
          f"model version {info.model_version}")
    predict = rospy.ServiceProxy("/ml_bridge/predict", Predict)
    held = digits(heldout=True)
    x, y = held.inputs[0], held.targets[0]

    def accuracy() -> "tuple[float, Any]":
        resp = predict(inputs=[array_to_tensor(x)])
        return float(np.mean(np.asarray(resp.class_ids) == y)), resp

    acc, _ = accuracy()
    print(f"   held-out accuracy before training: {acc:.3f}")

    print("== training 15 epochs on 'digits' (validation split 0.1) through the ~train action")
    state, result = TrainClient("/ml_bridge").run(
        TrainGoal(epochs=15, dataset="digits", validation_split=0.1))
    print(f"   {state_name(state)}: {result.message}")
    metrics = format_metrics(list(result.metric_names), list(result.metric_values))
    print(f"   loss {result.loss:.4f} {metrics}")
    print(f"   checkpoint: {result.checkpoint}")
    ok = state == GoalStatus.SUCCEEDED

    print("== a second goal (50 epochs, batch size 1), cancelled after its first epoch")
    client = actionlib.SimpleActionClient("/ml_bridge/train", TrainAction)
    client.wait_for_server()
    first = threading.Event()
    client.send_goal(TrainGoal(epochs=50, batch_size=1, dataset="digits", learning_rate=0.5),
                     feedback_cb=lambda fb: first.set())
    first.wait(300)
    t0 = time.perf_counter()
    client.cancel_goal()
    client.wait_for_result(rospy.Duration(120))
    cancelled = client.get_result()
    version = rospy.ServiceProxy("/ml_bridge/info", GetInfo)().model_version
    print(f"   {state_name(client.get_state())} after {cancelled.epochs_completed} epoch(s), "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms after the cancel; "
          f"served version still {version}")
    ok = ok and client.get_state() == GoalStatus.PREEMPTED and version == result.model_version

    acc, resp = accuracy()
    print(f"== held-out digits [1500:1797]: accuracy {acc:.3f} ({len(y)} samples, model version "
          f"{resp.model_version})")
    for i in range(5):
        print(f"   sample {1500 + i}: true {y[i]}  predicted '{resp.labels[i]}'  "
              f"score {resp.scores[i]:.3f}")
    ok = ok and acc >= 0.85
    row = ", ".join(f"{v:g}" for v in x[0])
    request = f"inputs: [{{dtype: 'float32', shape: [1, 64], values: [{row}]}}]"
    print(f"== the same from a shell (run now, true class {y[0]}):")
    print(f"   rosservice call /ml_bridge/predict \"{request}\"")
    shell = subprocess.run(["rosservice", "call", "/ml_bridge/predict", request],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    lines = shell.stdout.decode(errors="replace").splitlines()
    print("\n".join("   | " + ln for ln in lines if not ln.startswith("    values")
                     and "- 0." not in ln and not ln.startswith("      - ")))
    ok = ok and shell.returncode == 0 and "success: True" in shell.stdout.decode()
    print("   rosrun ml_bridge train --epochs 5 --dataset digits")
    print("== demo " + ("finished: all steps as expected" if ok else "FAILED: see above"))
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
