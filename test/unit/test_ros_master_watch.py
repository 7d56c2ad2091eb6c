"""MasterWatch with a stand-in master: a node the master forgot is told once, with the cause;
a node that shuts down (and unregisters itself) is never told."""
import threading
import types
from typing import Any, Callable, Dict, List, Optional

import pytest
import rosgraph

from ml_bridge.ros import main as entry
from ml_bridge.ros import params
from ml_bridge.ros.master_watch import MasterWatch

SERVICE, OURS = "/ml_bridge/info", "rosrpc://host:4000"
WAIT = 30.0  # bound on waits for what comes at once when the code works


class FakeMaster:
    """Answers lookupService and getParam from what the test sets; ``down`` refuses connections."""

    master_uri = "http://localhost:11311"

    def __init__(self) -> None:
        self.services: Dict[str, str] = {}
        self.params: Dict[str, Any] = {"/run_id": "run-a"}
        self.down = False
        self.lookups = 0
        self.looked = threading.Event()  # set by every lookup
        #: Called inside a lookup, before it answers (what happens while the look is in flight).
        self.during_lookup: Optional[Callable[[], None]] = None

    def lookupService(self, name: str) -> str:
        self.lookups += 1
        if self.during_lookup is not None:
            self.during_lookup()
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
    w.arm()  # as the thread does first
    assert w.check() == "" and w.check() == ""
    master.restart()
    message = w.check()
    assert "restarted (/run_id run-a -> run-b)" in message
    assert "no longer knows this node" in message and "exiting" in message


def test_a_master_that_is_down_is_waited_for_and_the_same_master_back_is_fine(
        master: FakeMaster) -> None:
    w = watch(master, [])
    master.services[SERVICE] = OURS
    w.arm()
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


def test_a_bare_master_without_run_id_is_named_with_a_question_mark(master: FakeMaster) -> None:
    w = watch(master, [])
    master.services[SERVICE] = OURS
    w.arm()
    assert w.check() == ""
    master.restart(run_id="")  # a bare rosmaster has no /run_id
    assert "(/run_id run-a -> ?)" in w.check()


def test_a_master_restarted_before_the_first_look_is_a_loss(master: FakeMaster) -> None:
    """The node registered its services, then the master restarted before the watch looked."""
    told: List[str] = []
    called = threading.Event()

    def on_lost(message: str) -> None:
        told.append(message)
        called.set()

    master.services[SERVICE] = OURS  # registered: rospy.Service returned
    master.restart()                 # within the first period
    w = MasterWatch(SERVICE, OURS, on_lost, period=0.01, master=master)
    w.start()
    assert called.wait(WAIT), "the watch never reported the node lost"
    w.close()
    assert "no longer knows this node" in told[0] and "exiting" in told[0]


def test_the_service_at_another_address_is_a_loss_that_names_it(master: FakeMaster) -> None:
    w = watch(master, [])
    master.services[SERVICE] = OURS
    w.arm()
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
    assert not w.thread.is_alive() and master.lookups == looked  # no look after the loss


def test_a_shutdown_during_a_look_is_not_a_loss(master: FakeMaster) -> None:
    """rospy runs the on_shutdown hook (close) and unregisters while a look is in flight."""
    told: List[str] = []
    master.services[SERVICE] = OURS
    w = MasterWatch(SERVICE, OURS, told.append, period=0.01, master=master)

    def shut_down() -> None:
        if master.lookups == 2:  # the second look: the node is shutting down meanwhile
            w.close(0)              # the on_shutdown hook, as main registers it
            master.services.clear()  # then rospy's pre-shutdown hook unregisters the node

    master.during_lookup = shut_down
    w.start()
    w.thread.join(WAIT)
    assert not w.thread.is_alive()
    assert told == [] and w.lost == ""
    assert master.lookups == 2  # and no look after close


def test_no_loss_is_reported_once_rospy_shutdown_began(master: FakeMaster) -> None:
    """A shutdown that unregisters before the watch's close (a hook run earlier) is not a loss."""
    told: List[str] = []
    shutting_down = threading.Event()
    master.services[SERVICE] = OURS
    w = MasterWatch(SERVICE, OURS, told.append, period=0.01, master=master,
                    shutting_down=shutting_down.is_set)

    def shut_down() -> None:
        if master.lookups == 2:
            shutting_down.set()
            master.services.clear()

    master.during_lookup = shut_down
    w.start()
    w.thread.join(WAIT)  # it ends at the look that finds the node gone
    assert not w.thread.is_alive()
    assert told == [] and w.lost == ""


def test_main_stops_the_watch_before_rospy_unregisters_on_a_clean_stop(
        master: FakeMaster, monkeypatch: pytest.MonkeyPatch) -> None:
    """main with rospy's shutdown order: client on_shutdown hooks, then unregistering."""
    hooks: List[Callable[[], None]] = []
    fatal: List[str] = []
    watches: List[MasterWatch] = []
    info = types.SimpleNamespace(model="m", backend="b", framework_version="1", device="cpu",
                                 model_version=1)

    class Node:
        info_srv = types.SimpleNamespace(resolved_name=SERVICE, uri=OURS)

        def __init__(self, *_args: Any) -> None:
            pass

        def shutdown(self) -> None:
            pass

    def make_watch(service: str, uri: str, on_lost: Callable[[str], None]) -> MasterWatch:
        watches.append(MasterWatch(service, uri, on_lost, period=0.01, master=master))
        return watches[-1]

    def spin() -> None:
        assert master.looked.wait(WAIT)  # the watch has looked: the node is up
        for hook in list(hooks):  # what rospy.signal_shutdown does, in its order
            hook()
        master.services.clear()   # its pre-shutdown hook: the node unregisters
        master.looked.clear()
        watches[0].thread.join(WAIT)  # a watch still running looks again here

    for name, value in (("init_node", lambda *_a, **_k: None), ("logfatal", fatal.append),
                        ("loginfo", lambda *_a, **_k: None), ("on_shutdown", hooks.append),
                        ("signal_shutdown", lambda _reason: None), ("spin", spin),
                        ("get_param", lambda _name, default=None: default)):
        monkeypatch.setattr(params.rospy, name, value)
    monkeypatch.setattr(entry.tcpros_patch, "apply", lambda: None)
    monkeypatch.setattr(params, "load_server",
                        lambda: types.SimpleNamespace(info=lambda: info, close=lambda: None))
    monkeypatch.setattr(entry, "MLBridgeNode", Node)
    monkeypatch.setattr(entry, "MasterWatch", make_watch)
    master.services[SERVICE] = OURS
    assert entry.main() == 0, fatal
    assert fatal == []
