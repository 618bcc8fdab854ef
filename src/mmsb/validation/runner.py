"""Running validation targets: the shared context, one result per target, the whole report.

A runner module exposes ``run(ctx, params) -> Outcome``. The runner here resolves it from
the registry, times it, and turns an exception into a failed result (a target that cannot
be measured is not met), so one broken target never hides the others.

A target passes (✓) when the runner's correctness checks pass and every floor check of the
registry holds on its figures; its goal is met (★) when, besides, every goal check holds.
The runner's own ``passed`` counts as its correctness only where it reports no ``correct``.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import mmsb
from mmsb.validation.targets import CheckResult, TargetSpec, evaluate, load_targets
from mmsb.validation.workload import Progress, WorkloadParams, WorkloadRun, run_workload


@dataclass
class Outcome:
    """What a runner measured: pass/fail, its figures, and the text of its report line."""

    passed: bool
    figures: dict[str, Any]
    summary: str  # the figures, for the one-line report
    notes: list[str] = field(default_factory=list)  # caveats shown after the figures
    # whether every correctness check passed (None: the same as ``passed``); a target that
    # is correct but missed a speed floor has passed=False, correct=True
    correct: bool | None = None


@dataclass
class TargetResult:
    id: int
    key: str
    name: str
    passed: bool
    figures: dict[str, Any]
    parameters: dict[str, Any]
    reduced: bool
    reductions: list[str]
    summary: str
    notes: list[str]
    seconds: float
    floor: str
    goal: str
    units: dict[str, str]
    error: str | None = None
    # every correctness check passed, speed floors aside (None: the same as ``passed``)
    correct: bool | None = None
    # the registry's floor and goal checks on the figures (empty: none evaluated)
    checks: list[CheckResult] = field(default_factory=list)
    # every goal check met as well as the floor (None: no goal check could be judged)
    goal_met: bool | None = None

    @property
    def is_correct(self) -> bool:
        return self.passed if self.correct is None else self.correct

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "passed": self.passed,
            "figures": self.figures,
            "parameters": self.parameters,
            "reduced": self.reduced,
            "reductions": self.reductions,
            "summary": self.summary,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
            "floor": self.floor,
            "goal": self.goal,
            "units": self.units,
            "error": self.error,
            "correct": self.is_correct,
            "goal_met": self.goal_met,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass
class ValidationReport:
    size: str
    seed: int
    started: str  # ISO 8601, UTC
    seconds: float
    results: list[TargetResult]
    # filled by the history comparison (mmsb.validation.history.compare_with_history)
    regressions: list[dict[str, Any]] = field(default_factory=list)
    compared_with: str | None = None  # the timestamp of the history entry compared with

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def goals_met(self) -> int:
        return sum(r.goal_met is True for r in self.results)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def correct(self) -> bool:
        """Every target's correctness checks passed (speed floors aside)."""
        return bool(self.results) and all(r.is_correct for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "mmsb_version": mmsb.__version__,
            "size": self.size,
            "reduced": any(r.reduced for r in self.results),
            "seed": self.seed,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "passed": self.passed,
            "goals_met": self.goals_met,
            "total": len(self.results),
            "ok": self.ok,
            "correct": self.correct,
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            },
            "targets": [r.to_json() for r in self.results],
            "compared_with": self.compared_with,
            "regressions": self.regressions,
        }


class Context:
    """What runners share within one validation run: a scratch directory, the seed, a
    progress sink, and workloads cached by their parameters (targets #1 and #2 measure the
    same run)."""

    def __init__(self, workdir: str, *, seed: int, size: str, progress: Progress | None) -> None:
        self.workdir = workdir
        self.seed = seed
        self.size = size
        self._progress = progress
        self._workloads: dict[WorkloadParams, WorkloadRun] = {}
        self._names = 0

    def path(self, name: str) -> str:
        """A fresh, not yet existing path inside the scratch directory."""
        self._names += 1
        return os.path.join(self.workdir, f"{self._names:03d}-{name}")

    def progress(self, what: str, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(what, done, total)

    def workload(self, params: WorkloadParams) -> WorkloadRun:
        run = self._workloads.get(params)
        if run is None:
            run = run_workload(
                params,
                self.path("workload"),
                lambda _, done, total: self.progress("workload ticks", done, total),
            )
            self._workloads[params] = run
        return run

    def close(self) -> None:
        for run in self._workloads.values():
            run.bus.close()
        self._workloads.clear()


Runner = Callable[[Context, dict[str, Any]], Outcome]


def resolve(spec: TargetSpec) -> Runner:
    module = importlib.import_module(spec.runner)
    return cast(Runner, module.run)


def run_target(ctx: Context, spec: TargetSpec, size: str) -> TargetResult:
    params = spec.parameters(size)
    params.setdefault("seed", ctx.seed)
    reductions = spec.reductions(params)
    t0 = time.perf_counter()
    error = None
    try:
        outcome = resolve(spec)(ctx, params)
    except Exception as exc:  # a target that cannot be measured is a missed target
        error = f"{type(exc).__name__}: {exc}"
        outcome = Outcome(False, {}, f"could not be measured ({error})")
    correct = outcome.passed if outcome.correct is None else outcome.correct
    checks, floor_met, goals = evaluate(spec, outcome.figures, size)
    passed = correct and floor_met and error is None
    return TargetResult(
        id=spec.id,
        key=spec.key,
        name=spec.name,
        passed=passed,
        figures=outcome.figures,
        parameters=params,
        reduced=bool(reductions),
        reductions=reductions,
        summary=outcome.summary,
        notes=outcome.notes,
        seconds=time.perf_counter() - t0,
        floor=spec.floor,
        goal=spec.goal,
        units=spec.units,
        error=error,
        correct=correct,
        checks=checks,
        goal_met=None if goals is None or error is not None else passed and goals,
    )


def run_validation(
    *,
    size: str = "stated",
    seed: int = 0,
    only: Iterable[int] | None = None,
    progress: Progress | None = None,
    on_result: Callable[[TargetResult], None] | None = None,
    specs: list[TargetSpec] | None = None,
) -> ValidationReport:
    """Run the selected targets (all by default) on buses in a temporary directory."""
    specs = load_targets() if specs is None else specs
    if only is not None:
        wanted = set(only)
        unknown = wanted - {s.id for s in specs}
        if unknown:
            raise ValueError(f"no validation target {', '.join(f'#{i}' for i in sorted(unknown))}")
        specs = [s for s in specs if s.id in wanted]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="mmsb-validate-")
    ctx = Context(workdir, seed=seed, size=size, progress=progress)
    results = []
    try:
        for spec in specs:
            result = run_target(ctx, spec, size)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        ctx.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return ValidationReport(size, seed, started, time.perf_counter() - t0, results)
