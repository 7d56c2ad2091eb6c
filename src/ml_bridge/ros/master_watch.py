"""Notices that the ROS master forgot this node (it was restarted) so the node can exit, named.

rospy registers a node's services, topics and parameters with the master once, at start-up,
and never again: after a master restart the node keeps running, unreachable by name, and
nothing restarts it (``respawn`` only acts on a process that exits). :class:`MasterWatch`
asks the master every few seconds where one of the node's services is (one XML-RPC call);
once the master no longer knows it at this node's address, ``on_lost`` is called once with
a message saying what happened (the master's old and new ``/run_id`` when it has one).
A master that does not answer is waited for: it may come back, and then it is asked again.
"""
import logging
import threading
import xmlrpc.client
from typing import Any, Callable, Optional

import rosgraph

log = logging.getLogger(__name__)

#: Seconds between two looks at the master: a lost node exits within about this long.
PERIOD = 2.0


class MasterWatch:
    """A thread that calls ``on_lost(message)`` once the master no longer knows ``service``."""

    def __init__(self, service: str, service_uri: str, on_lost: Callable[[str], None],
                 period: float = PERIOD, master: Optional[Any] = None) -> None:
        """Watches the registration of ``service`` (resolved name) served at ``service_uri``.

        Args:
            service: a service this node registered, e.g. ``/ml_bridge/info``.
            service_uri: where this node serves it (``rospy.Service.uri``).
            on_lost: called once, on the watch thread, with what happened.
            period: seconds between two looks.
            master: the master's API (``rosgraph.Master``); default: ROS_MASTER_URI's.
        """
        self.service = service
        self.service_uri = service_uri
        self.on_lost = on_lost
        self.period = period
        self._master = master if master is not None else rosgraph.Master(service)
        self._registered = False   # seen registered once: only then can it be lost
        self._run_id = ""          # the master's /run_id when it knew the node
        self._unreachable = False  # the last look failed to reach the master
        #: Why the node was lost ("" while it is known): set before on_lost is called.
        self.lost = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ml_bridge-master-watch",
                                        daemon=True)

    def start(self) -> None:
        """Starts looking, every ``period`` seconds."""
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stops looking; waits for a running ``on_lost`` (the node's shutdown) to finish."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            message = self.check()
            if message:
                self.lost = message
                self.on_lost(message)
                return

    def check(self) -> str:
        """One look at the master: why the node is lost, or "" while all is well.

        A master that cannot be reached is not a loss (it may be restarting): the next look
        tells. The node is lost when a master that answers does not have ``service`` at
        ``service_uri`` any more, after it had once.
        """
        try:
            where = str(self._master.lookupService(self.service))
        except rosgraph.MasterError:  # the master answered: nobody provides the service
            where = ""
        except (OSError, xmlrpc.client.Error, rosgraph.MasterException) as err:
            if not self._unreachable:
                log.warning("the ROS master at %s does not answer (%s); waiting for it",
                            self._uri(), err)
            self._unreachable = True
            return ""
        if self._unreachable:
            log.info("the ROS master at %s answers again", self._uri())
            self._unreachable = False
        if where == self.service_uri:
            if not self._registered:
                self._registered, self._run_id = True, self._read_run_id()
                log.info("registered with the ROS master at %s (/run_id %s); watching it",
                         self._uri(), self._run_id or "not set")
            return ""
        if not self._registered:  # still registering at start-up: not lost yet
            return ""
        now = self._read_run_id()
        restarted = (f"restarted (/run_id {self._run_id or '?'} -> {now or '?'})"
                     if now != self._run_id else "lost this node's registrations")
        holder = f"; it lists {self.service} at {where}" if where else ""
        return (f"the ROS master at {self._uri()} {restarted} and no longer knows this node"
                f"{holder}. rospy never registers again, so the node's services and topics "
                "are unreachable: exiting. Relaunch it (the parameters it was launched with "
                "went with the old master)")

    def _read_run_id(self) -> str:
        try:
            return str(self._master.getParam("/run_id"))
        except (OSError, xmlrpc.client.Error, rosgraph.MasterException):
            return ""  # a bare rosmaster has no /run_id: the service lookup alone decides

    def _uri(self) -> str:
        return str(getattr(self._master, "master_uri", "?"))
