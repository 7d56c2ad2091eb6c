"""Node start-up from ``~`` parameters: check them all, load the model in main, build the node.

Every parameter is declared once, in :data:`ml_bridge.core.node_params.NODE_PARAMS` (the
pipelines declare theirs), and read through that declaration, so a bad value (``max_batch:=0``,
``timeout:=abc``) stops start-up with one line naming the parameter and what it accepts,
before the model is loaded, never with a traceback.
"""
import functools
import logging
import sys
from dataclasses import fields
from typing import Any, Dict, Iterable

import rospy

from ml_bridge.core import allocator, registry
from ml_bridge.core.datasets import check_name
from ml_bridge.core.errors import DatasetError, MLBridgeError
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import ParameterError, Schema
from ml_bridge.core.server import ModelServer
from ml_bridge.ros import tcpros_patch
from ml_bridge.ros.master_watch import MasterWatch
from ml_bridge.ros.node import MLBridgeNode, NodeConfig

__all__ = ["KEEP_CHECKPOINTS", "ParameterError", "load_server", "main", "node_config",
           "read_params"]

#: Default of ``~keep_checkpoints``: checkpoints of the served model kept after each save.
KEEP_CHECKPOINTS: int = NODE_PARAMS.default("keep_checkpoints")


#: What :func:`load_server` reads: the model and how it is served.
SERVER_NAMES = ("backend", "model", "device", "input_tensor", "output_tensor", "labels",
                "checkpoint_dir", "data_root", "model_thread", "max_batch", "threads",
                "max_elements", "keep_checkpoints", "keep_freed_mb")


def read_params(names: Iterable[str], schema: Schema = NODE_PARAMS) -> Dict[str, Any]:
    """Parameters ``names`` of ``schema`` from the node's private namespace, checked.

    Raises:
        ParameterError: naming the first bad parameter and what it accepts.
    """
    return {name: schema[name].read(rospy.get_param(f"~{name}", None)) for name in names}


def load_server() -> ModelServer:
    """Loads the model named by the parameters on this thread (main) and captures its context.

    Raises:
        ParameterError: a bad parameter (checked before anything is loaded).
        MLBridgeError: the model cannot be loaded.
    """
    given = read_params(SERVER_NAMES)
    options = ModelOptions(device=given["device"], input_tensor=given["input_tensor"],
                           output_tensor=given["output_tensor"], labels=given["labels"])
    allocator.keep_freed_buffers(given["keep_freed_mb"])  # before the first frame's buffers
    if given["threads"]:  # before the model loads: TensorFlow takes it only before it starts
        registry.load(given["backend"]).set_threads(given["threads"])
    return ModelServer.load(given["backend"], given["model"], options,
                            **{name: given[name] for name in (
                                "max_batch", "checkpoint_dir", "data_root", "max_elements",
                                "keep_checkpoints", "model_thread")})


def node_config() -> NodeConfig:
    """The node's behaviour parameters.

    Raises:
        ParameterError: naming the first bad parameter.
    """
    given = read_params(f.name for f in fields(NodeConfig) if f.name != "pipeline_params")
    try:
        check_name(given["default_dataset"])
    except DatasetError as err:
        raise ParameterError(f"parameter ~default_dataset: {err}") from err
    private = rospy.get_param("~", {})
    return NodeConfig(pipeline_params=dict(private) if isinstance(private, dict) else {},
                      **given)


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
        config = node_config()  # every parameter is checked before the model is loaded
        server = load_server()
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
