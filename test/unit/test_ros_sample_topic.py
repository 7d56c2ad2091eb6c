"""ml_bridge.ros.sample_topic.SampleRecorder without a master: queue, grouped writes, counters, warnings."""
import errno
import os
import threading
from pathlib import Path
from typing import Any, Iterator, List

import numpy as np
import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rospy
from ml_bridge.msg import Sample
from test_core_server import LinearModel

from ml_bridge.core import sample_store as store_module
from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.server import ModelServer
from ml_bridge.ros import sample_topic as recorder_module
from ml_bridge.ros.conversions import array_to_tensor
from ml_bridge.ros.sample_topic import WARN_PERIOD, SampleRecorder

TIMEOUT = 30.0


X = digits().inputs[0]


class ColumnTargets(LinearModel):
    """The fake model, taking class ids as [N, 1] too (a Sample cannot carry a 0-d tensor)."""

    def check_targets(self, dataset: Dataset) -> None:
        super().check_targets(Dataset(dataset.name, dataset.inputs,
                                      [t.reshape(len(t)) for t in dataset.targets]))


class FakeSubscriber:
    def __init__(self, topic: str, msg_type: Any, callback: Any, **kwargs: Any) -> None:
        self.topic, self.callback, self.kwargs = topic, callback, kwargs
        self.unregistered = False

    def unregister(self) -> None:
        self.unregistered = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ModelServer]:
    srv = ModelServer(ColumnTargets(), Context(), data_root=str(tmp_path))
    yield srv
    srv.close()


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> List[str]:
    said: List[str] = []
    monkeypatch.setattr(rospy, "logwarn", lambda text, *args: said.append(text % args if args else text))
    return said


def make(server: ModelServer, **kwargs: Any) -> SampleRecorder:
    return SampleRecorder(server, "field", subscribe=FakeSubscriber, **kwargs)


def good(i: int, dataset: str = "") -> Sample:
    return Sample(dataset=dataset, inputs=[array_to_tensor(X[i])],
                  targets=[array_to_tensor(np.array(i % 10, np.int64))])


def bad(i: int) -> Sample:
    return Sample(inputs=[array_to_tensor(np.zeros(63, np.float32))],
                  targets=[array_to_tensor(np.array(0, np.int64))])


def test_the_subscriber_has_no_queue_limit_so_rospy_discards_nothing(server: ModelServer) -> None:
    recorder = make(server)
    assert recorder.subscriber.topic == "~samples"
    assert recorder.subscriber.kwargs["queue_size"] is None
    assert recorder.subscriber.callback == recorder.receive


def test_a_burst_is_stored_completely_in_order_with_one_fsync(
        server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: List[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    recorder = make(server)
    for i in range(500):  # all queued before the writer starts: one group
        recorder.receive(good(i))
    assert recorder.stats()["samples_stored"] == 0 and recorder.stats()["samples_queued"] == 500
    recorder.start()
    assert recorder.wait_idle(TIMEOUT)
    assert recorder.stats() == {"samples_received": 500, "samples_stored": 500, "samples_refused": 0,
                                "samples_dropped": 0, "samples_queued": 0}
    assert len(synced) == 2  # the new file's directory entry, then the file once for the group
    data = server.datasets.load("field")
    np.testing.assert_array_equal(data.inputs[0], X[:500])
    np.testing.assert_array_equal(data.targets[0].ravel(), np.arange(500) % 10)
    recorder.close()


def test_samples_that_do_not_fit_are_refused_with_one_warning_per_period(
        server: ModelServer, warnings: List[str]) -> None:
    clock = Clock()
    recorder = make(server, clock=clock)
    recorder.start()
    for i in range(20):
        recorder.receive(bad(i))
        recorder.receive(good(i, "mine"))
    assert recorder.wait_idle(TIMEOUT)
    clock.now += WARN_PERIOD
    recorder.receive(bad(99))
    assert recorder.wait_idle(TIMEOUT)
    stats = recorder.stats()
    assert stats["samples_refused"] == 21 and stats["samples_stored"] == 20
    assert len(warnings) == 2 and all("sample for 'field' refused" in w for w in warnings)
    assert "dimension" in warnings[0]
    assert len(server.datasets.load("mine")) == 20
    recorder.close()


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left in data_root"),
                                         (errno.EROFS, "is not writable")])
def test_a_full_or_read_only_data_root_drops_with_a_count_and_one_warning(
        server: ModelServer, tmp_path: Path, warnings: List[str], monkeypatch: pytest.MonkeyPatch,
        code: int, words: str) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(store_module.os, "makedirs", fail)
    recorder = make(server)
    for i in range(30):
        recorder.receive(good(i))
    recorder.start()
    assert recorder.wait_idle(TIMEOUT)
    assert recorder.stats()["samples_dropped"] == 30 and recorder.stats()["samples_stored"] == 0
    assert len(warnings) == 1
    assert "30 sample(s) dropped (30 so far, see diagnostics samples_dropped): " in warnings[0]
    assert words in warnings[0] and str(tmp_path) in warnings[0]
    recorder.close()


def test_a_failed_group_fsync_counts_the_group_as_dropped(
        server: ModelServer, warnings: List[str], monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = make(server)
    recorder.receive(good(0))
    recorder.start()
    assert recorder.wait_idle(TIMEOUT)  # the file exists: later groups only fsync the file

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(store_module.os, "fsync", fsync)
    for i in range(5):
        recorder.receive(good(i))
    recorder.receive(bad(0))
    assert recorder.wait_idle(TIMEOUT)
    assert recorder.stats()["samples_stored"] == 1  # never acknowledged without its fsync
    assert recorder.stats()["samples_dropped"] == 5 and recorder.stats()["samples_refused"] == 1
    assert any("cannot write to data_root" in w for w in warnings)
    recorder.close()


def test_what_is_queued_at_shutdown_is_written_and_later_samples_are_counted(
        server: ModelServer) -> None:
    recorder = make(server)
    for i in range(10):
        recorder.receive(good(i))
    recorder.start()
    recorder.close()
    assert recorder.subscriber.unregistered
    recorder.receive(good(11))  # a callback already running when the subscriber went away
    stats = recorder.stats()
    assert stats["samples_stored"] == 10 and stats["samples_dropped"] == 1
    assert len(server.datasets.load("field")) == 10


def test_a_full_queue_makes_the_callback_wait_instead_of_discarding(server: ModelServer) -> None:
    one = recorder_module.message_bytes(good(0))
    recorder = make(server, max_queued_bytes=3 * one)
    for i in range(3):
        recorder.receive(good(i))
    done = threading.Event()

    def publisher() -> None:
        for i in range(3, 40):
            recorder.receive(good(i))
        done.set()

    thread = threading.Thread(target=publisher)
    thread.start()
    recorder.start()  # the callback can only get through once the writer takes from the queue
    assert done.wait(TIMEOUT)
    thread.join(TIMEOUT)
    assert recorder.wait_idle(TIMEOUT)
    assert recorder.stats()["samples_stored"] == 40 and recorder.stats()["samples_dropped"] == 0
    np.testing.assert_array_equal(server.datasets.load("field").inputs[0], X[:40])
    recorder.close()


def test_without_a_data_root_every_sample_is_refused_with_the_reason(warnings: List[str]) -> None:
    srv = ModelServer(ColumnTargets(), Context())
    recorder = make(srv)
    recorder.receive(good(0))
    recorder.start()
    assert recorder.wait_idle(TIMEOUT)
    assert recorder.stats()["samples_refused"] == 1 and "no data root" in warnings[0]
    recorder.close()
    srv.close()
