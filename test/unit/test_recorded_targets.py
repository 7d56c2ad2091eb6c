"""One sample cannot make a recorded dataset untrainable; both backends take the same targets.

Samples arrive as Tensor messages, so the same class id can come as int32, int64 or a
whole-valued float (the ``values`` path), shaped [] or [1]: recording stores each target in the
model's canonical dtype and shape, and one check (core.targets) accepts or refuses it for both
backends alike.
"""
from pathlib import Path
from typing import Callable, Iterator, List

import backends
import numpy as np
import pytest

from ml_bridge.core.datasets import Dataset, digits
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.server import ModelServer
from ml_bridge.core.spec import ArraySpec
from ml_bridge.core.targets import canonical_targets

BACKENDS = backends.ALL


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelServer]:
    srv = ModelServer.load(request.param, "digits_mlp", data_root=str(tmp_path))
    yield srv
    srv.close()


def test_a_dataset_of_mixed_target_encodings_trains(server: ModelServer) -> None:
    data = digits()
    # The same class ids as a publisher may send them: every dtype, shape [] or [1].
    encodings: List[Callable[[int], np.ndarray]] = [
        lambda c: np.array(c, np.int64), lambda c: np.array(c, np.int32),
        lambda c: np.array([c], np.int64), lambda c: np.array(float(c), np.float64),
        lambda c: np.array([c], np.float32), lambda c: np.array(c, np.uint8)]
    for i in range(60):
        x: np.ndarray = data.inputs[0][i] if i % 2 else data.inputs[0][i].astype(np.float64)  # inputs too
        server.record("mixed", [x], [encodings[i % len(encodings)](int(data.targets[0][i]))])
    stored = server.datasets.load("mixed", None)
    assert stored.targets[0].dtype == np.int64 and stored.targets[0].shape == (60,)
    assert stored.inputs[0].dtype == np.float32
    assert np.array_equal(stored.targets[0], data.targets[0][:60])
    result = server.fit("mixed", epochs=1)
    assert result.epochs_completed == 1 and result.swapped


@pytest.mark.parametrize("target, why", [
    (np.array(2.5, np.float32), "non-integer"),
    (np.array(10, np.int64), r"class ids in \[10, 10\]"),
    (np.array(-1.0), r"class ids in \[-1, -1\]"),
    (np.array(np.nan, np.float32), "non-integer"),
    (np.array("3"), "dtype <U1"),
    (np.array([1, 2], np.int64), r"shape \[1, 2\]"),
])
def test_targets_that_cannot_be_class_ids_are_refused_alike(server: ModelServer, target: np.ndarray,
                                                            why: str) -> None:
    with pytest.raises(DatasetError, match=why):
        server.record("bad", [digits().inputs[0][0]], [target])


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_backends_accept_whole_float_class_ids_for_training(backend: str) -> None:
    data = digits()
    floats = Dataset("floats", [data.inputs[0][:200]], [data.targets[0][:200].astype(np.float32)])
    server = ModelServer.load(backend, "digits_mlp")
    assert server.fit(floats, epochs=1).epochs_completed == 1
    server.close()


def test_regression_targets_take_the_output_dtype_when_nothing_is_lost() -> None:
    out = [ArraySpec("y", "float32", (-1, 2))]
    ints = canonical_targets("d", [np.array([[1, 2]], np.int32)], out, classes=0)
    assert ints[0].dtype == np.float32 and ints[0].tolist() == [[1.0, 2.0]]
    with pytest.raises(DatasetError, match="beyond the range"):
        canonical_targets("d", [np.array([[1e300, 0.0]])], out, classes=0)
    with pytest.raises(DatasetError, match=r"shape \[1, 3\]"):
        canonical_targets("d", [np.zeros((1, 3))], out, classes=0)
    int_out = [ArraySpec("k", "int64", (-1,))]
    with pytest.raises(DatasetError, match="without changing its values"):
        canonical_targets("d", [np.array([0.5])], int_out, classes=0)
