"""Validation targets #1 and #2: the registry, the report format, ``mmsb validate --quick``,
and proof that each target can fail (a corrupted replay, an accepted bad delta, a damaged
log)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import mmsb.bus
import mmsb.storage.recovery
from mmsb.bus import Bus
from mmsb.cli import cli
from mmsb.storage.log import SEG_HEADER_SIZE, list_segments
from mmsb.validation import (
    Context,
    Outcome,
    RegistryError,
    TargetResult,
    format_line,
    integrity,
    load_targets,
    replay,
    run_target,
    run_validation,
)
from mmsb.validation.workload import WorkloadParams, run_workload

SMALL = {"ticks": 40, "lsn_checks": 15, "pages": 32, "seed": 3}


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    c = Context(str(tmp_path), seed=3, size="quick", progress=None)
    yield c
    c.close()


# -- registry -------------------------------------------------------------------------------


def test_registry_lists_the_targets_in_order() -> None:
    specs = load_targets()
    ids = [s.id for s in specs]
    assert ids == sorted(set(ids))
    assert {1, 2, 3, 4, 6, 8, 10} <= set(ids)
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
    entry = {
        "id": 1, "key": "k", "name": "n", "runner": "m", "floor": "f", "goal": "g",
        "sizes": {"stated": {"ticks": 10}, "full": {"ticks": 5}},
    }  # fmt: skip
    doc = {"format": "mmsb-validation-targets", "version": 1, "targets": [entry]}
    with pytest.raises(RegistryError, match="below the stated"):
        load_targets(json.dumps(doc))


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
    monkeypatch.setattr(mmsb.bus, "build_state", _flipped_snapshots(mmsb.bus.build_state))
    out = replay.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.figures["divergence_from_zero"] == 0
    assert out.figures["lsn_matches"] == 0
    assert any("snapshots differ" in n for n in out.notes)


def test_integrity_target_fails_when_a_bad_delta_is_accepted(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the dtype check is switched off: typed writes of the wrong dtype get through
    monkeypatch.setattr(Bus, "_check_dtype", lambda self, pid, dtype, offset: None)
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
    assert len(lines) == 3
    assert lines[0].startswith("✓ #1 Replay determinism [quick: 200 of 1,000 ticks; 50 of 100")
    assert lines[1].startswith("✓ #2 Delta integrity [quick: 200 of 1,000 ticks")
    assert "derived by propagation" in lines[0]
    assert "rejected 19/19" in lines[1]
    assert lines[2] == "Result: 2/2 PASS"

    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["passed"] == data["total"] == 2
    assert data["size"] == "quick" and data["reduced"] is True
    targets = {t["id"]: t for t in data["targets"]}
    assert set(targets) == {1, 2}
    for t in targets.values():
        assert t["passed"] is True and t["reduced"] is True
        assert {"name", "figures", "parameters", "floor", "goal", "units"} <= set(t)
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
    monkeypatch.setattr(mmsb.bus, "build_state", _flipped_snapshots(mmsb.bus.build_state))
    monkeypatch.chdir(tmp_path)
    out_json = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["validate", "--quick", "-t", "1", "--no-history", "--json", str(out_json)]
    )
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[0].startswith("✗ #1 Replay determinism")
    assert result.stdout.splitlines()[-1] == "Result: 0/1 FAIL"
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
