"""Validation reports: one text line per target, the JSON document, and the history file.

Line format (the same for every target)::

    ✓ #1 Replay determinism [quick: 200 of 1,000 ticks]: <figures>; 4.2 s — <notes>
    Result: 2/2 PASS

A reduced run says so on every line it reduces; the JSON carries ``reduced`` per target.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from mmsb.validation.runner import TargetResult, ValidationReport

HISTORY_FILE = "validate.jsonl"


def format_line(result: TargetResult, size: str = "stated") -> str:
    mark = "✓" if result.passed else "✗"
    tag = f" [{size}: {'; '.join(result.reductions)}]" if result.reductions else ""
    line = f"{mark} #{result.id} {result.name}{tag}: {result.summary}; {result.seconds:.1f} s"
    if not result.passed and result.correct is True:
        line += " [correct; a speed floor was missed]"
    if result.notes:
        line += " — " + "; ".join(result.notes)
    return line


def format_result_line(report: ValidationReport) -> str:
    verdict = "PASS" if report.ok else "FAIL"
    return f"Result: {report.passed}/{len(report.results)} {verdict}"


def format_report(report: ValidationReport) -> list[str]:
    lines = [format_line(r, report.size) for r in report.results]
    lines.append(format_result_line(report))
    return lines


def write_json(report: ValidationReport, path: str | os.PathLike[str]) -> None:
    """Write the machine-readable results (temporary name, then rename)."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report.to_json(), f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def append_history(report: ValidationReport, directory: str | os.PathLike[str]) -> str:
    """Append one JSON line (timestamp + results) to the history file; return its path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, HISTORY_FILE)
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
