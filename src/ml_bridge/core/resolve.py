"""Finds a dataset by the name a user gives: built-in, recorded, or a file under the data root."""
import os
from typing import Optional

from ml_bridge.core.datasets import BUILTIN_DATASETS, FILE_LOADERS, Dataset, resolve_under
from ml_bridge.core.errors import DatasetError
from ml_bridge.core.sample_store import SampleStore
from ml_bridge.core.vision import ImageFormat


class DatasetResolver:
    """Resolves ``digits``, a recorded dataset name, or ``file.npz`` / ``file.bag``."""

    def __init__(self, data_root: str = "") -> None:
        self.data_root = data_root
        self._store: Optional[SampleStore] = SampleStore(data_root) if data_root else None

    def store(self) -> SampleStore:
        """The recorded-sample store; raises DatasetError if no data root is set."""
        if self._store is None:
            raise DatasetError("no data root is set (~data_root), so samples cannot be recorded")
        return self._store

    def load(self, name: str, image_format: Optional[ImageFormat] = None) -> Dataset:
        """The dataset called ``name``; built-in image datasets are made for ``image_format``.

        Raises:
            DatasetError: unknown name, a path outside the data root, or unreadable data.
        """
        name = name.strip()
        if not name:
            raise DatasetError("no dataset given; use 'digits', a recorded dataset name, or a file "
                               f"under ~data_root ({', '.join(FILE_LOADERS.names())})")
        if name in BUILTIN_DATASETS:
            return BUILTIN_DATASETS.get(name)(image_format)
        suffix = os.path.splitext(name)[1].lower()
        if suffix in FILE_LOADERS or os.sep in name or name.startswith("."):
            if suffix not in FILE_LOADERS:
                raise DatasetError(f"'{name}': unsupported file type; use one of "
                                   f"{', '.join(FILE_LOADERS.names())}")
            path = resolve_under(self.data_root, name)
            if not os.path.isfile(path):
                raise DatasetError(f"no file '{name}' under the data root {self.data_root}")
            return FILE_LOADERS.get(suffix)(path)
        if self._store is not None and self._store.exists(name):
            return self._store.load(name)
        recorded = self._store.names() if self._store is not None else []
        raise DatasetError(f"unknown dataset '{name}'; built-in: {', '.join(BUILTIN_DATASETS.names())}; "
                           f"recorded: {', '.join(recorded) or 'none'}; or a file under ~data_root "
                           f"({', '.join(FILE_LOADERS.names())})")
