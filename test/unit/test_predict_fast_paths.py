"""The cheap paths of ~predict's post-processing give what the general paths give."""
from typing import List, Tuple

import numpy as np
import pytest

from ml_bridge.pipelines.classify import SMALL, top_class

pytest.importorskip("ml_bridge.msg", reason="generated messages: run `make setup` and source build/env.sh")

from ml_bridge.core.spec import SUPPORTED_DTYPES
from ml_bridge.ros.conversions import array_to_tensor, tensor_to_array

TopClass = Tuple[List[int], List[float]]


def _both_paths(scores: np.ndarray, probabilities: bool) -> Tuple[TopClass, TopClass]:
    """top_class of ``scores`` on the small path, and the same rows among enough others to take
    the numpy path."""
    assert scores.size <= SMALL
    padding = np.zeros((SMALL // scores.shape[1] + 1, scores.shape[1]), scores.dtype)
    big_ids, big_scores = top_class(np.concatenate([scores, padding]), probabilities)
    n = scores.shape[0]
    return top_class(scores, probabilities), (big_ids[:n], big_scores[:n])


@pytest.mark.parametrize("probabilities", [False, True])
def test_top_class_small_path_equals_the_numpy_path(probabilities: bool) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (4, 10)).astype(np.float32)
    logits[1, 3] = logits[1, 7] = logits[1].max() + 1  # a tie: the first one wins on both paths
    logits[2] = [1000.0] + [0.0] * 9                   # large logits do not overflow
    logits[3, 5] = np.nan                              # NaN comes out as NaN on both paths
    (ids, scores), (big_ids, big_scores) = _both_paths(logits, probabilities)
    assert ids == big_ids and ids[1] == 3 and ids[3] == 5
    np.testing.assert_allclose(scores, big_scores, rtol=1e-12)  # NaN == NaN here
    assert all(isinstance(i, int) for i in ids) and all(isinstance(s, float) for s in scores)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's side
def test_top_class_small_path_of_a_row_of_minus_infinity_is_nan_like_numpys() -> None:
    row = np.full((1, 3), -np.inf, np.float32)
    (ids, scores), (big_ids, big_scores) = _both_paths(row, False)
    assert ids == big_ids == [0] and np.isnan(scores[0]) and np.isnan(big_scores[0])


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_outputs_of_every_dtype_and_byte_order_keep_their_name_and_values(dtype: str) -> None:
    values = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
    for array in (values, values.astype(values.dtype.newbyteorder(">"))):
        msg = array_to_tensor(array, "out")
        assert msg.dtype == dtype and list(msg.shape) == [2, 3]
        np.testing.assert_array_equal(tensor_to_array(msg), values)
