"""Per-epoch loss and metrics of a training run as TensorBoard event files, for both backends.

One run directory per run (``<model>-v<version>-<YYYYmmdd-HHMMSS>``) under a log directory, so
``tensorboard --logdir <dir>`` shows one curve per goal. Each completed epoch adds one scalar
per entry of its logs (``loss``, ``accuracy``, ``val_loss``...), at step = the 1-based epoch,
as in the ``~train`` action's feedback.

The records are written with the ``tensorboard`` package's record writer and event protos
only, not its ``EventFileWriter``: that one imports all of TensorFlow when it is installed,
seconds and hundreds of MB in a torch node for a few numbers per epoch.
"""
import os
import re
import socket
import time
from typing import IO, Any, Optional

from ml_bridge.core.errors import TrainingError
from ml_bridge.core.training import Callback, Logs


def run_name(model: str, version: int, when: Optional[float] = None) -> str:
    """``<model>-v<version>-<local time>``: the model's file or factory name, made path-safe."""
    base = os.path.basename(model.rstrip("/\\")) or model
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", base).strip(".") or "model"
    return f"{safe}-v{version}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}"


class TensorBoardLog(Callback):
    """Writes every completed epoch's logs as scalars into a new run directory.

    The run directory and its event file are created when training begins; records are
    flushed after every epoch, so a running TensorBoard shows the curve while it grows.
    Call :meth:`close` when the run ends in any way (``on_train_end`` closes it too).
    """

    def __init__(self, log_dir: str, run: str) -> None:
        """Checks that the tensorboard package is there and ``log_dir`` can be written.

        Raises:
            TrainingError: tensorboard is not installed, or ``log_dir`` cannot be created.
        """
        try:  # lazily: only nodes that log to TensorBoard pay for the import (~0.3 s)
            from tensorboard.compat.proto import event_pb2
            from tensorboard.summary.writer.record_writer import RecordWriter
        except ImportError as err:
            raise TrainingError(f"tensorboard_dir is set but the tensorboard package cannot be "
                                f"imported ({err}); `pip install tensorboard` into the node's "
                                "Python, or leave tensorboard_dir empty") from err
        self._event_pb2: Any = event_pb2
        self._record_writer: Any = RecordWriter
        self.log_dir = os.path.abspath(os.path.expanduser(log_dir))
        self.run = run
        #: The run directory, set when training begins ("" before).
        self.path = ""
        self._file: Optional[IO[bytes]] = None
        self._writer: Any = None
        try:
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as err:
            raise TrainingError(f"cannot create tensorboard_dir {self.log_dir}: {err.strerror}; "
                                "choose a writable directory") from err

    def on_train_begin(self, logs: Optional[Logs] = None) -> None:
        self.path = self._new_run_dir()
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        try:
            self._file = open(os.path.join(self.path, name), "wb")
        except OSError as err:
            raise TrainingError(f"cannot write the event file in {self.path}: {err.strerror}") from err
        self._writer = self._record_writer(self._file)
        self._write(self._event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def on_epoch_end(self, epoch: int, logs: Optional[Logs] = None) -> None:
        if self._writer is None:
            return
        event = self._event_pb2.Event(wall_time=time.time(), step=epoch + 1)
        for key, value in (logs or {}).items():
            event.summary.value.add(tag=key, simple_value=float(value))
        self._write(event)

    def on_train_end(self, logs: Optional[Logs] = None) -> None:
        self.close()

    def close(self) -> None:
        """Flushes and closes the event file; safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None

    def _write(self, event: Any) -> None:
        assert self._file is not None
        self._writer.write(event.SerializeToString())
        self._file.flush()  # per epoch: a few hundred bytes, seen by TensorBoard at once

    def _new_run_dir(self) -> str:
        """A directory no other run uses: two goals within a second get ``-2``, ``-3``..."""
        for n in range(1, 1000):
            path = os.path.join(self.log_dir, self.run if n == 1 else f"{self.run}-{n}")
            try:
                os.makedirs(path)
                return path
            except FileExistsError:
                continue
            except OSError as err:
                raise TrainingError(f"cannot create a run directory in tensorboard_dir "
                                    f"{self.log_dir}: {err.strerror}") from err
        raise TrainingError(f"too many runs named {self.run} in {self.log_dir}")
