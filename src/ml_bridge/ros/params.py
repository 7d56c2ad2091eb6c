"""The node's ``~`` parameters: check them all, load the model in main, configure the node
(the entry point that uses them is :mod:`ml_bridge.ros.main`).

Every parameter is declared once, in :data:`ml_bridge.core.node_params.NODE_PARAMS` (the
pipelines declare theirs), and read through that declaration, so a bad value (``max_batch:=0``,
``timeout:=abc``) stops start-up with one line naming the parameter and what it accepts,
before the model is loaded, never with a traceback.
"""
from dataclasses import fields
from typing import Any, Dict, Iterable

import rospy

from ml_bridge.core import allocator, registry
from ml_bridge.core.datasets import check_name
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import ParameterError, Schema
from ml_bridge.core.server import ModelServer
from ml_bridge.ros.node import NodeConfig

__all__ = ["KEEP_CHECKPOINTS", "ParameterError", "load_server", "node_config", "read_params"]

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
