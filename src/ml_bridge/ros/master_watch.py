"""Notices that the ROS master forgot this node (it was restarted) so the node can exit, named.

rospy registers a node's services, topics and parameters with the master once, at start-up,
and never again: after a master restart the node keeps running, unreachable by name, and
nothing restarts it (``respawn`` only acts on a process that exits). :class:`MasterWatch`
asks the master every few seconds where one of the node's services is (one XML-RPC call);
once the master no longer knows it at this node's address, ``on_lost`` is called once with
a message saying what happened (the master's old and new ``/run_id`` when it has one).
A master that does not answer is waited for: it may come back, and then it is asked again.

The service is registered when the watch is built (``rospy.Service`` returns once the master
has it), so the watch is armed from the start: a master restarted before its first look is a
loss too. A node that shuts down unregisters its services itself (rospy's pre-shutdown hook,
after the client ``on_shutdown`` hooks): :meth:`MasterWatch.close` from an ``on_shutdown``
hook stops the watch before that, and no loss is reported once rospy's shutdown has begun,
so a node stopped on purpose never exits with a false loss.
"""
import logging
import threading
import xmlrpc.client
from typing import Any, Callable, Optional

import rosgraph
import rospy.core

from ml_bridge.core.threads import ThreadOwner

log = logging.getLogger(__name__)

#: Seconds between two looks at the master: a lost node exits within about this long.
PERIOD = 2.0


class MasterWatch(ThreadOwner):
    """A thread that calls ``on_lost(message)`` once the master no longer knows ``service``."""

    def __init__(self, service: str, service_uri: str, on_lost: Callable[[str], None],
                 period: float = PERIOD, master: Optional[Any] = None,
                 shutting_down: Callable[[], bool] = rospy.core.is_shutdown_requested) -> None:
        """Watches the registration of ``service`` (resolved name) served at ``service_uri``.

        Args:
            service: a service this node has registered, e.g. ``/ml_bridge/info``.
            service_uri: where this node serves it (``rospy.Service.uri``).
            on_lost: called once, on the watch thread, with what happened.
            period: seconds between two looks.
            master: the master's API (``rosgraph.Master``); default: ROS_MASTER_URI's.
            shutting_down: whether the process is shutting down (it unregisters then: no
                loss is reported); default: rospy's shutdown has begun.
        """
        self.service = service
        self.service_uri = service_uri
        self.on_lost = on_lost
        self.period = period
        self._master = master if master is not None else rosgraph.Master(service)
        self._shutting_down = shutting_down
        self._run_id: Optional[str] = None  # the master's /run_id when armed ("" = none)
        self._unreachable = False  # the last look failed to reach the master
        #: Why the node was lost ("" while it is known): set before on_lost is called.
        self.lost = ""
        # Held while a loss is decided and while the watch is closed: once close() has
        # returned, no loss is reported, even by a look that was in flight.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        ThreadOwner.__init__(self, "ml_bridge-master-watch")

    def start(self) -> None:
        """Starts looking: now (the master's ``/run_id``), then every ``period`` seconds."""
        super().start()

    def close(self, timeout: Optional[float] = 10.0) -> None:
        """Stops looking; no loss is reported once this returns.

        Waits up to ``timeout`` for a running ``on_lost`` (the node's shutdown) to finish;
        ``timeout=0`` returns at once (an ``on_shutdown`` hook: the watch thread may itself be
        waiting for rospy's shutdown lock, held by the thread that runs the hooks).
        """
        super().close(timeout)

    def _signal_stop(self) -> None:
        with self._lock:
            self._stop.set()

    def arm(self) -> None:
        """Notes the master's ``/run_id`` (the master the node registered with), to name a
        restart; the watch thread does it first."""
        self._run_id = self._read_run_id()
        log.info("registered with the ROS master at %s (/run_id %s); watching it",
                 self._uri(), self._run_id or "not set")

    def _run(self) -> None:
        self.arm()
        while not self._stop.wait(self.period):
            message = self.check()
            if not message:
                continue
            with self._lock:
                if self._stop.is_set() or self._shutting_down():
                    return  # the node unregistered itself: not a loss
                self.lost = message
            self.on_lost(message)
            return

    def check(self) -> str:
        """One look at the master: why the node is lost, or "" while all is well.

        A master that cannot be reached is not a loss (it may be restarting): the next look
        tells. The node is lost when a master that answers does not have ``service`` at
        ``service_uri``.
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
            return ""
        now = self._read_run_id()
        restarted = (f"restarted (/run_id {self._run_id or '?'} -> {now or '?'})"
                     if self._run_id is not None and now != self._run_id
                     else "lost this node's registrations")
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
