"""``rosrun ml_bridge train``: Ctrl+C cancels the goal it sent, whenever it comes."""
import os
import signal
import threading
from typing import Any, List

from actionlib_msgs.msg import GoalStatus
from ml_bridge.msg import TrainGoal

from ml_bridge.ros.cli_train import TrainClient


class FakeClient:
    """A SimpleActionClient whose send_goal is interrupted by Ctrl+C after the goal went out."""

    def __init__(self) -> None:
        self.calls: List[str] = []
        self.state = GoalStatus.ACTIVE
        self.done_cb: Any = None

    def send_goal(self, goal: TrainGoal, feedback_cb: Any = None, done_cb: Any = None) -> None:
        self.calls.append("send_goal")
        self.done_cb = done_cb
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl+C right now

    def cancel_goal(self) -> None:
        self.calls.append("cancel_goal")
        self.state = GoalStatus.PREEMPTED
        threading.Thread(target=self.done_cb, args=(self.state, None)).start()

    def wait_for_result(self, _timeout: Any) -> bool:
        return True

    def get_state(self) -> int:
        return self.state

    def get_result(self) -> None:
        return None


def test_ctrl_c_while_the_goal_is_sent_cancels_it_and_restores_the_handler() -> None:
    client = TrainClient.__new__(TrainClient)  # no server to wait for
    client.client = FakeClient()
    client.done = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    state, _ = client.run(TrainGoal(epochs=3, dataset="digits"), progress=False)
    assert client.client.calls == ["send_goal", "cancel_goal"]
    assert state == GoalStatus.PREEMPTED
    assert signal.getsignal(signal.SIGINT) is before
