"""MasterWatch with a stand-in master: a node the master forgot is told once, with the cause."""
import threading
from typing import Any, Dict, List

import pytest
import rosgraph

from ml_bridge.ros.master_watch import MasterWatch

SERVICE, OURS = "/ml_bridge/info", "rosrpc://host:4000"


class FakeMaster:
    """Answers lookupService and getParam from what the test sets; ``down`` refuses connections."""

    master_uri = "http://localhost:11311"

    def __init__(self) -> None:
        self.services: Dict[str, str] = {}
        self.params: Dict[str, Any] = {"/run_id": "run-a"}
        self.down = False
        self.lookups = 0
        self.looked = threading.Event()  # set by every lookup

    def lookupService(self, name: str) -> str:
        self.lookups += 1
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        where = self.services.get(name)
        self.looked.set()
        if where is None:
            raise rosgraph.MasterError(f"no provider for {name}")
        return where

    def getParam(self, key: str) -> Any:
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        if key not in self.params:
            raise rosgraph.MasterError(f"parameter [{key}] is not set")
        return self.params[key]

    def restart(self, run_id: str = "run-b") -> None:
        """A new master on the same port: it knows nothing of the node."""
        self.services.clear()
        self.params = {"/run_id": run_id} if run_id else {}


@pytest.fixture
def master() -> FakeMaster:
    return FakeMaster()


def watch(master: FakeMaster, lost: List[str]) -> MasterWatch:
    return MasterWatch(SERVICE, OURS, lost.append, master=master)


def test_a_restarted_master_is_named_with_both_run_ids(master: FakeMaster) -> None:
    lost: List[str] = []
    w = watch(master, lost)
    master.services[SERVICE] = OURS
    assert w.check() == "" and w.check() == ""
    master.restart()
    message = w.check()
    assert "restarted (/run_id run-a -> run-b)" in message
    assert "no longer knows this node" in message and "exiting" in message


def test_a_master_that_is_down_is_waited_for_and_the_same_master_back_is_fine(
        master: FakeMaster) -> None:
    w = watch(master, [])
    master.services[SERVICE] = OURS
    assert w.check() == ""
    master.down = True
    assert w.check() == "" and w.check() == ""  # may be restarting: not lost yet
    master.down = False
    assert w.check() == ""                      # it was only unreachable
    master.down = True
    assert w.check() == ""
    master.down = False
    master.restart()
    assert "restarted" in w.check()             # back, but a new one


def test_nothing_is_lost_before_the_node_was_seen_registered(master: FakeMaster) -> None:
    w = watch(master, [])
    assert w.check() == ""  # rospy still registering at start-up
    master.services[SERVICE] = OURS
    assert w.check() == ""
    master.restart(run_id="")  # a bare rosmaster has no /run_id
    assert "(/run_id run-a -> ?)" in w.check()


def test_the_service_at_another_address_is_a_loss_that_names_it(master: FakeMaster) -> None:
    w = watch(master, [])
    master.services[SERVICE] = OURS
    assert w.check() == ""
    master.services[SERVICE] = "rosrpc://other:5000"
    message = w.check()
    assert "lost this node's registrations" in message and "rosrpc://other:5000" in message


def test_the_thread_calls_on_lost_once_and_stops(master: FakeMaster) -> None:
    told: List[str] = []
    called = threading.Event()

    def on_lost(message: str) -> None:
        told.append(message)
        called.set()

    master.services[SERVICE] = OURS
    w = MasterWatch(SERVICE, OURS, on_lost, period=0.01, master=master)
    w.start()
    assert master.looked.wait(30.0)  # it has seen the node registered (lookup answered OURS)
    master.restart()
    assert called.wait(30.0)
    w.close()
    looked = master.lookups
    assert len(told) == 1 and w.lost == told[0]
    assert not w._thread.is_alive() and master.lookups == looked  # no look after the loss
