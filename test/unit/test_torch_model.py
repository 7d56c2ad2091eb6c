"""TorchModel: predict, clone, checkpoints (and refusing code in them), target checks."""
import os
import shlex
import warnings
from typing import Any, Dict, Tuple

import numpy as np
import pytest
import torch
from torch_fixtures import mlp, same_state, state

from ml_bridge.backends.torch import TorchModel, load_model
from ml_bridge.backends.torch.core import TorchContext
from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import CheckpointError, DatasetError
from ml_bridge.core.model import ModelOptions
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.training import Callback, TrainConfig

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

_TRAIN: Dict[str, Dataset] = {}


def train_set() -> Dataset:
    if "digits" not in _TRAIN:
        _TRAIN["digits"] = digits()
    return _TRAIN["digits"]


def train_one_epoch(model: TorchModel) -> None:
    model.fit(train_set(), None, TrainConfig(epochs=1), Callback())


def test_digits_mlp_predict_shapes_and_classifier_info(heldout: Dataset) -> None:
    model = mlp()
    out = model.predict([heldout.inputs[0][:5]])
    assert len(out) == 1 and out[0].shape == (5, 10) and out[0].dtype == np.float32
    assert model.is_classifier and not model.outputs_probabilities
    assert model.labels == [str(i) for i in range(10)]
    assert model.inputs == [ArraySpec("pixels", "float32", (-1, 64))]
    assert model.checkpoint_suffix == ".pt" and model.backend == "torch"
    assert model.trainable
    assert "digits_mlp" in model.describe()


def test_image_preprocessing_feeds_the_model() -> None:
    model = mlp()
    assert model.preprocess_image is not None
    image = np.zeros((32, 40, 3), dtype=np.uint8)
    image[8:24, 18:22] = 255
    inputs = model.preprocess_image(image)
    assert inputs[0].shape == (1, 64)
    assert model.predict(inputs)[0].shape == (1, 10)


def test_read_only_inputs_are_accepted_without_warnings(heldout: Dataset) -> None:
    model = mlp()
    raw = heldout.inputs[0][:3].tobytes()
    frozen = np.frombuffer(raw, dtype=np.float32).reshape(3, 64)  # as from a message
    assert not frozen.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.predict([frozen])
    np.testing.assert_array_equal(out[0], model.predict([heldout.inputs[0][:3]])[0])


def test_autocast_bfloat16_outputs_come_back_as_float32(heldout: Dataset) -> None:
    model = mlp()
    x = [heldout.inputs[0][:4]]
    plain = model.predict(x)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ctx = TorchContext.capture("cpu")
    with ctx:
        low = model.predict(x)[0]
    assert low.dtype == np.float32
    assert not np.array_equal(low, plain)  # autocast really ran in bfloat16
    np.testing.assert_allclose(low, plain, atol=0.1)


def test_clone_is_independent(heldout: Dataset) -> None:
    model = mlp()
    x = [heldout.inputs[0][:16]]
    before = model.predict(x)[0]
    twin = model.clone()
    np.testing.assert_array_equal(twin.predict(x)[0], before)
    train_one_epoch(twin)
    assert not np.array_equal(twin.predict(x)[0], before)  # the clone did change
    np.testing.assert_array_equal(model.predict(x)[0], before)


def test_clone_of_torchscript_is_independent(tmp_path: str, heldout: Dataset) -> None:
    path = os.path.join(str(tmp_path), "digits.pt")
    torch.jit.save(torch.jit.script(mlp().module), path)
    model = load_model(path, ModelOptions())
    assert model.is_script
    x = [heldout.inputs[0][:16]]
    before = model.predict(x)[0]
    twin = model.clone()
    assert twin.is_script and twin.module is not model.module
    with torch.no_grad():
        for p in twin.module.parameters():
            p.add_(0.5)
    assert not np.array_equal(twin.predict(x)[0], before)
    np.testing.assert_array_equal(model.predict(x)[0], before)


def test_checkpoint_round_trip(tmp_path: str, heldout: Dataset) -> None:
    trained = mlp()
    train_one_epoch(trained)
    path = os.path.join(str(tmp_path), "w.pt")
    trained.save_checkpoint(path)
    fresh = mlp()
    x = [heldout.inputs[0]]
    assert not np.array_equal(fresh.predict(x)[0], trained.predict(x)[0])  # control
    fresh.load_checkpoint(path)
    np.testing.assert_array_equal(fresh.predict(x)[0], trained.predict(x)[0])


@pytest.mark.parametrize("content", [b"not a checkpoint", b"PK\x03\x04truncated zip"])
def test_corrupt_checkpoint_is_refused_and_weights_kept(tmp_path: str, content: bytes) -> None:
    path = os.path.join(str(tmp_path), "bad.pt")
    with open(path, "wb") as f:
        f.write(content)
    model = mlp()
    before = state(model)
    with pytest.raises(CheckpointError, match="bad.pt"):
        model.load_checkpoint(path)
    assert same_state(state(model), before)


def test_truncated_checkpoint_is_refused(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "cut.pt")
    mlp().save_checkpoint(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        mlp().load_checkpoint(path)


def test_missing_checkpoint(tmp_path: str) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        mlp().load_checkpoint(os.path.join(str(tmp_path), "none.pt"))


def test_checkpoint_of_another_shape_is_refused_before_any_copy(tmp_path: str) -> None:
    other = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    path = os.path.join(str(tmp_path), "other.pt")
    torch.save(other.state_dict(), path)
    model = mlp()
    before = state(model)
    with pytest.raises(CheckpointError, match="other.pt.*shape mismatch"):
        model.load_checkpoint(path)
    assert same_state(state(model), before)  # not even the matching biases were copied


def test_checkpoint_with_missing_keys_is_refused(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "part.pt")
    sd = mlp().module.state_dict()
    del sd["2.bias"]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="missing 2.bias"):
        mlp().load_checkpoint(path)


def test_pickled_module_is_refused(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "module.pt")
    torch.save(mlp().module, path)  # a whole pickled nn.Module, not a state dict
    with pytest.raises(CheckpointError, match="module.pt"):
        mlp().load_checkpoint(path)


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Tuple[Any, ...]:
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def test_checkpoint_carrying_code_is_refused_and_not_run(tmp_path: str) -> None:
    marker = os.path.join(str(tmp_path), "pwned")
    path = os.path.join(str(tmp_path), "evil.pt")
    sd = mlp().module.state_dict()
    torch.save({**sd, "extra": _Payload(marker)}, path)
    model = mlp()
    before = state(model)
    with pytest.raises(CheckpointError, match="evil.pt.*carries code"):
        model.load_checkpoint(path)
    assert not os.path.exists(marker)
    assert same_state(state(model), before)
    # Positive control: the payload is live; an unsafe load does run it.
    torch.load(path, weights_only=False)
    assert os.path.exists(marker)


def test_check_targets_accepts_digits() -> None:
    model = mlp()
    data = train_set()
    model.check_targets(data)
    model.check_targets(Dataset("col", data.inputs, [data.targets[0].reshape(-1, 1)]))


@pytest.mark.parametrize("targets, message", [
    (np.arange(10, dtype=np.float32) + 0.5, "non-integer"),
    (np.array(["1"] * 10), "must be numbers"),
    (np.full(10, 10, dtype=np.int64), r"\[10, 10\].*\[0, 10\)"),
    (np.full(10, -1, dtype=np.int64), r"\[0, 10\)"),
    (np.zeros((10, 2), dtype=np.int64), r"shape \[10, 2\].*\[N\] or \[N, 1\]"),
])
def test_check_targets_refuses_bad_classifier_targets(targets: np.ndarray, message: str) -> None:
    x = train_set().inputs[0][:10]
    with pytest.raises(DatasetError, match=message):
        mlp().check_targets(Dataset("bad", [x], [targets]))


def test_check_targets_refuses_inputs_of_the_wrong_shape() -> None:
    with pytest.raises(DatasetError, match="inputs do not fit.*dimension 1 must be 64"):
        mlp().check_targets(Dataset("bad", [np.zeros((4, 63), np.float32)],
                                    [np.zeros(4, np.int64)]))


def test_check_targets_refuses_several_target_arrays() -> None:
    x = train_set().inputs[0][:4]
    with pytest.raises(DatasetError, match="2 target arrays"):
        mlp().check_targets(Dataset("bad", [x], [np.zeros(4, np.int64)] * 2))


def test_regression_targets_must_match_the_output_shape() -> None:
    module = torch.nn.Linear(3, 2)
    model = TorchModel(module, "reg", torch.device("cpu"),
                       inputs=[ArraySpec("x", "float32", (-1, 3))],
                       outputs=[ArraySpec("y", "float32", (-1, 2))])
    x = np.zeros((5, 3), np.float32)
    model.check_targets(Dataset("ok", [x], [np.zeros((5, 2), np.float32)]))
    with pytest.raises(DatasetError, match=r"targets have shape \[5, 3\].*\[N, 2\]"):
        model.check_targets(Dataset("bad", [x], [np.zeros((5, 3), np.float32)]))
    with pytest.raises(DatasetError, match=r"targets have shape \[5\]"):
        model.check_targets(Dataset("bad", [x], [np.zeros(5, np.float32)]))


def test_set_threads_sets_torchs_intra_op_threads() -> None:
    import torch

    from ml_bridge.core import registry

    before = torch.get_num_threads()
    try:
        registry.load("torch").set_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
