"""The ~train action without a master: a cancel ends the goal, even one stuck in the model."""
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.msg import TrainGoal
from test_core_server import LinearModel

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import TrainingError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.training import Callback, FitResult, Logs, TrainConfig
from ml_bridge.ros.train_action import TrainActionServer

WAIT = 60.0  # bound on waits for events that come at once when the code works


class FakeActionServer:
    """Records what SimpleActionServer would be told; ``cancel()`` is a client's cancel."""

    def __init__(self, cancel_at_feedback: Optional[int] = None) -> None:
        self.ended: List[Tuple[str, Any, str]] = []
        self.feedback: List[Any] = []
        self.preempt = False
        self.on_preempt: Any = None
        self.cancel_at_feedback = cancel_at_feedback

    def start(self) -> None:
        pass

    def register_preempt_callback(self, callback: Any) -> None:
        self.on_preempt = callback

    def is_preempt_requested(self) -> bool:
        return self.preempt

    def cancel(self) -> None:
        self.preempt = True  # as SimpleActionServer: the flag, then the callback
        self.on_preempt()

    def publish_feedback(self, feedback: Any) -> None:
        self.feedback.append(feedback)
        if len(self.feedback) == self.cancel_at_feedback:
            self.cancel()

    def set_aborted(self, result: Any, text: str = "") -> None:
        self.ended.append(("ABORTED", result, text))

    def set_succeeded(self, result: Any, text: str = "") -> None:
        self.ended.append(("SUCCEEDED", result, text))

    def set_preempted(self, result: Any, text: str = "") -> None:
        self.ended.append(("PREEMPTED", result, text))


class StuckForward(LinearModel):
    """Training hangs (a forward that never returns) until ``release``: in its first batch, or
    in the evaluation after the last batch, where no stop is polled any more."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.entered = threading.Event()
        self.release = threading.Event()  # shared with clones (shallow copies)

    def _hang(self) -> None:
        self.entered.set()
        self.release.wait()

    def fit(self, train: Dataset, validation: Optional[Dataset], config: TrainConfig,
            callbacks: Callback, native_callbacks: Sequence[Any] = ()) -> FitResult:
        if self.where == "first batch":
            self._hang()
        return super().fit(train, validation, config, callbacks, native_callbacks)

    def _evaluate(self, data: Dataset, prefix: str) -> Logs:
        if self.where == "after the last batch":
            self._hang()
        return super()._evaluate(data, prefix)


@pytest.fixture(params=["first batch", "after the last batch"])
def stuck(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tuple[ModelServer, StuckForward]]:
    model = StuckForward(str(request.param))
    server = ModelServer(model, Context(), checkpoint_dir=str(tmp_path / "ckpt"))
    yield server, model
    model.release.set()  # no thread stays stuck after the test
    server.close()


def execute_in_thread(action: TrainActionServer, goal: TrainGoal) -> threading.Thread:
    thread = threading.Thread(target=action._execute, args=(goal,), daemon=True)
    thread.start()
    return thread


def test_cancel_ends_a_goal_stuck_in_the_model_and_the_served_model_is_kept(
        stuck: Tuple[ModelServer, StuckForward]) -> None:
    server, model = stuck
    x = digits(heldout=True).inputs[0][:20]
    before = server.predict([x]).outputs[0]
    fake = FakeActionServer()
    action = TrainActionServer(server, tensorboard_dir="", stop_grace=0.5, action_server=fake)
    thread = execute_in_thread(action, TrainGoal(epochs=1, dataset="digits"))
    assert model.entered.wait(WAIT)
    fake.cancel()
    thread.join(WAIT)
    assert not thread.is_alive() and len(fake.ended) == 1
    state, result, text = fake.ended[0]
    assert state == "PREEMPTED" and "did not stop within 0.5 s of the cancel" in text
    assert result.model_version == 1 and "unchanged (version 1)" in result.message

    # While the stuck call lasts, a new goal is refused with the cause instead of hanging.
    fake.preempt = False
    action._execute(TrainGoal(epochs=1, dataset="digits"))
    state, result, text = fake.ended[1]
    assert state == "ABORTED" and "still stuck in the model" in text

    # The call returns at last: the abandoned run keeps nothing; the next goal trains.
    abandoned = action._abandoned
    assert abandoned is not None
    model.where = ""  # the next goal trains normally
    model.release.set()
    assert abandoned.done.wait(WAIT) and isinstance(abandoned.error, TrainingError)
    assert server.version == 1 and fake.feedback == []
    np.testing.assert_array_equal(server.predict([x]).outputs[0], before)
    action._execute(TrainGoal(epochs=1, dataset="digits"))
    state, result, text = fake.ended[2]
    assert state == "SUCCEEDED" and result.model_version == server.version == 2, text


def test_cancel_stops_a_working_goal_within_the_epoch_and_keeps_the_version(tmp_path: Path) -> None:
    server = ModelServer(LinearModel(), Context(), checkpoint_dir=str(tmp_path / "ckpt"))
    try:
        fake = FakeActionServer(cancel_at_feedback=1)
        action = TrainActionServer(server, tensorboard_dir="", action_server=fake)
        # batch size 1: 1500 batches per epoch, so a stop "within a batch" ends in epoch 2
        action._execute(TrainGoal(epochs=20, batch_size=1, dataset="digits"))
        state, result, _ = fake.ended[0]
        assert state == "PREEMPTED" and result.epochs_completed == 1
        assert len(fake.feedback) == 1 and result.model_version == server.version == 1
    finally:
        server.close()
