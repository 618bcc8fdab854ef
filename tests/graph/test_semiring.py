"""Semirings: ``fold`` against a hand-written element loop, dtypes, weights, and BOOLEAN's
reading of non-zero bytes."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsb.errors import InvalidArgumentError
from mmsb.semiring import (
    BOOLEAN,
    BUILTINS,
    MAX_MIN,
    MAX_PLUS,
    MIN_PLUS,
    SUM_PRODUCT,
    TROPICAL,
    Semiring,
)

# name -> (⊕, ⊗, zero, one) on Python/numpy scalars: the textbook definitions
SCALAR_OPS: dict[str, tuple[Callable[[Any, Any], Any], Callable[[Any, Any], Any], Any, Any]] = {
    "BOOLEAN": (lambda x, y: x or y, lambda x, y: x and y, False, True),
    "MIN_PLUS": (min, operator.add, math.inf, 0.0),
    "MAX_PLUS": (max, operator.add, -math.inf, 0.0),
    "MAX_MIN": (max, min, -math.inf, math.inf),
    "SUM_PRODUCT": (operator.add, operator.mul, 0.0, 1.0),
}


def loop_fold(
    s: Semiring, parents: list[np.ndarray], weights: list[Any] | None, dtype: str
) -> np.ndarray:
    """``⊕_p (w_p ⊗ parent_p)`` one element at a time, left to right, in ``dtype`` scalars."""
    add, mul, zero, one = SCALAR_OPS[s.name]
    ws = [one] * len(parents) if weights is None else weights
    out = np.empty(parents[0].shape, dtype=dtype)
    for i in range(out.size):
        if s.boolean:
            acc: Any = zero
            for w, p in zip(ws, parents, strict=True):
                acc = add(acc, mul(bool(w), bool(p.flat[i] != 0)))
            out.flat[i] = 1 if acc else 0
        else:
            cast = np.dtype(dtype).type
            acc = cast(zero)
            for w, p in zip(ws, parents, strict=True):
                acc = add(acc, mul(cast(w), cast(p.flat[i])))
            out.flat[i] = acc
    return out


def _float_pages(s: Semiring, dtype: str, rng: np.random.Generator, n: int, k: int) -> list[Any]:
    pages = [rng.uniform(-50, 50, n).astype(dtype) for _ in range(k)]
    # the semiring's own infinities (its zero/one) belong to its carrier; others do not
    specials = [v for v in (s.zero, s.one) if math.isinf(v)]
    for p in pages:
        for v in specials:
            p[rng.integers(0, n, 2)] = v
    return pages


@pytest.mark.parametrize("s", [MIN_PLUS, MAX_PLUS, MAX_MIN, SUM_PRODUCT], ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fold_matches_the_element_loop(s: Semiring, dtype: str) -> None:
    rng = np.random.default_rng(1)
    for k in (1, 2, 5):
        parents = _float_pages(s, dtype, rng, 40, k)
        weights = rng.uniform(-3, 3, k).round(2).tolist()
        got = s.fold(parents, weights)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, loop_fold(s, parents, weights, dtype))
        np.testing.assert_array_equal(s.fold(parents), loop_fold(s, parents, None, dtype))


@given(
    data=st.data(),
    k=st.integers(1, 4),
    n=st.integers(0, 12),
    which=st.sampled_from([MIN_PLUS, MAX_PLUS, MAX_MIN, SUM_PRODUCT]),
)
@settings(max_examples=60, deadline=None)
def test_fold_matches_the_element_loop_on_any_values(
    data: st.DataObject, k: int, n: int, which: Semiring
) -> None:
    finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    carrier = finite | st.sampled_from(
        [v for v in (which.zero, which.one) if math.isinf(v)] or [0.0]
    )
    parents = [np.array(data.draw(st.lists(carrier, min_size=n, max_size=n))) for _ in range(k)]
    weights = data.draw(st.lists(finite, min_size=k, max_size=k))
    with np.errstate(invalid="ignore"):
        got = which.fold(parents, weights)
    np.testing.assert_array_equal(got, loop_fold(which, parents, weights, "float64"))


def test_boolean_reads_any_nonzero_byte_as_true() -> None:
    a = np.array([0x00, 0x80, 0x01, 0xFF, 0x00, 0x02], dtype=np.uint8)
    b = np.array([0x00, 0x00, 0x40, 0x00, 0x10, 0x00], dtype=np.uint8)
    got = BOOLEAN.fold([a, b])
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(got, loop_fold(BOOLEAN, [a, b], None, "uint8"))
    # a false weight switches its parent off entirely
    np.testing.assert_array_equal(BOOLEAN.fold([a, b], [False, True]), [0, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(BOOLEAN.fold([a, b], [0, 0]), np.zeros(6, np.uint8))
    # element-wise ⊕ / ⊗ read bytes the same way
    np.testing.assert_array_equal(BOOLEAN.plus(a, b), a.astype(bool) | b.astype(bool))
    np.testing.assert_array_equal(BOOLEAN.times(a, b), a.astype(bool) & b.astype(bool))


def test_boolean_fold_on_random_bytes_matches_the_loop() -> None:
    rng = np.random.default_rng(7)
    parents = [rng.integers(0, 256, 64, dtype=np.uint8) for _ in range(4)]
    for p in parents:
        p[rng.random(64) < 0.5] = 0
    weights = [True, False, True, True]
    np.testing.assert_array_equal(
        BOOLEAN.fold(parents, weights), loop_fold(BOOLEAN, parents, weights, "uint8")
    )
    bools = [p != 0 for p in parents]
    got = BOOLEAN.fold(bools, weights)
    assert got.dtype == np.bool_
    np.testing.assert_array_equal(got, loop_fold(BOOLEAN, bools, weights, "bool"))


def test_fold_output_dtype_and_weights_forms() -> None:
    a, b = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    np.testing.assert_array_equal(SUM_PRODUCT.fold([a, b], np.array([2.0, 0.5])), [3.5, 3.5])
    np.testing.assert_array_equal(SUM_PRODUCT.fold([a, b], (2, 1)), [5.0, 3.0])
    got = SUM_PRODUCT.fold([a, b], dtype="float32")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [4.0, 1.0])
    np.testing.assert_array_equal(MIN_PLUS.fold([a, b], [0.0, 10.0]), [1.0, 2.0])
    np.testing.assert_array_equal(MAX_MIN.fold([a, b], [1.5, np.inf]), [3.0, 1.5])
    np.testing.assert_array_equal(
        BOOLEAN.fold([np.array([True, False])], dtype="uint8"), np.array([1, 0], np.uint8)
    )


def test_fold_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match="a fold needs at least one parent"):
        SUM_PRODUCT.fold([])
    with pytest.raises(InvalidArgumentError, match="2 parents but 3 weights"):
        SUM_PRODUCT.fold([np.zeros(2), np.zeros(2)], [1.0, 2.0, 3.0])


def test_dtype_checks() -> None:
    for s in (MIN_PLUS, MAX_PLUS, MAX_MIN, SUM_PRODUCT):
        assert s.dtypes == ("float32", "float64")
        s.check_dtype("float32")
        s.check_dtype("float64")
        with pytest.raises(InvalidArgumentError, match=rf"semiring {s.name} works on float32"):
            s.check_dtype("uint8")
    assert BOOLEAN.dtypes == ("bool", "uint8")
    BOOLEAN.check_dtype("uint8")
    with pytest.raises(InvalidArgumentError, match="BOOLEAN works on bool, uint8 pages, not int64"):
        BOOLEAN.check_dtype("int64")


def test_builtins_declare_zero_one_and_distinct_kernel_codes() -> None:
    assert TROPICAL is MIN_PLUS
    assert [s.code for s in BUILTINS] == [0, 1, 2, 3, 4]
    assert [s.name for s in BUILTINS] == list(SCALAR_OPS)
    for s in BUILTINS:
        _, _, zero, one = SCALAR_OPS[s.name]
        assert s.zero == zero and s.one == one, s
    assert repr(MIN_PLUS) == "Semiring(MIN_PLUS)"
