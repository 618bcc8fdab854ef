"""Validation targets #1 and #2, the registry and its floor/goal checks, the report format,
the history and its regression flags, ``mmsb validate --quick``, and proof that each target
can fail (a corrupted replay, an accepted bad delta, a damaged log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mmsb.history.component
import mmsb.storage.recovery
import mmsb.writer.checkpointer
from mmsb.cli import cli
from mmsb.storage.log import SEG_HEADER_SIZE, list_segments
from mmsb.validation import (
    Context,
    Outcome,
    RegistryError,
    TargetResult,
    TargetSpec,
    ValidationReport,
    compare_with_history,
    format_line,
    format_report,
    integrity,
    load_targets,
    read_history,
    replay,
    run_target,
    run_validation,
)
from mmsb.validation.history import regressions
from mmsb.validation.targets import evaluate
from mmsb.validation.workload import WorkloadParams, run_workload
from mmsb.writer.writer import Writer

SMALL = {"ticks": 40, "lsn_checks": 15, "pages": 32, "seed": 3}


# -- registry -------------------------------------------------------------------------------


def test_registry_lists_the_targets_in_order() -> None:
    specs = load_targets()
    ids = [s.id for s in specs]
    assert ids == list(range(1, 11))
    one = specs[0]
    assert one.name == "Replay determinism"
    assert one.floor and one.goal and one.units
    assert one.parameters("stated")["ticks"] == 1000
    assert one.parameters("stated")["lsn_checks"] == 100
    for spec in specs:
        stated, quick, full = (spec.parameters(s) for s in ("stated", "quick", "full"))
        for key, value in stated.items():
            assert quick[key] <= value <= full[key]


def test_reductions_name_what_was_cut() -> None:
    one = load_targets()[0]
    assert one.reductions(one.parameters("quick")) == [
        "200 of 1,000 ticks",
        "50 of 100 intermediate LSNs",
    ]
    assert one.reductions(one.parameters("stated")) == []
    assert one.reductions(one.parameters("full")) == []


def test_registry_rejects_malformed_files() -> None:
    with pytest.raises(RegistryError, match="not valid JSON"):
        load_targets("{")
    with pytest.raises(RegistryError, match="not an MMSB validation target registry"):
        load_targets('{"format": "other"}')
    with pytest.raises(RegistryError, match="version"):
        load_targets('{"format": "mmsb-validation-targets", "version": 99}')
    with pytest.raises(RegistryError, match="version 1; this build reads 2"):
        load_targets('{"format": "mmsb-validation-targets", "version": 1}')
    entry = _entry(sizes={"stated": {"ticks": 10}, "full": {"ticks": 5}})
    with pytest.raises(RegistryError, match="below the stated"):
        load_targets(_doc(entry))


# -- the workload ---------------------------------------------------------------------------


def test_workload_is_deterministic(tmp_path: Path) -> None:
    params = WorkloadParams(ticks=25, pages=16, seed=7)
    runs = [run_workload(params, str(tmp_path / f"run{i}")) for i in range(2)]
    try:
        a, b = runs
        assert a.hashes == b.hashes
        assert a.lsn == len(a.hashes) - 1
        assert a.deltas == b.deltas > 0
        assert len(a.checkpoint_lsns) == 3
    finally:
        for r in runs:
            r.bus.close()


# -- targets pass on a small run ------------------------------------------------------------


def test_replay_target_passes(ctx: Context) -> None:
    out = replay.run(ctx, dict(SMALL))
    assert out.passed, out.notes
    f = out.figures
    assert f["divergence_from_zero"] == 0
    assert f["divergence_from_first_checkpoint"] == 0
    assert f["divergence_after_crash_recovery"] == 0
    assert f["lsn_matches"] == f["lsn_checks"] == 15
    zero, first, crash = f["replays"]
    assert zero["checkpoint_lsn"] == 0 and zero["frames_replayed"] == f["commits"]
    assert first["checkpoint_lsn"] == f["checkpoint_lsns"][0]
    assert crash["checkpoint_lsn"] == f["checkpoint_lsns"][-1]
    assert f["propagation"] is True
    assert f["derived_pages"] == 6 and f["derived_deltas"] > 0 and f["derived_commits"] > 0


def test_integrity_target_passes(ctx: Context) -> None:
    out = integrity.run(ctx, dict(SMALL))
    assert out.passed, out.notes
    f = out.figures
    assert f["frames_checked"] == f["frames_in_log"]
    assert f["deltas_checked"] == f["deltas_committed"]
    assert f["schema_checked_pct"] == 100.0
    assert f["orphan_deltas"] == f["epoch_violations"] == f["invalid_deltas"] == 0
    assert f["rejected"] == f["injected"] >= 15
    expected = {c["case"]: c["got"] for c in f["cases"]}
    assert expected["unknown page"] == "PageNotFoundError"
    assert expected["sparse payload/set-bit mismatch (raw columns)"] == "InvalidDeltaError"


# -- each target can fail -------------------------------------------------------------------


def _flip_one_byte(state: Any) -> None:
    pid = int(state.live_ids()[0])
    state.arena.buf[int(state.slot[pid])] ^= 0xFF


def _flip_at(lsn: int, real: Any) -> Any:
    """apply_frame that corrupts one byte of the replayed state after the frame at ``lsn``."""

    def apply_frame(state: Any, frame: Any) -> int:
        n = real(state, frame)
        if frame.lsn == lsn:
            _flip_one_byte(state)
        return int(n)

    return apply_frame


def _flipped_snapshots(real: Any) -> Any:
    """build_state (behind ``Bus.at``) returning states with one byte corrupted."""

    def build_state(directory: str, lsn: int) -> Any:
        state, ts = real(directory, lsn)
        _flip_one_byte(state)
        return state, ts

    return build_state


def test_replay_target_fails_on_a_diverging_replay(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    wl = ctx.workload(WorkloadParams.from_params(SMALL))
    real = mmsb.storage.recovery.apply_frame
    # the replay paths (recovery, snapshots) get one wrong byte from the last frame on;
    # the live bus never replays, so its recorded hashes stay right
    monkeypatch.setattr(mmsb.storage.recovery, "apply_frame", _flip_at(wl.lsn, real))
    out = replay.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.figures["divergence_from_zero"] == 1
    assert out.figures["divergence_from_first_checkpoint"] == 1
    assert out.figures["divergence_after_crash_recovery"] == 1
    assert out.figures["lsn_matches"] == out.figures["lsn_checks"]  # snapshots untouched


def test_replay_target_fails_on_wrong_snapshots(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        mmsb.history.component, "state_at", _flipped_snapshots(mmsb.history.component.state_at)
    )
    out = replay.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.figures["divergence_from_zero"] == 0
    assert out.figures["lsn_matches"] == 0
    assert any("snapshots differ" in n for n in out.notes)


def test_integrity_target_fails_when_a_bad_delta_is_accepted(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the dtype check is switched off: typed writes of the wrong dtype get through
    monkeypatch.setattr(Writer, "check_dtype", lambda self, pid, dtype, offset, rec=None: None)
    out = integrity.run(ctx, dict(SMALL))
    assert not out.passed
    f = out.figures
    assert f["rejected"] == f["injected"] - 2
    accepted = {c["case"] for c in f["cases"] if c["outcome"] == "accepted"}
    assert accepted == {"wrong dtype for a float64 page", "float64 write at a misaligned offset"}
    assert any("accepted" in n for n in out.notes)


def test_integrity_target_fails_on_a_damaged_log(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = integrity.verify

    def damage_then_verify(path: str) -> Any:
        first = list_segments(str(Path(path) / "log"))[0][1]
        with open(first, "r+b") as f:
            f.seek(SEG_HEADER_SIZE + 44)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        return real(path)

    monkeypatch.setattr(integrity, "verify", damage_then_verify)
    out = integrity.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.figures["verify_ok"] is False
    assert out.figures["frames_checked"] < out.figures["frames_in_log"]


def test_a_runner_that_raises_is_a_missed_target(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: Context, params: dict[str, Any]) -> Outcome:
        raise RuntimeError("boom")

    monkeypatch.setattr(replay, "run", broken)
    result = run_target(ctx, load_targets()[0], "quick")
    assert not result.passed
    assert result.error == "RuntimeError: boom"
    assert format_line(result, "quick").startswith("✗ #1 Replay determinism [quick: ")


# -- report format --------------------------------------------------------------------------


def _result(**kw: Any) -> TargetResult:
    base: dict[str, Any] = dict(
        id=1, key="replay", name="Replay determinism", passed=True, figures={},
        parameters={}, reduced=False, reductions=[], summary="divergence 0 B", notes=[],
        seconds=1.25, floor="f", goal="g", units={},
    )  # fmt: skip
    base.update(kw)
    return TargetResult(**base)


def test_format_line() -> None:
    assert format_line(_result()) == "✓ #1 Replay determinism: divergence 0 B; 1.2 s"
    line = format_line(
        _result(passed=False, reduced=True, reductions=["200 of 1,000 ticks"], notes=["n1"]),
        "quick",
    )
    assert line == (
        "✗ #1 Replay determinism [quick: 200 of 1,000 ticks]: divergence 0 B; 1.2 s — n1"
    )


def test_speed_only_miss_is_marked_and_advisory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow = _result(id=6, name="Tick latency", passed=False, correct=True)
    broken = _result(id=8, name="Stability", passed=False, correct=False)
    assert "[correct; a speed floor was missed]" in format_line(slow)
    assert "speed floor" not in format_line(broken)

    import mmsb.cli.validate as cmd
    from mmsb.validation.runner import ValidationReport

    def fake(results: list[TargetResult]) -> Any:
        def run(**kw: Any) -> ValidationReport:
            for r in results:
                kw["on_result"](r)
            return ValidationReport("quick", 0, "now", 1.0, results)

        return run

    args = ["validate", "--quick", "--no-history", "--speed-advisory"]
    monkeypatch.setattr(cmd, "run_validation", fake([_result(), slow]))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "speed floors are advisory" in res.stdout
    res = CliRunner().invoke(cli, args[:-1])
    assert res.exit_code == 1  # without the flag a missed speed floor fails
    monkeypatch.setattr(cmd, "run_validation", fake([slow, broken]))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "advisory" not in res.stdout


# -- the command ----------------------------------------------------------------------------


def test_validate_quick(tmp_path: Path) -> None:
    out_json = tmp_path / "results.json"
    history = tmp_path / "hist"
    result = CliRunner().invoke(
        cli,
        [
            "validate",
            "--quick",
            "-t",
            "1",
            "-t",
            "2",
            "--json",
            str(out_json),
            "--history",
            str(history),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("✓ #1 Replay determinism [quick: 200 of 1,000 ticks; 50 of 100")
    assert lines[1].startswith("✓ #2 Delta integrity [quick: 200 of 1,000 ticks")
    assert lines[0].endswith(" ★") and lines[1].endswith(" ★")
    assert "derived by propagation" in lines[0]
    assert "| floor divergence_from_zero 0 < 1e-09 ✓" in lines[0]
    assert "lsn_matches 50 = lsn_checks 50 ✓" in lines[0]
    assert "rejected 19/19" in lines[1]
    assert "| goal epoch_violations 0 = 0 ✓" in lines[1]
    assert lines[2:] == ["Goals met ★: 2/2", "Result: 2/2 PASS"]

    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["passed"] == data["total"] == 2
    assert data["size"] == "quick" and data["reduced"] is True
    targets = {t["id"]: t for t in data["targets"]}
    assert set(targets) == {1, 2}
    for t in targets.values():
        assert t["passed"] is True and t["reduced"] is True and t["goal_met"] is True
        assert {"name", "figures", "parameters", "floor", "goal", "units", "checks"} <= set(t)
        assert all(c["met"] is True for c in t["checks"])
    assert data["goals_met"] == 2 and data["regressions"] == []
    assert data["compared_with"] is None
    assert targets[1]["figures"]["divergence_from_zero"] == 0
    assert targets[1]["parameters"]["ticks"] == 200
    assert targets[2]["figures"]["orphan_deltas"] == 0

    entries = (history / "validate.jsonl").read_text().splitlines()
    assert len(entries) == 1
    entry = json.loads(entries[0])
    assert entry["timestamp"] and entry["results"]["passed"] == 2


def test_validate_exits_1_when_a_target_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        mmsb.history.component, "state_at", _flipped_snapshots(mmsb.history.component.state_at)
    )
    monkeypatch.chdir(tmp_path)
    out_json = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["validate", "--quick", "-t", "1", "--no-history", "--json", str(out_json)]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].startswith("✗ #1 Replay determinism")
    assert result.stdout.splitlines()[-2:] == ["Goals met ★: 0/1", "Result: 0/1 FAIL"]
    assert json.loads(out_json.read_text())["targets"][0]["passed"] is False
    assert not (tmp_path / ".mmsb-history").exists()


def test_validate_option_errors() -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["validate", "--quick", "--full", "--no-history"])
    assert both.exit_code == 2
    assert "exclude each other" in both.stderr
    unknown = runner.invoke(cli, ["validate", "-t", "42", "--no-history"])
    assert unknown.exit_code == 2
    assert "no validation target #42" in unknown.stderr


def test_run_validation_selects_targets() -> None:
    with pytest.raises(ValueError, match="no validation target #42"):
        run_validation(only=[42])


# -- floor and goal checks in the registry --------------------------------------------------


def _entry(**kw: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": 5, "key": "throughput", "name": "Throughput", "runner": "m", "floor": "f",
        "goal": "g", "sizes": {"stated": {"deltas": 10}, "quick": {"deltas": 5}},
        "floor_checks": [{"figure": "rate", "op": ">=", "value": 1000000}],
        "goal_checks": [{"figure": "rate", "op": ">=", "value": 10000000},
                        {"figure": "p99_ms", "op": "<=", "value": 1.0, "sizes": ["stated"]}],
    }  # fmt: skip
    entry.update(kw)
    return entry


def _doc(*entries: dict[str, Any]) -> str:
    return json.dumps({"format": "mmsb-validation-targets", "version": 2, "targets": entries})


def test_registry_parses_checks() -> None:
    (spec,) = load_targets(_doc(_entry(directions={"latency_ms": "lower"})))
    (floor,) = spec.floor_checks
    assert (floor.figure, floor.op, floor.value, floor.ref) == ("rate", ">=", 1000000, None)
    assert floor.sizes == ("quick", "stated", "full") and floor.text() == "rate ≥ 1M"
    assert spec.goal_checks[1].sizes == ("stated",)
    assert spec.direction("rate") == "higher" and spec.direction("p99_ms") == "lower"
    assert spec.direction("latency_ms") == "lower" and spec.direction("other") is None
    ref = _entry(goal_checks=[{"figure": "rejected", "op": "==", "ref": "injected"}])
    (spec,) = load_targets(_doc(ref))
    assert spec.goal_checks[0].ref == "injected" and spec.direction("rejected") is None


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"figure": "rate", "op": "=>", "value": 1}, "has op '=>'"),
        ({"op": ">=", "value": 1}, "needs a figure name"),
        ({"figure": "", "op": ">=", "value": 1}, "needs a figure name"),
        ({"figure": "rate", "op": ">="}, "exactly one of 'value' and 'ref'"),
        ({"figure": "rate", "op": ">=", "value": 1, "ref": "x"}, "exactly one of"),
        ({"figure": "rate", "op": ">=", "value": "1M"}, "finite number or a boolean"),
        ({"figure": "rate", "op": ">=", "value": None}, "finite number or a boolean"),
        ({"figure": "ok", "op": ">=", "value": True}, "only '==' is allowed"),
        ({"figure": "rate", "op": "==", "ref": 3}, "ref must name a figure"),
        ({"figure": "rate", "op": ">=", "value": 1, "size": ["quick"]}, "unknown keys"),
        ({"figure": "rate", "op": ">=", "value": 1, "sizes": ["huge"]}, "sizes must be"),
        ({"figure": "rate", "op": ">=", "value": 1, "sizes": []}, "sizes must be"),
        ("rate >= 1", "is not an object"),
    ],
)
def test_registry_rejects_malformed_checks(check: Any, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        load_targets(_doc(_entry(floor_checks=[check])))
    with pytest.raises(RegistryError, match=message):
        load_targets(_doc(_entry(goal_checks=[check])))


def test_registry_needs_floor_and_goal_checks() -> None:
    for key in ("floor_checks", "goal_checks"):
        with pytest.raises(RegistryError, match=f"{key} must be a list"):
            load_targets(_doc({k: v for k, v in _entry().items() if k != key}))
        with pytest.raises(RegistryError, match=f"{key} must list at least one"):
            load_targets(_doc(_entry(**{key: []})))
    with pytest.raises(RegistryError, match="directions must map"):
        load_targets(_doc(_entry(directions={"rate": "up"})))
    with pytest.raises(RegistryError, match="directions must map"):
        load_targets(_doc(_entry(directions=["rate"])))
    # a NaN bound would never be met nor missed
    text = _doc(_entry()).replace("1000000", "NaN", 1)
    with pytest.raises(RegistryError, match="finite number"):
        load_targets(text)


# every figure a check names is one its runner returns: the runner module (or the benchmark
# whose dict it passes on) spells the name as a string literal
_FIGURE_SOURCES = {
    "graph": ["mmsb.benchmarks.graph"],
    "tick": ["mmsb.benchmarks.graph"],
    "provenance": ["mmsb.benchmarks.graph"],
}


def test_every_check_names_a_figure_its_runner_returns() -> None:
    import importlib
    import inspect

    for spec in load_targets():
        modules = [spec.runner, *_FIGURE_SOURCES.get(spec.key, [])]
        text = "".join(inspect.getsource(importlib.import_module(m)) for m in modules)
        checks = [*spec.floor_checks, *spec.goal_checks]
        names = {c.figure for c in checks} | {c.ref for c in checks if c.ref is not None}
        names |= {name for name, _ in spec.directions}
        for name in names:
            assert f'"{name}"' in text, f"#{spec.id}: no figure {name!r} in {modules}"


# -- floor and goal evaluation ----------------------------------------------------------------


def _spec_with_checks() -> TargetSpec:
    (spec,) = load_targets(_doc(_entry()))
    return spec


def _run(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, outcome: Outcome, size: str = "stated"
) -> TargetResult:
    import mmsb.validation.runner as runner_module

    monkeypatch.setattr(runner_module, "resolve", lambda spec: lambda c, p: outcome)
    return run_target(ctx, _spec_with_checks(), size)


def test_floor_and_goal_met(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": 12_000_000, "p99_ms": 0.5}, "s ★"))
    assert r.passed and r.goal_met is True
    assert [c.met for c in r.checks] == [True, True, True]
    line = format_line(r)
    assert line == (
        "✓ #5 Throughput: s; 0.0 s | floor rate 12M ≥ 1M ✓ | goal rate 12M ≥ 10M ✓, "
        "p99_ms 0.5 ≤ 1 ✓ ★"
    )  # the runner's own ★ is not repeated
    data = r.to_json()
    assert data["goal_met"] is True
    assert data["checks"][0] == {
        "kind": "floor", "figure": "rate", "op": ">=", "value": 1000000,
        "actual": 12_000_000, "expected": 1000000, "met": True,
    }  # fmt: skip


def test_floor_met_goal_missed(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": 2_000_000, "p99_ms": 0.5}, "s"))
    assert r.passed and r.goal_met is False
    assert format_line(r).startswith("✓ #5 Throughput: s; 0.0 s | floor rate 2M ≥ 1M ✓ | goal ")
    assert "rate 2M ≥ 10M ✗" in format_line(r)


def test_floor_missed_while_correct(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    # the runner says passed (its own thresholds); the registry's floor decides
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": 900_000, "p99_ms": 0.5}, "s"))
    assert not r.passed and r.is_correct and r.goal_met is False
    line = format_line(r)
    assert line.startswith("✗ #5") and "rate 900k ≥ 1M ✗" in line
    assert line.endswith("[correct; a speed floor was missed]")


def test_correctness_failure_is_not_a_pass(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    # every floor check holds, but the runner found a wrong result
    out = Outcome(False, {"rate": 12_000_000, "p99_ms": 0.5}, "s", correct=False)
    r = _run(ctx, monkeypatch, out)
    assert not r.passed and not r.is_correct and r.goal_met is False
    assert format_line(r).startswith("✗ #5") and "speed floor" not in format_line(r)
    # a runner's speed-only miss (passed=False, correct=True) is judged by the registry
    r = _run(ctx, monkeypatch, Outcome(False, {"rate": 12e6, "p99_ms": 0.5}, "s", correct=True))
    assert r.passed and r.goal_met is True


def test_checks_left_to_other_sizes(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": 12_000_000, "p99_ms": 9.0}, "s"), "quick")
    assert r.passed and r.goal_met is True  # p99_ms is judged at the stated size only
    assert r.checks[2].met is None
    assert "p99_ms ≤ 1 (not checked at quick size)" in format_line(r, "quick")
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": 12_000_000, "p99_ms": 9.0}, "s"))
    assert r.passed and r.goal_met is False


def test_missing_or_bad_figures_fail_their_checks(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    for figures in ({}, {"rate": None}, {"rate": "fast"}, {"rate": float("nan")}, {"rate": True}):
        r = _run(ctx, monkeypatch, Outcome(True, figures, "s"))
        assert not r.passed, figures
        assert r.checks[0].met is False
    r = _run(ctx, monkeypatch, Outcome(True, {"rate": float("inf"), "p99_ms": 0.5}, "s"))
    assert r.passed  # +inf is a number; JSON gets a string for it
    assert r.to_json()["checks"][0]["actual"] == "inf"


def test_a_target_that_raises_has_no_goal(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(ctx: Context, params: dict[str, Any]) -> Outcome:
        raise RuntimeError("boom")

    monkeypatch.setattr(replay, "run", broken)
    result = run_target(ctx, load_targets()[0], "quick")
    assert not result.passed and result.goal_met is None
    assert "[correct" not in format_line(result, "quick")


def test_registry_floors_are_the_seeds() -> None:
    specs = {s.id: s for s in load_targets()}
    five = {c.figure: c.value for c in specs[5].floor_checks}
    assert five == {"single_deltas_per_s": 1_000_000, "two_workers_deltas_per_s": 10_000_000}
    assert {c.figure: c.value for c in specs[5].goal_checks}["single_deltas_per_s"] == 10_000_000
    assert [(c.figure, c.op, c.value) for c in specs[6].floor_checks] == [("p99_ms", "<", 16)]
    memory_floor = {c.figure: c for c in specs[7].floor_checks}
    assert memory_floor["rss_growth_bytes"].value == 1 << 30
    assert memory_floor["rss_growth_bytes"].sizes == ("stated", "full")
    assert memory_floor["gc_pause_p99_ms"].value == 3
    assert (specs[10].floor_checks[0].figure, specs[10].floor_checks[0].value) == (
        "resolve_ms_max",
        50,
    )


# -- history and regressions ----------------------------------------------------------------


def _report(figures: dict[str, Any], *, size: str = "quick", **kw: Any) -> ValidationReport:
    result = _result(id=5, key="throughput", name="Throughput", figures=figures,
                     parameters={"deltas": 5, "seed": 0}, **kw)  # fmt: skip
    return ValidationReport(size, 0, "now", 1.0, [result])


def _entry_of(report: ValidationReport, stamp: str = "2026-01-01T00:00:00+00:00") -> Any:
    return {"timestamp": stamp, "results": report.to_json()}


def _flags(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    return regressions(_report(after), _entry_of(_report(before)), [_spec_with_checks()])


def test_regressions_are_direction_aware() -> None:
    base = {"rate": 10_000_000, "p99_ms": 10.0}
    assert _flags(base, base) == []
    assert _flags(base, {"rate": 20_000_000, "p99_ms": 5.0}) == []  # improvements
    assert _flags(base, {"rate": 8_100_000, "p99_ms": 11.9}) == []  # -19%, +19%
    (flag,) = _flags(base, {"rate": 7_500_000, "p99_ms": 10.0})
    assert flag["figure"] == "rate" and flag["better"] == "higher"
    assert flag["change_pct"] == -25.0
    assert flag["text"] == "⚠ #5 rate 10M → 7.5M (−25%)"
    (flag,) = _flags(base, {"rate": 10_000_000, "p99_ms": 13.0})
    assert flag["text"] == "⚠ #5 p99_ms 10 → 13 (+30%)"
    assert len(_flags(base, {"rate": 7_900_000, "p99_ms": 12.1})) == 2  # -21%, +21%
    # nothing to compare: missing, non-numeric or zero figures, undirected figures
    assert _flags({"rate": 0, "p99_ms": 0.0}, {"rate": 1, "p99_ms": 5.0}) == []
    assert _flags({"rate": True, "other": 5}, {"rate": False, "other": 1}) == []
    assert _flags(base, {}) == []


def test_regressions_compare_like_with_like() -> None:
    spec = _spec_with_checks()
    before, after = _report({"rate": 10_000_000}), _report({"rate": 5_000_000})
    assert len(regressions(after, _entry_of(before), [spec])) == 1
    before.results[0].parameters = {"deltas": 6, "seed": 0}  # another workload
    assert regressions(after, _entry_of(before), [spec]) == []
    before.results[0].parameters = {"deltas": 5, "seed": 9}  # the seed does not matter
    assert len(regressions(after, _entry_of(before), [spec])) == 1
    failed = _report({"rate": 5_000_000}, error="RuntimeError: boom")
    assert regressions(failed, _entry_of(before), [spec]) == []


def test_compare_with_history_picks_the_previous_comparable_entry(tmp_path: Path) -> None:
    spec = _spec_with_checks()
    lines = []
    for stamp, size, cpus, rate in (
        ("t1", "quick", None, 10_000_000),  # the comparable one (cpus filled in below)
        ("t2", "stated", None, 90_000_000),  # another size
        ("t3", "quick", 999, 90_000_000),  # another machine
    ):
        entry = _entry_of(_report({"rate": rate}, size=size), stamp)
        if cpus is not None:
            entry["results"]["machine"]["cpus"] = cpus
        lines.append(json.dumps(entry))
    (tmp_path / "validate.jsonl").write_text("\n".join(lines) + "\n")
    report = _report({"rate": 7_000_000})
    assert compare_with_history(report, tmp_path, [spec]) == []
    assert report.compared_with == "t1"
    assert [f["text"] for f in report.regressions] == ["⚠ #5 rate 10M → 7M (−30%)"]
    assert format_report(report)[-1] == "⚠ #5 rate 10M → 7M (−30%)"
    assert report.to_json()["regressions"][0]["previous"] == 10_000_000
    empty = tmp_path / "none"
    report = _report({"rate": 7_000_000})
    assert compare_with_history(report, empty, [spec]) == [] and report.compared_with is None


def test_corrupt_history_lines_are_skipped(tmp_path: Path) -> None:
    spec = _spec_with_checks()
    good = json.dumps(_entry_of(_report({"rate": 10_000_000}), "good"))
    wrong_shape = json.dumps({"timestamp": "x", "results": {"size": "quick", "targets": [{}]}})
    path = tmp_path / "validate.jsonl"
    path.write_bytes(
        good.encode() + b"\n"
        + b'{"timestamp": "2026-01-02", "results": {"size": "qu\n'  # truncated by a crash
        + b"\xff\xfe not utf-8\n"
        + b"[1, 2, 3]\n"
        + wrong_shape.encode() + b"\n"
        + b"\n"
        + good[: len(good) // 2].encode()  # a torn last line without its newline
    )  # fmt: skip
    entries, warnings = read_history(path)
    assert [e["timestamp"] for e in entries] == ["good"]
    assert len(warnings) == 5
    assert "line 2: unreadable (JSONDecodeError)" in warnings[0]
    assert "line 3: unreadable (UnicodeDecodeError)" in warnings[1]
    assert "line 4: not a validation history entry" in warnings[2]
    assert "line 5: a target without an id" in warnings[3]
    assert "line 7" in warnings[4]
    report = _report({"rate": 5_000_000})
    assert len(compare_with_history(report, tmp_path, [spec])) == 5
    assert report.compared_with == "good" and len(report.regressions) == 1


def test_validate_flags_a_regression_against_the_previous_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmsb.cli.validate as cmd

    history = tmp_path / "hist"
    out_json = tmp_path / "r.json"
    args = ["validate", "--quick", "--history", str(history), "--json", str(out_json)]
    spec = _spec_with_checks()
    monkeypatch.setattr(cmd, "load_targets", lambda: [spec])

    def fake(rate: float) -> Any:
        def run(**kw: Any) -> ValidationReport:
            report = _report({"rate": rate, "p99_ms": 0.5})
            for r in report.results:
                r.checks, r.goal_met = evaluate(spec, r.figures, "quick")[0], rate >= 1e7
            kw["on_result"](report.results[0])
            return report

        return run

    monkeypatch.setattr(cmd, "run_validation", fake(12e6))
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "⚠" not in first.stdout
    monkeypatch.setattr(cmd, "run_validation", fake(9e6))
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output  # a regression is a flag, not a failure
    assert second.stdout.splitlines()[-1] == "⚠ #5 rate 12M → 9M (−25%)"
    data = json.loads(out_json.read_text())
    assert data["regressions"][0]["figure"] == "rate"
    assert data["compared_with"] is not None
    entries = (history / "validate.jsonl").read_text().splitlines()
    assert len(entries) == 2 and json.loads(entries[1])["results"]["regressions"]
    # a damaged history file gives a warning, never a crash
    with open(history / "validate.jsonl", "a") as f:
        f.write('{"timestamp": "torn\n')
    third = CliRunner().invoke(cli, args)
    assert third.exit_code == 0, third.output
    assert "line 3: unreadable" in third.stderr
    assert "⚠" not in third.stdout  # compared with the second run: 9M → 9M


def test_validate_exit_status_follows_the_floors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through run_validation and run_target: the runner reports its figures, the registry's
    floor decides the exit status; --speed-advisory forgives a floor miss, not a wrong
    result."""
    import mmsb.cli.validate as cmd
    import mmsb.validation.runner as runner_module

    spec = _spec_with_checks()
    monkeypatch.setattr(cmd, "load_targets", lambda: [spec])

    def invoke(outcome: Outcome, *extra: str) -> Any:
        monkeypatch.setattr(runner_module, "resolve", lambda s: lambda c, p: outcome)
        return CliRunner().invoke(cli, ["validate", "--quick", "--no-history", *extra])

    fast = invoke(Outcome(True, {"rate": 2e6}, "fast"))
    assert fast.exit_code == 0, fast.output
    assert fast.stdout.splitlines()[-2:] == ["Goals met ★: 0/1", "Result: 1/1 PASS"]
    slow = invoke(Outcome(True, {"rate": 5e5}, "slow"))
    assert slow.exit_code == 1 and "rate 500k ≥ 1M ✗" in slow.stdout
    assert slow.stdout.splitlines()[-1] == "Result: 0/1 FAIL"
    advisory = invoke(Outcome(True, {"rate": 5e5}, "slow"), "--speed-advisory")
    assert advisory.exit_code == 0 and "speed floors are advisory" in advisory.stdout
    wrong = invoke(Outcome(False, {"rate": 2e6}, "wrong", correct=False), "--speed-advisory")
    assert wrong.exit_code == 1 and "advisory" not in wrong.stdout
