"""One recorded sample made to fit the served model, before it is stored.

A sample arrives without a batch dimension (or with a batch of 1), in whatever dtypes its
sender used; it is stored only once the model would accept it for training, in the model's
canonical dtypes and shapes, so a recorded dataset always stacks and trains.
"""
from typing import List, Sequence, Tuple

import numpy as np

from ml_bridge.core.context import Context
from ml_bridge.core.datasets import Dataset
from ml_bridge.core.errors import DatasetError, InputError
from ml_bridge.core.model import BackendModel
from ml_bridge.core.spec import ArraySpec, validate_inputs
from ml_bridge.core.targets import canonical_targets


def sample_for_model(model: BackendModel, context: Context, dataset: str,
                     inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                     max_elements: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """The sample's inputs and targets as ``model`` trains on them, without a batch dimension.

    Raises:
        DatasetError: the sample does not fit the model (what does not, and what it takes).
    """
    if len(inputs) != len(model.input_specs):
        raise DatasetError(f"sample has {len(inputs)} input(s); the model takes "
                           f"{len(model.input_specs)}")
    ins = [_one_sample(np.asarray(a), s) for a, s in zip(inputs, model.input_specs)]
    try:
        ins = validate_inputs([a[None] for a in ins], model.input_specs, max_elements)
    except InputError as err:
        raise DatasetError(f"sample does not fit the model: {err}") from err
    sample = Dataset(dataset, ins, [np.asarray(t).reshape((1,) + np.shape(t)) for t in targets])
    with context:
        model.check_targets(sample)
    # Stored in the model's canonical dtypes and shapes (class ids int64 []): one sample sent
    # as int32 or [1] must not make the dataset a mix that can no longer be stacked.
    tgs = canonical_targets(dataset, sample.targets, model.output_specs,
                            model.n_classes() if model.is_classifier else 0,
                            model.box_grid.classes if model.box_grid is not None else 0)
    return [a[0] for a in ins], [t[0] for t in tgs]


def _one_sample(array: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """Drops a leading batch dimension of 1 from a sample recorded with one."""
    if array.ndim == len(spec.shape) and array.shape[:1] == (1,):
        return array[0]
    return array
