"""ml_bridge.core.datasets and .resolve: built-in digits, .npz files under the data root, names."""
import os
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest

from ml_bridge.core.datasets import Dataset, check_name, digits, load_npz, resolve_under
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.resolve import DatasetResolver

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / "ml_bridge_test_unpickled"


def _touch_marker() -> None:
    MARKER.write_text("unpickled")


class Exploit:
    """Unpickling this runs code; loading an .npz must never do it."""

    def __reduce__(self) -> Tuple[Any, Tuple[()]]:
        return (_touch_marker, ())


def save_npz(root: Path, name: str, **arrays: Any) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_digits_is_the_first_1500_samples() -> None:
    train, held = digits(), digits(heldout=True)
    x, y = train.inputs[0], train.targets[0]
    assert train.name == "digits" and len(train) == 1500 and len(held) == 297
    assert x.dtype == np.float32 and x.shape == (1500, 64)
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() == 1.0
    assert y.dtype == np.int64 and y.shape == (1500,) and set(y.tolist()) == set(range(10))
    assert held.inputs[0].shape == (297, 64)


def test_resolver_finds_digits_without_a_data_root() -> None:
    data = DatasetResolver("").load(" digits ")
    assert len(data) == 1500


def test_npz_under_the_data_root(tmp_path: Path) -> None:
    save_npz(tmp_path, "sub/set.npz", inputs=np.ones((6, 3), np.float32), targets=np.arange(6))
    save_npz(tmp_path, "multi.npz", inputs_0=np.ones((4, 2)), inputs_1=np.zeros((4, 5)),
             targets_0=np.arange(4))
    resolver = DatasetResolver(str(tmp_path))
    data = resolver.load("sub/set.npz")
    assert data.name == "set.npz" and len(data) == 6 and data.inputs[0].dtype == np.float32
    multi = resolver.load("multi.npz")
    assert [a.shape for a in multi.inputs] == [(4, 2), (4, 5)] and len(multi.targets) == 1


@pytest.mark.parametrize("name", ["../x.npz", "sub/../../x.npz"])
def test_relative_paths_leaving_the_root_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    save_npz(tmp_path, "x.npz", inputs=np.ones((2, 2)), targets=np.ones(2))
    with pytest.raises(DatasetError, match="outside the data root"):
        DatasetResolver(str(root)).load(name)


def test_absolute_paths_are_refused(tmp_path: Path) -> None:
    outside = save_npz(tmp_path, "x.npz", inputs=np.ones((2, 2)), targets=np.ones(2))
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DatasetError, match=f"'{outside}' resolves to .* outside the data root"):
        DatasetResolver(str(root)).load(str(outside))


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = save_npz(tmp_path, "secret.npz", inputs=np.ones((2, 2)), targets=np.ones(2))
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.npz").symlink_to(outside)
    (root / "dir").symlink_to(tmp_path)
    resolver = DatasetResolver(str(root))
    for name in ("link.npz", "dir/secret.npz"):
        with pytest.raises(DatasetError, match="outside the data root"):
            resolver.load(name)
    inside = save_npz(root, "real.npz", inputs=np.ones((2, 2)), targets=np.ones(2))
    (root / "alias.npz").symlink_to(inside)
    assert len(resolver.load("alias.npz")) == 2  # a link that stays inside is fine


def test_file_without_a_data_root_says_so() -> None:
    with pytest.raises(DatasetError, match="no data root is set"):
        DatasetResolver("").load("x.npz")
    with pytest.raises(DatasetError, match="no data root"):
        resolve_under("", "x.npz")


def test_unknown_dataset_lists_the_choices(tmp_path: Path) -> None:
    resolver = DatasetResolver(str(tmp_path))
    resolver.store().append("mine", [np.zeros(2, np.float32)], [np.array(0, np.int64)])
    with pytest.raises(DatasetError) as info:
        resolver.load("nope")
    message = str(info.value)
    assert "unknown dataset 'nope'" in message and "digits" in message and "recorded: mine" in message
    assert ".npz" in message
    assert len(resolver.load("mine")) == 1
    with pytest.raises(DatasetError, match="no dataset given"):
        resolver.load("  ")
    with pytest.raises(DatasetError, match="unsupported file type"):
        resolver.load("sub/data.csv")
    with pytest.raises(DatasetError, match="no file 'missing.npz'"):
        resolver.load("missing.npz")
    with pytest.raises(DatasetError, match="samples cannot be recorded"):
        DatasetResolver("").store()


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    if MARKER.exists():
        MARKER.unlink()
    objects = np.empty(2, dtype=object)
    objects[0], objects[1] = Exploit(), Exploit()
    save_npz(tmp_path, "evil.npz", inputs=objects, targets=np.ones(2))
    with pytest.raises(DatasetError, match="cannot read .*evil.npz.*allow_pickle"):
        DatasetResolver(str(tmp_path)).load("evil.npz")
    assert not MARKER.exists()


def test_malformed_npz_files(tmp_path: Path) -> None:
    save_npz(tmp_path, "nokeys.npz", x=np.ones(2))
    save_npz(tmp_path, "counts.npz", inputs=np.ones((3, 2)), targets=np.ones(2))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match=r"needs arrays 'inputs' and 'targets' \(found: x\)"):
        load_npz(str(tmp_path / "nokeys.npz"))
    with pytest.raises(DatasetError, match=r"different sample counts \[2, 3\]"):
        load_npz(str(tmp_path / "counts.npz"))
    with pytest.raises(DatasetError, match="cannot read"):
        load_npz(str(tmp_path / "junk.npz"))


def test_split_takes_the_last_fraction() -> None:
    data = Dataset("d", [np.arange(10)], [np.arange(10) * 2])
    assert data.split(0.0) == (data, None)
    train, val = data.split(0.2)
    assert val is not None and val.name == "d:val"
    np.testing.assert_array_equal(train.inputs[0], np.arange(8))
    np.testing.assert_array_equal(val.targets[0], [16, 18])
    with pytest.raises(DatasetError, match="leaves no training or no validation sample out of 10"):
        data.split(0.05)
    with pytest.raises(DatasetError, match="is empty"):
        Dataset("e", [np.zeros((0, 2))], [np.zeros(0)]).check()


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", ".hidden", "-x", "x" * 129, "a b", "foo\n",
                                  "\nfoo"])
def test_invalid_recorded_names(name: str) -> None:
    with pytest.raises(DatasetError, match="invalid dataset name"):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "my_set-2.v1", "x" * 128, "_x"])
def test_valid_recorded_names(name: str) -> None:
    assert check_name(name) == name
