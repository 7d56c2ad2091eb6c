"""ml_bridge.core.checkpoints: atomic, versioned checkpoint files."""
import logging
import os
from pathlib import Path
from typing import Callable, List

import pytest

from ml_bridge.core.checkpoints import CheckpointStore
from ml_bridge.core.errors import CheckpointError


def write_text(text: str) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "w") as f:
            f.write(text)
    return write


def read_checked(loaded: List[str]) -> Callable[[str], None]:
    def load(path: str) -> None:
        with open(path) as f:
            text = f.read()
        if not text.startswith("good"):
            raise CheckpointError(f"{path} is corrupt")
        loaded.append(text)
    return load


def test_save_is_atomic_and_listing_is_newest_first(tmp_path: Path) -> None:
    store = CheckpointStore(os.path.join(str(tmp_path), "ckpt"), "digits_mlp", ".pt")
    assert store.list() == []
    for version in (1, 3, 2):
        path = store.save(version, write_text(f"good {version}"))
        assert path == store.path_for(version) and os.path.basename(path) == f"digits_mlp-v{version:06d}.pt"
    assert os.listdir(store.directory) and all(not n.startswith(".tmp") for n in os.listdir(store.directory))
    assert [v for v, _ in store.list()] == [3, 2, 1]
    with open(store.path_for(3)) as f:
        assert f.read() == "good 3"


def test_listing_ignores_other_files(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")
    store.save(1, write_text("good"))
    for other in ("m-v2.h5", "other-v5.pt", ".tmp-abc.pt", "m-vX.pt", "xm-v9.pt"):
        open(os.path.join(str(tmp_path), other), "w").close()
    assert [v for v, _ in store.list()] == [1]


def test_model_name_is_made_safe_for_a_file_name(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "my_pkg.models:make net", ".pt")
    assert os.path.basename(store.path_for(4)) == "my_pkg.models_make_net-v000004.pt"
    assert CheckpointStore(str(tmp_path), "", ".pt").stem == "model"


def test_a_failing_write_leaves_no_file(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")

    def write(path: str) -> None:
        with open(path, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.save(1, write)
    assert os.listdir(str(tmp_path)) == []


def test_load_newest_skips_a_corrupt_newest_with_a_warning(tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")
    store.save(1, write_text("good 1"))
    store.save(2, write_text("good 2"))
    store.save(3, write_text("garbage"))
    loaded: List[str] = []
    with caplog.at_level(logging.WARNING, logger="ml_bridge.core.checkpoints"):
        assert store.load_newest(read_checked(loaded)) == (2, store.path_for(2))
    assert loaded == ["good 2"]
    assert any("skipping checkpoint" in r.getMessage() and "m-v000003.pt" in r.getMessage()
               for r in caplog.records)


def test_load_newest_also_skips_a_frameworks_own_error(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")
    store.save(1, write_text("good 1"))
    store.save(2, write_text("good 2"))

    def load(path: str) -> None:
        if path.endswith("2.pt"):
            raise RuntimeError("PytorchStreamReader failed reading zip archive")

    with caplog.at_level(logging.WARNING):
        assert store.load_newest(load) == (1, store.path_for(1))
    assert "PytorchStreamReader" in caplog.text


def test_load_newest_with_nothing_good(tmp_path: Path) -> None:
    store = CheckpointStore(os.path.join(str(tmp_path), "missing"), "m", ".pt")
    assert store.load_newest(read_checked([])) is None
    store.save(1, write_text("bad"))
    assert store.load_newest(read_checked([])) is None
