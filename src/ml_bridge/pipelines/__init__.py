"""Image pipelines: classify, segment, clip, objects, detect; no rospy, no framework.

``make_pipeline(name, model, params)`` builds one by name. Each pipeline is registered in
:data:`PIPELINES` by its import path, so its module is imported only when it is asked for; a
new pipeline is one module plus one line here.
"""
from typing import Any, Mapping, Optional

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.registry import Registry
from ml_bridge.pipelines.base import Pipeline

#: Pipeline name -> its class, imported on first use.
PIPELINES: "Registry[type[Pipeline[Any]]]" = Registry("pipeline", InputError)
PIPELINES.register("classify", "ml_bridge.pipelines.classify:ClassifyPipeline", lazy=True)
PIPELINES.register("segment", "ml_bridge.pipelines.segment:SegmentPipeline", lazy=True)
PIPELINES.register("clip", "ml_bridge.pipelines.clip:ClipPipeline", lazy=True)
PIPELINES.register("objects", "ml_bridge.pipelines.objects:ObjectsPipeline", lazy=True)
PIPELINES.register("detect", "ml_bridge.pipelines.detect:DetectPipeline", lazy=True)


def pipeline_class(name: str) -> "type[Pipeline[Any]]":
    """The class of pipeline ``name`` ("" is ``classify``).

    Raises:
        InputError: unknown name (the message lists the valid ones).
    """
    return PIPELINES.get(name or "classify")


def make_pipeline(name: str, model: BackendModel,
                  params: Optional[Mapping[str, Any]] = None) -> Pipeline[Any]:
    """Builds pipeline ``name`` for ``model`` with the node's parameters."""
    return pipeline_class(name)(model, params or {})
