"""The node's entry point (``rosrun ml_bridge server``, ``roslaunch ml_bridge server.launch``).

Order matters: rospy's TCPROS server is patched before ``init_node`` starts it; every
parameter is read and checked before the model loads; the master watch is closed by the first
``on_shutdown`` hook, before rospy unregisters the node, so a clean stop is never taken for a
lost master.
"""
import functools
import logging
import sys

import rospy

from ml_bridge.core.errors import MLBridgeError
from ml_bridge.ros import params, tcpros_patch
from ml_bridge.ros.master_watch import MasterWatch
from ml_bridge.ros.node import MLBridgeNode


class RosoutHandler(logging.Handler):
    """Forwards the framework-free layers' ``logging`` records (e.g. a skipped checkpoint) to rosout."""

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            rospy.logerr(text)
        elif record.levelno >= logging.WARNING:
            rospy.logwarn(text)
        else:
            rospy.loginfo(text)


def main() -> int:
    """Entry point of ``rosrun ml_bridge server``: returns the exit code."""
    tcpros_patch.apply()  # before init_node, which starts rospy's TCPROS server
    rospy.init_node("ml_bridge")
    core_log = logging.getLogger("ml_bridge")
    core_log.addHandler(RosoutHandler())
    core_log.setLevel(logging.INFO)
    core_log.propagate = False
    try:
        config = params.node_config()  # every parameter is checked before the model is loaded
        server = params.load_server()
    except MLBridgeError as err:
        rospy.logfatal(f"ml_bridge cannot start: {err}")
        return 1
    try:
        node = MLBridgeNode(server, config)
    except MLBridgeError as err:
        rospy.logfatal(f"ml_bridge cannot start: {err}")
        server.close()
        return 1
    info = server.info()
    rospy.loginfo("ml_bridge serving %s (%s %s on %s), version %d", info.model, info.backend,
                  info.framework_version, info.device, info.model_version)
    # The node's services are registered: rospy.Service returns once the master has them.
    watch = MasterWatch(node.info_srv.resolved_name, node.info_srv.uri, _exit_lost)
    # on_shutdown hooks run, in order, before rospy unregisters the node from the master:
    # the watch stops first, so the node's own unregistering is never taken for a lost master.
    rospy.on_shutdown(functools.partial(watch.close, 0))
    rospy.on_shutdown(node.shutdown)
    watch.start()
    rospy.spin()
    watch.close()  # a loss shuts the node down on the watch thread: wait for it
    return 1 if watch.lost else 0


def _exit_lost(message: str) -> None:
    """The master forgot the node: say so and shut down, so main returns non-zero."""
    rospy.logfatal(f"ml_bridge stops: {message}")
    rospy.signal_shutdown("the ROS master restarted")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
