"""One way for an object to own a thread: built stopped, started last, closed once.

Every object of ml_bridge that runs a thread of its own (the model thread, a camera's stream,
the ``~samples`` writer, the ``~predict`` serving loop, the master watch) follows the same
protocol, so the node can close them all the same way, in the reverse order of their start:

- The thread is made in the constructor and started by :meth:`ThreadOwner.start`, called
  last (by the constructor's last line, or by the owner once everything the thread reads
  exists).
- :meth:`ThreadOwner.close` asks the thread to stop (once, however often it is called) and
  joins it; called from the thread itself (a callback that shuts the node down) it only asks,
  since a thread cannot join itself. A close that has returned leaves the thread stopped,
  unless ``timeout`` ran out first.
- ``with owner:`` closes it on leaving; :meth:`ThreadOwner.start` after close raises
  :class:`ClosedError`, as does whatever a subclass refuses to do once closed.
"""
import abc
import threading
from types import TracebackType
from typing import Optional, Type, TypeVar

from ml_bridge.core.errors import MLBridgeError

Owner = TypeVar("Owner", bound="ThreadOwner")


class ClosedError(MLBridgeError):
    """An object was used after :meth:`ThreadOwner.close`."""


class ThreadOwner(abc.ABC):
    """Base of an object that owns one thread (daemon: a stuck thread never keeps the process
    alive; closing it is what stops it).

    Subclasses implement :meth:`_run` (the thread's body) and :meth:`_signal_stop` (makes
    ``_run`` return soon: sets the subclass's flag and wakes the thread).
    """

    def __init__(self, name: str) -> None:
        """Makes the thread, not started.

        Args:
            name: the thread's name (``ml_bridge-...``), as logs and ``threading.enumerate``
                show it.
        """
        self._life = threading.Lock()  # orders start against close
        self._closing = False
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def thread(self) -> threading.Thread:
        """The thread this object owns."""
        return self._worker

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closing

    def start(self) -> None:
        """Starts the thread; call it once everything the thread reads exists.

        Raises:
            ClosedError: the object was closed before.
            RuntimeError: it was started before.
        """
        with self._life:
            if self._closing:
                raise ClosedError(f"{self._worker.name} was closed and cannot start again: make a "
                                  f"new {type(self).__name__}")
            self._worker.start()

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Asks the thread to stop (the first time) and waits at most ``timeout`` seconds for it
        to end (``0``: does not wait; ``None``: waits as long as it takes). From the thread
        itself it does not wait. A thread never started is not waited for.
        """
        with self._life:
            first, self._closing = not self._closing, True
        if first:
            self._signal_stop()
        worker = self._worker
        if (worker.is_alive() and worker is not threading.current_thread()
                and (timeout is None or timeout > 0)):
            worker.join(timeout)

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread's body: returns once :meth:`_signal_stop` has been called."""

    @abc.abstractmethod
    def _signal_stop(self) -> None:
        """Makes :meth:`_run` return; called once, by the first :meth:`close`, on its caller's
        thread (which may be the owned thread)."""

    def __enter__(self: Owner) -> Owner:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()
