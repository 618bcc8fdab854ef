"""Target #4: purity.

Three parts, all of which must hold:

* every built-in semiring satisfies the eleven semiring laws on every dtype it declares, on
  ``samples`` generated triples each (edge values included; see :mod:`mmsb.purity`);
* every pure reference function (a fold with weights for each built-in semiring, and a few
  ordinary page transforms) passes :func:`~mmsb.purity.check_function`;
* the validator can fail: every deliberately impure function is flagged for its defect (not
  repeatable, or mutates its inputs), and every deliberately broken semiring fails exactly the
  laws it breaks. A validator that passes everything would pass this target's first two parts
  and miss this one.

The functions are checked directly with ``check_function``, which passes read-only views the
way propagation does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb import purity
from mmsb.purity import (
    ADD_ASSOCIATIVE,
    ADD_COMMUTATIVE,
    ADD_IDENTITY_LEFT,
    ADD_IDENTITY_RIGHT,
    ANNIHILATION_LEFT,
    ANNIHILATION_RIGHT,
    DISTRIBUTIVE_LEFT,
    DISTRIBUTIVE_RIGHT,
    MUL_IDENTITY_LEFT,
    MUL_IDENTITY_RIGHT,
    MUTATES,
    NOT_REPEATABLE,
)
from mmsb.semiring import BOOLEAN, BUILTINS, MAX_PLUS, MIN_PLUS, SUM_PRODUCT, Semiring
from mmsb.validation.runner import Context, Outcome

PAGE = 256  # elements per reference page

Fn = Callable[..., Any]


def _fold(semiring: Semiring, weights: list[Any]) -> Fn:
    def fold(*parents: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return semiring.fold(parents, weights)

    fold.__qualname__ = f"{semiring.name} fold"
    return fold


def pure_functions(seed: int) -> list[tuple[str, Fn, list[Any]]]:
    """(name, function, inputs) for functions that must pass."""
    rng = np.random.default_rng([seed, 4])
    f = [rng.uniform(-100.0, 100.0, PAGE) for _ in range(3)]
    u = [rng.integers(0, 256, PAGE, dtype=np.uint8) for _ in range(3)]
    u[0][::3] = 0  # BOOLEAN reads any non-zero byte as true; make falses common too
    out: list[tuple[str, Fn, list[Any]]] = []
    for s in BUILTINS:
        if s is BOOLEAN:
            out.append((f"{s.name} fold", _fold(s, [True, True, False]), list(u)))
        else:
            out.append((f"{s.name} fold", _fold(s, [0.5, 1.0, 2.0]), list(f)))
    out += [
        ("affine", lambda a, b: 2.5 * a + b, f[:2]),
        ("normalise", lambda a: a / np.abs(a).sum(), f[:1]),
        ("sorted copy", np.sort, f[:1]),
        ("running total", np.cumsum, f[:1]),
        ("clip", lambda a, lo, hi: np.clip(a, lo, hi), [f[0], -10.0, 10.0]),
        ("byte xor", np.bitwise_xor, u[:2]),
        ("mean of parents", lambda *p: np.mean(np.stack(p), axis=0), f),
    ]
    return out


def impure_functions(seed: int) -> list[tuple[str, Fn, list[Any], str]]:
    """(name, function, inputs, the reason it must be flagged for)."""
    rng = np.random.default_rng([seed, 5])
    a, b = rng.uniform(-100.0, 100.0, PAGE), rng.uniform(-100.0, 100.0, PAGE)
    calls = [0]
    total = np.zeros(PAGE)

    def global_counter(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        calls[0] += 1
        return x + calls[0]

    def unseeded_noise(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return x + np.random.default_rng().random(x.shape)

    def clock(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return x + float(time.perf_counter_ns())

    def running_state(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        total[:] += x  # module-level accumulator: the result depends on earlier calls
        return total.copy()

    def in_place(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        x[0] += 1.0
        return x.copy()

    def out_argument(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        np.multiply(x, 2.0, out=x)
        return x.copy()

    def writes_second_parent(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[Any]:
        y[:] = 0.0
        return x + 1.0

    def turns_write_flag_on(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        x.setflags(write=True)
        x[-1] = 0.0
        return x.copy()

    return [
        ("global counter", global_counter, [a], NOT_REPEATABLE),
        ("unseeded randomness", unseeded_noise, [a], NOT_REPEATABLE),
        ("clock", clock, [a], NOT_REPEATABLE),
        ("accumulator", running_state, [a], NOT_REPEATABLE),
        ("in-place write", in_place, [a], MUTATES),
        ("out= argument", out_argument, [a], MUTATES),
        ("writes its second input", writes_second_parent, [a, b], MUTATES),
        ("turns the write flag on", turns_write_flag_on, [a], MUTATES),
    ]


def broken_semirings() -> list[tuple[Semiring, set[str]]]:
    """Semirings with one defect each, and the laws that defect breaks (and no others)."""
    return [
        (
            dataclasses.replace(
                SUM_PRODUCT, name="SUM_PRODUCT with ⊕ = −", add=np.subtract, code=-1
            ),
            {ADD_ASSOCIATIVE, ADD_COMMUTATIVE, ADD_IDENTITY_LEFT},
        ),
        (
            dataclasses.replace(MAX_PLUS, name="MAX_PLUS with zero 0", zero=0.0, code=-1),
            {ADD_IDENTITY_LEFT, ADD_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT},
        ),
        (
            dataclasses.replace(MIN_PLUS, name="MIN_PLUS with ⊗ = ×", mul=np.multiply, code=-1),
            {
                MUL_IDENTITY_LEFT,
                MUL_IDENTITY_RIGHT,
                DISTRIBUTIVE_LEFT,
                DISTRIBUTIVE_RIGHT,
                ANNIHILATION_LEFT,
                ANNIHILATION_RIGHT,
            },
        ),
        (
            dataclasses.replace(BOOLEAN, name="BOOLEAN with ⊗ = or", mul=np.logical_or, code=-1),
            {MUL_IDENTITY_LEFT, MUL_IDENTITY_RIGHT, ANNIHILATION_LEFT, ANNIHILATION_RIGHT},
        ),
    ]


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    samples, runs, seed = int(params["samples"]), int(params["runs"]), int(params["seed"])
    t0 = time.perf_counter()
    semirings = []
    for i, s in enumerate(BUILTINS):
        report = purity.check_semiring(s, samples, seed=seed)
        semirings.append(report)
        ctx.progress("semiring laws", i + 1, len(BUILTINS))
    t1 = time.perf_counter()
    laws = [c for r in semirings for c in r.checks]
    broken: list[dict[str, Any]] = []
    for s, expected in broken_semirings():
        report = purity.check_semiring(s, samples, seed=seed)
        per_dtype = {
            dt: {c.name for c in report.failed if c.dtype == dt} for dt in s.dtypes
        }  # the same defect must show on every dtype
        broken.append(
            {
                "semiring": s.name,
                "caught": all(got == expected for got in per_dtype.values()),
                "failed_laws": sorted(set().union(*per_dtype.values())),
                "expected": sorted(expected),
            }
        )
    t2 = time.perf_counter()
    pure: list[dict[str, Any]] = []
    for name, fn, inputs in pure_functions(seed):
        report = purity.check_function(fn, inputs, runs, name=name)
        pure.append({"function": name, "pure": report.ok, "reasons": report.reasons})
    impure: list[dict[str, Any]] = []
    for name, fn, inputs, reason in impure_functions(seed):
        report = purity.check_function(fn, inputs, runs, name=name)
        impure.append(
            {
                "function": name,
                "flagged": reason in report.reasons,
                "expected": reason,
                "reasons": report.reasons,
            }
        )
    t3 = time.perf_counter()

    law_failures = sum(c.failures for c in laws)
    laws_broken = [f"{r.subject} {c.name} [{c.dtype}]" for r in semirings for c in r.failed]
    n_pure = sum(p["pure"] for p in pure)
    n_flagged = sum(p["flagged"] for p in impure)
    n_caught = sum(b["caught"] for b in broken)
    passed = (
        not laws_broken
        and n_pure == len(pure)
        and n_flagged == len(impure)
        and n_caught == len(broken)
    )
    figures: dict[str, Any] = {
        "semirings": [s.name for s in BUILTINS],
        "laws_checked": len(laws),
        "samples": samples,
        "comparisons": sum(c.checked for c in laws),
        "law_failures": law_failures,
        "laws_broken": laws_broken,
        "within_tolerance": sum(c.within_tolerance for c in laws),
        "pure_passed": n_pure,
        "pure_functions": len(pure),
        "impure_flagged": n_flagged,
        "impure_functions": len(impure),
        "broken_caught": n_caught,
        "broken_semirings": len(broken),
        "runs": runs,
        "functions": pure + impure,
        "broken": broken,
        "seconds_laws": round(t1 - t0, 3),
        "seconds_broken": round(t2 - t1, 3),
        "seconds_functions": round(t3 - t2, 3),
    }
    summary = (
        f"{len(laws) - len(laws_broken)}/{len(laws)} laws hold "
        f"({len(BUILTINS)} semirings × their dtypes, {samples:,} triples each, "
        f"{law_failures:,} failing elements); "
        f"{n_pure}/{len(pure)} pure functions pass; "
        f"impure functions flagged {n_flagged}/{len(impure)}; "
        f"broken semirings caught {n_caught}/{len(broken)}"
    )
    notes = [f"law broken: {name}" for name in laws_broken[:5]]
    notes += [
        f"pure function flagged: {p['function']} ({'; '.join(p['reasons'])})"
        for p in pure
        if not p["pure"]
    ]
    notes += [f"impure function missed: {p['function']}" for p in impure if not p["flagged"]]
    notes += [f"broken semiring missed: {b['semiring']}" for b in broken if not b["caught"]]
    return Outcome(passed, figures, summary, notes)
