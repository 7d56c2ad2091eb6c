"""ml_bridge.ros.params: every bad ~parameter stops start-up with one line, before the model loads."""
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rosgraph
import rospy

from ml_bridge.core.server import ModelServer
from ml_bridge.ros import main as entry
from ml_bridge.ros import params
from ml_bridge.ros.params import ParameterError
from ml_bridge.ros.processes import free_port, stop

SERVER = Path(__file__).resolve().parents[2] / "scripts" / "server"


@pytest.fixture
def given(monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    """The private parameters the node sees (no master): set items in the returned dict."""
    values: Dict[str, Any] = {}

    def get_param(name: str, default: Any = None) -> Any:
        assert name.startswith("~")
        return dict(values) if name == "~" else values.get(name[1:], default)

    monkeypatch.setattr(rospy, "get_param", get_param)
    return values


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """ModelServer.load replaced by a recorder of its arguments."""
    calls: List[Dict[str, Any]] = []

    def load(backend: str, model: str, options: Any = None, **kwargs: Any) -> Any:
        calls.append(dict(kwargs, backend=backend, model=model, options=options))
        return "server"

    monkeypatch.setattr(ModelServer, "load", staticmethod(load))
    return calls


@pytest.mark.parametrize("name, value, words", [
    ("max_batch", 0, "parameter ~max_batch must be an integer >= 1 (1 = no micro-batching), got 0"),
    ("max_batch", -3, "~max_batch must be an integer >= 1 (1 = no micro-batching), got -3"),
    ("max_batch", "abc", "~max_batch must be an integer >= 1 (1 = no micro-batching), got 'abc'"),
    ("max_batch", 2.5, "got 2.5"),
    ("max_batch", True, "got True"),
    ("max_elements", 0, "~max_elements must be an integer >= 1, got 0"),
    ("keep_checkpoints", -1, "~keep_checkpoints must be an integer >= 0 (0 = keep all), got -1"),
    ("keep_checkpoints", "five", "got 'five'"),
    ("labels", 7, "~labels must be a list of labels, one comma-separated string, or the path "
               "of a text file with one label a line, got 7"),
    ("model", ["a", "b"], "~model must be a string, got ['a', 'b']"),
])
def test_bad_model_parameters_are_refused_before_loading(given: Dict[str, Any], loads: List[Any],
                                                         name: str, value: Any, words: str) -> None:
    given[name] = value
    with pytest.raises(ParameterError, match=re.escape(words)):
        params.load_server()
    assert loads == []


@pytest.mark.parametrize("name, value, words", [
    ("timeout", "abc", "~timeout must be a number > 0 (seconds), got 'abc'"),
    ("timeout", 0, "~timeout must be a number > 0 (seconds), got 0"),
    ("timeout", -2.0, "got -2.0"),
    ("timeout", "inf", "got 'inf'"),
    ("timeout", float("nan"), "got nan"),
    ("queue_size", 0, "~queue_size must be an integer >= 1 (1 = the latest frame wins), got 0"),
    ("image_buff_size", "big", "~image_buff_size must be an integer >= 1 (bytes), got 'big'"),
    ("publish_outputs", "maybe", "~publish_outputs must be true or false, got 'maybe'"),
    ("default_dataset", "../up", "parameter ~default_dataset: invalid dataset name '../up'"),
    ("image", 3.5, "~image must be image topic names separated by spaces, got 3.5"),
])
def test_bad_node_parameters_are_refused(given: Dict[str, Any], name: str, value: Any,
                                         words: str) -> None:
    given[name] = value
    with pytest.raises(ParameterError, match=re.escape(words)):
        params.node_config()


def test_good_values_in_any_yaml_form_are_taken(given: Dict[str, Any], loads: List[Any]) -> None:
    given.update(max_batch="4", max_elements=1000.0, keep_checkpoints=0, timeout="2.5",
                 publish_outputs="true", queue_size=3, labels="cat, dog", image=True)
    config = params.node_config()
    assert (config.timeout, config.publish_outputs, config.queue_size, config.image) == (
        2.5, True, 3, "image")
    assert params.load_server() == "server"
    assert loads[0]["max_batch"] == 4 and loads[0]["max_elements"] == 1000
    assert loads[0]["keep_checkpoints"] == 0 and list(loads[0]["options"].labels) == ["cat", "dog"]


def test_tensorboard_dir_is_read_with_the_node_parameters(given: Dict[str, Any]) -> None:
    assert params.node_config().tensorboard_dir == ""
    given["tensorboard_dir"] = "/tmp/runs"
    assert params.node_config().tensorboard_dir == "/tmp/runs"
    given["tensorboard_dir"] = ["a"]
    with pytest.raises(ParameterError, match=re.escape("~tensorboard_dir must be a string")):
        params.node_config()


def test_defaults_keep_five_checkpoints(given: Dict[str, Any], loads: List[Any]) -> None:
    from ml_bridge.ros.sample_topic import SampleRecorder

    params.load_server()
    recorder = inspect.signature(SampleRecorder.__init__).parameters["default_dataset"].default
    assert recorder == params.node_config().default_dataset == "recorded"
    assert loads[0]["keep_checkpoints"] == params.KEEP_CHECKPOINTS == 5
    assert loads[0]["max_batch"] == 8


def test_main_says_one_fatal_line_and_returns_1_without_loading(
        given: Dict[str, Any], loads: List[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    fatal: List[str] = []
    monkeypatch.setattr(entry.tcpros_patch, "apply", lambda: None)  # rospy stays as it is here
    monkeypatch.setattr(rospy, "init_node", lambda *args, **kwargs: None)
    monkeypatch.setattr(rospy, "logfatal", fatal.append)
    given["timeout"] = "abc"
    assert entry.main() == 1
    assert fatal == ["ml_bridge cannot start: parameter ~timeout must be a number > 0 (seconds), "
                     "got 'abc'"]
    assert loads == []  # refused before the (slow) model load


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, str]]:
    port = free_port()
    home = tmp_path_factory.mktemp("ros")
    env = dict(os.environ, ROS_MASTER_URI=f"http://127.0.0.1:{port}/", ROS_HOME=str(home))
    core = subprocess.Popen(["roscore", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60.0
        while not rosgraph.is_master_online(env["ROS_MASTER_URI"]):
            assert time.monotonic() < deadline and core.poll() is None, "no private master"
            time.sleep(0.1)  # roscore has no readiness signal but answering
        yield env
    finally:
        stop(core)


@pytest.mark.parametrize("arg, words", [
    ("_max_batch:=abc", "parameter ~max_batch must be an integer >= 1"),
    ("_max_batch:=0", "parameter ~max_batch must be an integer >= 1"),
    ("_timeout:=soon", "parameter ~timeout must be a number > 0"),
])
def test_the_real_node_exits_1_with_one_fatal_line(master: Dict[str, str], arg: str,
                                                   words: str) -> None:
    proc = subprocess.run([sys.executable, str(SERVER), "__name:=bad_params", arg], env=master,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if "ml_bridge cannot start" in line]
    assert len(lines) == 1 and words in lines[0], out


def test_threads_are_refused_below_0_and_set_before_loading(
        given: Dict[str, Any], loads: List[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    given["threads"] = -1
    with pytest.raises(ParameterError, match=re.escape(
            "~threads must be an integer >= 0 (0 = the framework's default), got -1")):
        params.load_server()
    import types

    from ml_bridge.core import registry

    calls: List[Any] = []
    backend = types.SimpleNamespace(set_threads=lambda n: calls.append((n, len(loads))))
    monkeypatch.setattr(registry, "load", lambda name: backend)
    given["threads"] = "1"
    params.load_server()
    assert calls == [(1, 0)]  # set once, before the model was loaded
    given["threads"] = 0
    params.load_server()
    assert calls == [(1, 0)] and len(loads) == 2  # 0: the framework's default is left alone


def test_keep_freed_mb_is_checked_and_applied_before_loading(
        given: Dict[str, Any], loads: List[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_bridge.core import allocator

    calls: List[Any] = []

    def keep(mb: int) -> bool:
        calls.append((mb, len(loads)))
        return True

    monkeypatch.setattr(allocator, "keep_freed_buffers", keep)
    for bad, accepted in ((-1, "an integer >= 0"), (4096, "at most 2047")):
        given["keep_freed_mb"] = bad
        with pytest.raises(ParameterError, match=re.escape(f"~keep_freed_mb must be {accepted}")):
            params.load_server()
    assert calls == [] and loads == []
    del given["keep_freed_mb"]
    params.load_server()
    given["keep_freed_mb"] = 0
    params.load_server()
    assert calls == [(allocator.DEFAULT_KEEP_MB, 0), (0, 1)]  # each before its model was loaded
