"""Datasets: the built-in ``digits``, ``.npz`` files, and samples recorded at run time."""
import os
import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from ml_bridge.core.errors import DatasetError
from ml_bridge.core.registry import Registry
from ml_bridge.core.vision import ImageFormat

#: Samples [0:1500] of scikit-learn's digits train; [1500:1797] are the held-out set.
DIGITS_TRAIN = slice(0, 1500)
DIGITS_HELDOUT = slice(1500, 1797)
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Dataset:
    """Inputs and targets, one array per model input/target, samples along axis 0."""

    name: str
    inputs: List[np.ndarray]
    targets: List[np.ndarray]

    def __len__(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs else 0

    def split(self, validation_split: float) -> Tuple["Dataset", Optional["Dataset"]]:
        """Splits off the last ``validation_split`` of the samples, as Keras does."""
        if validation_split <= 0:
            return self, None
        n = len(self)
        n_val = int(n * validation_split)
        if n_val < 1 or n_val >= n:
            raise DatasetError(f"validation_split {validation_split} leaves no training or no "
                               f"validation sample out of {n}")
        cut = n - n_val
        train = Dataset(self.name, [a[:cut] for a in self.inputs], [t[:cut] for t in self.targets])
        val = Dataset(self.name + ":val", [a[cut:] for a in self.inputs],
                      [t[cut:] for t in self.targets])
        return train, val

    def check(self) -> None:
        """Raises DatasetError if empty or if the arrays disagree in sample count."""
        if not self.inputs or not self.targets or len(self) == 0:
            raise DatasetError(f"dataset '{self.name}' is empty")
        counts = {int(a.shape[0]) for a in self.inputs + self.targets}
        if len(counts) != 1:
            raise DatasetError(f"dataset '{self.name}' has arrays with different sample counts "
                               f"{sorted(counts)}")


def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return x, y


def digits(heldout: bool = False) -> Dataset:
    """The built-in ``digits``: [0:1500] for training, or the held-out [1500:1797]."""
    x, y = _digits_arrays()
    part = DIGITS_HELDOUT if heldout else DIGITS_TRAIN
    return Dataset("digits:heldout" if heldout else "digits", [x[part]], [y[part]])


#: A built-in dataset's builder: takes the image format of the model it is for (None for
#: models that take no images) and returns the training part. Image datasets render frames
#: and turn them into tensors with that format, exactly as the image pipelines will.
DatasetBuilder = Callable[[Optional[ImageFormat]], Dataset]


def _digits_builder(_fmt: Optional[ImageFormat]) -> Dataset:
    return digits()


#: Built-in dataset name -> builder; the image datasets' modules are imported on first use.
BUILTIN_DATASETS: "Registry[DatasetBuilder]" = Registry("built-in dataset", DatasetError)
BUILTIN_DATASETS.register("digits", _digits_builder)
BUILTIN_DATASETS.register("shapes", "ml_bridge.core.synthetic:shapes", lazy=True)
BUILTIN_DATASETS.register("shape_crops", "ml_bridge.core.synthetic_crops:shape_crops", lazy=True)
BUILTIN_DATASETS.register("motion", "ml_bridge.core.synthetic_motion:motion", lazy=True)
BUILTIN_DATASETS.register("shape_scenes", "ml_bridge.core.shape_scenes:shape_scenes", lazy=True)


def check_name(name: str) -> str:
    """Returns ``name`` if it is a valid recorded-dataset name, else raises DatasetError."""
    if not _NAME.fullmatch(name):  # not match: its "$" also matches before a final newline
        raise DatasetError(f"invalid dataset name '{name}': use letters, digits, '_', '-', '.' "
                           "(not starting with '.' or '-'), at most 128 characters")
    return name


def resolve_under(root: str, relative: str) -> str:
    """Resolves ``relative`` under ``root``; refuses a path that leads outside it.

    Symbolic links are resolved before the check, so a link pointing out is refused too.
    """
    if not root:
        raise DatasetError(f"'{relative}' is a file, but no data root is set (~data_root)")
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, path]) != base:
        raise DatasetError(f"'{relative}' resolves to {path}, outside the data root {base}")
    return path


def load_npz(path: str) -> Dataset:
    """Loads ``inputs`` and ``targets`` (or ``inputs_0..``/``targets_0..``) from an .npz.

    Loading never unpickles: object arrays are refused.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            inputs = _arrays(data, keys, "inputs")
            targets = _arrays(data, keys, "targets")
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read {path} as an .npz dataset: {err}") from err
    if not inputs or not targets:
        raise DatasetError(f"{path} needs arrays 'inputs' and 'targets' (found: "
                           f"{', '.join(sorted(keys)) or 'none'})")
    dataset = Dataset(os.path.basename(path), inputs, targets)
    dataset.check()
    return dataset


def _arrays(data: "np.lib.npyio.NpzFile", keys: "set[str]", stem: str) -> List[np.ndarray]:
    if stem in keys:
        return [np.asarray(data[stem])]
    out: List[np.ndarray] = []
    while f"{stem}_{len(out)}" in keys:
        out.append(np.asarray(data[f"{stem}_{len(out)}"]))
    return out


#: File loaders by suffix (a lower-case ``.ext``). The ROS node registers ``.bag``
#: (:func:`ml_bridge.ros.bag_dataset.register_loader`), so core-only users are offered what they can load.
FILE_LOADERS: "Registry[Callable[[str], Dataset]]" = Registry("dataset file type", DatasetError)
FILE_LOADERS.register(".npz", load_npz)
