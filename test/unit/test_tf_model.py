"""The TensorFlow backend's models: loading, serving from many threads, cloning, checkpoints."""
import os
import pickle
import shutil
import threading
from concurrent.futures import Future
from typing import Any, Dict, List

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import tf_factories  # noqa: E402

from ml_bridge.backends.tensorflow import devices, framework_version, load_model  # noqa: E402
from ml_bridge.backends.tensorflow.export import FrozenGraphModel  # noqa: E402
from ml_bridge.backends.tensorflow.model import KerasModel  # noqa: E402
from ml_bridge.core.datasets import digits  # noqa: E402
from ml_bridge.core.errors import CheckpointError, ModelLoadError  # noqa: E402
from ml_bridge.core.execution import ModelThread, WorkerResult  # noqa: E402
from ml_bridge.core.model import BackendModel, ModelOptions  # noqa: E402
from ml_bridge.core.training import Callback, TrainConfig  # noqa: E402

#: Keras warns while it tries to load another model's weights, before it raises.
KERAS_MISMATCH_WARNING = pytest.mark.filterwarnings("ignore:Skipping nested container")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("tf_model"))


@pytest.fixture(scope="module")
def frozen(tmp: str) -> Dict[str, Any]:
    path, x_name, y_name, sample, expected = tf_factories.write_frozen_graph(tmp)
    model = load_model(path, ModelOptions(input_tensor=x_name, output_tensor=y_name))
    return {"model": model, "path": path, "x": x_name, "y": y_name, "sample": sample,
            "expected": expected}


@pytest.fixture(scope="module")
def keras_file(tmp: str) -> str:
    path = os.path.join(tmp, "small.keras")
    tf_factories.small_functional().save(path)
    return path


@pytest.fixture(scope="module")
def mlp() -> KerasModel:
    model = load_model("digits_mlp", ModelOptions())
    assert isinstance(model, KerasModel)
    return model


def _predict_from_threads(model: BackendModel, batches: List[np.ndarray],
                          max_batch: int = 1) -> List[WorkerResult]:
    """Every batch submitted from its own thread, all at once, through one ModelThread."""
    worker = ModelThread(model.capture_context(), lambda x: (model.predict(x), 1),
                         max_batch=max_batch)
    futures: List[Future[WorkerResult]] = [Future()] * len(batches)
    barrier = threading.Barrier(len(batches))

    def submit(i: int) -> None:
        barrier.wait(timeout=10)
        futures[i] = worker.submit([batches[i]])

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        return [f.result(timeout=30) for f in futures]
    finally:
        worker.close()


def test_digits_mlp_builtin(mlp: KerasModel) -> None:
    assert [s.describe() for s in mlp.inputs] == ["pixels: float32[-1, 64]"]
    assert [s.describe() for s in mlp.outputs] == ["scores: float32[-1, 10]"]
    assert mlp.labels == [str(i) for i in range(10)]
    assert mlp.is_classifier and not mlp.outputs_probabilities and mlp.trainable
    assert mlp.checkpoint_suffix == ".weights.h5"
    assert mlp.framework_version() == framework_version() == tf.__version__
    assert devices()[0] == "cpu"
    image = np.random.default_rng(0).integers(0, 255, (30, 20, 3), dtype=np.uint8)
    (x,) = mlp.preprocess_image(image)  # type: ignore[misc]
    assert x.shape == (1, 64) and x.dtype == np.float32
    out = mlp.predict([digits(heldout=True).inputs[0][:7]])
    assert len(out) == 1 and out[0].shape == (7, 10) and out[0].dtype == np.float32


def test_image_cnn_builtin() -> None:
    model = load_model("image_cnn", ModelOptions(labels=[f"k{i}" for i in range(10)]))
    assert model.inputs[0].shape == (-1, 224, 224, 3)
    assert model.outputs[0].shape == (-1, 10)
    assert model.labels[0] == "k0"  # options.labels override the built-in's
    image = np.zeros((48, 64), dtype=np.uint8)  # mono8, any size
    inputs = model.preprocess_image(image)  # type: ignore[misc]
    assert inputs[0].shape == (1, 224, 224, 3)
    assert model.predict(inputs)[0].shape == (1, 10)


def test_frozen_graph_specs_and_predict(frozen: Dict[str, Any]) -> None:
    model = frozen["model"]
    assert isinstance(model, FrozenGraphModel)
    assert model.inputs[0].shape == (-1, 6) and model.inputs[0].dtype == "float32"
    assert model.outputs[0].shape == (-1, 4)
    assert not model.trainable and not model.is_classifier
    with model.capture_context():
        out = model.predict([frozen["sample"]])
    np.testing.assert_allclose(out[0], frozen["expected"], rtol=1e-5)


def test_frozen_graph_wrong_tensor_names_list_candidates(frozen: Dict[str, Any]) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model(frozen["path"], ModelOptions(input_tensor="input:0", output_tensor=frozen["y"]))
    assert "input_tensor 'input:0'" in str(err.value)
    assert frozen["x"].split(":")[0] in str(err.value)  # the real placeholder is suggested
    with pytest.raises(ModelLoadError, match="input_tensor and output_tensor"):
        load_model(frozen["path"], ModelOptions())


def test_frozen_graph_served_from_8_threads(frozen: Dict[str, Any]) -> None:
    model = frozen["model"]
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(i + 1, 6)).astype(np.float32) for i in range(8)]
    expected = [model.predict([b])[0] for b in batches]
    results = _predict_from_threads(model, batches)
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got.outputs[0], want, rtol=1e-6)


def test_keras_file_served_from_8_threads(keras_file: str) -> None:
    model = load_model(keras_file, ModelOptions())
    assert isinstance(model, KerasModel) and not model.is_classifier
    assert model.inputs[0].name == "features" and model.outputs[0].shape == (-1, 3)
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(8)]
    reference = keras.saving.load_model(keras_file)
    results = _predict_from_threads(model, batches)
    for got, batch in zip(results, batches):
        np.testing.assert_allclose(got.outputs[0], reference(batch).numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_clone_is_independent(mlp: KerasModel) -> None:
    x = digits(heldout=True).inputs[:1]
    before = mlp.predict(x)[0]
    copy = mlp.clone()
    assert copy.model is not mlp.model
    np.testing.assert_array_equal(copy.predict(x)[0], before)
    copy.fit(digits(), None, TrainConfig(epochs=1), Callback())
    assert not np.allclose(copy.predict(x)[0], before)
    np.testing.assert_array_equal(mlp.predict(x)[0], before)  # the served model is untouched


def test_clone_of_subclassed_model_uses_factory() -> None:
    model = load_model("tf_factories:subclassed", ModelOptions())
    x = [np.ones((2, 5), np.float32)]
    copy = model.clone()
    np.testing.assert_array_equal(copy.predict(x)[0], model.predict(x)[0])
    assert copy.model.weights[0] is not model.model.weights[0]  # type: ignore[attr-defined]


def test_factory_bundle_and_model() -> None:
    bundle = load_model("tf_factories:small_classifier_bundle", ModelOptions())
    assert bundle.labels == ["a", "b", "c"] and bundle.is_classifier
    assert bundle.default_batch_size == 8 and bundle.default_learning_rate == 0.01
    plain = load_model("tf_factories:small_functional", ModelOptions(labels=["x", "y", "z"]))
    assert plain.is_classifier and plain.labels == ["x", "y", "z"]
    with pytest.raises(ModelLoadError, match="not a Keras 3"):
        load_model("tf_factories:not_a_model", ModelOptions())
    with pytest.raises(ModelLoadError, match="'tf_factories' has no attribute 'missing'"):
        load_model("tf_factories:missing", ModelOptions())
    with pytest.raises(ModelLoadError, match="labels"):  # 2 labels for 3 outputs
        load_model("tf_factories:small_functional", ModelOptions(labels=["x", "y"]))


def test_unknown_sources_name_the_accepted_forms(tmp: str) -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("digits_mpl", ModelOptions())
    assert "digits_mpl" in str(err.value) and "digits_mlp" in str(err.value)
    assert ".keras" in str(err.value) and "package.module:callable" in str(err.value)
    with pytest.raises(ModelLoadError, match="missing.keras"):
        load_model(os.path.join(tmp, "missing.keras"), ModelOptions())
    other = os.path.join(tmp, "model.onnx")
    open(other, "wb").close()
    with pytest.raises(ModelLoadError, match="reads .keras files"):
        load_model(other, ModelOptions())
    with pytest.raises(ModelLoadError, match="not a SavedModel"):
        load_model(tmp, ModelOptions())


def test_checkpoint_round_trip(mlp: KerasModel, tmp: str) -> None:
    trained = mlp.clone()
    trained.fit(digits(), None, TrainConfig(epochs=1), Callback())
    path = os.path.join(tmp, "trained.weights.h5")
    trained.save_checkpoint(path)
    fresh = load_model("digits_mlp", ModelOptions())
    x = digits(heldout=True).inputs
    assert not np.allclose(fresh.predict(x)[0], trained.predict(x)[0])
    fresh.load_checkpoint(path)
    np.testing.assert_array_equal(fresh.predict(x)[0], trained.predict(x)[0])


@KERAS_MISMATCH_WARNING
def test_bad_checkpoints_refused_and_model_unchanged(mlp: KerasModel, tmp: str) -> None:
    good = os.path.join(tmp, "good.weights.h5")
    mlp.save_checkpoint(good)
    truncated = os.path.join(tmp, "truncated.weights.h5")
    with open(good, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read()[:600])
    garbage = os.path.join(tmp, "garbage.weights.h5")
    with open(garbage, "wb") as f:
        f.write(b"not a checkpoint at all")
    other = os.path.join(tmp, "other.weights.h5")
    load_model("tf_factories:small_functional", ModelOptions()).save_checkpoint(other)
    x = digits(heldout=True).inputs
    before = mlp.predict(x)[0]
    for path in (truncated, garbage, other, os.path.join(tmp, "absent.weights.h5")):
        with pytest.raises(CheckpointError) as err:
            mlp.load_checkpoint(path)
        assert path in str(err.value)
    np.testing.assert_array_equal(mlp.predict(x)[0], before)


@KERAS_MISMATCH_WARNING
def test_checkpoint_with_mismatched_shapes_rolls_back(tmp: str) -> None:
    a = load_model("tf_factories:small_functional", ModelOptions())
    path = os.path.join(tmp, "small.weights.h5")
    a.save_checkpoint(path)
    # Same number of arrays; only the first kernel differs, so Keras fails after assigning
    # the others: the load must roll back.
    b = load_model("tf_factories:five_features", ModelOptions())
    before = [w.copy() for w in b.model.get_weights()]  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="small.weights.h5"):
        b.load_checkpoint(path)
    for got, want in zip(b.model.get_weights(), before):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got, want)


class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))


def test_pickle_checkpoint_refused_without_executing(mlp: KerasModel, tmp: str) -> None:
    marker = os.path.join(tmp, "pwned")
    path = os.path.join(tmp, "evil.weights.h5")
    with open(path, "wb") as f:
        pickle.dump(_Payload(marker), f)
    with pytest.raises(CheckpointError, match="pickle"):
        mlp.load_checkpoint(path)
    assert not os.path.exists(marker)


def test_keras_file_with_lambda_refused_by_safe_mode(tmp: str) -> None:
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Lambda(lambda x: x * 2.0, output_shape=(4,))])
    path = os.path.join(tmp, "lambda.keras")
    model.save(path)
    with pytest.raises(ModelLoadError) as err:
        load_model(path, ModelOptions())
    assert "lambda" in str(err.value).lower() and "lambda.keras" in str(err.value)


def test_softmax_keras_file_detected_as_probabilities(tmp: str) -> None:
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2, activation="softmax")(x))
    path = os.path.join(tmp, "probs.keras")
    model.save(path)
    loaded = load_model(path, ModelOptions(labels=["no", "yes"]))
    assert loaded.outputs_probabilities and loaded.is_classifier
    forced = load_model(path, ModelOptions(extra={"outputs_probabilities": "false"}))
    assert not forced.outputs_probabilities


def test_saved_model_directory(tmp: str) -> None:
    module = tf.Module()
    module.w = tf.Variable([[1.0], [2.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="a")])
    def serve(a: Any) -> Any:
        return {"sum": tf.matmul(a, module.w)}

    module.serve = serve
    path = os.path.join(tmp, "saved")
    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    model = load_model(path, ModelOptions())
    assert [s.describe() for s in model.inputs] == ["a: float32[-1, 2]"]
    assert not model.trainable
    with model.capture_context():
        out = model.predict([np.array([[1.0, 1.0], [0.0, 3.0]], np.float32)])
    np.testing.assert_allclose(out[0], [[3.0], [6.0]])
    with pytest.raises(ModelLoadError, match="serving_default"):
        load_model(path, ModelOptions(extra={"signature": "nope"}))
    shutil.rmtree(path)


def test_set_threads_sets_tensorflows_intra_op_threads_before_it_starts() -> None:
    import subprocess
    import sys

    code = ("from ml_bridge.core import registry\n"
            "import tensorflow as tf\n"
            "registry.load('tensorflow').set_threads(1)\n"
            "print(tf.config.threading.get_intra_op_parallelism_threads())\n"
            "tf.constant(1.0) + 1.0\n"  # the runtime starts here
            "try:\n"
            "    registry.load('tensorflow').set_threads(2)\n"
            "except Exception as err:\n"
            "    print(type(err).__name__, err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert lines[0] == "1"
    assert lines[1].startswith("MLBridgeError") and "set them before the first model" in lines[1]
