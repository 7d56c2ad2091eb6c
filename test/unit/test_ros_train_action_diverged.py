"""The ~train action ends a diverging goal ABORTED with the cause, and serves what it served."""
import math
import os
from pathlib import Path
from typing import Any, Iterator, Tuple

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.msg import TrainGoal
from test_core_diverged_training import GuardedLinear
from test_ros_train_action import FakeActionServer

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import digits
from ml_bridge.core.server import ModelServer
from ml_bridge.ros.train_action import TrainActionServer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ModelServer]:
    data = digits()
    x = data.inputs[0].copy()
    x[::50, 3] = np.nan  # a user's file with a few NaN pixels
    np.savez(tmp_path / "poisoned.npz", inputs=x, targets=data.targets[0])
    server = ModelServer(GuardedLinear(), Context(), checkpoint_dir=str(tmp_path / "ckpt"),
                         data_root=str(tmp_path))
    yield server
    server.close()


def execute(server: ModelServer, goal: TrainGoal) -> Tuple[str, Any, str]:
    action = FakeActionServer()
    TrainActionServer(server, tensorboard_dir="", action_server=action)._execute(goal)
    assert len(action.ended) == 1
    return action.ended[0]


@pytest.mark.parametrize("goal, words", [
    (TrainGoal(epochs=3, dataset="poisoned.npz"), "training diverged: loss became nan in epoch 1"),
    (TrainGoal(epochs=3, dataset="digits", learning_rate=math.inf),
     "learning_rate must be >= 0 and finite"),
])
def test_a_goal_that_would_poison_the_model_ends_aborted_with_the_cause(
        served: ModelServer, tmp_path: Path, goal: TrainGoal, words: str) -> None:
    state, result, text = execute(served, goal)
    assert state == "ABORTED" and words in text and result.message == text
    assert result.model_version == served.version == 1
    assert not (tmp_path / "ckpt").exists() or os.listdir(tmp_path / "ckpt") == []
    state, result, _ = execute(served, TrainGoal(epochs=1, dataset="digits"))
    assert state == "SUCCEEDED" and result.model_version == 2  # the next good goal trains
