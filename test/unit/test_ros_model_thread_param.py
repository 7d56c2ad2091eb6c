"""``~model_thread``: read at start-up, checked before the model loads, handed to ModelServer."""
import re
from typing import Any, Dict, List

import pytest

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

import rospy

from ml_bridge.core.server import ModelServer
from ml_bridge.ros import params
from ml_bridge.ros.params import ParameterError


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, Any]]:
    """ModelServer.load replaced by a recorder of its keyword arguments."""
    calls: List[Dict[str, Any]] = []

    def load(backend: str, model: str, options: Any = None, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return "server"

    monkeypatch.setattr(ModelServer, "load", staticmethod(load))
    return calls


def _given(monkeypatch: pytest.MonkeyPatch, values: Dict[str, Any]) -> None:
    monkeypatch.setattr(rospy, "get_param", lambda name, default=None: values.get(name[1:], default))


@pytest.mark.parametrize("value, passed", [(None, "auto"), ("always", "always"),
                                           (" Never ", "never"), ("AUTO", "auto")])
def test_model_thread_is_handed_to_the_server(monkeypatch: pytest.MonkeyPatch,
                                              loads: List[Dict[str, Any]], value: Any,
                                              passed: str) -> None:
    _given(monkeypatch, {} if value is None else {"model_thread": value})
    params.load_server()
    assert loads[0]["model_thread"] == passed


def test_an_unknown_model_thread_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch,
                                                           loads: List[Dict[str, Any]]) -> None:
    _given(monkeypatch, {"model_thread": "sometimes"})
    with pytest.raises(ParameterError, match=re.escape(
            "parameter ~model_thread must be auto, always or never (auto: on the caller's "
            "thread for CPU models), got 'sometimes'")):
        params.load_server()
    assert loads == []
