"""Validation reports: one text line per target and the JSON document.

Line format (the same for every target)::

    ✓ #6 Tick latency [quick: 50 of 200 ticks]: <figures>; 4.2 s | floor p99_ms 9.1 < 16 ✓
    | goal p99_ms 9.1 ≤ 16 ✓, idle_p99_ms 0.4 ≤ 1 ✓ ★ — <notes>
    Goals met ★: 1/2
    Result: 2/2 PASS

(the first two are one line). ✓/✗ says whether the runner's correctness checks and every
floor check passed, ★ that every goal check passed as well; the floor and goal parts show
each check's figure, its bound and its own ✓/✗ (or the size it is left to), and a line
carries [correct; a speed floor was missed] where only a floor failed. A reduced run says so
on every line it reduces, and ``mmsb validate --quick`` adds ``[quick run: not comparable
with a full run]`` after the time of every line; the JSON carries ``reduced`` per target and
``comparable_with_full_run`` for the run. The history file and the
regression flags are :mod:`mmsb.validation.history`'s.
"""

from __future__ import annotations

import json
import os

from mmsb.validation.history import HISTORY_FILE, append_history
from mmsb.validation.runner import TargetResult, ValidationReport
from mmsb.validation.targets import CheckResult

__all__ = [
    "HISTORY_FILE",
    "append_history",
    "format_checks",
    "format_goals_line",
    "format_line",
    "format_report",
    "format_result_line",
    "write_json",
]


def format_checks(checks: list[CheckResult], kind: str, size: str) -> str:
    parts = []
    for c in checks:
        if c.kind != kind:
            continue
        if c.met is None:
            parts.append(f"{c.check.text()} (not checked at {size} size)")
        else:
            parts.append(f"{c.text()} {'✓' if c.met else '✗'}")
    return f"{kind} " + ", ".join(parts) if parts else ""


def format_line(result: TargetResult, size: str = "stated", note: str | None = None) -> str:
    """The target's line; a ``note`` (``mmsb validate --quick``: not comparable with a full
    run) follows its time, on every line, whether or not the target was reduced."""
    mark = "✓" if result.passed else "✗"
    tag = f" [{size}: {'; '.join(result.reductions)}]" if result.reductions else ""
    # the registry's goal checks decide the ★; a runner's own trailing ★ is not repeated
    summary = result.summary.removesuffix(" ★")
    line = f"{mark} #{result.id} {result.name}{tag}: {summary}; {result.seconds:.1f} s"
    if note:
        line += f" [{size} run: {note}]"
    for kind in ("floor", "goal"):
        part = format_checks(result.checks, kind, size)
        if part:
            line += " | " + part
    if result.goal_met:
        line += " ★"
    if not result.passed and result.correct is True and result.error is None:
        line += " [correct; a speed floor was missed]"
    if result.notes:
        line += " — " + "; ".join(result.notes)
    return line


def format_result_line(report: ValidationReport) -> str:
    verdict = "PASS" if report.ok else "FAIL"
    return f"Result: {report.passed}/{len(report.results)} {verdict}"


def format_goals_line(report: ValidationReport) -> str:
    return f"Goals met ★: {report.goals_met}/{len(report.results)}"


def format_report(report: ValidationReport) -> list[str]:
    """One line per target, the goals and result lines, then one line per regression."""
    lines = [format_line(r, report.size) for r in report.results]
    lines += [format_goals_line(report), format_result_line(report)]
    lines += [str(flag["text"]) for flag in report.regressions]
    return lines


def write_json(report: ValidationReport, path: str | os.PathLike[str]) -> None:
    """Write the machine-readable results (temporary name, then rename)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    doc = report.to_json()
    # a quick run's figures come from reduced sizes: they compare with other quick runs only
    doc["comparable_with_full_run"] = report.size != "quick"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
