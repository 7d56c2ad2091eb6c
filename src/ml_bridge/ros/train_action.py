"""The ``~train`` action: actionlib's SimpleActionServer over ModelServer.fit."""
from typing import Dict, List, Optional

import actionlib
import rospy

from ml_bridge.core.context import in_context
from ml_bridge.core.errors import MLBridgeError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.tensorboard_log import TensorBoardLog, run_name
from ml_bridge.core.training import Callback
from ml_bridge.msg import TrainAction, TrainFeedback, TrainGoal, TrainResult


def metric_lists(logs: Dict[str, float]) -> "tuple[float, list[str], list[float]]":
    """(loss, metric names, metric values) from Keras-style epoch logs."""
    names = [k for k in logs if k != "loss"]
    return float(logs.get("loss", float("nan"))), names, [float(logs[k]) for k in names]


class _Feedback(Callback):
    """One action feedback per completed epoch."""

    def __init__(self, server: actionlib.SimpleActionServer, epochs: int) -> None:
        self.server = server
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        loss, names, values = metric_lists(logs or {})
        self.server.publish_feedback(TrainFeedback(epoch=epoch + 1, epochs=self.epochs, loss=loss,
                                                   metric_names=names, metric_values=values))


class TrainActionServer:
    """Trains on goals; a cancel or a new goal stops the running one within a batch."""

    def __init__(self, model_server: ModelServer, name: str = "~train",
                 tensorboard_dir: Optional[str] = None) -> None:
        """``tensorboard_dir``: where each goal writes a TensorBoard run ("" = off, None =
        the ``~tensorboard_dir`` parameter)."""
        self.model_server = model_server
        self.tensorboard_dir = (str(rospy.get_param("~tensorboard_dir", "")) if tensorboard_dir is None
                                else tensorboard_dir)
        execute = in_context(model_server.context)(self._execute)
        # auto_start=False and start() last: the callback's collaborators exist before a goal.
        self.server = actionlib.SimpleActionServer(rospy.resolve_name(name), TrainAction,
                                                   execute_cb=execute, auto_start=False)

    def start(self) -> None:
        """Starts accepting goals."""
        self.server.start()

    def _should_stop(self) -> bool:
        return self.server.is_preempt_requested() or rospy.is_shutdown()

    def _execute(self, goal: TrainGoal) -> None:
        ms = self.model_server
        rospy.loginfo("train goal: %d epochs on '%s'", goal.epochs, goal.dataset)
        callbacks: List[Callback] = [_Feedback(self.server, int(goal.epochs))]
        board: Optional[TensorBoardLog] = None
        try:
            if self.tensorboard_dir:  # one run per goal, named by the version it trains
                board = TensorBoardLog(self.tensorboard_dir, run_name(ms.model.source, ms.version + 1))
                callbacks.append(board)
            result = ms.fit(goal.dataset, epochs=int(goal.epochs), batch_size=int(goal.batch_size),
                            learning_rate=float(goal.learning_rate),
                            validation_split=float(goal.validation_split),
                            keep_partial=bool(goal.keep_partial),
                            callbacks=callbacks, should_stop=self._should_stop)
        except MLBridgeError as err:
            rospy.logwarn("train goal aborted: %s", err)
            self.server.set_aborted(TrainResult(model_version=ms.version, message=str(err)),
                                    text=str(err))
            return
        except Exception as err:  # a framework error mid-training: report it, keep serving
            rospy.logerr("train goal failed: %s: %s", type(err).__name__, err)
            message = f"training failed: {type(err).__name__}: {err}"
            self.server.set_aborted(TrainResult(model_version=ms.version, message=message),
                                    text=message)
            return
        finally:
            if board is not None:
                board.close()
        if board is not None and board.path:
            rospy.loginfo("train goal: TensorBoard run %s", board.path)
        loss, names, values = metric_lists(result.logs)
        msg = TrainResult(epochs_completed=result.epochs_completed, loss=loss, metric_names=names,
                          metric_values=values, model_version=result.model_version,
                          checkpoint=result.checkpoint, message=result.message)
        rospy.loginfo("train goal: %s", result.message)
        if result.stopped:
            self.server.set_preempted(msg, text=result.message)
        else:
            self.server.set_succeeded(msg, text=result.message)


