"""Versioned checkpoint files, written atomically, pruned to the newest few.

Files are ``<dir>/<model>-v<version><suffix>``. A write goes to a temporary file in the same
directory, is fsynced, renamed over the final name and the directory fsynced, so a crash
leaves either the old set of files or the new one, never a half-written checkpoint under a
final name. Versions travel as uint32 in messages, so a file with a larger version is never
loaded.
"""
import errno
import logging
import os
import re
import tempfile
from typing import Callable, List, Optional, Tuple

from ml_bridge.core.errors import CheckpointError, MLBridgeError
from ml_bridge.core.node_params import NODE_PARAMS

log = logging.getLogger(__name__)

#: Largest model version: ``model_version`` is a uint32 in every message.
MAX_VERSION = 2 ** 32 - 1
#: Words of errors that mean the disk is full (errno's texts, also inside a framework's error).
_FULL_DISK_WORDS = ("No space left", "Disk quota exceeded")
#: Free bytes under which a failed write is blamed on the disk being full: torch.save's zip
#: writer reports a full disk as "[enforce fail at inline_container.cc:...]" without errno.
_LOW_SPACE = 1 << 20


class CheckpointStore:
    """Checkpoints of one model in one directory."""

    def __init__(self, directory: str, model_name: str, suffix: str,
                 keep: int = NODE_PARAMS.default("keep_checkpoints")) -> None:
        """``keep``: how many checkpoints :meth:`prune` leaves (0 = all)."""
        if keep < 0:
            raise ValueError(f"keep must be >= 0 (0 = keep all), got {keep}")
        self.directory = directory
        self.stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name) or "model"
        self.suffix = suffix
        self.keep = keep
        self._pattern = re.compile(re.escape(self.stem) + r"-v(\d+)" + re.escape(suffix) + "$")

    def path_for(self, version: int) -> str:
        """Final path of the checkpoint of ``version``."""
        return os.path.join(self.directory, f"{self.stem}-v{version:06d}{self.suffix}")

    def _scan(self) -> Tuple[List[Tuple[int, str]], List[str]]:
        """(version, path) of the usable checkpoints newest first, and files whose version is too big."""
        if not os.path.isdir(self.directory):
            return [], []
        found, too_big = [], []
        for name in os.listdir(self.directory):
            match = self._pattern.match(name)
            if match:
                version, path = int(match.group(1)), os.path.join(self.directory, name)
                if version > MAX_VERSION:
                    too_big.append(path)
                else:
                    found.append((version, path))
        return sorted(found, reverse=True), sorted(too_big)

    def list(self) -> List[Tuple[int, str]]:
        """(version, path) of every checkpoint with a usable version, newest first."""
        return self._scan()[0]

    def save(self, version: int, write: Callable[[str], None]) -> str:
        """Calls ``write(tmp_path)`` and atomically publishes the file as ``version``.

        Raises:
            CheckpointError: the disk is full ("no space left in checkpoint_dir (...)").
        """
        if not 0 <= version <= MAX_VERSION:
            raise CheckpointError(f"version {version} does not fit a uint32 model_version; move "
                                  f"or delete the checkpoints in {self.directory} to start over")
        os.makedirs(self.directory, exist_ok=True)
        final = self.path_for(version)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=self.suffix, dir=self.directory)
        os.close(fd)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            dfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException as err:
            full = _disk_full(err, self.directory)  # before the partial file frees its space
            if os.path.exists(tmp):
                os.unlink(tmp)
            if full:
                raise CheckpointError(f"no space left in checkpoint_dir ({self.directory}) to "
                                      f"save version {version}: free some space or set "
                                      "~keep_checkpoints lower") from err
            raise
        return final

    def prune(self, served: int) -> List[str]:
        """Deletes checkpoints older than ``served`` beyond the newest ``keep``; returns them.

        ``served`` (the version now served) and anything newer are never deleted. A file
        that cannot be deleted is skipped with a warning.
        """
        if self.keep == 0:
            return []
        older = [(v, p) for v, p in self.list() if v <= served]
        removed = []
        for version, path in older[self.keep:]:
            if version == served:
                continue
            try:
                os.unlink(path)
            except OSError as err:
                log.warning("cannot delete old checkpoint %s: %s", path, err)
                continue
            removed.append(path)
        return removed

    def load_newest(self, load: Callable[[str], None]) -> Optional[Tuple[int, str]]:
        """Loads the newest checkpoint that loads cleanly; skips broken ones with a warning.

        Returns:
            (version, path) of the checkpoint loaded, or None if there is none that loads.
        """
        found, too_big = self._scan()
        for path in too_big:
            log.warning("skipping checkpoint %s: its version is larger than %d, the largest a "
                        "model_version can carry; rename or delete it", path, MAX_VERSION)
        for version, path in found:
            try:
                load(path)
            except MLBridgeError as err:
                log.warning("skipping checkpoint %s: %s", path, err)
                continue
            except Exception as err:  # a framework's own error for a corrupt file
                log.warning("skipping checkpoint %s: %s",
                            path, CheckpointError(f"{type(err).__name__}: {err}"))
                continue
            return version, path
        return None


def _disk_full(err: BaseException, directory: str) -> bool:
    """True if ``err`` (from writing a checkpoint into ``directory``) means the disk is full."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    if any(words in text for words in _FULL_DISK_WORDS):
        return True
    if "enforce fail" in text:  # torch's writer hides errno: ask the file system instead
        try:
            stat = os.statvfs(directory)
        except OSError:
            return False
        return stat.f_bavail * stat.f_frsize < _LOW_SPACE
    return False
