"""Side-effect checks on recompute functions: repeatable outputs, inputs never written
(see :mod:`mmsb.purity`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmsb.errors import InvalidArgumentError
from mmsb.purity.report import Arr, Example, LawResult, PurityReport

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
