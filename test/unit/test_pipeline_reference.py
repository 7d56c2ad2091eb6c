"""The parameter reference is written from the declarations, and the docs list every parameter."""
from pathlib import Path
from typing import List

import pytest

from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import Param, Schema
from ml_bridge.core.vision import IMAGE_PARAMS
from ml_bridge.pipelines import PIPELINES, pipeline_class
from ml_bridge.pipelines.reference import (
    all_parameters,
    parameter_reference,
    pipeline_schemas,
    stale_rows,
)
from ml_bridge.pipelines.track_stage import TRACK_PARAMS

REPO = Path(__file__).resolve().parents[2]


def _doc_rows() -> List[str]:
    """Every markdown table row of the README and of docs/."""
    pages = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
    return [line.strip() for page in pages if page.is_file()
            for line in page.read_text(encoding="utf-8").splitlines()
            if line.strip().startswith("|")]


def test_every_pipeline_declares_its_parameters_and_no_name_is_declared_twice() -> None:
    assert [s.title for s in pipeline_schemas()] == list(PIPELINES)
    names = [p.name for p in all_parameters()]
    assert len(names) == len(set(names)) == len(NODE_PARAMS) + len(IMAGE_PARAMS) + len(
        TRACK_PARAMS) + sum(len(s) for s in pipeline_schemas())
    assert {"sync_queue", "clip_stride", "max_gap", "min_score", "blur_kernel"} <= set(names)


def test_a_pipeline_parameter_named_like_a_node_parameter_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clip = pipeline_class("clip")
    monkeypatch.setattr(clip, "parameters", Schema("clip", Param("timeout", "int", 1, "doc")))
    with pytest.raises(ValueError, match="timeout is declared twice"):
        parameter_reference()


def test_the_reference_has_a_row_per_parameter_under_its_heading() -> None:
    text = parameter_reference()
    rows = [line for line in text.splitlines() if line.startswith("| `~")]
    assert [row.split("`")[1] for row in rows] == [f"~{p.name}" for p in all_parameters()]
    assert "### Node\n" in text and "### `segment`\n" in text and "### `classify`" not in text
    assert "| `~sync_queue` | an integer >= 1 (frames) | `10` |" in text


def test_the_docs_list_every_declared_parameter_in_a_table() -> None:
    rows = _doc_rows()
    missing = [p.name for p in all_parameters() if not any(f"`~{p.name}`" in row for row in rows)]
    assert missing == []


def test_a_docs_row_in_the_reference_form_says_what_the_declaration_says() -> None:
    assert stale_rows(_doc_rows()) == []
    row = next(line for line in parameter_reference().splitlines() if "`~max_gap`" in line)
    edited = row.replace("`1.0`", "`2.0`")
    assert stale_rows(["intro", row, edited]) == [edited]  # a default edited by hand
    assert stale_rows(["| `~max_gap` | `1.0` | seconds |"]) == []  # another table's form
