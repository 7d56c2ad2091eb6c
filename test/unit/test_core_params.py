"""The parameter schema: one set of reading rules, one error format, one place for defaults."""
import inspect
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from ml_bridge.core.checkpoints import CheckpointStore
from ml_bridge.core.errors import InputError
from ml_bridge.core.node_params import NODE_PARAMS
from ml_bridge.core.params import Param, ParameterError, Schema, render_table
from ml_bridge.core.server import ModelServer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("param, given, value", [
    (Param("n", "int", 3, "doc", low=1), None, 3),
    (Param("n", "int", 3, "doc", low=1), "", 3),
    (Param("n", "int", 3, "doc", low=1), 4.0, 4),
    (Param("n", "int", 3, "doc", low=1), " 5 ", 5),
    (Param("n", "int", 3, "doc", low=1), "6.0", 6),
    (Param("x", "float", 0.5, "doc", low=0, high=1), "0.25", 0.25),
    (Param("x", "float", 0.5, "doc", low=0, high=1), 1, 1.0),
    (Param("b", "bool", False, "doc"), "Yes", True),
    (Param("b", "bool", True, "doc"), "0", False),
    (Param("b", "bool", True, "doc"), "off", False),
    (Param("s", "str", "a", "doc"), 12, "12"),
    (Param("c", "str", "a", "doc", choices=("a", "b")), " B ", "b"),
    (Param("v", "floats", None, "doc"), "0.5, 0.25 1", [0.5, 0.25, 1.0]),
    (Param("v", "floats", None, "doc"), [], None),
    (Param("v", "ints", None, "doc", count=2, low=1), "[12, 16]", [12, 16]),
    (Param("l", "names", [], "doc"), "cat, dog,", ["cat", "dog"]),
    (Param("l", "names", [], "doc"), ("cat", 2), ["cat", "2"]),
])
def test_values_in_any_yaml_form_are_read_by_one_set_of_rules(param: Param, given: Any,
                                                              value: Any) -> None:
    assert param.read(given) == value


@pytest.mark.parametrize("param, given, message", [
    (Param("n", "int", 3, "doc", low=1, note="frames"), 2.5,
     "parameter ~n must be an integer >= 1 (frames), got 2.5"),  # never truncated to 2
    (Param("n", "int", 3, "doc", low=1), "2.5", "parameter ~n must be an integer >= 1, got '2.5'"),
    (Param("n", "int", 3, "doc", low=1), True, "got True"),
    (Param("n", "int", 3, "doc", low=0, high=9, note="MiB"), -1,
     "parameter ~n must be an integer >= 0 and <= 9 (MiB), got -1"),
    (Param("n", "int", 3, "doc", low=0, high=9, note="MiB"), 10,
     "parameter ~n must be at most 9 (MiB), got 10"),
    (Param("x", "float", 1.0, "doc", low=0, above=True), 0, "must be a number > 0, got 0"),
    (Param("x", "float", 1.0, "doc"), "inf", "must be a number, got 'inf'"),
    (Param("b", "bool", False, "doc"), "maybe", "parameter ~b must be true or false, got 'maybe'"),
    (Param("s", "str", "a", "doc"), ["a"], "parameter ~s must be a string, got ['a']"),
    (Param("c", "str", "a", "doc", choices=("a", "b", "c")), "d",
     "parameter ~c must be a, b or c, got 'd'"),
    (Param("v", "ints", None, "doc", count=2, low=1), [12], "must be a list of 2 integers >= 1"),
    (Param("v", "ints", None, "doc", count=2, low=1), [12, 0], "got [12, 0]"),
    (Param("v", "floats", None, "doc"), "a b", "must be a list of numbers, got 'a b'"),
    (Param("l", "names", [], "doc"), 7, "must be a list of names or one comma-separated string"),
])
def test_a_bad_value_is_refused_in_the_one_format(param: Param, given: Any, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        param.read(given)


def test_a_parameter_error_is_an_input_error_and_a_schema_refuses_a_second_declaration() -> None:
    assert issubclass(ParameterError, InputError)
    with pytest.raises(ValueError, match="declared twice"):
        Schema("x", Param("a", "int", 1, "doc"), Param("a", "int", 2, "doc"))
    with pytest.raises(ValueError, match="unknown kind 'integer'"):
        Param("a", "integer", 1, "doc")


def test_a_schema_reads_every_declared_parameter_and_only_those() -> None:
    schema = Schema("t", Param("a", "int", 1, "doc"), Param("b", "str", "x", "doc"),
                    Param("c", "names", [], "doc"))
    assert schema.read({"a": "2", "other": object()}) == {"a": 2, "b": "x", "c": []}
    schema.read({})["c"].append("changed")
    assert schema.read({})["c"] == [] and schema.default("c") == []  # defaults stay as declared


def test_the_model_server_takes_its_defaults_from_the_schema() -> None:
    defaults = inspect.signature(ModelServer.__init__).parameters
    for name in ("max_batch", "keep_checkpoints", "model_thread", "max_elements"):
        assert defaults[name].default == NODE_PARAMS.default(name), name
    assert NODE_PARAMS.default("max_batch") == 8  # what the launch file has always given
    keep = inspect.signature(CheckpointStore.__init__).parameters["keep"].default
    assert keep == NODE_PARAMS.default("keep_checkpoints")


def test_config_server_yaml_gives_the_declared_defaults() -> None:
    values: Dict[str, Any] = yaml.safe_load((REPO / "config" / "server.yaml").read_text())
    for name, value in values.items():
        assert NODE_PARAMS.read({name: value})[name] == NODE_PARAMS.default(name) == value, name


def test_server_launch_takes_the_declared_arguments_with_the_declared_defaults() -> None:
    root = ET.parse(REPO / "launch" / "server.launch").getroot()
    args = {arg.get("name"): arg.get("default") for arg in root.iter("arg")}
    node = root.find("node")
    assert node is not None and node.get("clear_params") == "true"
    given = {p.get("name"): p.get("value") for p in node.iter("param")}
    declared = {p.name for p in NODE_PARAMS}
    assert set(given) <= declared, set(given) - declared
    assert {name for name, value in given.items() if value == f"$(arg {name})"} == {
        p.name for p in NODE_PARAMS if p.launch}
    for param in NODE_PARAMS:
        if param.launch:
            if param.launch_default is not None:
                assert args[param.name] == param.launch_default, param.name
            else:  # roslaunch reads a <param value> as YAML, as the node then does
                assert param.read(yaml.safe_load(args[param.name] or "''")) == param.default, \
                    param.name


def test_the_reference_table_has_a_row_per_parameter_with_what_it_accepts() -> None:
    table = render_table(NODE_PARAMS, launch_column=True)
    rows = table.splitlines()[2:]
    assert len(rows) == len(NODE_PARAMS)
    assert ("| `~max_batch` | an integer >= 1 (1 = no micro-batching) | `8` | yes | "
            "micro-batching: the most rows waiting requests are joined into |") in rows
    assert any(row.startswith("| `~checkpoint_dir` | a string | `\"\"` | yes (`$(env HOME)/")
               for row in rows)
