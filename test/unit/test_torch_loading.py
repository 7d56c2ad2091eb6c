"""load_model: built-ins, factories, TorchScript files; serving them from many threads."""
import os
import textwrap
import threading
from typing import List

import numpy as np
import pytest
import torch

from ml_bridge.backends.torch import TorchModel, load_model, save_torchscript
from ml_bridge.core import registry
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import ModelLoadError
from ml_bridge.core.execution import ModelThread
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.spec import ArraySpec

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

FACTORIES = '''
import torch
from ml_bridge.core.model import ModelBundle
from ml_bridge.core.spec import ArraySpec


class Pair(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.a(x), self.b(x)


class Named(Pair):
    def forward(self, x):
        return {"first": self.a(x), "second": self.b(x)}


class TwoInputs(torch.nn.Module):
    def forward(self, x, y):
        return x + y


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def bundle():
    return ModelBundle(mlp(), labels=["a", "b", "c"], batch_size=7, learning_rate=0.01,
                       outputs_probabilities=False)


def conv():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


def conv_bundle():
    return ModelBundle(conv(), labels=["x", "y", "z", "w"])


def pair():
    return Pair()


def named():
    return Named()


def two_inputs():
    return TwoInputs()


def two_inputs_declared():
    module = TwoInputs()
    module.input_spec = [ArraySpec("x", "float32", (-1, 2)), ArraySpec("y", "float32", (-1, 2))]
    return module


def not_a_module():
    return 42


def broken():
    raise RuntimeError("no weights here")


def wrong_shape():
    module = mlp()
    module.input_spec = ArraySpec("x", "float32", (-1, 6))
    return module
'''




@pytest.fixture()
def factories(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Writes an importable module of factories, as a user's package would hold them."""
    with open(os.path.join(str(tmp_path), "mlb_torch_factories.py"), "w") as f:
        f.write(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "mlb_torch_factories"


@pytest.fixture()
def scripted_digits(tmp_path: str) -> str:
    """digits_mlp as a plain TorchScript file (no ml_bridge metadata)."""
    path = os.path.join(str(tmp_path), "digits_scripted.pt")
    torch.jit.save(torch.jit.script(load_model("digits_mlp", ModelOptions()).module), path)
    return path


def test_registry_finds_the_backend() -> None:
    backend = registry.load("pytorch")
    assert backend.framework_version() == torch.__version__
    assert backend.devices()[0] == "cpu"
    assert isinstance(backend.load_model("digits_mlp", ModelOptions()), TorchModel)


def test_unknown_builtin_lists_the_valid_ones() -> None:
    with pytest.raises(ModelLoadError) as err:
        load_model("digits_cnn", ModelOptions())
    text = str(err.value)
    assert "'digits_cnn'" in text
    assert "digits_mlp" in text and "image_cnn" in text
    assert "package.module:callable" in text and "TorchScript" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadError, match="'cuda'.*CUDA is not available"):
        load_model("digits_mlp", ModelOptions(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_predicts_like_cpu(heldout: Dataset) -> None:
    cpu = load_model("digits_mlp", ModelOptions())
    gpu = load_model("digits_mlp", ModelOptions(device="cuda"))
    assert gpu.device.startswith("cuda:")
    with gpu.capture_context():
        out = gpu.predict([heldout.inputs[0]])[0]
    np.testing.assert_allclose(out, cpu.predict([heldout.inputs[0]])[0], atol=1e-4)


def test_image_cnn_is_a_224_rgb_classifier() -> None:
    model = load_model("image_cnn", ModelOptions())
    assert model.inputs == [ArraySpec("image", "float32", (-1, 3, 224, 224))]
    assert model.labels == [f"class_{i}" for i in range(10)]
    assert model.preprocess_image is not None
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x = model.preprocess_image(frame)
    assert x[0].shape == (1, 3, 224, 224) and x[0].dtype == np.float32
    out = model.predict(x)[0]
    assert out.shape == (1, 10) and np.isfinite(out).all()


def test_builtin_labels_can_be_overridden() -> None:
    names = [f"digit {i}" for i in range(10)]
    assert load_model("digits_mlp", ModelOptions(labels=names)).labels == names
    with pytest.raises(ModelLoadError, match="3 labels given.*10 classes"):
        load_model("digits_mlp", ModelOptions(labels=["a", "b", "c"]))


def test_factory_module_gets_inferred_specs(factories: str) -> None:
    model = load_model(f"{factories}:mlp", ModelOptions())
    assert model.inputs == [ArraySpec("input", "float32", (-1, 5))]
    assert model.outputs == [ArraySpec("output", "float32", (-1, 3))]
    assert not model.is_classifier and model.labels == []
    assert model.predict([np.ones((2, 5), np.float32)])[0].shape == (2, 3)


def test_factory_bundle_carries_labels_and_defaults(factories: str) -> None:
    model = load_model(f"{factories}:bundle", ModelOptions())
    assert model.is_classifier and model.labels == ["a", "b", "c"]
    assert model.default_batch_size == 7 and model.default_learning_rate == 0.01
    relabelled = load_model(f"{factories}:bundle", ModelOptions(labels=["x", "y", "z"]))
    assert relabelled.labels == ["x", "y", "z"]


def test_conv_factory_input_spec_from_its_first_layer(factories: str) -> None:
    model = load_model(f"{factories}:conv", ModelOptions())
    assert model.inputs == [ArraySpec("input", "float32", (-1, 3, -1, -1))]
    assert model.outputs == []  # sizes unknown until called: not guessed
    classifier = load_model(f"{factories}:conv_bundle", ModelOptions())
    assert classifier.outputs == [ArraySpec("scores", "float32", (-1, 4))]
    assert classifier.predict([np.zeros((2, 3, 9, 9), np.float32)])[0].shape == (2, 4)


def test_tuple_and_dict_outputs_become_lists(factories: str) -> None:
    pair = load_model(f"{factories}:pair", ModelOptions())
    assert [s.name for s in pair.outputs] == ["output_0", "output_1"]
    out = pair.predict([np.ones((3, 4), np.float32)])
    assert [o.shape for o in out] == [(3, 3), (3, 2)]
    named = load_model(f"{factories}:named", ModelOptions())
    assert [(s.name, s.shape) for s in named.outputs] == [("first", (-1, 3)), ("second", (-1, 2))]
    assert [o.shape for o in named.predict([np.ones((1, 4), np.float32)])] == [(1, 3), (1, 2)]


def test_several_inputs_need_a_declared_spec(factories: str) -> None:
    with pytest.raises(ModelLoadError, match="forward takes 2 inputs.*input_spec"):
        load_model(f"{factories}:two_inputs", ModelOptions())
    model = load_model(f"{factories}:two_inputs_declared", ModelOptions())
    assert [s.name for s in model.inputs] == ["x", "y"]
    out = model.predict([np.ones((2, 2), np.float32), np.ones((2, 2), np.float32)])
    np.testing.assert_array_equal(out[0], np.full((2, 2), 2.0, np.float32))


@pytest.mark.parametrize("name, message", [
    ("not_a_module", "returned int"),
    ("broken", "raised RuntimeError: no weights here"),
    ("missing", "has no attribute 'missing'"),
    ("wrong_shape", "fails on a zero sample.*input_spec"),
])
def test_factory_errors_name_the_cause(factories: str, name: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(f"{factories}:{name}", ModelOptions())


def test_factory_module_that_does_not_import() -> None:
    with pytest.raises(ModelLoadError, match="cannot import 'no_such_pkg.models'.*PYTHONPATH"):
        load_model("no_such_pkg.models:build", ModelOptions())


def test_missing_model_file_names_the_path(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "nowhere.pt")
    with pytest.raises(ModelLoadError, match="nowhere.pt does not exist.*absolute path"):
        load_model(path, ModelOptions())


def test_state_dict_file_is_not_torchscript(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "weights.pt")
    torch.save(load_model("digits_mlp", ModelOptions()).module.state_dict(), path)
    with pytest.raises(ModelLoadError, match="weights.pt is not a TorchScript file.*jit.save"):
        load_model(path, ModelOptions())


def test_torchscript_specs_are_inferred(scripted_digits: str, heldout: Dataset) -> None:
    model = load_model(scripted_digits, ModelOptions())
    assert model.is_script and model.trainable
    assert model.inputs == [ArraySpec("input", "float32", (-1, 64))]
    assert model.outputs == [ArraySpec("output", "float32", (-1, 10))]
    assert not model.is_classifier  # a plain TorchScript file carries no labels
    labelled = load_model(scripted_digits, ModelOptions(labels=[str(i) for i in range(10)]))
    assert labelled.is_classifier


def test_save_torchscript_keeps_specs_and_labels(tmp_path: str, heldout: Dataset) -> None:
    original = load_model("digits_mlp", ModelOptions())
    path = os.path.join(str(tmp_path), "exported.pt")
    save_torchscript(original, path)
    model = load_model(path, ModelOptions())
    assert model.inputs == original.inputs and model.labels == original.labels
    x = [heldout.inputs[0]]
    np.testing.assert_array_equal(model.predict(x)[0], original.predict(x)[0])


def test_torchscript_from_8_threads_through_the_model_thread(scripted_digits: str,
                                                             heldout: Dataset) -> None:
    model = load_model(scripted_digits, ModelOptions())
    chunks = np.array_split(heldout.inputs[0], 8)
    expected = [model.predict([c])[0] for c in chunks]  # the in-process call, in main
    worker = ModelThread(model.capture_context(), lambda xs: (model.predict(xs), 1))
    results: List[np.ndarray] = [np.empty(0)] * 8
    barrier = threading.Barrier(8)

    def caller(i: int) -> None:
        barrier.wait(10)
        results[i] = worker.submit([chunks[i]]).result(30).outputs[0]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        worker.close()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)
