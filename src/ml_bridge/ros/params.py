"""Node start-up from ``~`` parameters: load the model in main, then build the node."""
import logging
import sys
from typing import List

import rospy

from ml_bridge.core.errors import MLBridgeError
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.server import ModelServer
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS
from ml_bridge.ros.node import MLBridgeNode, NodeConfig


def _labels(value: object) -> List[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else []


def load_server() -> ModelServer:
    """Loads the model named by the parameters on this thread (main) and captures its context."""
    options = ModelOptions(device=str(rospy.get_param("~device", "cpu")),
                           input_tensor=str(rospy.get_param("~input_tensor", "")),
                           output_tensor=str(rospy.get_param("~output_tensor", "")),
                           labels=_labels(rospy.get_param("~labels", [])))
    return ModelServer.load(str(rospy.get_param("~backend", "torch")),
                            str(rospy.get_param("~model", "digits_mlp")), options,
                            max_batch=int(rospy.get_param("~max_batch", 8)),
                            checkpoint_dir=str(rospy.get_param("~checkpoint_dir", "")),
                            data_root=str(rospy.get_param("~data_root", "")),
                            max_elements=int(rospy.get_param("~max_elements", DEFAULT_MAX_ELEMENTS)))


def node_config() -> NodeConfig:
    """The node's behaviour parameters."""
    image = rospy.get_param("~image", "")
    if image is True or str(image).lower() == "true":
        image = "image"  # the old boolean form: subscribe to `image` (remapped)
    elif image is False or str(image).lower() in ("false", "0"):
        image = ""
    default = NodeConfig()  # the defaults live in NodeConfig only
    private = rospy.get_param("~", {})
    return NodeConfig(
        image=str(image),
        pipeline=str(rospy.get_param("~pipeline", default.pipeline)),
        detections=str(rospy.get_param("~detections", default.detections)),
        pipeline_params=dict(private) if isinstance(private, dict) else {},
        image_buff_size=int(rospy.get_param("~image_buff_size", default.image_buff_size)),
        queue_size=int(rospy.get_param("~queue_size", default.queue_size)),
        publish_outputs=bool(rospy.get_param("~publish_outputs", default.publish_outputs)),
        default_dataset=str(rospy.get_param("~default_dataset", default.default_dataset)),
        max_elements=int(rospy.get_param("~max_elements", default.max_elements)),
        timeout=float(rospy.get_param("~timeout", default.timeout)))


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
    rospy.init_node("ml_bridge")
    core_log = logging.getLogger("ml_bridge")
    core_log.addHandler(RosoutHandler())
    core_log.setLevel(logging.INFO)
    core_log.propagate = False
    try:
        server = load_server()
    except MLBridgeError as err:
        rospy.logfatal(f"ml_bridge cannot start: {err}")
        return 1
    try:
        node = MLBridgeNode(server, node_config())
    except MLBridgeError as err:
        rospy.logfatal(f"ml_bridge cannot start: {err}")
        server.close()
        return 1
    info = server.info()
    rospy.loginfo("ml_bridge serving %s (%s %s on %s), version %d", info.model, info.backend,
                  info.framework_version, info.device, info.model_version)
    rospy.on_shutdown(node.shutdown)
    rospy.spin()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
