"""The semiring laws, checked on generated or given samples (see :mod:`mmsb.purity`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidArgumentError
from mmsb.purity.report import Arr, Example, LawResult, PurityReport
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


# -- semiring laws ---------------------------------------------------------------------------

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
