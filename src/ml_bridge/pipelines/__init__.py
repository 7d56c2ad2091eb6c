"""Image pipelines: classify, segment, clip, objects; no rospy, no framework.

``make_pipeline(name, model, params)`` builds one by name; the module of a pipeline is
imported only when it is asked for.
"""
import importlib
from typing import Any, Dict, Mapping, Optional, Tuple

from ml_bridge.core.errors import InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.pipelines.base import Pipeline

#: Pipeline name -> (module, class).
PIPELINES: Dict[str, Tuple[str, str]] = {
    "classify": ("ml_bridge.pipelines.classify", "ClassifyPipeline"),
    "segment": ("ml_bridge.pipelines.segment", "SegmentPipeline"),
    "clip": ("ml_bridge.pipelines.clip", "ClipPipeline"),
    "objects": ("ml_bridge.pipelines.objects", "ObjectsPipeline"),
}


def pipeline_class(name: str) -> "type[Pipeline[Any]]":
    """The class of pipeline ``name``.

    Raises:
        InputError: unknown name (the message lists the valid ones).
    """
    key = (name or "classify").strip().lower()
    if key not in PIPELINES:
        raise InputError(f"unknown pipeline '{name}'; use one of {', '.join(PIPELINES)}")
    module, cls = PIPELINES[key]
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def make_pipeline(name: str, model: BackendModel,
                  params: Optional[Mapping[str, Any]] = None) -> Pipeline[Any]:
    """Builds pipeline ``name`` for ``model`` with the node's parameters."""
    return pipeline_class(name)(model, params or {})
