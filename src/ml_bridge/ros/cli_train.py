"""``rosrun ml_bridge train``: send a train goal, show per-epoch progress, Ctrl+C cancels.

Exit codes: 0 succeeded, 1 aborted (invalid goal), 2 preempted (cancelled), 3 no server.
"""
import argparse
import signal
import sys
import threading
from typing import List, Optional

import actionlib
import rospy
from actionlib_msgs.msg import GoalStatus

from ml_bridge.msg import TrainAction, TrainFeedback, TrainGoal, TrainResult

EXIT = {GoalStatus.SUCCEEDED: 0, GoalStatus.ABORTED: 1, GoalStatus.PREEMPTED: 2,
        GoalStatus.RECALLED: 2, GoalStatus.REJECTED: 1}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (ROS remappings already stripped)."""
    p = argparse.ArgumentParser(prog="rosrun ml_bridge train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, required=True, help="epochs to train (> 0)")
    p.add_argument("--dataset", default="digits",
                   help="built-in name, recorded dataset, or .npz/.bag under ~data_root")
    p.add_argument("--batch-size", type=int, default=0, help="0 = model default")
    p.add_argument("--learning-rate", type=float, default=0.0, help="0 = model default")
    p.add_argument("--validation-split", type=float, default=0.0, help="0..<1")
    p.add_argument("--keep-partial", action="store_true",
                   help="on cancel, keep the weights of the completed epochs")
    p.add_argument("--node", default="/ml_bridge", help="namespace of the ml_bridge node")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the server")
    return p.parse_args(argv)


def state_name(state: int) -> str:
    """``SUCCEEDED``, ``PREEMPTED``, ... for an actionlib goal state."""
    names = {v: k for k, v in vars(GoalStatus).items() if k.isupper() and isinstance(v, int)}
    return names.get(state, str(state))


def format_metrics(names: List[str], values: List[float]) -> str:
    """``accuracy=0.912 val_loss=0.301``."""
    return " ".join(f"{n}={v:.4g}" for n, v in zip(names, values))


class TrainClient:
    """Sends one goal and follows it with a progress bar."""

    def __init__(self, node: str = "/ml_bridge", timeout: float = 15.0) -> None:
        self.client = actionlib.SimpleActionClient(node.rstrip("/") + "/train", TrainAction)
        if not self.client.wait_for_server(rospy.Duration(timeout)):
            raise RuntimeError(f"no train action server at {node}/train (is the node running? "
                               "`roslaunch ml_bridge server.launch`)")
        self.done = threading.Event()

    def run(self, goal: TrainGoal, progress: bool = True) -> "tuple[int, TrainResult]":
        """Sends ``goal`` and waits; Ctrl+C cancels and waits for PREEMPTED. Returns (state, result)."""
        from tqdm import tqdm

        bar = tqdm(total=goal.epochs, unit="epoch", disable=not progress, dynamic_ncols=True)

        def feedback(fb: TrainFeedback) -> None:
            bar.update(fb.epoch - bar.n)
            bar.set_postfix_str(f"loss={fb.loss:.4f} {format_metrics(fb.metric_names, fb.metric_values)}")

        # Ctrl+C only sets a flag while the goal is sent and followed: a KeyboardInterrupt
        # raised inside send_goal (after the goal went out, before its handle is kept) would
        # leave the goal training with no client to cancel it.
        interrupted = threading.Event()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if main else None
        try:
            self.client.send_goal(goal, feedback_cb=feedback, done_cb=lambda *_: self.done.set())
            while not self.done.wait(0.1):
                if interrupted.is_set() or rospy.is_shutdown():
                    bar.write("cancelling the goal (waiting for the current batch)...")
                    self.client.cancel_goal()
                    self.client.wait_for_result(rospy.Duration(60.0))
                    break
        finally:
            if main and previous is not None:
                signal.signal(signal.SIGINT, previous)
            bar.close()
        return self.client.get_state(), self.client.get_result()


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(rospy.myargv(sys.argv)[1:] if argv is None else argv)
    rospy.init_node("ml_bridge_train", anonymous=True, disable_signals=True)
    try:
        client = TrainClient(args.node, args.timeout)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    goal = TrainGoal(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                     dataset=args.dataset, validation_split=args.validation_split,
                     keep_partial=args.keep_partial)
    state, result = client.run(goal, progress=True)
    name = state_name(state)
    if result is None:
        print(f"{name}: no result received")
        return EXIT.get(state, 1)
    print(f"{name}: {result.message}")
    if result.epochs_completed:
        print(f"  epochs completed: {result.epochs_completed}, loss {result.loss:.4f} "
              f"{format_metrics(list(result.metric_names), list(result.metric_values))}")
    print(f"  serving model version {result.model_version}"
          + (f", checkpoint {result.checkpoint}" if result.checkpoint else ""))
    return EXIT.get(state, 1)
