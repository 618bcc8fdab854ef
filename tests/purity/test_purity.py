"""The purity validator: built-in semirings pass, broken ones fail the laws they break,
impure functions are flagged for the right reason, read-only inputs are enforced."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsb import purity
from mmsb.errors import InvalidArgumentError
from mmsb.purity import (
    ADD_ASSOCIATIVE,
    ADD_COMMUTATIVE,
    ADD_IDENTITY_LEFT,
    ADD_IDENTITY_RIGHT,
    ANNIHILATION_LEFT,
    ANNIHILATION_RIGHT,
    DISTRIBUTIVE_LEFT,
    DISTRIBUTIVE_RIGHT,
    LAW_NAMES,
    MUL_ASSOCIATIVE,
    MUL_IDENTITY_LEFT,
    MUL_IDENTITY_RIGHT,
    MUTATES,
    NOT_REPEATABLE,
    RAISES,
    check_function,
    check_semiring,
)
from mmsb.purity import laws as purity_laws
from mmsb.semiring import BOOLEAN, BUILTINS, MAX_MIN, MAX_PLUS, MIN_PLUS, SUM_PRODUCT, Semiring


def failed(report: purity.PurityReport, dtype: str | None = None) -> set[str]:
    return {c.name for c in report.failed if dtype is None or c.dtype == dtype}


def broken(s: Semiring, **changes: Any) -> Semiring:
    return dataclasses.replace(s, name=f"broken {s.name}", code=-1, **changes)


# -- semiring laws ---------------------------------------------------------------------------


@pytest.mark.parametrize("s", BUILTINS, ids=lambda s: s.name)
def test_builtin_semirings_satisfy_every_law_on_every_dtype(s: Semiring) -> None:
    report = check_semiring(s, 3000, seed=11)
    assert report.ok, report.explain()
    assert report.kind == "semiring" and report.subject == s.name
    assert [(c.dtype, c.name) for c in report.checks] == [
        (dt, name) for dt in s.dtypes for name in LAW_NAMES
    ]
    assert all(c.checked == 3000 and c.failures == 0 and c.worst is None for c in report.checks)


def test_law_names_are_the_eleven_laws() -> None:
    assert LAW_NAMES == (
        ADD_ASSOCIATIVE, ADD_COMMUTATIVE, MUL_ASSOCIATIVE, ADD_IDENTITY_LEFT,
        ADD_IDENTITY_RIGHT, MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT, DISTRIBUTIVE_LEFT,
        DISTRIBUTIVE_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT,
    )  # fmt: skip


def test_exact_laws_for_min_max_or_and_tolerance_for_plus_times() -> None:
    rep = check_semiring(MIN_PLUS, 200, dtype="float64")
    tol = {c.name: c.tolerance for c in rep.checks}
    assert tol[ADD_ASSOCIATIVE] == tol[ADD_COMMUTATIVE] == tol[ADD_IDENTITY_LEFT] == "exact"
    assert tol[MUL_ASSOCIATIVE] == tol[DISTRIBUTIVE_LEFT] == "rtol=3.55e-15, atol=2.23e-308"
    assert {c.tolerance for c in check_semiring(MAX_MIN, 200).checks} == {"exact"}
    assert {c.tolerance for c in check_semiring(BOOLEAN, 200).checks} == {"exact"}
    f32 = check_semiring(SUM_PRODUCT, 200, dtype="float32")
    assert {c.tolerance for c in f32.checks} == {"rtol=1.91e-06, atol=1.18e-38"}


def test_float_addition_needs_the_tolerance() -> None:
    # with rounding allowed the built-in passes, and some elements do round
    default = check_semiring(SUM_PRODUCT, 5000, dtype="float64")
    assert default.ok
    by_name = {c.name: c for c in default.checks}
    assert by_name[ADD_ASSOCIATIVE].within_tolerance > 0
    assert by_name[DISTRIBUTIVE_LEFT].within_tolerance > 0
    # demanding exact equality shows floating-point + is not associative
    strict = check_semiring(SUM_PRODUCT, 5000, dtype="float64", rtol=0.0, atol=0.0)
    assert {ADD_ASSOCIATIVE, MUL_ASSOCIATIVE, DISTRIBUTIVE_LEFT} <= failed(strict)
    assert ADD_COMMUTATIVE not in failed(strict)
    # the textbook case: (1e16 + -1e16) + 1 = 1 but 1e16 + (-1e16 + 1) = 0
    cancel = check_semiring(SUM_PRODUCT, np.array([1e16, -1e16, 1.0]))
    assert cancel.ok
    assert {c.name: c for c in cancel.checks}[ADD_ASSOCIATIVE].within_tolerance > 0


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        (
            broken(SUM_PRODUCT, add=np.subtract),
            {ADD_ASSOCIATIVE, ADD_COMMUTATIVE, ADD_IDENTITY_LEFT},
        ),
        (
            broken(MAX_PLUS, zero=0.0),
            {ADD_IDENTITY_LEFT, ADD_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT},
        ),
        (broken(SUM_PRODUCT, one=2.0), {MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT}),
        (
            broken(SUM_PRODUCT, zero=1.0),
            {ADD_IDENTITY_LEFT, ADD_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT},
        ),
        (
            broken(MIN_PLUS, mul=np.multiply),
            {
                MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT, DISTRIBUTIVE_LEFT, DISTRIBUTIVE_RIGHT,
                ANNIHILATION_LEFT, ANNIHILATION_RIGHT,
            },
        ),
        (
            broken(BOOLEAN, mul=np.logical_or),
            {MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT},
        ),
        (broken(BOOLEAN, add=np.logical_and, mul=np.logical_or, zero=True, one=False), set()),
        # min distributes over min and -inf still annihilates: only the identity is wrong
        (broken(MAX_MIN, add=np.minimum), {ADD_IDENTITY_LEFT, ADD_IDENTITY_RIGHT}),
    ],
    ids=["minus", "wrong-zero", "wrong-one", "sum-zero-1", "min-times", "or-or", "dual", "min-min"],
)  # fmt: skip
def test_broken_semirings_fail_exactly_the_laws_they_break(s: Semiring, expected: set[str]) -> None:
    report = check_semiring(s, 2000, seed=5)
    for dt in s.dtypes:
        assert failed(report, dt) == expected, report.explain()
    assert report.ok is (not expected)
    for c in report.failed:
        assert c.worst is not None and c.failures > 0 and c.reason.endswith(" fails")


def test_a_non_associative_multiplication_is_caught() -> None:
    mean = broken(SUM_PRODUCT, mul=lambda a, b: (np.asarray(a) + np.asarray(b)) / 2)
    assert MUL_ASSOCIATIVE in failed(check_semiring(mean, 500, dtype="float64"))


def test_tropical_infinity_is_covered() -> None:
    # ⊗ that saturates at ±1e300: wrong only where an infinity (the zero) is an operand,
    # since generated finite magnitudes stay below 1e100
    for s, cap in ((MIN_PLUS, np.minimum), (MAX_PLUS, np.maximum)):
        bound = 1e300 if s is MIN_PLUS else -1e300
        saturating = broken(s, mul=lambda a, b, cap=cap, bound=bound: cap(np.add(a, b), bound))
        report = check_semiring(saturating, 1000, dtype="float64")
        assert failed(report) == {
            MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT
        }  # fmt: skip
        # one ⊗ a = a breaks only where a sample is the infinite zero: those were generated
        for c in report.failed:
            if c.name in (MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT):
                assert 0 < c.failures < c.checked
                assert c.worst is not None and c.worst.inputs["a"] == s.zero


def test_sum_product_with_infinity_is_not_a_semiring() -> None:
    # generated samples stay finite for SUM_PRODUCT; given an infinity, 0 * inf is NaN
    report = check_semiring(SUM_PRODUCT, [np.array([1.0, np.inf]), np.array([2.0, 3.0])])
    assert {ANNIHILATION_LEFT, ANNIHILATION_RIGHT} <= failed(report)
    worst = {c.name: c.worst for c in report.checks}[ANNIHILATION_LEFT]
    assert worst is not None and worst.inputs == {"a": math.inf} and math.isnan(worst.lhs)


def test_nan_in_caller_samples_equals_nan_only_at_the_same_position() -> None:
    report = check_semiring(MAX_MIN, np.array([1.0, np.nan, -2.0]))
    # max/min propagate NaN to both sides of these laws: they hold
    assert not {ADD_ASSOCIATIVE, ADD_COMMUTATIVE, DISTRIBUTIVE_LEFT} & failed(report)
    # min(-inf, NaN) is NaN, not -inf: zero does not annihilate NaN
    assert failed(report) == {ANNIHILATION_LEFT, ANNIHILATION_RIGHT}
    per = {c.name: c for c in report.checks}
    assert per[ANNIHILATION_LEFT].failures == 9  # the NaN as a, in each of its 9 triples
    assert per[ANNIHILATION_LEFT].checked == 27


def test_caller_samples_shapes_and_counts() -> None:
    pages = [np.full(4, v) for v in (0.5, -1.0, 2.0)]
    report = check_semiring(MIN_PLUS, pages)
    assert report.ok
    assert {c.checked for c in report.checks} == {27 * 4}  # every ordered triple, 4 elements
    assert {c.dtype for c in report.checks} == {"float64"}
    many = check_semiring(MAX_PLUS, np.linspace(-5, 5, 40))
    assert {c.checked for c in many.checks} == {32_768}
    as32 = check_semiring(MAX_PLUS, [1.0, 2.5], dtype="float32")
    assert {c.dtype for c in as32.checks} == {"float32"} and as32.ok
    bytes_ = check_semiring(BOOLEAN, np.array([0, 1, 0x80, 0xFF], dtype=np.uint8))
    assert bytes_.ok and {c.dtype for c in bytes_.checks} == {"uint8"}


def test_semiring_argument_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="works on float32, float64 pages, not int64"):
        check_semiring(MIN_PLUS, 10, dtype="int64")
    with pytest.raises(InvalidArgumentError, match="works on float32, float64 pages, not int64"):
        check_semiring(MIN_PLUS, np.arange(3))
    with pytest.raises(InvalidArgumentError, match="samples must be at least 1, not 0"):
        check_semiring(MIN_PLUS, 0)
    with pytest.raises(InvalidArgumentError, match="not a bool"):
        check_semiring(MIN_PLUS, True)
    with pytest.raises(InvalidArgumentError, match="at least one array"):
        check_semiring(MIN_PLUS, [])
    with pytest.raises(InvalidArgumentError, match="arrays of one shape"):
        check_semiring(MIN_PLUS, [np.zeros(2), np.zeros(3)])
    ints = Semiring("INT_MIN_PLUS", np.minimum, np.add, np.inf, 0, ("int64",))
    with pytest.raises(
        InvalidArgumentError, match="INT_MIN_PLUS: zero inf cannot be held by int64"
    ):
        check_semiring(ints, 10)


def test_user_semiring_over_integers_is_exact() -> None:
    ring = Semiring("INT_SUM_PRODUCT", np.add, np.multiply, 0, 1, ("int64", "uint8"))
    report = check_semiring(ring, 2000)
    assert report.ok, report.explain()  # wrapping arithmetic is still a (modular) semiring
    assert {c.tolerance for c in report.checks} == {"exact"}


def test_an_operation_that_raises_breaks_its_laws_without_crashing() -> None:
    s = Semiring("BOOL_MINUS", np.subtract, np.logical_and, False, True, ("bool",))
    report = check_semiring(s, 100)
    uses_add = {
        ADD_ASSOCIATIVE, ADD_COMMUTATIVE, ADD_IDENTITY_LEFT, ADD_IDENTITY_RIGHT,
        DISTRIBUTIVE_LEFT, DISTRIBUTIVE_RIGHT,
    }  # fmt: skip
    assert failed(report) == uses_add
    assert all("raised TypeError" in c.reason for c in report.failed)


def test_semiring_reports_are_deterministic_and_readable() -> None:
    a = check_semiring(MAX_PLUS, 500, seed=3)
    b = check_semiring(MAX_PLUS, 500, seed=3)
    assert a.checks == b.checks
    text = a.explain()
    assert text.startswith("semiring MAX_PLUS: all laws hold\n")
    assert "  ✓ ⊕ associative [float32]: 500 checked, exact" in text
    bad = check_semiring(broken(SUM_PRODUCT, add=np.subtract), 500, dtype="float64")
    text = bad.explain()
    assert text.startswith("semiring broken SUM_PRODUCT: LAWS BROKEN: (a ⊕ b) ⊕ c")
    assert "✗ zero is the left ⊕ identity [float64]: " in text
    assert "worst a=" in text and "allowed" in text
    assert bad.reasons == [
        "(a ⊕ b) ⊕ c = a ⊕ (b ⊕ c) fails",
        "a ⊕ b = b ⊕ a fails",
        "zero ⊕ a = a fails",
    ]


finite = st.floats(-1e100, 1e100, allow_nan=False, allow_infinity=False)


@given(values=st.lists(finite, min_size=1, max_size=8), which=st.sampled_from(BUILTINS[1:]))
@settings(max_examples=80, deadline=None)
def test_builtins_pass_on_any_finite_samples(values: list[float], which: Semiring) -> None:
    carrier = values + [v for v in (which.zero, which.one) if math.isinf(v)]
    report = check_semiring(which, np.array(carrier))
    assert report.ok, report.explain()


@given(st.lists(st.integers(0, 255), min_size=1, max_size=8))
@settings(max_examples=30, deadline=None)
def test_boolean_passes_on_any_bytes(values: list[int]) -> None:
    assert check_semiring(BOOLEAN, np.array(values, dtype=np.uint8)).ok


# -- functions -------------------------------------------------------------------------------


X = np.linspace(-1.0, 1.0, 16)
Y = np.arange(16, dtype=np.float64)


def test_pure_function_passes() -> None:
    report = check_function(lambda a, b: 2.0 * a + b, [X, Y], name="affine")
    assert report.ok and report.reasons == []
    assert report.kind == "function" and report.subject == "affine"
    checks = {c.name: c for c in report.checks}
    assert checks["runs without error"].checked == 9
    assert checks["repeatable outputs"].checked == 8
    assert checks["inputs unchanged"].checked == 18  # 9 calls × 2 arrays
    assert checks["read-only inputs"].checked == 3
    assert report.explain().startswith("function affine: pure\n")


@pytest.mark.parametrize("s", BUILTINS, ids=lambda s: s.name)
def test_semiring_folds_are_pure(s: Semiring) -> None:
    pages = [np.array([0, 3, 0, 255], np.uint8), np.array([1, 0, 0, 2], np.uint8)]
    if not s.boolean:
        pages = [X, Y]
    report = check_function(lambda *p: s.fold(p, [s.one, s.one]), pages, runs=2)
    assert report.ok, report.explain()


def test_global_counter_is_flagged_as_not_repeatable() -> None:
    calls = [0]

    def counter(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return a + calls[0]

    report = check_function(counter, [X])
    assert not report.ok
    assert report.reasons == [NOT_REPEATABLE]
    rep = {c.name: c for c in report.checks}["repeatable outputs"]
    assert rep.failures == 8 and rep.worst is not None
    assert rep.worst.inputs == {"call": 2, "mode": "originals"}
    assert "IMPURE: returns different results for the same inputs" in report.explain()


def test_randomness_is_flagged() -> None:
    report = check_function(lambda a: a + np.random.default_rng().random(a.shape), [X])
    assert report.reasons == [NOT_REPEATABLE]


def test_input_mutation_is_flagged_and_the_originals_restored() -> None:
    def scale_in_place(a: np.ndarray) -> float:
        a *= 2.0
        return float(a.sum())

    original = X.copy()
    x = X.copy()
    report = check_function(scale_in_place, [x])
    assert report.reasons == [MUTATES]
    checks = {c.name: c for c in report.checks}
    assert checks["inputs unchanged"].failures == 6  # 3 writable copies + 3 originals
    assert checks["read-only inputs"].failures == 3
    ro = checks["read-only inputs"].worst
    assert ro is not None and ro.rhs == "output array is read-only"
    assert checks["runs without error"].passed  # the refused writes are mutations, not errors
    np.testing.assert_array_equal(x, original)
    assert "the original inputs were changed and have been restored" in report.notes


def test_write_to_second_input_is_flagged_with_its_position() -> None:
    def zero_second(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        b[3] = 0.0
        return a + 1.0

    report = check_function(zero_second, [X, Y.copy()])
    assert report.reasons == [MUTATES]
    worst = {c.name: c for c in report.checks}["inputs unchanged"].worst
    assert worst is not None
    assert worst.inputs["input"] == 1 and worst.inputs["bytes_changed"] > 0
    assert (worst.lhs, worst.rhs) == (3.0, 0.0)


def test_out_argument_and_write_flag_tricks_are_flagged() -> None:
    def out_arg(a: np.ndarray) -> np.ndarray:
        np.add(a, 1.0, out=a)
        return a.copy()

    def reenable(a: np.ndarray) -> np.ndarray:
        a.setflags(write=True)
        a[0] = 7.0
        return a.copy()

    for fn in (out_arg, reenable):
        assert check_function(fn, [X.copy()]).reasons == [MUTATES]


def test_functions_receive_read_only_views_that_stay_read_only() -> None:
    seen: list[tuple[bool, bool]] = []
    x = np.arange(4.0)

    def record(a: np.ndarray) -> np.ndarray:
        seen.append((a.flags.writeable, a is x))
        return a * 1.0

    assert check_function(record, [x], runs=2).ok
    # per run: a writable copy, the original itself, then a read-only view
    assert seen == [(True, False), (True, True), (False, False)] * 2


def test_swallowed_write_attempt_is_still_a_mutation() -> None:
    def sneaky(a: np.ndarray) -> np.ndarray:
        with contextlib.suppress(ValueError):
            a[0] = 42.0
        return a * 1.0

    report = check_function(sneaky, [X.copy()])
    checks = {c.name: c for c in report.checks}
    assert not checks["inputs unchanged"].passed  # seen on the writable copies and originals
    assert checks["read-only inputs"].passed  # the write was refused and swallowed ...
    assert not checks["repeatable outputs"].passed  # ... so the read-only result differs
    assert report.reasons == [NOT_REPEATABLE, MUTATES]


def test_reshaping_an_input_in_place_is_a_mutation() -> None:
    def reshape(a: np.ndarray) -> float:
        a.shape = (4, 4)
        return float(a.sum())

    x = X.copy()
    report = check_function(reshape, [x])
    assert report.reasons == [MUTATES]
    assert x.shape == (16,)  # put back
    assert "the original inputs were changed and have been restored" in report.notes


def test_errors_are_reported_not_raised() -> None:
    def always(a: np.ndarray) -> None:
        raise RuntimeError("no")

    report = check_function(always, [X])
    assert report.reasons == [RAISES]  # the same error every time: repeatable
    worst = {c.name: c for c in report.checks}["runs without error"].worst
    assert worst is not None and worst.rhs == "RuntimeError: no"

    calls = [0]

    def sometimes(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] % 2 == 0:
            raise RuntimeError("even call")
        return a

    assert check_function(sometimes, [X]).reasons == [RAISES, NOT_REPEATABLE]


def test_output_comparison_is_by_dtype_shape_and_bytes_nan_aware() -> None:
    calls = [0]

    def nan_sign(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return np.array([np.nan if calls[0] % 2 else -np.nan, 1.0])

    assert check_function(nan_sign, [X]).ok  # NaN equals NaN whatever its sign bit

    def flips_dtype(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return a.astype(np.float32 if calls[0] % 2 else np.float64)

    assert check_function(flips_dtype, [X]).reasons == [NOT_REPEATABLE]

    def flips_shape(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        return a.reshape(4, 4) if calls[0] % 2 else a.copy()

    assert check_function(flips_shape, [X]).reasons == [NOT_REPEATABLE]

    def tuple_out(a: np.ndarray) -> tuple[np.ndarray, float]:
        return a[:2].copy(), float("nan")

    assert check_function(tuple_out, [X]).ok
    assert check_function(lambda a: a, [X]).ok  # returning the input itself is not a write


def test_returned_buffer_changed_by_a_later_call_is_caught() -> None:
    buf = np.zeros(16)
    calls = [0]

    def reuse(a: np.ndarray) -> np.ndarray:
        calls[0] += 1
        buf[:] = a + calls[0]  # the result of one call is overwritten by the next
        return buf

    assert check_function(reuse, [X]).reasons == [NOT_REPEATABLE]


def test_scalar_inputs_pass_through() -> None:
    report = check_function(lambda a, lo, hi: np.clip(a, lo, hi), [X, -0.5, (0.5)])
    assert report.ok
    assert {c.name: c for c in report.checks}["inputs unchanged"].checked == 9


def test_function_argument_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="is not callable"):
        check_function(3, [X])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="runs must be a positive int, not 0"):
        check_function(np.sum, [X], runs=0)
    with pytest.raises(InvalidArgumentError, match="input 1 is a list"):
        check_function(np.add, [X, [1.0]])
    with pytest.raises(InvalidArgumentError, match="input 0 has object dtype"):
        check_function(np.sum, [np.array([1, "a"], dtype=object)])


@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=32),
    data=st.data(),
)
@settings(max_examples=60, deadline=None)
def test_any_byte_written_is_seen_and_pure_maps_pass_on_any_values(
    values: list[float], data: st.DataObject
) -> None:
    x = np.array(values)
    assert check_function(np.negative, [x], runs=2).ok  # NaN outputs compare equal
    k = data.draw(st.integers(0, x.nbytes - 1))

    def flip_one_byte(a: np.ndarray) -> np.ndarray:
        a.view(np.uint8)[k] ^= 1
        return np.zeros(1)

    before = x.tobytes()
    report = check_function(flip_one_byte, [x], runs=2)
    assert report.reasons == [MUTATES]
    assert {c.name: c for c in report.checks}["inputs unchanged"].failures == 4
    assert x.tobytes() == before  # the original was put back


@pytest.mark.parametrize("s", BUILTINS, ids=lambda s: s.name)
def test_generated_samples_cover_every_edge_combination_and_stay_in_the_carrier(
    s: Semiring,
) -> None:
    for dt in s.dtypes:
        edges = purity_laws._edge_values(s, np.dtype(dt))
        n = 2 * edges.size**3
        a, b, c = purity_laws._generated(s, np.dtype(dt), n, np.random.default_rng(0))
        assert a.dtype == b.dtype == c.dtype == np.dtype(dt) and a.size == n
        half = n // 2
        combos = {(x.tobytes(), y.tobytes(), z.tobytes()) for x, y, z in zip(
            a[:half], b[:half], c[:half], strict=True)}  # fmt: skip
        assert len(combos) == edges.size**3
        if np.dtype(dt).kind == "f":
            everything = np.concatenate([a, b, c])
            assert not np.isnan(everything).any()
            infinities = set(everything[np.isinf(everything)].tolist())
            assert infinities == {v for v in (s.zero, s.one) if math.isinf(v)}
            finite = np.abs(everything[np.isfinite(everything)])
            assert finite.max() <= purity_laws.MAGNITUDE[dt] * (1 + 1e-6)
