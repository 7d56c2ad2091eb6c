"""Training settings, the neutral callback protocol and the training result.

Hook names are Keras's (and Lightning's), so one callback object serves both backends:
``on_train_begin``, ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
``on_batch_end(batch, logs)``, ``on_train_end`` and ``should_stop`` (polled after every batch).
Epochs passed to hooks are 0-based, as in Keras.
"""
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from ml_bridge.core.errors import TrainingError

Logs = Dict[str, float]


class Callback:
    """Override the hooks you need; the defaults do nothing."""

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        """Called once after the last epoch, also after a stop."""

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        """Called after every completed epoch with ``loss`` and metrics (never for a partial one)."""

    def on_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        """Called before every batch."""

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        """Called after every batch."""

    def should_stop(self) -> bool:
        """Polled after every batch: True stops training within the current batch."""
        return False


class CallbackList(Callback):
    """Fans every hook out to several callbacks; stops when any of them asks to."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_batch_begin(batch, logs)

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(batch, logs)

    def should_stop(self) -> bool:
        return any(cb.should_stop() for cb in self.callbacks)


class StopCheck(Callback):
    """Adapts a plain ``() -> bool`` (e.g. actionlib's is_preempt_requested) to a callback."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check

    def should_stop(self) -> bool:
        return bool(self._check())


class FiniteLoss(Callback):
    """Asks to stop as soon as a loss in the logs is NaN or infinite.

    Once the loss is not finite the weights are too (or soon will be), and every further
    batch is wasted; :meth:`ModelServer.fit` turns :attr:`failure` into a TrainingError.
    Watches ``loss`` after every batch and every ``*loss`` entry (``val_loss``) per epoch.
    """

    def __init__(self) -> None:
        self.epoch = 0
        #: What went wrong, e.g. "loss became nan in epoch 2, batch 7"; "" while all is finite.
        self.failure = ""

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self._check(logs, f"epoch {self.epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self._check(logs, f"epoch {epoch + 1}")

    def _check(self, logs: Optional[Logs], where: str) -> None:
        if self.failure:
            return
        for key, value in (logs or {}).items():
            if key.endswith("loss") and not math.isfinite(value):
                self.failure = f"{key} became {value} in {where}"
                return

    def should_stop(self) -> bool:
        return bool(self.failure)


@dataclass
class TrainConfig:
    """Settings of one training run; 0 means the model's default."""

    epochs: int
    batch_size: int = 0
    learning_rate: float = 0.0
    validation_split: float = 0.0
    keep_partial: bool = False

    def validate(self) -> None:
        """Raises TrainingError for settings that cannot train."""
        if self.epochs <= 0:
            raise TrainingError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 0:
            raise TrainingError(f"batch_size must be >= 0 (0 = model default), got {self.batch_size}")
        if not (self.learning_rate >= 0.0 and math.isfinite(self.learning_rate)):
            raise TrainingError(f"learning_rate must be >= 0 and finite (0 = model default), "
                                f"got {self.learning_rate}")
        if not 0.0 <= self.validation_split < 1.0:
            raise TrainingError(f"validation_split must be in [0, 1), got {self.validation_split}")


@dataclass
class FitResult:
    """What a backend's fit returns."""

    epochs_completed: int
    stopped: bool
    history: List[Logs] = field(default_factory=list)

    @property
    def last_logs(self) -> Logs:
        """Logs of the last completed epoch ({} if none completed)."""
        return self.history[-1] if self.history else {}


@dataclass
class TrainingOutcome:
    """What :meth:`ModelServer.fit` returns: how the training ended and what is served now."""

    epochs_completed: int
    stopped: bool
    swapped: bool
    model_version: int
    checkpoint: str
    logs: Logs
    message: str = ""


#: Deprecated alias of :class:`TrainingOutcome`, for code written before the rename; the name
#: is also that of the action's result message (``ml_bridge.msg.TrainResult``), which this is not.
TrainResult = TrainingOutcome
