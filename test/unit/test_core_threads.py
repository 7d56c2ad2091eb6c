"""ThreadOwner: started last, closed once, joined; and every thread owner of ml_bridge uses it."""
import threading
from typing import List

import pytest
from test_pipeline_stream import Model, Recorder

from ml_bridge.core.context import Context
from ml_bridge.core.execution.model_thread import ModelThread
from ml_bridge.core.threads import ClosedError, ThreadOwner
from ml_bridge.pipelines.stream import Stream

WAIT = 30.0  # bound on waits for what comes at once when the code works


class Waiter(ThreadOwner):
    """Waits for its stop signal; counts the signals; may close itself from its thread."""

    def __init__(self, close_from_inside: bool = False) -> None:
        self.stop = threading.Event()
        self.signals = 0
        self.close_from_inside = close_from_inside
        self.inside_closed = threading.Event()
        super().__init__("ml_bridge-test-waiter")

    def _run(self) -> None:
        if self.close_from_inside:  # a callback on the thread that shuts its owner down
            self.close()
            self.inside_closed.set()
        self.stop.wait(WAIT)

    def _signal_stop(self) -> None:
        self.signals += 1
        self.stop.set()


def test_close_signals_once_and_joins_the_thread() -> None:
    owner = Waiter()
    owner.start()
    assert owner.thread.is_alive() and not owner.closing
    owner.close()
    assert not owner.thread.is_alive() and owner.closing and owner.signals == 1


def test_a_second_close_returns_at_once_without_signalling_again(monkeypatch: pytest.MonkeyPatch) -> None:
    owner = Waiter()
    owner.start()
    owner.close()
    joins: List[object] = []
    monkeypatch.setattr(owner.thread, "join", joins.append)
    owner.close(timeout=None)
    assert joins == [] and owner.signals == 1  # the thread has ended: nothing to wait for


def test_closing_from_inside_the_thread_signals_without_waiting_for_itself() -> None:
    owner = Waiter(close_from_inside=True)
    owner.start()
    assert owner.inside_closed.wait(WAIT)  # the close on its own thread returned: no deadlock
    assert owner.signals == 1
    owner.close()  # from outside: joins the thread that is ending
    assert not owner.thread.is_alive() and owner.signals == 1


def test_start_after_close_is_refused_naming_the_fix() -> None:
    owner = Waiter()
    owner.close()  # never started: nothing to wait for
    assert owner.signals == 1 and owner.thread.ident is None
    with pytest.raises(ClosedError, match="ml_bridge-test-waiter was closed and cannot start "
                                          "again: make a new Waiter"):
        owner.start()


def test_leaving_a_with_block_closes_the_owner() -> None:
    with Waiter() as owner:
        owner.start()
    assert owner.closing and not owner.thread.is_alive()


def test_a_subclass_that_does_not_say_how_to_stop_cannot_be_made() -> None:
    class NoStop(ThreadOwner):
        def _run(self) -> None:
            pass

    with pytest.raises(TypeError, match="_signal_stop"):
        NoStop("ml_bridge-test")  # type: ignore[abstract]


def test_the_model_thread_and_a_stream_close_by_the_protocol() -> None:
    model = ModelThread(Context(), lambda inputs: (inputs, None))
    stream = Stream("cam", Recorder(), Model(), lambda result: None)
    for owner in (stream, model):
        assert isinstance(owner, ThreadOwner) and owner.thread.is_alive()
        owner.close()
        owner.close()
        assert not owner.thread.is_alive()
    with pytest.raises(ClosedError, match="node shutting down"):
        model.exclusive(lambda: None)
