"""TFContext: TensorFlow's thread-local state captured in main and restored on other threads.

Every context item has a negative control: the same call on a fresh thread without the
restore shows the difference. The eager device scope and graph-mode (TF1 / Keras 2) checks
need process-wide settings, so they run in subprocesses, started together at module set-up.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any, Callable, Dict, Iterator

import numpy as np
import pytest

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")

EAGER_DEVICE_SCRIPT = """
import json, threading
import tensorflow as tf
# Two logical CPUs: a device scope that makes a visible difference without a GPU.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ml_bridge.backends.tensorflow import load_model
from ml_bridge.backends.tensorflow.core import capture
from ml_bridge.core.model import ModelOptions

with tf.device("/CPU:1"):
    ctx = capture()
    main_device = tf.zeros(()).device
model = load_model("digits_mlp", ModelOptions(device="cpu:1"))
model_ctx = model.capture_context()
x = tf.zeros((1, 64))
out = {"main": main_device, "describe": ctx.describe()}

def probe(key, context):
    if context is None:
        out[key] = [tf.zeros(()).device, model._call(x)[0].device]
    else:
        with context:
            out[key] = [tf.zeros(()).device, model._call(x)[0].device]

for key, context in [("fresh", None), ("restored", ctx), ("model", model_ctx)]:
    t = threading.Thread(target=probe, args=(key, context))
    t.start()
    t.join()
print("RESULT " + json.dumps(out))
"""

GRAPH_MODE_SCRIPT = """
import json, threading
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
import tf_keras
from ml_bridge.backends.tensorflow.core import capture

# Keras 2 in graph mode, in its own graph, with a device scope in force at capture.
keras_graph = tf.Graph()
out = {}
with keras_graph.as_default():
    model = tf_keras.Sequential([tf_keras.layers.Dense(4, input_shape=(3,))])
    data = np.ones((2, 3), np.float32)
    reference = model.predict(data, verbose=0)
    with tf.compat.v1.device("/CPU:0"):
        keras_ctx = capture()
    out["keras_session_graph_ok"] = keras_ctx.session.graph is keras_graph
# TF1: a placeholder graph in main's default graph, with main's default session.
x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="x")
y = tf.reduce_sum(x * 3.0, axis=1, name="y")
sess = tf.compat.v1.Session()
sess_cm = sess.as_default()
sess_cm.__enter__()
tf1_ctx = capture()
tf1_graph = tf.compat.v1.get_default_graph()
feed = np.ones((2, 2), np.float32)

out["tf1_describe"] = tf1_ctx.describe()
out["keras_describe"] = keras_ctx.describe()

def fail_text(fn):
    try:
        fn()
    except Exception as err:
        return type(err).__name__ + ": " + str(err).splitlines()[0]
    return ""

def run(key, fn):
    t = threading.Thread(target=lambda: out.__setitem__(key, fn()))
    t.start()
    t.join()

def tf1_fresh():
    return fail_text(lambda: y.eval(feed_dict={x: feed}))

def tf1_restored():
    with tf1_ctx:
        return [tf.compat.v1.get_default_graph() is tf1_graph,
                tf.compat.v1.get_default_session() is sess,
                y.eval(feed_dict={x: feed}).tolist()]

def keras_fresh():
    return fail_text(lambda: model.predict(data, verbose=0))

def keras_restored():
    with keras_ctx:
        ok = bool(np.allclose(model.predict(data, verbose=0), reference))
        return [ok, tf.constant(1.0, name="c").op.device]

def graph_device_fresh():
    with keras_graph.as_default():
        return tf.constant(1.0, name="c").op.device

run("tf1_fresh", tf1_fresh)
run("tf1_restored", tf1_restored)
run("keras_fresh", keras_fresh)
run("keras_restored", keras_restored)
run("graph_device_fresh", graph_device_fresh)
print("RESULT " + json.dumps(out))
"""


def _start(script: str) -> "subprocess.Popen[str]":
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC), TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc: "subprocess.Popen[str]") -> Dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=120)
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]
    raise AssertionError(f"subprocess failed (rc {proc.returncode}):\n{stderr[-3000:]}")


@pytest.fixture(scope="module")
def subprocesses() -> Iterator[Dict[str, "subprocess.Popen[str]"]]:
    # Started before the in-process tests so that their TensorFlow start-up overlaps.
    procs = {"eager": _start(EAGER_DEVICE_SCRIPT), "graph": _start(GRAPH_MODE_SCRIPT)}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def frozen(subprocesses: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tf_factories import write_frozen_graph

    from ml_bridge.backends.tensorflow import load_model
    from ml_bridge.core.model import ModelOptions

    path, x_name, y_name, sample, expected = write_frozen_graph(
        str(tmp_path_factory.mktemp("frozen")))
    model = load_model(path, ModelOptions(input_tensor=x_name, output_tensor=y_name))
    return model, x_name, y_name, sample, expected


def _on_thread(fn: Callable[[], Any]) -> Any:
    box: Dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as err:  # returned to the test thread
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_frozen_graph_default_graph_and_session_restored_on_fresh_thread(frozen: Any) -> None:
    import tensorflow as tf

    model, _, y_name, sample, expected = frozen
    ctx = model.capture_context()

    def fresh() -> Any:
        return tf.compat.v1.get_default_graph(), tf.compat.v1.get_default_session()

    def restored() -> Any:
        with ctx:
            graph, session = fresh()
            # What a TF1 callback does: run a tensor by name in the default session.
            out = session.run(y_name, feed_dict={model.inputs[0].name: sample})
            return graph, session, out

    graph, session = _on_thread(fresh)
    assert graph is not model.graph  # negative control
    assert session is None
    graph, session, out = _on_thread(restored)
    assert graph is model.graph
    assert session is model.session
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_context_reentrant_and_unwinds(frozen: Any) -> None:
    import tensorflow as tf

    model = frozen[0]
    ctx = model.capture_context()

    def nested() -> Any:
        seen = []
        with ctx:
            with ctx:
                seen.append(tf.compat.v1.get_default_graph() is model.graph)
            seen.append(tf.compat.v1.get_default_graph() is model.graph)
        seen.append(tf.compat.v1.get_default_graph() is model.graph)
        seen.append(tf.compat.v1.get_default_session() is None)
        return seen

    assert _on_thread(nested) == [True, True, False, True]


def test_context_entered_on_many_threads_at_once(frozen: Any) -> None:
    import tensorflow as tf

    model = frozen[0]
    ctx = model.capture_context()
    barrier = threading.Barrier(6)

    def enter() -> bool:
        with ctx:
            barrier.wait(timeout=10)  # all six threads are inside at once
            ok = tf.compat.v1.get_default_session() is model.session
        return ok and tf.compat.v1.get_default_session() is None

    results = []
    threads = [threading.Thread(target=lambda: results.append(enter())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 6


def test_eager_device_scope_restored(subprocesses: Dict[str, Any]) -> None:
    out = _result(subprocesses["eager"])
    assert out["main"].endswith("CPU:1")
    assert out["describe"]["mode"] == "eager"
    assert out["describe"]["device"].endswith("CPU:1")
    assert [d[-5:] for d in out["fresh"]] == ["CPU:0", "CPU:0"]  # negative control
    assert [d[-5:] for d in out["restored"]] == ["CPU:1", "CPU:1"]
    # The model loaded with device cpu:1 runs there with its own context restored.
    assert [d[-5:] for d in out["model"]] == ["CPU:1", "CPU:1"]


def test_graph_mode_tf1_session_and_keras2_restored(subprocesses: Dict[str, Any]) -> None:
    out = _result(subprocesses["graph"])
    # TF1: a fresh thread has neither main's graph nor its session.
    assert "session" in out["tf1_fresh"].lower()  # negative control
    assert out["tf1_restored"] == [True, True, [6.0, 6.0]]
    assert out["tf1_describe"]["mode"] == "graph"
    assert out["tf1_describe"]["session"]
    # Keras 2 in graph mode: the classic "not an element of / not found in the graph".
    assert out["keras_session_graph_ok"] is True
    assert "graph" in out["keras_fresh"].lower(), out["keras_fresh"]  # negative control
    assert out["keras_restored"][0] is True
    # The graph's device scope at capture comes back too.
    assert out["keras_restored"][1].endswith("CPU:0")
    assert out["graph_device_fresh"] == ""  # negative control
    assert "tf_keras" in out["keras_describe"]["keras"]


def test_keras3_dtype_policy_restored() -> None:
    import keras

    from ml_bridge.backends.tensorflow.core import capture

    def capture_mixed() -> Any:
        # Keras keeps the policy per thread: set it on a helper thread, not on the test's.
        keras.config.set_dtype_policy("mixed_float16")
        try:
            return capture()
        finally:
            keras.config.set_dtype_policy("float32")

    ctx = _on_thread(capture_mixed)
    assert ctx.describe()["dtype_policy"] == "mixed_float16"

    def layer_dtypes() -> Any:
        layer = keras.layers.Dense(2)
        layer.build((None, 3))
        return layer.compute_dtype, layer.variable_dtype

    def restored() -> Any:
        with ctx:
            inside = layer_dtypes()
        return inside, keras.config.dtype_policy().name

    assert _on_thread(layer_dtypes) == ("float32", "float32")  # negative control
    assert _on_thread(restored) == (("float16", "float32"), "float32")


def test_parse_device() -> None:
    import tensorflow as tf

    from ml_bridge.backends.tensorflow.core import parse_device
    from ml_bridge.core.errors import ModelLoadError

    assert parse_device("cpu") == "/CPU:0"
    assert parse_device("") == "/CPU:0"
    assert parse_device("/device:CPU:0") == "/CPU:0"
    with pytest.raises(ModelLoadError, match="unknown device 'tpu'"):
        parse_device("tpu")
    gpus = len(tf.config.list_physical_devices("GPU"))
    for name, index in (("cuda", 0), ("cuda:1", 1), ("gpu:0", 0), ("/GPU:2", 2)):
        if index < gpus:
            assert parse_device(name) == f"/GPU:{index}"
        else:
            with pytest.raises(ModelLoadError, match=f"/GPU:{index}"):
                parse_device(name)
