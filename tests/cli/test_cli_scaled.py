"""A scaled ``mmsb bench`` or a ``mmsb validate --quick`` says on every figure that it is not
comparable with a full run, and its JSON says so too; a full-size run says nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

import mmsb.cli.validate as validate_cmd
from mmsb.benchmarks import compare, engine, peers
from mmsb.benchmarks.common import Result
from mmsb.cli import cli
from mmsb.validation import TargetResult, ValidationReport, format_line

NOTE = "not comparable with a full run"


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def scenarios(scale: float) -> list[tuple[str, Any]]:
        def one(progress: Any = None) -> Result:
            return Result("commit rate", 29e6 * scale, "deltas/s", {"deltas": int(1e6 * scale)},
                          {"p99_ms": 1.5})  # fmt: skip

        return [("one", one)]

    monkeypatch.setattr(engine, "scenarios", scenarios)
    monkeypatch.setattr(engine, "summarize", lambda results: {"speedup": 1.5})


def bench(*args: str) -> str:
    result = CliRunner().invoke(cli, ["bench", "--suite", "engine", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_scaled_bench_marks_every_figure(fake_engine: None, tmp_path: Path) -> None:
    text = bench("--scale", "0.2", "--json", str(tmp_path / "b.json"))
    assert "mmsb bench (scale 0.2: not comparable with a full run)" in text
    rows = [line for line in text.splitlines() if "commit rate" in line or "speedup" in line]
    assert len(rows) == 2 and all(f"scale 0.2: {NOTE}" in r for r in rows)
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["scale"] == 0.2 and doc["comparable_with_full_run"] is False
    assert doc["scale_note"] == f"scale 0.2: {NOTE}"


def test_a_full_size_bench_says_nothing(fake_engine: None, tmp_path: Path) -> None:
    text = bench("--json", str(tmp_path / "b.json"))
    assert "comparable" not in text
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["comparable_with_full_run"] is True and doc["scale_note"] is None


def test_a_scaled_comparison_marks_every_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = next(iter(peers.WORKLOADS))
    fig = SimpleNamespace(workload=key, system="SQLite", value=1e6, unit="ops/s", rate=True,
                          advantage=2.0, conditions="batch=1000")  # fmt: skip
    rep = SimpleNamespace(
        figures=[fig], seed=0, skipped={},
        sizes={"updates": 10, "pages": 2, "batches": 1, "batch": 10, "reads": 5, "durable": 1},
        goals=[SimpleNamespace(text="(a) MMSB/SQLite = 2.0 (goal ≥ 30×) ✗")],
        to_json=lambda: {"workloads": {}},
    )  # fmt: skip
    monkeypatch.setattr(compare, "run", lambda scale, progress=None: rep)
    result = CliRunner().invoke(cli, ["bench", "--compare", "--scale", "0.01",
                                      "--json", str(tmp_path / "c.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"scale 0.01: {NOTE}; batch=1000" in result.stdout
    assert f"(goal ≥ 30×) ✗ (scale 0.01: {NOTE})" in result.stdout
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["comparable_with_full_run"] is False


def _target(id: int, reductions: list[str]) -> TargetResult:
    return TargetResult(id=id, key=f"t{id}", name=f"Target {id}", passed=True, figures={},
                        parameters={}, reduced=bool(reductions), reductions=reductions,
                        summary="rate 5M/s", notes=[], seconds=0.5, floor="f", goal="g",
                        units={})  # fmt: skip


def test_format_line_with_a_note() -> None:
    line = format_line(_target(1, []), "quick", NOTE)
    assert line == f"✓ #1 Target 1: rate 5M/s; 0.5 s [quick run: {NOTE}]"
    assert format_line(_target(2, ["50 of 200 ticks"]), "quick", NOTE) == (
        f"✓ #2 Target 2 [quick: 50 of 200 ticks]: rate 5M/s; 0.5 s [quick run: {NOTE}]"
    )
    assert format_line(_target(1, []), "quick") == "✓ #1 Target 1: rate 5M/s; 0.5 s"


def test_validate_quick_marks_every_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    results = [_target(1, []), _target(2, ["50 of 200 ticks"])]

    def fake(**kw: Any) -> ValidationReport:
        for r in results:
            kw["on_result"](r)
        return ValidationReport(kw["size"], 0, "now", 1.0, results)

    monkeypatch.setattr(validate_cmd, "run_validation", fake)
    out = tmp_path / "v.json"
    result = CliRunner().invoke(cli, ["validate", "--quick", "--no-history", "--json", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.endswith(f" s [quick run: {NOTE}]") for line in lines[:2])
    assert NOTE in result.stderr
    assert json.loads(out.read_text())["comparable_with_full_run"] is False

    result = CliRunner().invoke(cli, ["validate", "--no-history", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert NOTE not in result.output
    assert json.loads(out.read_text())["comparable_with_full_run"] is True
