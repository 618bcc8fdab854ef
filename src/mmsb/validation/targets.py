"""The target registry: what each validation target promises and at which sizes it runs.

The registry is the package data file ``targets.json`` (versioned). Each entry names the
target, the seed's floor, our goal, the units of its figures, the module that measures it,
and its parameters per size: ``stated`` (the size the target is stated at, the default),
``quick`` (reduced, for CI) and ``full`` (at least the stated size). A new target is one
more entry plus one runner module exposing ``run(ctx, params) -> Outcome``.

Since version 2 each entry also states its floor and goal as machine-checkable criteria
over the runner's figures::

    "floor_checks": [{"figure": "single_deltas_per_s", "op": ">=", "value": 1000000}],
    "goal_checks": [{"figure": "rejected", "op": "==", "ref": "injected"}],

``value`` is a number or a boolean; ``ref`` names another figure instead; ``sizes`` (optional)
limits a check to the sizes at which it can be measured (a 100,000-page run cannot show what
1,000,000 pages cost). ``directions`` (optional) declares, per figure, whether ``higher`` or
``lower`` is better; a figure checked with ``>=``/``>`` is higher-better and one checked
with ``<=``/``<`` lower-better unless declared otherwise. History comparisons use these.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

REGISTRY_FORMAT = "mmsb-validation-targets"
REGISTRY_VERSION = 2
SIZES = ("quick", "stated", "full")
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
SHOWN_OPS = {">=": "≥", ">": ">", "<=": "≤", "<": "<", "==": "="}
DIRECTIONS = ("higher", "lower")


class RegistryError(ValueError):
    """``targets.json`` is malformed (a packaging or editing mistake, not a user error)."""


@dataclass(frozen=True)
class Check:
    """One criterion over a runner's figures: ``figure op value`` (or ``figure op ref``)."""

    figure: str
    op: str
    value: float | bool | None = None
    ref: str | None = None  # another figure to compare with, instead of ``value``
    sizes: tuple[str, ...] = SIZES  # the sizes at which the check applies

    def applies(self, size: str) -> bool:
        return size in self.sizes

    def evaluate(self, figures: dict[str, Any]) -> tuple[bool, Any, Any]:
        """(met, the figure, what it is compared with); a missing or non-numeric figure,
        or a NaN, is not met."""
        actual = figures.get(self.figure)
        other = figures.get(self.ref) if self.ref is not None else self.value
        if not (_number(actual) and _number(other)):
            return False, actual, other
        if isinstance(actual, bool) != isinstance(other, bool):
            return False, actual, other  # a flag is compared with a flag only
        return bool(OPS[self.op](actual, other)), actual, other

    def text(self) -> str:
        rhs = self.ref if self.ref is not None else format_figure(self.figure, self.value)
        return f"{self.figure} {SHOWN_OPS[self.op]} {rhs}"

    @property
    def direction(self) -> str | None:
        """Which way is better for the figure, as the check implies it."""
        if self.ref is not None or isinstance(self.value, bool) or self.op == "==":
            return None
        return "higher" if self.op in (">=", ">") else "lower"


def _number(x: Any) -> bool:
    return isinstance(x, (bool, int, float)) and not (isinstance(x, float) and math.isnan(x))


def format_figure(name: str, x: Any) -> str:
    """:func:`format_value`, with binary units for a figure counted in bytes (1 GiB)."""
    if name.endswith("_bytes") and isinstance(x, (int, float)) and not isinstance(x, bool):
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if abs(x) >= scale:
                return f"{x / scale:.3g} {suffix}"
    return format_value(x)


def format_value(x: Any) -> str:
    """A compact figure: 9.1M, 12.3k, 0.812, 3e-10, true."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if not isinstance(x, (int, float)):
        return "n/a" if x is None else str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    ax = abs(x)
    for floor, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if ax >= floor:
            return f"{x / scale:.3g}{suffix}"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x)}"
    if ax >= 1e-3:
        return f"{x:.3g}"
    return f"{x:.2g}"


@dataclass(frozen=True)
class TargetSpec:
    id: int
    key: str
    name: str
    runner: str  # module path; the module exposes run(ctx, params) -> Outcome
    floor: str
    goal: str
    units: dict[str, str]
    sizes: dict[str, dict[str, Any]]  # size name -> parameters (quick/full override stated)
    labels: dict[str, str]  # parameter -> how a reduced size names it ("ticks", ...)
    floor_checks: tuple[Check, ...] = ()
    goal_checks: tuple[Check, ...] = ()
    directions: tuple[tuple[str, str], ...] = ()  # (figure, "higher" | "lower"), declared

    def direction(self, figure: str) -> str | None:
        """Whether ``higher`` or ``lower`` is better for ``figure`` (None: neither known).
        A declared direction wins; otherwise the first check over the figure that implies
        one."""
        for name, way in self.directions:
            if name == figure:
                return way
        for check in (*self.floor_checks, *self.goal_checks):
            if check.figure == figure and check.direction is not None:
                return check.direction
        return None

    def directed_figures(self) -> dict[str, str]:
        """Every figure with a known direction -> that direction."""
        names = [n for n, _ in self.directions]
        names += [c.figure for c in (*self.floor_checks, *self.goal_checks)]
        out: dict[str, str] = {}
        for name in names:
            way = self.direction(name)
            if way is not None:
                out.setdefault(name, way)
        return out

    def parameters(self, size: str) -> dict[str, Any]:
        """The parameters for ``size``: the stated ones, overridden by that size's."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
        params = dict(self.sizes["stated"])
        if size != "stated":
            params.update(self.sizes.get(size, {}))
        return params

    def reductions(self, params: dict[str, Any]) -> list[str]:
        """Human-readable notes for every parameter below its stated size."""
        stated = self.sizes["stated"]
        out = []
        for key, label in self.labels.items():
            value, full = params.get(key), stated.get(key)
            if isinstance(value, (int, float)) and isinstance(full, (int, float)) and value < full:
                out.append(f"{value:,} of {full:,} {label}")
        return out


def load_targets(text: str | None = None) -> list[TargetSpec]:
    """Parse the registry (the packaged ``targets.json`` unless ``text`` is given)."""
    if text is None:
        text = resources.files("mmsb.validation").joinpath("targets.json").read_text("utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RegistryError(f"targets.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise RegistryError("targets.json is not an MMSB validation target registry")
    if data.get("version") != REGISTRY_VERSION:
        raise RegistryError(
            f"targets.json has version {data.get('version')!r}; this build reads {REGISTRY_VERSION}"
        )
    specs = [_spec(entry) for entry in data.get("targets", [])]
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise RegistryError("targets.json lists a target id twice")
    return sorted(specs, key=lambda s: s.id)


def _spec(entry: Any) -> TargetSpec:
    try:
        sizes = {str(k): dict(v) for k, v in entry["sizes"].items()}
        spec = TargetSpec(
            id=int(entry["id"]),
            key=str(entry["key"]),
            name=str(entry["name"]),
            runner=str(entry["runner"]),
            floor=str(entry["floor"]),
            goal=str(entry["goal"]),
            units={str(k): str(v) for k, v in entry.get("units", {}).items()},
            sizes=sizes,
            labels={str(k): str(v) for k, v in entry.get("labels", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(f"targets.json has an invalid target entry: {exc!r}") from None
    where = f"target #{spec.id}"
    floor = _checks(entry.get("floor_checks"), f"{where} floor_checks")
    goal = _checks(entry.get("goal_checks"), f"{where} goal_checks")
    if not floor:
        raise RegistryError(f"{where}: floor_checks must list at least one check")
    if not goal:
        raise RegistryError(f"{where}: goal_checks must list at least one check")
    directions = entry.get("directions", {})
    if not isinstance(directions, dict) or not all(
        isinstance(k, str) and k and v in DIRECTIONS for k, v in directions.items()
    ):
        raise RegistryError(f"{where}: directions must map figure names to {DIRECTIONS}")
    spec = replace(spec, floor_checks=floor, goal_checks=goal,
                   directions=tuple(sorted(directions.items())))  # fmt: skip
    if "stated" not in sizes or not set(sizes) <= set(SIZES):
        raise RegistryError(f"target #{spec.id}: sizes must include 'stated' (and only {SIZES})")
    stated = sizes["stated"]
    for key, value in sizes.get("full", {}).items():
        if isinstance(value, (int, float)) and value < stated.get(key, value):
            raise RegistryError(f"target #{spec.id}: full size of {key!r} is below the stated")
    for key, value in sizes.get("quick", {}).items():
        if isinstance(value, (int, float)) and value > stated.get(key, value):
            raise RegistryError(f"target #{spec.id}: quick size of {key!r} is above the stated")
    return spec


CHECK_KEYS = {"figure", "op", "value", "ref", "sizes"}


def _checks(raw: Any, where: str) -> tuple[Check, ...]:
    if not isinstance(raw, list):
        raise RegistryError(f"{where} must be a list of checks")
    return tuple(_check(item, f"{where}[{i}]") for i, item in enumerate(raw))


def _check(item: Any, where: str) -> Check:
    if not isinstance(item, dict):
        raise RegistryError(f"{where} is not an object")
    unknown = set(item) - CHECK_KEYS
    if unknown:
        raise RegistryError(f"{where} has unknown keys {sorted(unknown)}")
    figure, op = item.get("figure"), item.get("op")
    if not isinstance(figure, str) or not figure:
        raise RegistryError(f"{where} needs a figure name")
    if op not in OPS:
        raise RegistryError(f"{where} has op {op!r}; expected one of {', '.join(OPS)}")
    has_value, has_ref = "value" in item, "ref" in item
    if has_value == has_ref:
        raise RegistryError(f"{where} needs exactly one of 'value' and 'ref'")
    value, ref = item.get("value"), item.get("ref")
    if has_value:
        if not isinstance(value, (bool, int, float)) or (
            isinstance(value, float) and not math.isfinite(value)
        ):
            raise RegistryError(f"{where} value must be a finite number or a boolean")
        if isinstance(value, bool) and op != "==":
            raise RegistryError(f"{where} compares a boolean with {op!r}; only '==' is allowed")
    elif not isinstance(ref, str) or not ref:
        raise RegistryError(f"{where} ref must name a figure")
    sizes = item.get("sizes", list(SIZES))
    if not isinstance(sizes, list) or not sizes or not set(sizes) <= set(SIZES):
        raise RegistryError(f"{where} sizes must be a non-empty list of {SIZES}")
    return Check(figure, op, value, ref, tuple(s for s in SIZES if s in sizes))


@dataclass(frozen=True)
class CheckResult:
    """One check evaluated on one run: ``met`` is None where it does not apply at the size."""

    kind: str  # "floor" | "goal"
    check: Check
    met: bool | None
    actual: Any
    expected: Any

    def to_json(self) -> dict[str, Any]:
        c = self.check
        out: dict[str, Any] = {"kind": self.kind, "figure": c.figure, "op": c.op}
        out["ref" if c.ref is not None else "value"] = c.ref if c.ref is not None else c.value
        out.update(actual=_plain(self.actual), expected=_plain(self.expected), met=self.met)
        return out

    def text(self) -> str:
        """``p99_ms 12.3 < 16``, with the other figure's value for a ``ref`` check."""
        c = self.check
        if c.ref is None:
            rhs = format_figure(c.figure, c.value)
        else:
            rhs = f"{c.ref} {format_figure(c.ref, self.expected)}"
        return f"{c.figure} {format_figure(c.figure, self.actual)} {SHOWN_OPS[c.op]} {rhs}"


def _plain(x: Any) -> Any:
    """A JSON-safe scalar (no NaN/Infinity tokens, which strict JSON readers refuse)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x if x is None or isinstance(x, (bool, int, float, str)) else repr(x)


def evaluate(
    spec: TargetSpec, figures: dict[str, Any], size: str
) -> tuple[list[CheckResult], bool, bool | None]:
    """Every floor and goal check of ``spec`` on ``figures`` at ``size``: (results, every
    applicable floor check met, every applicable goal check met or None if none applies)."""
    results = []
    for kind, checks in (("floor", spec.floor_checks), ("goal", spec.goal_checks)):
        for check in checks:
            if not check.applies(size):
                expected = figures.get(check.ref) if check.ref is not None else check.value
                results.append(CheckResult(kind, check, None, figures.get(check.figure),
                                           expected))  # fmt: skip
                continue
            met, actual, expected = check.evaluate(figures)
            results.append(CheckResult(kind, check, met, actual, expected))
    floor = all(r.met is not False for r in results if r.kind == "floor")
    goals = [r.met for r in results if r.kind == "goal" and r.met is not None]
    return results, floor, (all(goals) if goals else None)
