"""The ``~train`` action: actionlib's SimpleActionServer over ModelServer.fit.

Each goal trains on a thread of its own while the action's thread waits for it or for a
cancel. A cancel stops training within the current batch; if the training does not return
within ``stop_grace`` seconds of the cancel (a model whose ``forward`` never returns), the goal
ends PREEMPTED anyway, the stuck thread is abandoned with an error in the log, the served
model stays as it was, and later goals are refused, naming the cause, until it returns.
"""
import threading
from typing import Any, Callable, Dict, List, Optional

import actionlib
import rospy

from ml_bridge.core import training
from ml_bridge.core.context import in_context
from ml_bridge.core.errors import MLBridgeError, TrainingError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.tensorboard_log import TensorBoardLog, run_name
from ml_bridge.core.training import Callback
from ml_bridge.msg import TrainAction, TrainFeedback, TrainGoal, TrainResult

#: Seconds a cancelled goal's training may take to return before the goal ends without it.
#: A cancel is seen after every batch, so this is a bound on one batch of a working model.
STOP_GRACE = 30.0


def metric_lists(logs: Dict[str, float]) -> "tuple[float, list[str], list[float]]":
    """(loss, metric names, metric values) from Keras-style epoch logs."""
    names = [k for k in logs if k != "loss"]
    return float(logs.get("loss", float("nan"))), names, [float(logs[k]) for k in names]


class _Run:
    """One goal's training on its own thread; ``stop`` asks it to stop after the current batch."""

    def __init__(self, fit: Callable[["_Run"], training.TrainingOutcome]) -> None:
        self.stop = threading.Event()
        self.done = threading.Event()
        self.changed = threading.Event()  # set on a stop request and at the end: wakes the waiter
        self.abandoned = False            # the goal ended without this run: nothing may be kept
        self.result: Optional[training.TrainingOutcome] = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._main, args=(fit,), name="ml_bridge-train",
                                        daemon=True)  # a stuck run must not keep the node alive

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self.stop.set()
        self.changed.set()

    def check(self) -> None:
        """Raises once the goal ended without this run: it must end without a swap."""
        if self.abandoned:
            raise TrainingError("this goal already ended (its training was abandoned when it "
                                "did not stop in time); nothing is kept")

    def should_stop(self) -> bool:
        """Polled after every batch (an abandoned run raises)."""
        self.check()
        return self.stop.is_set() or rospy.is_shutdown()

    def _main(self, fit: Callable[["_Run"], training.TrainingOutcome]) -> None:
        try:
            self.result = fit(self)
        except BaseException as err:  # handed to the action's thread, which reports it
            self.error = err
        finally:
            self.done.set()
            self.changed.set()
            if self.abandoned:
                rospy.logwarn("the abandoned training run returned at last (%s); nothing was "
                              "kept and the node may train again",
                              f"{type(self.error).__name__}: {self.error}" if self.error
                              else "stopped")


class _Feedback(Callback):
    """One action feedback per completed epoch; an abandoned run raises here too, since after
    the last batch of the last epoch no stop is polled any more and it would be swapped in."""

    def __init__(self, server: Any, epochs: int, run: _Run) -> None:
        self.server = server
        self.epochs = epochs
        self.run = run

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self.run.check()
        loss, names, values = metric_lists(logs or {})
        self.server.publish_feedback(TrainFeedback(epoch=epoch + 1, epochs=self.epochs, loss=loss,
                                                   metric_names=names, metric_values=values))

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        self.run.check()


def _status_timer_with_reset(server: Any) -> None:
    """Replaces the action's status timer by one that survives ROS time going back.

    actionlib publishes ``status`` from a ``rospy.Timer`` without ``reset=True``, whose thread
    dies on the first jump back of ROS time (a bag played with ``--loop --clock``, a simulator
    reset): a client that starts after that never sees the server.
    """
    action_server: Any = getattr(server, "action_server", None)  # not a stand-in's
    if getattr(action_server, "status_timer", None) is None:  # no status published (frequency 0)
        return
    with action_server.lock:
        action_server.status_timer.shutdown()
        action_server.status_timer = rospy.Timer(
            rospy.Duration(1.0 / action_server.status_frequency),
            action_server.publish_status_async, reset=True)


class TrainActionServer:
    """Trains on goals; a cancel or a new goal stops the running one within a batch."""

    def __init__(self, model_server: ModelServer, name: str = "~train",
                 tensorboard_dir: str = "", stop_grace: float = STOP_GRACE,
                 action_server: Optional[Any] = None) -> None:
        """Serves ``name`` (not yet started: call :meth:`start`).

        Args:
            model_server: what is trained.
            name: the action's name.
            tensorboard_dir: where each goal writes a TensorBoard run ("" = off; the node
                passes ``~tensorboard_dir``).
            stop_grace: seconds a cancelled goal's training may take to return.
            action_server: a stand-in for SimpleActionServer (tests); default: a real one.
        """
        self.model_server = model_server
        self.tensorboard_dir = tensorboard_dir
        self.stop_grace = stop_grace
        self._run: Optional[_Run] = None        # the goal being trained
        self._abandoned: Optional[_Run] = None  # a cancelled goal's run that never returned
        # auto_start=False and start() last: the callback's collaborators exist before a goal.
        self.server = action_server or actionlib.SimpleActionServer(
            rospy.resolve_name(name), TrainAction, execute_cb=self._execute, auto_start=False)
        self.server.register_preempt_callback(self._on_preempt)

    def start(self) -> None:
        """Starts accepting goals."""
        self.server.start()
        _status_timer_with_reset(self.server)

    def _on_preempt(self) -> None:
        """A cancel, or a newer goal: the running goal stops after its current batch."""
        run = self._run
        if run is not None:
            run.request_stop()

    def _execute(self, goal: TrainGoal) -> None:
        ms = self.model_server
        rospy.loginfo("train goal: %d epochs on '%s'", goal.epochs, goal.dataset)
        stuck = self._abandoned
        if stuck is not None and not stuck.done.is_set():
            text = ("a cancelled goal's training is still stuck in the model (a call that never "
                    "returned), so no goal can train; restart the node to train again "
                    f"(serving version {ms.version})")
            rospy.logerr("train goal refused: %s", text)
            self.server.set_aborted(TrainResult(model_version=ms.version, message=text), text=text)
            return
        self._abandoned = None
        run = _Run(in_context(ms.context)(lambda r: self._fit(goal, r)))
        self._run = run
        run.start()
        if not self._wait(run):
            run.abandoned = True
            self._abandoned = run
            text = (f"the training did not stop within {self.stop_grace:g} s of the cancel: the "
                    "model is stuck in a call that does not return. The goal ends without it; "
                    f"the served model is unchanged (version {ms.version}); no goal can train "
                    "until the stuck call returns (restart the node)")
            rospy.logerr("train goal: %s", text)
            self.server.set_preempted(TrainResult(model_version=ms.version, message=text), text=text)
            return
        self._run = None
        self._finish(run)

    def _wait(self, run: _Run) -> bool:
        """Waits for the run; False if it was asked to stop and did not end within the grace."""
        while not run.done.is_set():
            if self.server.is_preempt_requested() or rospy.is_shutdown():
                run.request_stop()  # also a cancel that came before the run existed
            if run.stop.is_set():
                return run.done.wait(self.stop_grace)
            run.changed.wait(1.0)  # a stop request or the end wakes it; 1 s: notices shutdown
            run.changed.clear()
        return True

    def _fit(self, goal: TrainGoal, run: _Run) -> training.TrainingOutcome:
        """The training itself, on the run's thread with the framework context restored."""
        ms = self.model_server
        callbacks: List[Callback] = [_Feedback(self.server, int(goal.epochs), run)]
        board: Optional[TensorBoardLog] = None
        try:
            if self.tensorboard_dir:  # one run per goal, named by the version it trains
                board = TensorBoardLog(self.tensorboard_dir, run_name(ms.model.source, ms.version + 1))
                callbacks.append(board)
            result = ms.fit(goal.dataset, epochs=int(goal.epochs), batch_size=int(goal.batch_size),
                            learning_rate=float(goal.learning_rate),
                            validation_split=float(goal.validation_split),
                            keep_partial=bool(goal.keep_partial),
                            callbacks=callbacks, should_stop=run.should_stop)
        finally:
            if board is not None:
                board.close()
        if board is not None and board.path:
            rospy.loginfo("train goal: TensorBoard run %s", board.path)
        return result

    def _finish(self, run: _Run) -> None:
        """Ends the goal with what the run returned or raised."""
        ms = self.model_server
        err = run.error
        if isinstance(err, MLBridgeError):
            rospy.logwarn("train goal aborted: %s", err)
            self.server.set_aborted(TrainResult(model_version=ms.version, message=str(err)),
                                    text=str(err))
            return
        if err is not None:  # a framework error mid-training: report it, keep serving
            rospy.logerr("train goal failed: %s: %s", type(err).__name__, err)
            message = f"training failed: {type(err).__name__}: {err}"
            self.server.set_aborted(TrainResult(model_version=ms.version, message=message),
                                    text=message)
            return
        result = run.result
        assert result is not None
        loss, names, values = metric_lists(result.logs)
        msg = TrainResult(epochs_completed=result.epochs_completed, loss=loss, metric_names=names,
                          metric_values=values, model_version=result.model_version,
                          checkpoint=result.checkpoint, message=result.message)
        rospy.loginfo("train goal: %s", result.message)
        if result.stopped:
            self.server.set_preempted(msg, text=result.message)
        else:
            self.server.set_succeeded(msg, text=result.message)
