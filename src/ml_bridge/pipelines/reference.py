"""The parameter reference, written from the declarations: the node's, then the pipelines'.

``python -m ml_bridge.pipelines.reference`` prints it (markdown): one table for the node, one
for the image format every image pipeline reads, one per pipeline that declares its own.
All of them are the node's private parameters, so a name may be declared only once.
"""
from typing import Iterable, List

from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import Schema, merged, render_table
from ml_bridge.core.vision import IMAGE_PARAMS
from ml_bridge.pipelines import PIPELINES, pipeline_class
from ml_bridge.pipelines.track_stage import TRACK_PARAMS


def pipeline_schemas() -> List[Schema]:
    """Each registered pipeline's own parameters, in the registry's order."""
    return [pipeline_class(name).parameters for name in PIPELINES]


def all_parameters() -> Schema:
    """Every ``~`` parameter the node reads (a name declared twice raises ValueError)."""
    return merged(NODE_PARAMS, IMAGE_PARAMS, TRACK_PARAMS, *pipeline_schemas(), title="ml_bridge")


def parameter_reference(level: int = 3) -> str:
    """The reference in markdown: a heading of ``level`` and a table per schema.

    Raises:
        ValueError: a name is declared twice.
    """
    all_parameters()
    mark = "#" * level
    parts = [f"{mark} Node\n\n`launch/server.launch` and `config/server.yaml` give these "
             "defaults.\n\n" + render_table(NODE_PARAMS, launch_column=True),
             f"{mark} Preprocessing (every image pipeline)\n\nEach one given overrides the "
             "model's own image format.\n\n" + render_table(IMAGE_PARAMS),
             f"{mark} Tracking and counting (`detect`, `objects`)\n\n" + render_table(TRACK_PARAMS)]
    for name in PIPELINES:
        schema = pipeline_class(name).parameters
        if len(schema):
            parts.append(f"{mark} `{name}`\n\n" + render_table(schema))
    return "\n".join(parts)


def stale_rows(lines: Iterable[str]) -> List[str]:
    """The rows of ``lines`` in the reference's form (a parameter's row with as many cells as
    :func:`parameter_reference` writes) that differ from what it writes now: docs that were
    edited by hand or not regenerated after a declaration changed."""
    generated = {row.split(" | ")[0]: row for row in parameter_reference().splitlines()
                 if row.startswith("| `~")}
    stale = []
    for line in lines:
        row = line.strip()
        now = generated.get(row.split(" | ")[0])
        if now is not None and row.count(" | ") == now.count(" | ") and row != now:
            stale.append(row)
    return stale


if __name__ == "__main__":  # pragma: no cover
    print(parameter_reference(), end="")
