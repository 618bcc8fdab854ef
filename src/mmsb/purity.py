"""Purity checks: the semiring laws on samples, and side-effect checks on recompute functions.

Propagation relies on two promises. A :class:`~mmsb.semiring.Semiring` must really be a
semiring, or folding parents in a different order (or regrouping them) changes a child's
bytes. A recompute function must be pure: the same inputs give the same bytes, and the inputs
(read-only arrays holding the parents' pages) are never written. This module checks both on samples.
A check can show a law broken or a function impure; passing is evidence, not proof.

Semiring laws (each a :class:`LawResult`)
    ⊕ associative, ⊕ commutative, ⊗ associative, zero is the ⊕ identity (left and right),
    one is the ⊗ identity (left and right), ⊗ distributes over ⊕ (left and right), zero
    annihilates ⊗ (left and right). ⊗ need not commute.

Equality and tolerance
    Laws built only from min, max, or, and (and every law over bool or integer dtypes) are
    compared exactly: ``lhs == rhs`` element-wise, so ``-0.0`` equals ``0.0``. Laws that use
    any other operation (``+``, ``*``, a user callable) on floats allow rounding:
    ``|lhs - rhs| <= atol + rtol * scale``, where ``scale`` is the largest finite magnitude
    among the operands and every intermediate result of both sides. Floating-point addition is
    not associative: ``(1e16 + -1e16) + 1`` is 1 but ``1e16 + (-1e16 + 1)`` is 0, so the error
    is proportional to the terms, not to the (possibly cancelled) result. For the three-term
    laws the rounding error is at most about ``2.5 * eps * scale``; the default ``rtol`` is
    ``16 * eps`` of the dtype (float64: 3.6e-15, float32: 1.9e-6), and the default ``atol`` is
    the dtype's smallest normal number, which absorbs results that underflow. Where either side
    is infinite the two must be equal exactly.

NaN
    Generated samples never contain NaN. In samples a caller passes, NaN equals NaN at the same
    position (and only there): a law holds on an element where both sides are NaN.

Generated samples
    ``samples=N`` builds N element triples ``(a, b, c)`` per dtype, evaluated as three arrays.
    About half come from a set of 19 to 21 float edge values (every ordered combination once
    N >= 2 * count**3, under 20,000 for the built-ins; a random subset below): the semiring's
    zero and one, ±0, ±1, values where rounding bites (0.1, 0.2, 0.3, 1/3,
    1 ± eps, 2**(mantissa bits + 1) and its neighbours), and the largest and smallest
    magnitudes used. The rest are random: log-uniform magnitudes, values near 1, and values
    near 2**(mantissa bits + 1). Magnitudes are bounded (float64: 1e-100 to 1e100, float32:
    1e-12 to 1e12) so that no product of three samples overflows. Infinities are generated
    only where they are the semiring's zero or one, because those are the only infinities in
    its carrier: MIN_PLUS gets +inf, MAX_PLUS -inf, MAX_MIN both, SUM_PRODUCT none (``0 * inf``
    is NaN: ordinary arithmetic is a semiring only over finite numbers).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidArgumentError
from mmsb.semiring import Semiring

ADD_ASSOCIATIVE = "⊕ associative"
ADD_COMMUTATIVE = "⊕ commutative"
MUL_ASSOCIATIVE = "⊗ associative"
ADD_IDENTITY_LEFT = "zero is the left ⊕ identity"
ADD_IDENTITY_RIGHT = "zero is the right ⊕ identity"
MUL_IDENTITY_LEFT = "one is the left ⊗ identity"
MUL_IDENTITY_RIGHT = "one is the right ⊗ identity"
DISTRIBUTIVE_LEFT = "⊗ distributes over ⊕ (left)"
DISTRIBUTIVE_RIGHT = "⊗ distributes over ⊕ (right)"
ANNIHILATION_LEFT = "zero annihilates ⊗ (left)"
ANNIHILATION_RIGHT = "zero annihilates ⊗ (right)"

# Operations that never round: a law built only from these is compared exactly.
EXACT_OPS: tuple[Any, ...] = (
    np.minimum,
    np.maximum,
    np.fmin,
    np.fmax,
    np.logical_or,
    np.logical_and,
    np.bitwise_or,
    np.bitwise_and,
)
MAX_USER_TRIPLES = 32_768  # triples drawn from caller samples when all combinations are more
RTOL_EPS = 16  # default rtol in units of the dtype's machine epsilon
MAGNITUDE = {"float64": 1e100, "float32": 1e12, "float16": 1e1}


@dataclass(frozen=True)
class Example:
    """One failing element (the worst one): the operands, both sides, and the error."""

    inputs: dict[str, Any]
    lhs: Any
    rhs: Any
    error: float | None = None  # |lhs - rhs| where it is a number
    allowed: float | None = None  # the tolerance at this element (0: exact)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.inputs.items())
        text = f"{args}: {self.lhs!r} vs {self.rhs!r}"
        if self.error is not None:
            text += f" (|Δ| = {self.error:.3g}"
            text += f", allowed {self.allowed:.3g})" if self.allowed else ")"
        return text


@dataclass(frozen=True)
class LawResult:
    """The outcome of one law or one purity check."""

    name: str
    passed: bool
    checked: int  # element triples (semiring laws) or calls / inputs compared (functions)
    failures: int
    worst: Example | None = None
    dtype: str = ""
    tolerance: str = ""  # "exact" or "rtol=..., atol=..." (semiring laws only)
    reason: str = ""  # what a failure means, e.g. "mutates its inputs"
    within_tolerance: int = 0  # elements whose sides differ but lie within the tolerance


@dataclass
class PurityReport:
    """All checks on one semiring or one function. ``ok`` when every check passed."""

    subject: str
    kind: str  # "semiring" or "function"
    checks: list[LawResult]
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[LawResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def reasons(self) -> list[str]:
        """The distinct reasons of the failed checks, in check order."""
        return list(dict.fromkeys(c.reason for c in self.failed if c.reason))

    def explain(self) -> str:
        """A human-readable account: the verdict, then one line per check."""
        if self.ok:
            verdict = "pure" if self.kind == "function" else "all laws hold"
        else:
            verdict = "IMPURE" if self.kind == "function" else "LAWS BROKEN"
            if self.reasons:
                verdict += ": " + "; ".join(self.reasons)
        lines = [f"{self.kind} {self.subject}: {verdict}"]
        for c in self.checks:
            where = f" [{c.dtype}]" if c.dtype else ""
            tol = f", {c.tolerance}" if c.tolerance else ""
            if c.within_tolerance:
                tol += f" ({c.within_tolerance:,} within it)"
            if c.passed:
                lines.append(f"  ✓ {c.name}{where}: {c.checked:,} checked{tol}")
            else:
                lines.append(
                    f"  ✗ {c.name}{where}: {c.failures:,} of {c.checked:,} failed{tol}"
                    + (f"; worst {c.worst.describe()}" if c.worst is not None else "")
                )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- semiring laws ---------------------------------------------------------------------------

Arr = npt.NDArray[Any]
# a law: (plus, times, a, b, c, zero, one) -> (lhs, rhs, every intermediate value)
LawFn = Callable[..., tuple[Arr, Arr, list[Arr]]]


def _add_assoc(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    ab, bc = p(a, b), p(b, c)
    lhs, rhs = p(ab, c), p(a, bc)
    return lhs, rhs, [a, b, c, ab, bc, lhs, rhs]


def _add_comm(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs, rhs = p(a, b), p(b, a)
    return lhs, rhs, [a, b, lhs, rhs]


def _mul_assoc(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    ab, bc = t(a, b), t(b, c)
    lhs, rhs = t(ab, c), t(a, bc)
    return lhs, rhs, [a, b, c, ab, bc, lhs, rhs]


def _add_id_left(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = p(z, a)
    return lhs, a, [a, lhs]


def _add_id_right(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = p(a, z)
    return lhs, a, [a, lhs]


def _mul_id_left(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = t(o, a)
    return lhs, a, [a, lhs]


def _mul_id_right(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = t(a, o)
    return lhs, a, [a, lhs]


def _dist_left(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    bc = p(b, c)
    lhs = t(a, bc)
    ab, ac = t(a, b), t(a, c)
    rhs = p(ab, ac)
    return lhs, rhs, [a, b, c, bc, ab, ac, lhs, rhs]


def _dist_right(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    ab = p(a, b)
    lhs = t(ab, c)
    ac, bc = t(a, c), t(b, c)
    rhs = p(ac, bc)
    return lhs, rhs, [a, b, c, ab, ac, bc, lhs, rhs]


def _annih_left(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = t(z, a)
    return lhs, z, [a, lhs]


def _annih_right(p: Any, t: Any, a: Arr, b: Arr, c: Arr, z: Arr, o: Arr) -> Any:
    lhs = t(a, z)
    return lhs, z, [a, lhs]


# name, function, formula (for reports), operands shown in examples, ops used ("+", "*")
LAWS: tuple[tuple[str, LawFn, str, str, str], ...] = (
    (ADD_ASSOCIATIVE, _add_assoc, "(a ⊕ b) ⊕ c = a ⊕ (b ⊕ c)", "abc", "+"),
    (ADD_COMMUTATIVE, _add_comm, "a ⊕ b = b ⊕ a", "ab", "+"),
    (MUL_ASSOCIATIVE, _mul_assoc, "(a ⊗ b) ⊗ c = a ⊗ (b ⊗ c)", "abc", "*"),
    (ADD_IDENTITY_LEFT, _add_id_left, "zero ⊕ a = a", "a", "+"),
    (ADD_IDENTITY_RIGHT, _add_id_right, "a ⊕ zero = a", "a", "+"),
    (MUL_IDENTITY_LEFT, _mul_id_left, "one ⊗ a = a", "a", "*"),
    (MUL_IDENTITY_RIGHT, _mul_id_right, "a ⊗ one = a", "a", "*"),
    (DISTRIBUTIVE_LEFT, _dist_left, "a ⊗ (b ⊕ c) = (a ⊗ b) ⊕ (a ⊗ c)", "abc", "+*"),
    (DISTRIBUTIVE_RIGHT, _dist_right, "(a ⊕ b) ⊗ c = (a ⊗ c) ⊕ (b ⊗ c)", "abc", "+*"),
    (ANNIHILATION_LEFT, _annih_left, "zero ⊗ a = zero", "a", "*"),
    (ANNIHILATION_RIGHT, _annih_right, "a ⊗ zero = zero", "a", "*"),
)
LAW_NAMES: tuple[str, ...] = tuple(law[0] for law in LAWS)


def check_semiring(
    semiring: Semiring,
    samples: int | Sequence[npt.ArrayLike] | npt.NDArray[Any] = 10_000,
    *,
    dtype: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
) -> PurityReport:
    """Check the eleven semiring laws of ``semiring`` on samples.

    Parameters
    ----------
    samples
        An int: generate that many element triples per dtype (edge values included, see the
        module notes). Or a sequence of arrays of one shape (or a 1-d array of values): the
        triples are all ordered triples of its entries, or 32,768 random ones when there are
        more; laws are checked element-wise on each.
    dtype
        The dtype to check. Default: every dtype the semiring declares for generated samples,
        the samples' own dtype otherwise. It must be one the semiring accepts.
    rtol, atol
        Tolerance for laws that round (default ``16 * eps`` and the smallest normal number
        of the dtype); ignored for exact laws.
    seed
        Seeds sample generation and the choice of triples: the same call gives the same report.
    """
    rng = np.random.default_rng(seed)
    if isinstance(samples, bool):
        raise InvalidArgumentError("samples must be an int or a sequence of arrays, not a bool")
    if isinstance(samples, (int, np.integer)):
        n = int(samples)
        if n < 1:
            raise InvalidArgumentError(f"samples must be at least 1, not {n}")
        dtypes = list(semiring.dtypes) if dtype is None else [np.dtype(dtype).name]
        for dt in dtypes:
            semiring.check_dtype(dt)
            _constant(semiring, dt, semiring.zero, "zero")
            _constant(semiring, dt, semiring.one, "one")
        triples = [(dt, *_generated(semiring, np.dtype(dt), n, rng)) for dt in dtypes]
        notes = [f"{n:,} generated triples per dtype"]
    else:
        dt, a, b, c = _from_samples(samples, dtype, rng)
        semiring.check_dtype(dt)
        triples = [(dt, a, b, c)]
        notes = [f"{a.shape[0]:,} triples of caller samples, {a.size:,} elements each law"]
    checks = []
    for dt, a, b, c in triples:
        z = np.full(a.shape, _constant(semiring, dt, semiring.zero, "zero"), dtype=dt)
        o = np.full(a.shape, _constant(semiring, dt, semiring.one, "one"), dtype=dt)
        checks += [_check_law(semiring, law, a, b, c, z, o, rtol, atol) for law in LAWS]
    return PurityReport(semiring.name, "semiring", checks, notes)


def _constant(semiring: Semiring, dt: str, value: Any, what: str) -> Any:
    """``value`` as an element of ``dt``; a zero or one the dtype cannot hold is an error."""
    try:
        with np.errstate(all="ignore"):
            got = np.asarray(value).astype(dt)
            if semiring.boolean or got == value or (np.isnan(got) and np.isnan(value)):
                return got
    except (TypeError, ValueError, OverflowError):
        pass
    raise InvalidArgumentError(f"semiring {semiring.name}: {what} {value!r} cannot be held by {dt}")


def _exact(semiring: Semiring, dt: str, ops: str) -> bool:
    if np.dtype(dt).kind in "biu" or semiring.boolean:
        return True
    used = ([semiring.add] if "+" in ops else []) + ([semiring.mul] if "*" in ops else [])
    return all(any(op is e for e in EXACT_OPS) for op in used)


def _canon(semiring: Semiring, x: Any, shape: tuple[int, ...]) -> Arr:
    arr = np.broadcast_to(np.asarray(x), shape)
    return arr != 0 if semiring.boolean else arr


def _check_law(
    semiring: Semiring,
    law: tuple[str, LawFn, str, str, str],
    a: Arr,
    b: Arr,
    c: Arr,
    z: Arr,
    o: Arr,
    rtol: float | None,
    atol: float | None,
) -> LawResult:
    name, fn, formula, shown, ops = law
    dt = a.dtype.name
    exact = _exact(semiring, dt, ops)
    r_tol = a_tol = 0.0
    if exact:
        tolerance = "exact"
    else:
        r_tol = RTOL_EPS * float(np.finfo(dt).eps) if rtol is None else float(rtol)
        a_tol = float(np.finfo(dt).smallest_normal) if atol is None else float(atol)
        tolerance = f"rtol={r_tol:.3g}, atol={a_tol:.3g}"
    with np.errstate(all="ignore"):
        try:
            lhs, rhs, terms = fn(semiring.plus, semiring.times, a, b, c, z, o)
            lhs, rhs = _canon(semiring, lhs, a.shape), _canon(semiring, rhs, a.shape)
        except Exception as exc:  # an operation that fails breaks the law; report, don't crash
            return LawResult(
                name, False, a.size, a.size, None, dt, tolerance, f"{formula} raised {exc!r}"
            )
        same = (lhs == rhs) | (_isnan(lhs) & _isnan(rhs))
        err = allowed = None
        within = 0
        if not exact:
            finite = np.isfinite(lhs) & np.isfinite(rhs)
            err = np.abs(lhs.astype(np.float64) - rhs.astype(np.float64))
            scale = np.zeros(a.shape, dtype=np.float64)
            for term in terms:
                mag = np.abs(np.broadcast_to(term, a.shape).astype(np.float64))
                scale = np.maximum(scale, np.where(np.isfinite(mag), mag, 0.0))
            allowed = a_tol + r_tol * scale
            rounded = ~same & finite & (err <= allowed)
            within = int(np.count_nonzero(rounded))
            same |= rounded
        bad = ~same
        failures = int(np.count_nonzero(bad))
        worst = None
        if failures:
            if err is not None and allowed is not None:
                ratio = np.where(bad, np.nan_to_num(err / allowed, nan=np.inf), -1.0)
                i = int(np.argmax(ratio))
            else:
                i = int(np.argmax(bad))
            operands = {"a": a, "b": b, "c": c}
            worst = Example(
                {k: operands[k].flat[i].item() for k in shown},
                lhs.flat[i].item(),
                rhs.flat[i].item(),
                None if err is None else float(err.flat[i]),
                0.0 if allowed is None else float(allowed.flat[i]),
            )
    reason = f"{formula} fails" if failures else ""
    return LawResult(name, not failures, a.size, failures, worst, dt, tolerance, reason, within)


def _isnan(x: Arr) -> Arr:
    return np.isnan(x) if x.dtype.kind in "fc" else np.zeros(x.shape, dtype=bool)


def _from_samples(
    samples: Sequence[npt.ArrayLike] | npt.NDArray[Any], dtype: Any, rng: np.random.Generator
) -> tuple[str, Arr, Arr, Arr]:
    try:
        pool = np.asarray(samples) if dtype is None else np.asarray(samples, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError(f"samples must be arrays of one shape: {exc}") from None
    if pool.ndim == 0 or pool.shape[0] == 0:
        raise InvalidArgumentError("samples must hold at least one array (or value)")
    if pool.dtype.kind not in "biuf":
        raise InvalidArgumentError(f"samples of dtype {pool.dtype} cannot be checked")
    m = pool.shape[0]
    if m**3 <= MAX_USER_TRIPLES:
        idx = np.array(list(itertools.product(range(m), repeat=3)), dtype=np.int64).T
    else:
        idx = rng.integers(0, m, size=(3, MAX_USER_TRIPLES))
    return pool.dtype.name, pool[idx[0]], pool[idx[1]], pool[idx[2]]


# -- sample generation -----------------------------------------------------------------------


def _edge_values(semiring: Semiring, dt: np.dtype[Any]) -> Arr:
    zero, one = semiring.zero, semiring.one
    if dt.kind == "b" or semiring.boolean:
        base = [0, 1] if dt.kind == "b" else [0, 1, 2, 0x80, 0xFF]
        return np.array(base, dtype=dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        vals = [0, 1, 2, info.max, info.max - 1, info.min, zero, one]
        if dt.kind == "i":
            vals += [-1, -2, info.min + 1]
        return _distinct(np.array(vals, dtype=object).astype(dt))
    if dt.kind != "f":
        raise InvalidArgumentError(f"cannot generate samples of dtype {dt}; pass samples")
    finfo = np.finfo(dt)
    eps, big = float(finfo.eps), MAGNITUDE.get(dt.name, 1.0)
    p = 2.0 ** (finfo.nmant + 1)  # beyond this not every integer is representable
    vals = [0.0, -0.0, 1.0, -1.0, 2.0, 0.1, 0.2, 0.3, 1 / 3, 2 / 3, 1 + eps, 1 - eps / 2]
    vals += [p, p + 1, p + 2, -p, -(p + 1), big, -big, 1 / big, -1 / big]
    vals += [zero, one]  # the only infinities generated: those in the carrier
    return _distinct(np.array(vals, dtype=np.float64).astype(dt))


def _distinct(values: Arr) -> Arr:
    """The values with bit-identical duplicates removed (0.0 and -0.0 both stay), in order."""
    as_int = values.view(f"u{values.dtype.itemsize}")
    _, first = np.unique(as_int, return_index=True)
    return values[np.sort(first)]


def _random_values(dt: np.dtype[Any], n: int, rng: np.random.Generator) -> Arr:
    if dt.kind == "b":
        return rng.integers(0, 2, size=n).astype(dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(int(info.min), int(info.max), size=n, endpoint=True, dtype=dt)
    finfo = np.finfo(dt)
    big = MAGNITUDE.get(dt.name, 1.0)
    p = 2.0 ** (finfo.nmant + 1)
    sign = rng.choice([-1.0, 1.0], size=n)
    kind = rng.integers(0, 3, size=n)
    log_mag = 10.0 ** rng.uniform(-np.log10(big), np.log10(big), size=n)
    near_one = rng.uniform(-10.0, 10.0, size=n)
    near_p = p + rng.integers(-8, 9, size=n)
    vals = np.where(kind == 0, sign * log_mag, np.where(kind == 1, near_one, sign * near_p))
    return vals.astype(dt)


def _generated(
    semiring: Semiring, dt: np.dtype[Any], n: int, rng: np.random.Generator
) -> tuple[Arr, Arr, Arr]:
    """n triples: about half from every combination of the edge values, the rest random with
    edge values mixed in."""
    edges = _edge_values(semiring, dt)
    e = edges.size
    n_edge = min(n // 2, e**3)
    combos = rng.choice(e**3, size=n_edge, replace=False)
    out = []
    for div in (e * e, e, 1):
        part = edges[(combos // div) % e]
        rand = _random_values(dt, n - n_edge, rng)
        mixed = rng.random(n - n_edge) < 0.2
        rand[mixed] = edges[rng.integers(0, e, size=int(mixed.sum()))]
        out.append(np.concatenate([part, rand]))
    return out[0], out[1], out[2]


# -- functions -------------------------------------------------------------------------------

NOT_REPEATABLE = "returns different results for the same inputs"
MUTATES = "mutates its inputs"
RAISES = "raises an exception"
MODES = ("writable copies", "originals", "read-only views")
_SCALARS = (int, float, complex, bool, str, bytes, type(None), np.generic)


def check_function(
    fn: Callable[..., Any], inputs: Sequence[Any], runs: int = 3, *, name: str | None = None
) -> PurityReport:
    """Check that ``fn(*inputs)`` is pure: repeatable, and never writes its inputs.

    ``fn`` is called ``runs`` times in each of three ways: on fresh writable copies of the
    array inputs, on the original arrays, and on read-only views (``setflags(write=False)``,
    as propagation passes parents). Checks:

    * runs without error: no call raises (a write refused by a read-only view is counted as a
      mutation instead);
    * repeatable outputs: every call returns the same result as the first: same type, and for
      arrays the same dtype, shape and bytes (NaN equals NaN); a call that raises must raise
      the same error every time;
    * inputs unchanged: after each call, every array input has its original dtype, shape and
      bytes (an original that ``fn`` changed is put back where possible, and a note says so);
    * read-only inputs: no call tries to write a read-only view (numpy's ``ValueError``) or
      turns its write flag back on.

    Inputs must be numpy arrays (not of object dtype) or immutable scalars. Side effects that
    change neither an output nor an input (a counter nobody reads) cannot be seen by any
    sampling check.
    """
    if not callable(fn):
        raise InvalidArgumentError(f"{fn!r} is not callable")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise InvalidArgumentError(f"runs must be a positive int, not {runs!r}")
    originals = list(inputs)
    for i, x in enumerate(originals):
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise InvalidArgumentError(f"input {i} has object dtype; its bytes mean nothing")
        elif not _immutable(x):
            raise InvalidArgumentError(
                f"input {i} is a {type(x).__name__}; pass numpy arrays or immutable scalars"
            )
    snaps = [x.copy() if isinstance(x, np.ndarray) else x for x in originals]
    arrays = [i for i, x in enumerate(originals) if isinstance(x, np.ndarray)]
    t = _Tally()
    outcomes: dict[int, bool] = {}  # original input -> restored after every change
    for run in range(runs):
        for mode in MODES:
            call = run * len(MODES) + MODES.index(mode) + 1
            args = _arguments(mode, originals, snaps)
            try:
                outcome: Any = ("ok", _freeze(fn(*args)))
            except Exception as exc:
                outcome = ("raised", type(exc).__name__, str(exc))
            refused = (
                any(not args[i].flags.writeable for i in arrays)
                and outcome[0] == "raised"
                and outcome[1] == "ValueError"
                and ("read-only" in outcome[2] or "WRITEABLE" in outcome[2])
            )
            t.record(call, mode, outcome, refused)
            for i in arrays:
                changed = _changed(args[i], snaps[i])
                t.inputs_checked += 1
                if changed:
                    t.mutation(call, mode, i, args[i], snaps[i])
                    if mode == "originals":
                        outcomes[i] = outcomes.get(i, True) and _restore(args[i], snaps[i])
            if mode == "read-only views":
                t.readonly_checked += 1
            reenabled = mode == "read-only views" and any(args[i].flags.writeable for i in arrays)
            if refused or reenabled:
                t.readonly_failures += 1
                t.readonly_worst = t.readonly_worst or Example(
                    {"call": call, "mode": mode},
                    "read-only inputs",
                    outcome[-1] if refused else "write flag turned back on",
                )
    notes = [f"{runs} run(s) × {len(MODES)} ways = {runs * len(MODES)} calls"]
    if outcomes:
        lost = [i for i, ok in outcomes.items() if not ok]
        notes.append(
            f"the original inputs {lost} were changed and could not be restored"
            if lost
            else "the original inputs were changed and have been restored"
        )
    subject = name or getattr(fn, "__qualname__", None) or repr(fn)
    return PurityReport(subject, "function", t.results(), notes)


def _immutable(x: Any) -> bool:
    if isinstance(x, tuple):
        return all(_immutable(v) for v in x)
    return isinstance(x, _SCALARS)


def _arguments(mode: str, originals: list[Any], snaps: list[Any]) -> list[Any]:
    if mode == "originals":
        return list(originals)
    out: list[Any] = []
    for s in snaps:
        if not isinstance(s, np.ndarray):
            out.append(s)
            continue
        c = s.copy()
        if mode == "read-only views":
            c.setflags(write=False)  # the base too, so the view's flag cannot be turned back on
            c = c.view()
            c.setflags(write=False)
        out.append(c)
    return out


def _restore(x: Arr, snap: Arr) -> bool:
    """Put an original input back as it was; False where that is impossible."""
    try:
        if x.shape != snap.shape:
            x.shape = snap.shape
        if x.dtype != snap.dtype or not x.flags.writeable:
            return False
        np.copyto(x, snap)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def _changed(x: Any, snap: Arr) -> bool:
    return bool(x.dtype != snap.dtype or x.shape != snap.shape or x.tobytes() != snap.tobytes())


def _freeze(x: Any) -> Any:
    """A copy of an output that later calls cannot change."""
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, (list, tuple)):
        return type(x)(_freeze(v) for v in x)
    if isinstance(x, dict):
        return {k: _freeze(v) for k, v in x.items()}
    return x


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (np.ndarray, np.generic)) or isinstance(b, (np.ndarray, np.generic)):
        if type(a) is not type(b):
            return False
        x, y = np.asarray(a), np.asarray(b)
        if x.dtype != y.dtype or x.shape != y.shape:
            return False
        if x.tobytes() == y.tobytes():
            return True
        return x.dtype.kind in "fc" and bool(np.array_equal(x, y, equal_nan=True))
    if isinstance(a, (list, tuple)) and type(a) is type(b):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def _summary(outcome: Any) -> str:
    if outcome[0] == "raised":
        return f"{outcome[1]}: {outcome[2]}"
    x = outcome[1]
    if isinstance(x, np.ndarray):
        head = np.array2string(x.ravel()[:4], separator=", ", threshold=4)
        return f"{x.dtype}{list(x.shape)} {head}{'…' if x.size > 4 else ''}"
    return repr(x)


class _Tally:
    """What the calls of one check_function showed."""

    def __init__(self) -> None:
        self.calls = 0
        self.raised = 0
        self.raised_worst: Example | None = None
        self.reference: Any = None  # the first comparable outcome
        self.compared = 0
        self.differing = 0
        self.differing_worst: Example | None = None
        self.inputs_checked = 0
        self.mutated = 0
        self.mutated_worst: Example | None = None
        self.readonly_checked = 0
        self.readonly_failures = 0
        self.readonly_worst: Example | None = None

    def record(self, call: int, mode: str, outcome: Any, refused: bool) -> None:
        self.calls += 1
        if refused:
            return  # a refused write is a mutation, not an error or an output
        if outcome[0] == "raised":
            self.raised += 1
            self.raised_worst = self.raised_worst or Example(
                {"call": call, "mode": mode}, "a result", _summary(outcome)
            )
        if self.reference is None:
            self.reference = outcome
            return
        self.compared += 1
        if not _same(self.reference, outcome):
            self.differing += 1
            self.differing_worst = self.differing_worst or Example(
                {"call": call, "mode": mode}, _summary(self.reference), _summary(outcome)
            )

    def mutation(self, call: int, mode: str, i: int, x: Arr, snap: Arr) -> None:
        self.mutated += 1
        if self.mutated_worst is not None:
            return
        where: dict[str, Any] = {"call": call, "mode": mode, "input": i}
        if x.dtype == snap.dtype and x.shape == snap.shape:
            now, then = (np.frombuffer(v.tobytes(), dtype=np.uint8) for v in (x, snap))
            diff = np.flatnonzero(now != then)
            k = int(diff[0]) // x.dtype.itemsize if diff.size else 0
            where["bytes_changed"] = int(diff.size)
            self.mutated_worst = Example(where, snap.flat[k].item(), x.flat[k].item())
        else:
            self.mutated_worst = Example(
                where, f"{snap.dtype}{list(snap.shape)}", f"{x.dtype}{list(x.shape)}"
            )

    def results(self) -> list[LawResult]:
        return [
            LawResult(
                "runs without error", not self.raised, self.calls, self.raised,
                self.raised_worst, reason=RAISES,
            ),
            LawResult(
                "repeatable outputs", not self.differing, self.compared, self.differing,
                self.differing_worst, reason=NOT_REPEATABLE,
            ),
            LawResult(
                "inputs unchanged", not self.mutated, self.inputs_checked, self.mutated,
                self.mutated_worst, reason=MUTATES,
            ),
            LawResult(
                "read-only inputs", not self.readonly_failures, self.readonly_checked,
                self.readonly_failures, self.readonly_worst, reason=MUTATES,
            ),
        ]  # fmt: skip


__all__ = [
    "ADD_ASSOCIATIVE",
    "ADD_COMMUTATIVE",
    "ADD_IDENTITY_LEFT",
    "ADD_IDENTITY_RIGHT",
    "ANNIHILATION_LEFT",
    "ANNIHILATION_RIGHT",
    "DISTRIBUTIVE_LEFT",
    "DISTRIBUTIVE_RIGHT",
    "LAW_NAMES",
    "MUL_ASSOCIATIVE",
    "MUL_IDENTITY_LEFT",
    "MUL_IDENTITY_RIGHT",
    "MUTATES",
    "NOT_REPEATABLE",
    "RAISES",
    "Example",
    "LawResult",
    "PurityReport",
    "check_function",
    "check_semiring",
]
