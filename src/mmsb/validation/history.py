"""The validation history: one JSON line per run, and regression flags between runs.

Each run of ``mmsb validate`` appends ``{"timestamp": ..., "results": <report JSON>}`` to
``validate.jsonl`` in the history directory. Before that, it is compared with the newest
earlier entry of the same size on a machine with the same number of CPUs: every figure whose
better direction is known (declared in the registry or implied by its floor and goal checks)
and that got worse by more than 20% is flagged, e.g. ``⚠ #5 single_deltas_per_s 9.1M → 6.8M
(−25%)``. Targets whose parameters changed between the runs are not compared. A line that is
not a readable entry (truncated by a crash, edited by hand) is skipped with a warning.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from typing import Any, TypeGuard

from mmsb.validation.runner import ValidationReport
from mmsb.validation.targets import TargetSpec, format_figure, load_targets

HISTORY_FILE = "validate.jsonl"
THRESHOLD = 0.20  # a change for the worse by more than this fraction is flagged


def history_path(directory: str | os.PathLike[str]) -> str:
    return os.path.join(os.fspath(directory), HISTORY_FILE)


def append_history(report: ValidationReport, directory: str | os.PathLike[str]) -> str:
    """Append one JSON line (timestamp + results) to the history file; return its path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    path = history_path(directory)
    entry: dict[str, Any] = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": report.to_json(),
    }
    line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n"
    # one write of one line with O_APPEND: concurrent runs never interleave within a line
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def _entry_problem(entry: Any) -> str | None:
    """Why ``entry`` is not a usable history entry (None: it is)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("results"), dict):
        return "not a validation history entry"
    results = entry["results"]
    if not isinstance(results.get("size"), str) or not isinstance(results.get("targets"), list):
        return "no size or no target list"
    for t in results["targets"]:
        if not isinstance(t, dict) or not isinstance(t.get("id"), int):
            return "a target without an id"
        if not isinstance(t.get("figures"), dict):
            return f"target #{t['id']} has no figures"
    return None


def read_history(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The readable entries of a history file, oldest first, and one warning per line
    skipped. A missing file has no entries."""
    entries: list[dict[str, Any]] = []
    warnings: list[str] = []
    try:
        with open(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except FileNotFoundError:
        return entries, warnings
    for n, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            why = f"unreadable ({type(exc).__name__})"
        else:
            problem = _entry_problem(entry)
            if problem is None:
                entries.append(entry)
                continue
            why = problem
        warnings.append(f"history {os.fspath(path)} line {n}: {why}; skipped")
    return entries, warnings


def previous_entry(
    entries: list[dict[str, Any]], size: str, cpus: int | None
) -> dict[str, Any] | None:
    """The newest entry of ``size`` from a machine with ``cpus`` CPUs."""
    for entry in reversed(entries):
        results = entry["results"]
        machine = results.get("machine")
        entry_cpus = machine.get("cpus") if isinstance(machine, dict) else None
        if results["size"] == size and entry_cpus == cpus:
            found: dict[str, Any] = entry
            return found
    return None


def _comparable(x: Any) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _same_parameters(a: Any, b: dict[str, Any]) -> bool:
    """Equal parameters, the seed aside (JSON-normalised: tuples read back as lists)."""
    if not isinstance(a, dict):
        return False

    def plain(d: dict[str, Any]) -> Any:
        return json.loads(json.dumps({k: v for k, v in d.items() if k != "seed"}))

    return bool(plain(a) == plain(b))


def format_regression(flag: dict[str, Any]) -> str:
    pct = float(flag["change_pct"])
    sign = "+" if pct > 0 else "−"
    size = f"{abs(pct):.0f}" if abs(pct) >= 21 else f"{abs(pct):.1f}"  # 20.4% is not "20%"
    return (
        f"⚠ #{flag['id']} {flag['figure']} {format_figure(flag['figure'], flag['previous'])} → "
        f"{format_figure(flag['figure'], flag['current'])} ({sign}{size}%)"
    )


def regressions(
    report: ValidationReport, previous: dict[str, Any], specs: list[TargetSpec]
) -> list[dict[str, Any]]:
    """Every figure of ``report`` worse than in ``previous`` by more than 20%, for the
    targets both ran with the same parameters."""
    by_id = {s.id: s for s in specs}
    before = {t["id"]: t for t in previous["results"]["targets"]}
    flags: list[dict[str, Any]] = []
    for result in report.results:
        old, spec = before.get(result.id), by_id.get(result.id)
        if old is None or spec is None or result.error is not None:
            continue
        if not _same_parameters(old.get("parameters"), result.parameters):
            continue
        for figure, way in spec.directed_figures().items():
            was, now = old["figures"].get(figure), result.figures.get(figure)
            if not (_comparable(was) and _comparable(now)) or was <= 0 or now < 0:
                continue  # no relative change from zero (or from a negative figure)
            change = (now - was) / was
            worse = change < -THRESHOLD if way == "higher" else change > THRESHOLD
            if worse:
                flag: dict[str, Any] = {
                    "id": result.id,
                    "key": result.key,
                    "figure": figure,
                    "better": way,
                    "previous": was,
                    "current": now,
                    "change_pct": round(change * 100, 1),
                }
                flag["text"] = format_regression(flag)
                flags.append(flag)
    return flags


def compare_with_history(
    report: ValidationReport,
    directory: str | os.PathLike[str],
    specs: list[TargetSpec] | None = None,
) -> list[str]:
    """Compare ``report`` with the previous comparable run in ``directory``'s history file;
    set ``report.regressions`` and ``report.compared_with``; return warnings about lines
    skipped. Nothing is written."""
    entries, warnings = read_history(history_path(directory))
    cpus = report.to_json()["machine"]["cpus"]
    previous = previous_entry(entries, report.size, cpus)
    if previous is None:
        report.regressions, report.compared_with = [], None
        return warnings
    report.regressions = regressions(report, previous, load_targets() if specs is None else specs)
    stamp = previous.get("timestamp")
    report.compared_with = stamp if isinstance(stamp, str) else "an entry without a timestamp"
    return warnings
