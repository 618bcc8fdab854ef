"""Validation target #4 (purity): the registry entry, a small run that passes, and proof that
the target fails when a law breaks, a pure function is flagged, or an impure one is missed."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from mmsb.cli import cli
from mmsb.purity import MUTATES, NOT_REPEATABLE
from mmsb.semiring import BUILTINS, SUM_PRODUCT
from mmsb.validation import Context, load_targets
from mmsb.validation import purity as target

SMALL = {"samples": 1500, "runs": 2, "seed": 3}


def test_registry_entry() -> None:
    spec = {s.id: s for s in load_targets()}[4]
    assert (spec.key, spec.name, spec.runner) == ("purity", "Purity", "mmsb.validation.purity")
    assert spec.floor == "0 side effects; purity 100%"
    assert spec.parameters("stated") == {"samples": 100_000, "runs": 3}
    assert spec.parameters("quick")["samples"] < 100_000 <= spec.parameters("full")["samples"]
    assert spec.reductions(spec.parameters("quick")) == ["10,000 of 100,000 sample triples"]
    assert spec.reductions(spec.parameters("stated")) == []


def test_purity_target_passes(ctx: Context) -> None:
    out = target.run(ctx, dict(SMALL))
    assert out.passed, out.notes
    f = out.figures
    n_laws = 11 * sum(len(s.dtypes) for s in BUILTINS)
    assert f["laws_checked"] == n_laws == 110
    assert f["comparisons"] == n_laws * 1500
    assert f["law_failures"] == 0 and f["laws_broken"] == []
    assert f["within_tolerance"] > 0  # SUM_PRODUCT and the + laws do round
    assert f["pure_passed"] == f["pure_functions"] >= len(BUILTINS) + 5
    assert f["impure_flagged"] == f["impure_functions"] == 8
    assert f["broken_caught"] == f["broken_semirings"] == 4
    reasons = {p["function"]: p["reasons"] for p in f["functions"]}
    assert reasons["global counter"] == [NOT_REPEATABLE]
    assert reasons["in-place write"] == [MUTATES]
    assert reasons["SUM_PRODUCT fold"] == []
    assert out.summary.startswith("110/110 laws hold (5 semirings × their dtypes, 1,500 triples")
    assert "impure functions flagged 8/8" in out.summary
    assert out.notes == []


def test_target_fails_when_a_builtin_breaks_a_law(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = dataclasses.replace(SUM_PRODUCT, zero=1.0)
    monkeypatch.setattr(target, "BUILTINS", (*BUILTINS[:-1], bad))
    out = target.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.figures["law_failures"] > 0
    assert "SUM_PRODUCT zero is the left ⊕ identity [float32]" in out.figures["laws_broken"]
    assert out.notes[0].startswith("law broken: SUM_PRODUCT")


def test_target_fails_when_an_impure_function_is_missed(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = target.impure_functions

    def with_a_pure_one(seed: int) -> list[Any]:
        return [*real(seed), ("not impure at all", np.negative, [np.ones(4)], MUTATES)]

    monkeypatch.setattr(target, "impure_functions", with_a_pure_one)
    out = target.run(ctx, dict(SMALL))
    assert not out.passed
    assert (out.figures["impure_flagged"], out.figures["impure_functions"]) == (8, 9)
    assert out.notes == ["impure function missed: not impure at all"]


def test_target_fails_when_a_reference_function_is_impure(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = target.pure_functions

    def with_noise(seed: int) -> list[Any]:
        noisy = ("noisy", lambda a: a + np.random.default_rng().random(a.shape), [np.ones(4)])
        return [*real(seed), noisy]

    monkeypatch.setattr(target, "pure_functions", with_noise)
    out = target.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.notes == [f"pure function flagged: noisy ({NOT_REPEATABLE})"]


def test_target_fails_when_a_broken_semiring_passes(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = target.broken_semirings

    def with_a_sound_one() -> list[Any]:
        return [*real(), (dataclasses.replace(SUM_PRODUCT, name="sound"), {"⊕ associative"})]

    monkeypatch.setattr(target, "broken_semirings", with_a_sound_one)
    out = target.run(ctx, dict(SMALL))
    assert not out.passed
    assert out.notes == ["broken semiring missed: sound"]


def test_validate_command_runs_target_4() -> None:
    result = CliRunner().invoke(cli, ["validate", "--quick", "-t", "4", "--no-history"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("✓ #4 Purity [quick: 10,000 of 100,000 sample triples]: 110/110")
    assert lines[-1] == "Result: 1/1 PASS"
