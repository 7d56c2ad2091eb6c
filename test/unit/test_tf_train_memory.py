"""A TensorFlow train goal leaves nothing of its traced step behind (issue: ~5 MB per goal).

What is checked here is the cause, deterministically: the traced train-step graphs that stay
alive and TensorFlow's gradient registry. The resident memory over 100 goals is measured by
``bench/soak_tf_train.py`` (outside ``make test``).
"""
import gc

import pytest

pytest.importorskip("tensorflow")

from tensorflow.python.framework.func_graph import FuncGraph

from ml_bridge.backends.tensorflow.trainer import _gradient_registry
from ml_bridge.core.server import ModelServer


def _live_graphs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), FuncGraph))  # no __class__ lookups


def test_train_goals_leave_no_traced_step_behind() -> None:
    registry = _gradient_registry()
    assert registry is not None, "this TensorFlow has no gradient registry to check"
    server = ModelServer.load("tensorflow", "digits_mlp")
    server.fit("digits", epochs=1, validation_split=0.1)  # what every later goal replaces
    graphs, gradients = _live_graphs(), len(registry)
    for _ in range(3):
        server.fit("digits", epochs=1, validation_split=0.1)
    assert len(registry) == gradients, "each goal left gradient functions registered"
    assert _live_graphs() <= graphs, "each goal left traced graphs alive"
    server.close()
