"""``~labels``: a list, one comma-separated string, or a text file with one label a line."""
from pathlib import Path

import pytest

from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import ParameterError


def read(value: object) -> list:
    return NODE_PARAMS["labels"].read(value)


def test_list_and_comma_separated_forms_stay() -> None:
    assert read(["a", "b"]) == ["a", "b"]
    assert read("cat, dog") == ["cat", "dog"]
    assert read("person") == ["person"]
    assert read("") == []


def test_a_text_file_one_label_a_line(tmp_path: Path) -> None:
    path = tmp_path / "coco.names"
    path.write_text("person\nbicycle\r\ntraffic light\n\n\n", encoding="utf-8")
    assert read(str(path)) == ["person", "bicycle", "traffic light"]
    plain = tmp_path / "labels"  # no known ending: taken as a file because it is one
    plain.write_text("a\nb\n")
    assert read(str(plain)) == ["a", "b"]


def test_a_missing_file_says_which_and_how(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ParameterError, match=r"~labels.*cannot read .*nope\.txt.*absolute"):
        read(str(missing))
    with pytest.raises(ParameterError, match="cannot read"):
        read("labels.txt")  # a bare file name that is not there is still a file name


def test_blank_lines_among_labels_and_empty_files_are_refused(tmp_path: Path) -> None:
    gap = tmp_path / "gap.txt"
    gap.write_text("a\n\nb\n")
    with pytest.raises(ParameterError, match="line 2 .* blank"):
        read(str(gap))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ParameterError, match="no labels"):
        read(str(empty))
