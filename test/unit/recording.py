"""A neutral training callback that records every hook, shared by the training tests."""
from pathlib import Path
from typing import Any, List, Optional, Tuple

from ml_bridge.core.model import BackendModel
from ml_bridge.core.training import Callback, Logs


class Recorder(Callback):
    """Records every hook; asks to stop after global batch ``stop_after`` (0-based); may save
    a checkpoint at every epoch end (the neutral way to look at the weights of that moment)."""

    def __init__(self, stop_after: Optional[int] = None, model: Optional[BackendModel] = None,
                 folder: Optional[Path] = None) -> None:
        self.calls: List[Tuple[str, Any]] = []
        self.batches = 0
        self.stop_after = stop_after
        self.model = model
        self.folder = folder
        self.checkpoints: List[str] = []

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.calls.append(("train_begin", None))

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        self.calls.append(("train_end", dict(logs or {})))

    def on_epoch_begin(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("epoch_end", (epoch, dict(logs or {}))))
        if self.model is not None and self.folder is not None:
            path = str(self.folder / f"epoch{epoch}{self.model.checkpoint_suffix}")
            self.model.save_checkpoint(path)
            self.checkpoints.append(path)

    def on_batch_begin(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch: int, logs: Optional[Logs] = None) -> None:
        self.calls.append(("batch_end", batch))
        self.batches += 1

    def should_stop(self) -> bool:
        return self.stop_after is not None and self.batches > self.stop_after

    def named(self, name: str) -> List[Any]:
        return [arg for hook, arg in self.calls if hook == name]
