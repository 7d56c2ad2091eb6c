"""Versioned checkpoint files, written atomically.

Files are ``<dir>/<model>-v<version><suffix>``. A write goes to a temporary file in the same
directory, is fsynced, renamed over the final name and the directory fsynced, so a crash
leaves either the old set of files or the new one, never a half-written checkpoint under a
final name.
"""
import logging
import os
import re
import tempfile
from typing import Callable, List, Optional, Tuple

from ml_bridge.core.errors import CheckpointError, MLBridgeError

log = logging.getLogger(__name__)


class CheckpointStore:
    """Checkpoints of one model in one directory."""

    def __init__(self, directory: str, model_name: str, suffix: str) -> None:
        self.directory = directory
        self.stem = re.sub(r"[^A-Za-z0-9_.-]", "_", model_name) or "model"
        self.suffix = suffix
        self._pattern = re.compile(re.escape(self.stem) + r"-v(\d+)" + re.escape(suffix) + "$")

    def path_for(self, version: int) -> str:
        """Final path of the checkpoint of ``version``."""
        return os.path.join(self.directory, f"{self.stem}-v{version:06d}{self.suffix}")

    def list(self) -> List[Tuple[int, str]]:
        """(version, path) of every checkpoint, newest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = self._pattern.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(found, reverse=True)

    def save(self, version: int, write: Callable[[str], None]) -> str:
        """Calls ``write(tmp_path)`` and atomically publishes the file as ``version``."""
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
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return final

    def load_newest(self, load: Callable[[str], None]) -> Optional[Tuple[int, str]]:
        """Loads the newest checkpoint that loads cleanly; skips broken ones with a warning.

        Returns:
            (version, path) of the checkpoint loaded, or None if there is none that loads.
        """
        for version, path in self.list():
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
