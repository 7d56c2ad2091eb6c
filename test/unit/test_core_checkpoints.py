"""ml_bridge.core.checkpoints: atomic, versioned checkpoint files."""
import errno
import logging
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, List

import pytest

from ml_bridge.core import checkpoints
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


def test_a_version_beyond_uint32_is_skipped_at_load_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")
    store.save(3, write_text("good 3"))
    with open(os.path.join(str(tmp_path), "m-v4294967296.pt"), "w") as f:
        f.write("good but unservable")
    loaded: List[str] = []
    with caplog.at_level(logging.WARNING, logger="ml_bridge.core.checkpoints"):
        assert store.load_newest(read_checked(loaded)) == (3, store.path_for(3))
    assert loaded == ["good 3"] and [v for v, _ in store.list()] == [3]
    assert "m-v4294967296.pt" in caplog.text and "4294967295" in caplog.text
    with pytest.raises(CheckpointError, match="does not fit a uint32"):
        store.save(2 ** 32, write_text("good"))


@pytest.mark.parametrize("keep, left", [(2, [7, 6]), (5, [7, 6, 5, 4, 3]), (0, [7, 6, 5, 4, 3, 2, 1])])
def test_prune_keeps_the_newest_and_never_the_served_or_newer_ones(tmp_path: Path, keep: int,
                                                                   left: List[int]) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt", keep=keep)
    for version in range(1, 8):
        store.save(version, write_text(f"good {version}"))
    other = CheckpointStore(str(tmp_path), "other", ".pt")
    other.save(1, write_text("another model's"))
    removed = store.prune(7)
    assert [v for v, _ in store.list()] == left
    assert sorted(removed) == sorted(store.path_for(v) for v in range(1, 8) if v not in left)
    assert [v for v, _ in other.list()] == [1]  # another model's checkpoints are not counted


def test_prune_leaves_versions_newer_than_the_served_one(tmp_path: Path) -> None:
    # A newer file that did not load (skipped at start) must not push the served one out.
    store = CheckpointStore(str(tmp_path), "m", ".pt", keep=1)
    for version in (1, 2, 9):
        store.save(version, write_text("good"))
    store.prune(2)
    assert [v for v, _ in store.list()] == [9, 2]


def full_disk_errors() -> List[BaseException]:
    return [OSError(errno.ENOSPC, "No space left on device"),
            RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
            RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed: "
                         "No space left on device")]


@pytest.mark.parametrize("error", full_disk_errors(), ids=["ENOSPC", "enforce-fail", "torch-words"])
def test_a_full_disk_says_no_space_left_in_checkpoint_dir(tmp_path: Path, error: BaseException,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(str(tmp_path / "ckpt"), "m", ".pt")

    def write(path: str) -> None:
        with open(path, "w") as f:
            f.write("half")
        raise error

    # torch's "enforce fail" carries no errno: the store asks the file system, full here
    monkeypatch.setattr(checkpoints.os, "statvfs", lambda path: SimpleNamespace(f_bavail=3, f_frsize=4096))
    with pytest.raises(CheckpointError, match=re.escape(f"no space left in checkpoint_dir "
                                                        f"({tmp_path / 'ckpt'})")) as info:
        store.save(2, write)
    assert info.value.__cause__ is error
    assert os.listdir(str(tmp_path / "ckpt")) == []


def test_a_torch_write_failure_on_a_roomy_disk_is_not_blamed_on_space(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CheckpointStore(str(tmp_path), "m", ".pt")
    monkeypatch.setattr(checkpoints.os, "statvfs",
                        lambda path: SimpleNamespace(f_bavail=1 << 20, f_frsize=4096))

    def write(path: str) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    with pytest.raises(RuntimeError, match="enforce fail"):
        store.save(1, write)
