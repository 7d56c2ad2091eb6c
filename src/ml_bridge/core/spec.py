"""Tensor specifications and validation of inputs against them."""
import functools
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ml_bridge.core.errors import InputError

#: The dtypes that travel in ml_bridge/Tensor messages.
SUPPORTED_DTYPES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
                    "uint16", "bool")

#: Default upper bound on the elements of one request (64 M elements, 256 MB of float32).
DEFAULT_MAX_ELEMENTS = 64 * 1024 * 1024


@dataclass(frozen=True)
class ArraySpec:
    """What a model accepts or returns for one array; -1 in ``shape`` means any size."""

    name: str
    dtype: str
    shape: Tuple[int, ...]

    def describe(self) -> str:
        """Human-readable form, e.g. ``x: float32[-1, 64]``."""
        dims = ", ".join(str(d) for d in self.shape)
        return f"{self.name or '<unnamed>'}: {self.dtype}[{dims}]"


#: Deprecated alias of :class:`ArraySpec`, for code written before the rename; the name is
#: also that of a message class (``ml_bridge.msg.TensorSpec``), which this is not.
TensorSpec = ArraySpec


def check_dtype_name(name: str) -> np.dtype:
    """Returns the numpy dtype for a message dtype name ("" = float32).

    Raises:
        InputError: the name is not one of SUPPORTED_DTYPES.
    """
    name = name or "float32"
    if name not in SUPPORTED_DTYPES:
        raise InputError(f"unknown dtype '{name}'; use one of {', '.join(SUPPORTED_DTYPES)}")
    return np.dtype(name)


def validate_inputs(arrays: Sequence[np.ndarray], specs: Sequence[ArraySpec],
                    max_elements: int = DEFAULT_MAX_ELEMENTS) -> List[np.ndarray]:
    """Checks arrays against the model's input specs and casts them to the spec dtypes.

    A dtype that numpy can cast within its kind (float64 -> float32, int32 -> int64,
    uint8 -> float32) is converted; any other dtype, a wrong rank or a fixed dimension that
    differs is refused.

    Returns:
        The arrays, C-contiguous and of the spec dtypes.

    Raises:
        InputError: naming the input and what is wrong with it.
    """
    if len(arrays) != len(specs):
        wanted = ", ".join(s.describe() for s in specs)
        raise InputError(f"the model takes {len(specs)} input(s) ({wanted}), got {len(arrays)}")
    total = sum(int(a.size) for a in arrays)
    if total > max_elements:
        raise InputError(f"request has {total} elements, more than the limit of {max_elements} "
                         "(parameter ~max_elements)")
    out = []
    for i, (array, spec) in enumerate(zip(arrays, specs)):
        if len(array.shape) != len(spec.shape):
            raise InputError(f"{_label(i, spec)} has shape {list(array.shape)}, rank {array.ndim}; "
                             f"the model expects rank {len(spec.shape)}: {spec.describe()}")
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if want >= 0 and got != want:
                raise InputError(f"{_label(i, spec)} has shape {list(array.shape)}; dimension "
                                 f"{axis} must be {want}: {spec.describe()}")
        target = _dtype(spec.dtype)
        if array.dtype != target:
            if not np.can_cast(array.dtype, target, casting="same_kind"):
                raise InputError(f"{_label(i, spec)} has dtype {array.dtype}, which cannot be "
                                 f"converted to the model's {target} without losing its meaning")
            array = array.astype(target)
        out.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))
    return out


def _label(index: int, spec: ArraySpec) -> str:
    return f"input {index} ('{spec.name}')" if spec.name else f"input {index}"


@functools.lru_cache(maxsize=None)
def _dtype(name: str) -> np.dtype:
    """np.dtype(name), built once per name: validation runs on every request."""
    return np.dtype(name)


def batch_size_of(arrays: Sequence[np.ndarray]) -> int:
    """The leading dimension shared by all arrays (0 for scalars or no arrays)."""
    if not arrays or arrays[0].ndim == 0:
        return 0
    return int(arrays[0].shape[0])
