"""Node start-up from ``~`` parameters: check them all, load the model in main, build the node.

Every parameter is read through one of the typed readers below, so a bad value (``max_batch:=0``,
``timeout:=abc``) stops start-up with one line naming the parameter and what it accepts,
before the model is loaded, never with a traceback.
"""
import functools
import logging
import math
import sys
from typing import Any, List

import rospy

from ml_bridge.core import allocator, registry
from ml_bridge.core.datasets import check_name
from ml_bridge.core.errors import DatasetError, MLBridgeError
from ml_bridge.core.execution import MODEL_THREAD_MODES
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.server import ModelServer
from ml_bridge.core.spec import DEFAULT_MAX_ELEMENTS
from ml_bridge.ros import tcpros_patch
from ml_bridge.ros.master_watch import MasterWatch
from ml_bridge.ros.node import MLBridgeNode, NodeConfig

#: Default of ``~keep_checkpoints``: checkpoints of the served model kept after each save.
KEEP_CHECKPOINTS = 5
_UNSET = object()


class ParameterError(MLBridgeError):
    """A ``~`` parameter has a value the node cannot use."""


def _get(name: str, default: Any) -> Any:
    return rospy.get_param(f"~{name}", default)


def _bad(name: str, accepted: str, value: Any) -> ParameterError:
    return ParameterError(f"parameter ~{name} must be {accepted}, got {value!r}")


def int_param(name: str, default: int, minimum: int, accepted: str = "") -> int:
    """An integer >= ``minimum``; a whole float or a numeric string is accepted too.

    Raises:
        ParameterError: naming the parameter, what it accepts and what it got.
    """
    value = _get(name, default)
    what = f"an integer >= {minimum}" + (f" ({accepted})" if accepted else "")
    number: Any = _UNSET
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            pass
    if number is _UNSET or number < minimum:
        raise _bad(name, what, value)
    return int(number)


def float_param(name: str, default: float, minimum: float = 0.0, accepted: str = "") -> float:
    """A finite number > ``minimum``.

    Raises:
        ParameterError: naming the parameter, what it accepts and what it got.
    """
    value = _get(name, default)
    what = f"a number > {minimum:g}" + (f" ({accepted})" if accepted else "")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > minimum):
        raise _bad(name, what, value)
    return number


def bool_param(name: str, default: bool) -> bool:
    """true/false (also 1/0 and their strings).

    Raises:
        ParameterError: naming the parameter and what it got.
    """
    value = _get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _bad(name, "true or false", value)


def str_param(name: str, default: str) -> str:
    """A string; a number given where a name is expected is taken as its text.

    Raises:
        ParameterError: a list or mapping where a string is expected.
    """
    value = _get(name, default)
    if isinstance(value, (list, tuple, dict)):
        raise _bad(name, "a string", value)
    return "" if value is None else str(value)


def _labels(value: object) -> List[str]:
    if isinstance(value, str):
        return [s.strip() for s in value.split(",") if s.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise _bad("labels", "a list of labels or one comma-separated string", value)


def load_server() -> ModelServer:
    """Loads the model named by the parameters on this thread (main) and captures its context.

    Raises:
        ParameterError: a bad parameter (checked before anything is loaded).
        MLBridgeError: the model cannot be loaded.
    """
    options = ModelOptions(device=str_param("device", "cpu"),
                           input_tensor=str_param("input_tensor", ""),
                           output_tensor=str_param("output_tensor", ""),
                           labels=_labels(_get("labels", [])))
    backend, model = str_param("backend", "torch"), str_param("model", "digits_mlp")
    kwargs = dict(max_batch=int_param("max_batch", 8, 1, "1 = no micro-batching"),
                  checkpoint_dir=str_param("checkpoint_dir", ""),
                  data_root=str_param("data_root", ""),
                  max_elements=int_param("max_elements", DEFAULT_MAX_ELEMENTS, 1),
                  keep_checkpoints=int_param("keep_checkpoints", KEEP_CHECKPOINTS, 0,
                                             "0 = keep all"),
                  model_thread=str_param("model_thread", "auto").strip().lower())
    if kwargs["model_thread"] not in MODEL_THREAD_MODES:
        raise _bad("model_thread", "auto, always or never (auto: on the caller's thread for "
                   "CPU models)", _get("model_thread", "auto"))
    keep_mb = int_param("keep_freed_mb", allocator.DEFAULT_KEEP_MB, 0,
                        "MiB; 0 = the C library's defaults")
    if keep_mb > allocator.MAX_KEEP_MB:
        raise _bad("keep_freed_mb", f"at most {allocator.MAX_KEEP_MB} (MiB)", keep_mb)
    allocator.keep_freed_buffers(keep_mb)  # before the first frame's buffers
    threads = int_param("threads", 0, 0, "0 = the framework's default")
    if threads:  # before the model loads: TensorFlow takes it only before it starts
        registry.load(backend).set_threads(threads)
    return ModelServer.load(backend, model, options, **kwargs)


def node_config() -> NodeConfig:
    """The node's behaviour parameters.

    Raises:
        ParameterError: naming the first bad parameter.
    """
    image = _get("image", "")
    if image is True or str(image).lower() == "true":
        image = "image"  # the old boolean form: subscribe to `image` (remapped)
    elif image is False or str(image).lower() in ("false", "0"):
        image = ""
    elif not isinstance(image, str):
        raise _bad("image", "image topic names separated by spaces", image)
    default = NodeConfig()  # the defaults live in NodeConfig only
    private = rospy.get_param("~", {})
    dataset = str_param("default_dataset", default.default_dataset)
    try:
        check_name(dataset)
    except DatasetError as err:
        raise ParameterError(f"parameter ~default_dataset: {err}") from err
    return NodeConfig(
        image=image,
        pipeline=str_param("pipeline", default.pipeline),
        detections=str_param("detections", default.detections),
        pipeline_params=dict(private) if isinstance(private, dict) else {},
        image_buff_size=int_param("image_buff_size", default.image_buff_size, 1, "bytes"),
        queue_size=int_param("queue_size", default.queue_size, 1, "1 = the latest frame wins"),
        publish_outputs=bool_param("publish_outputs", default.publish_outputs),
        default_dataset=dataset,
        max_elements=int_param("max_elements", default.max_elements, 1),
        timeout=float_param("timeout", default.timeout, 0.0, "seconds"),
        rules=_get("rules", default.rules),  # checked rule by rule when the node is built
        record_dir=str_param("record_dir", default.record_dir) or default.record_dir,
        record_buffer_mb=float_param("record_buffer_mb", default.record_buffer_mb, 0.0, "MiB"))


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
