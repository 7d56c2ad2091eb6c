"""ml_bridge.core.spec: dtype names, and validation of requests against the model's input specs."""
import numpy as np
import pytest

from ml_bridge.core.errors import InputError
from ml_bridge.core.spec import ArraySpec, batch_size_of, check_dtype_name, validate_inputs

X = ArraySpec("x", "float32", (-1, 4))
IDS = ArraySpec("ids", "int64", (-1,))


def test_dtype_names() -> None:
    assert check_dtype_name("") == np.float32
    assert check_dtype_name("uint8") == np.uint8
    with pytest.raises(InputError, match="unknown dtype 'complex64'.*float32"):
        check_dtype_name("complex64")


@pytest.mark.parametrize("dtype", ["float64", "float16", "uint8", "int32", "int64", "bool"])
def test_casts_within_kind_or_safe_are_converted(dtype: str) -> None:
    out = validate_inputs([np.ones((2, 4), dtype=dtype)], [X])
    assert out[0].dtype == np.float32 and out[0].flags.c_contiguous
    np.testing.assert_array_equal(out[0], np.ones((2, 4), np.float32))


def test_int_widening_is_converted() -> None:
    out = validate_inputs([np.array([1, 2], np.int32)], [IDS])
    assert out[0].dtype == np.int64


def test_float_to_int_is_refused_naming_the_input() -> None:
    with pytest.raises(InputError, match=r"input 0 \('ids'\) has dtype float32.*int64"):
        validate_inputs([np.array([1.5], np.float32)], [IDS])


def test_non_contiguous_input_comes_back_contiguous() -> None:
    strided = np.ones((4, 8), np.float32)[:, ::2]
    assert not strided.flags.c_contiguous
    assert validate_inputs([strided], [X])[0].flags.c_contiguous


def test_wrong_rank_names_input_and_expected_spec() -> None:
    words = r"input 0 \('x'\) has shape \[4\], rank 1.*rank 2: x: float32\[-1, 4\]"
    with pytest.raises(InputError, match=words):
        validate_inputs([np.ones(4, np.float32)], [X])


def test_wrong_fixed_dimension_names_axis() -> None:
    with pytest.raises(InputError, match=r"input 1 \('x'\) has shape \[2, 5\]; dimension 1 must be 4"):
        validate_inputs([np.array([1], np.int64), np.ones((2, 5), np.float32)], [IDS, X])


def test_unnamed_input_is_named_by_index() -> None:
    with pytest.raises(InputError, match=r"^input 0 has shape"):
        validate_inputs([np.ones((2, 3), np.float32)], [ArraySpec("", "float32", (-1, 4))])


def test_wrong_number_of_inputs_lists_the_specs() -> None:
    words = r"takes 2 input\(s\) \(ids: int64\[-1\], x: float32\[-1, 4\]\), got 1"
    with pytest.raises(InputError, match=words):
        validate_inputs([np.ones((1, 4), np.float32)], [IDS, X])


def test_element_limit() -> None:
    validate_inputs([np.ones((4, 4), np.float32)], [X], max_elements=16)
    with pytest.raises(InputError, match="20 elements, more than the limit of 16.*max_elements"):
        validate_inputs([np.ones((5, 4), np.float32)], [X], max_elements=16)


def test_batch_size_of() -> None:
    assert batch_size_of([np.ones((3, 4))]) == 3
    assert batch_size_of([]) == 0
    assert batch_size_of([np.float32(1.0)]) == 0  # type: ignore[list-item]


def test_describe() -> None:
    assert X.describe() == "x: float32[-1, 4]"
    assert ArraySpec("", "uint8", ()).describe() == "<unnamed>: uint8[]"
