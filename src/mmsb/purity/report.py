"""What a purity check returns: one :class:`LawResult` per law or check, gathered in a
:class:`PurityReport`, with the worst failing element as an :class:`Example`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

Arr = npt.NDArray[Any]


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
