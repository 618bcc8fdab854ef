"""The target registry: what each validation target promises and at which sizes it runs.

The registry is the package data file ``targets.json`` (versioned). Each entry names the
target, the seed's floor, our goal, the units of its figures, the module that measures it,
and its parameters per size: ``stated`` (the size the target is stated at, the default),
``quick`` (reduced, for CI) and ``full`` (at least the stated size). A new target is one
more entry plus one runner module exposing ``run(ctx, params) -> Outcome``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

REGISTRY_FORMAT = "mmsb-validation-targets"
REGISTRY_VERSION = 1
SIZES = ("quick", "stated", "full")


class RegistryError(ValueError):
    """``targets.json`` is malformed (a packaging or editing mistake, not a user error)."""


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
