"""Target #9: numeric stability of propagation (bounded error, no NaN/Inf, smooth).

A float64 graph is built through the public derive API: source pages of values in [-1, 1]
and five layers of derived pages, each page computed from random pages of the layer below:

======== ============================================ ========== ===========
layer    page function (element-wise)                 Lipschitz  cumulative
======== ============================================ ========== ===========
mix      SUM_PRODUCT semiring, 4 parents, random      1          1
         signed weights with sum |w| = 1
squash   tanh(0.75 (a + b))                           1.5        1.5
product  a · b  (|a|, |b| < 1, both from squash)      2          3
average  SUM_PRODUCT semiring, 4 parents, random   1          3
         positive weights with sum w = 1
logistic 1 / (1 + exp(-2 (a - b)))                    1          3
======== ============================================ ========== ===========

The Lipschitz constants are in the max norm over a page's parents: a weighted sum moves by
at most sum |w| times the largest parent change; tanh' ≤ 1, so tanh(0.75 (a + b)) moves by
at most 0.75 · 2 = 1.5 times it; |Δ(ab)| ≤ |b||Δa| + |a||Δb| + |Δa||Δb| ≤ 2 max(|Δa|, |Δb|)
plus a second-order term, because squash outputs lie in (-1, 1); the logistic function's
slope is at most 1/4, times the inner factor 2 · 2 gives 1. Composed along the layers, a
change δ at the sources moves a page of layer ``l`` by at most C_l · δ, C_l the product of
the constants up to ``l``; the largest, C = 3, is the stated constant.

The same graph and the same random source writes run on two buses from one seed, the second
with relative noise ε added to every source value it writes (x · (1 + ε u), u uniform in
[-1, 1]); δ is the largest input change actually written. After every tick each layer's
largest divergence between the two buses must be ≤ C_l · δ + ρ, where ρ = 2^-40 (about
9e-13, far above the float64 rounding of a few dozen operations on values of magnitude ≤ 1,
about 1e-14, and far below the noise) allows for rounding, which both runs commit
independently; the second-order product term (≤ δ², below 1e-17) falls within it too. Every
value of every page on both buses must be finite after every tick. A third bus repeats the
noise-free run: its pages must be bit-identical after every tick, and its state hash equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb import semiring
from mmsb.batch import DeltaBatch
from mmsb.validation.runner import Context, Outcome
from mmsb.validation.workload import make_clock

F64 = npt.NDArray[np.float64]
ROUNDING = 2.0**-40  # absolute allowance for float64 rounding (see the module doc)
SPAN = 8  # float64 elements per source write


def squash(a: F64, b: F64) -> F64:
    return np.tanh(0.75 * (a + b))


def product(a: F64, b: F64) -> F64:
    return a * b


def logistic(a: F64, b: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-2.0 * (a - b)))


@dataclass(frozen=True)
class Layer:
    """Pages computed from ``fan_in`` random pages of the layer below.

    ``share`` is the layer's page count as a fraction of the source count; ``lipschitz``
    is the page function's max-norm Lipschitz constant in its parents (over the range the
    parents take); ``fn`` is a Python derivation, or None for a SUM_PRODUCT semiring with
    ``weights`` "signed" (random, sum |w| = 1) or "average" (random positive, sum w = 1)."""

    name: str
    share: float
    fan_in: int
    lipschitz: float
    fn: Callable[..., Any] | None = None
    weights: str = "signed"


LAYERS: tuple[Layer, ...] = (
    Layer("mix", 0.5, 4, 1.0, weights="signed"),
    Layer("squash", 0.5, 2, 1.5, fn=squash),
    Layer("product", 0.25, 2, 2.0, fn=product),
    Layer("average", 0.25, 4, 1.0, weights="average"),
    Layer("logistic", 0.25, 2, 1.0, fn=logistic),
)


def cumulative_bounds(layers: tuple[Layer, ...]) -> list[float]:
    """C_l for every layer: the product of the Lipschitz constants up to it."""
    out, c = [], 1.0
    for layer in layers:
        c *= layer.lipschitz
        out.append(c)
    return out


STATED_BOUND = max(cumulative_bounds(LAYERS))  # C = 3 for the layers above


@dataclass(frozen=True)
class Node:
    """How one derived page was registered (for an independent recomputation)."""

    child: int
    layer: Layer
    parents: tuple[int, ...]
    weights: tuple[float, ...] | None  # semiring weights; None for a Python derivation


def build(
    bus: mmsb.Bus, layers: tuple[Layer, ...], sources: int, elements: int, seed: int
) -> tuple[list[npt.NDArray[np.int64]], list[Node]]:
    """Create the source pages and the derived layers; return the page ids per level
    (sources first) and every derived page's registration. The graph depends only on
    ``seed``."""
    rng = np.random.default_rng([seed, 1])
    size = elements * 8
    levels = [np.asarray(bus.create_pages(sources, size, dtype="float64"), np.int64)]
    nodes: list[Node] = []
    for layer in layers:
        below = levels[-1]
        n = max(1, round(sources * layer.share))
        ids = np.asarray(bus.create_pages(n, size, dtype="float64"), np.int64)
        for child in ids.tolist():
            parents = [int(p) for p in rng.choice(below, size=layer.fan_in, replace=False)]
            if layer.fn is not None:
                bus.derive(child, layer.fn, parents=parents, name=layer.name)
                nodes.append(Node(child, layer, tuple(parents), None))
                continue
            # random weights, so that pages with the same parents still differ
            w = rng.uniform(-1.0 if layer.weights == "signed" else 0.1, 1.0, layer.fan_in)
            w /= np.abs(w).sum()
            bus.derive_semiring(child, parents, semiring.SUM_PRODUCT, weights=w, name=layer.name)
            nodes.append(Node(child, layer, tuple(parents), tuple(float(x) for x in w)))
        levels.append(ids)
    return levels, nodes


def source_writes(
    rng: np.random.Generator, sources: npt.NDArray[np.int64], elements: int, rows: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], F64]:
    """One tick's random source writes: page ids, byte offsets, values in [-1, 1]."""
    pages = rng.choice(sources, size=rows)
    offsets = rng.integers(0, elements - SPAN + 1, size=rows) * 8
    values = rng.uniform(-1.0, 1.0, (rows, SPAN))
    return pages, offsets.astype(np.int64), values


def _batch(pages: Any, offsets: Any, values: F64) -> DeltaBatch:
    payload = np.ascontiguousarray(values, dtype=np.float64).view(np.uint8)
    return DeltaBatch.from_ranges(pages, offsets, payload.reshape(values.shape[0], -1))


def _read(bus: mmsb.Bus, ids: npt.NDArray[np.int64]) -> F64:
    return np.stack([bus.read(int(p)) for p in ids.tolist()]).astype(np.float64, copy=False)


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    return measure(
        ctx,
        sources=int(params["sources"]),
        elements=int(params["elements"]),
        ticks=int(params["ticks"]),
        noise=float(params["noise"]),
        seed=int(params["seed"]),
    )


def measure(
    ctx: Context,
    *,
    sources: int,
    elements: int,
    ticks: int,
    noise: float,
    seed: int,
    layers: tuple[Layer, ...] | None = None,
    bound: float = STATED_BOUND,
) -> Outcome:
    """Run the clean, noisy and repeated buses in lock step; ``layers`` (default
    :data:`LAYERS`) may be replaced to show that the check can fail, while ``bound`` stays
    the stated constant and each layer's bound the product of the *declared* constants."""
    layers = LAYERS if layers is None else layers
    if elements < SPAN or sources < 4 or ticks < 1 or not 0.0 < noise < 1e-3:
        raise ValueError("numeric target: bad sizes (elements ≥ 8, sources ≥ 4, ticks ≥ 1, "
                         "0 < noise < 1e-3)")  # fmt: skip
    bounds = cumulative_bounds(layers)
    buses = [mmsb.open(ctx.path(f"numeric-{n}"), sync="off", clock=make_clock())
             for n in ("clean", "noisy", "repeat")]  # fmt: skip
    try:
        built = [build(b, layers, sources, elements, seed) for b in buses]
        if any(nodes != built[0][1] for _, nodes in built):
            raise RuntimeError("the three buses built different graphs")
        ids = built[0][0]
        rows = max(1, sources // 4)
        work = np.random.default_rng([seed, 2])
        jitter = np.random.default_rng([seed, 3])
        layer_div = np.zeros(len(layers))
        max_input = 0.0
        nonfinite = 0
        repeat_max = 0.0
        repeat_bytes = 0
        for tick in range(ticks + 1):
            if tick == 0:  # every source value set once
                pages = np.repeat(ids[0], elements // SPAN)
                offsets = np.tile(np.arange(elements // SPAN) * SPAN * 8, ids[0].size)
                values = work.uniform(-1.0, 1.0, (pages.size, SPAN))
            else:
                pages, offsets, values = source_writes(work, ids[0], elements, rows)
            noisy = values * (1.0 + noise * jitter.uniform(-1.0, 1.0, values.shape))
            max_input = max(max_input, float(np.abs(noisy - values).max()))
            for bus, vals in zip(buses, (values, noisy, values), strict=True):
                bus.tick(_batch(pages, offsets, vals))
            for level in range(len(ids)):
                clean, moved, again = (_read(b, ids[level]) for b in buses)
                nonfinite += int((~np.isfinite(clean)).sum() + (~np.isfinite(moved)).sum())
                if level:
                    with np.errstate(invalid="ignore"):
                        d = np.abs(moved - clean)
                    d = np.where(np.isfinite(d), d, np.inf)
                    layer_div[level - 1] = max(layer_div[level - 1], float(d.max()))
                same = clean.view(np.uint8) != again.view(np.uint8)
                repeat_bytes += int(same.sum())
                if same.any():
                    with np.errstate(invalid="ignore"):
                        r = np.abs(again - clean)
                    repeat_max = max(repeat_max, float(np.where(np.isfinite(r), r, np.inf).max()))
            ctx.progress("numeric ticks", tick, ticks)
        hash_equal = buses[0].state_hash() == buses[2].state_hash()
    finally:
        for bus in buses:
            bus.close()
    delta = max_input
    over = [
        layers[i].name
        for i in range(len(layers))
        if not layer_div[i] <= bounds[i] * delta + ROUNDING  # NaN/inf count as over
    ]
    # no input noise written (cannot happen with noise > 0) leaves nothing to relate to
    amplification = float(layer_div.max() / delta) if delta > 0 else None
    per_layer = [
        {
            "layer": layer.name,
            "pages": int(ids[i + 1].size),
            "lipschitz": layer.lipschitz,
            "bound": bounds[i],
            "max_divergence": float(layer_div[i]),
            "amplification": float(layer_div[i] / delta) if delta > 0 else None,
        }
        for i, layer in enumerate(layers)
    ]
    derived = int(sum(lv.size for lv in ids[1:]))
    figures: dict[str, Any] = {
        "sources": sources,
        "derived": derived,
        "elements": elements,
        "ticks": ticks,
        "noise": noise,
        "max_input_noise": delta,
        "max_divergence": float(layer_div.max()),
        "amplification": amplification,  # max divergence / δ, the noise actually written
        "divergence_per_epsilon": float(layer_div.max() / noise),  # the same over ε
        "bound": bound,
        "rounding_allowance": ROUNDING,
        "layers_over_bound": len(over),
        "nonfinite_values": nonfinite,
        "repeat_divergence": repeat_max,
        "repeat_bytes_differing": repeat_bytes,
        "repeat_hash_equal": hash_equal,
        "layers": per_layer,
    }
    correct = not over and nonfinite == 0 and repeat_bytes == 0 and hash_equal and delta > 0
    summary = (
        f"max divergence {layer_div.max():.3g} for input noise {delta:.3g} (ε {noise:g}): "
        f"x{amplification or 0.0:.3f}, bound C = {bound:g}; "
        f"{len(layers) - len(over)}/{len(layers)} layers within C_l·δ + 2^-40; "
        f"{nonfinite} NaN/Inf; noise-free repeat "
        f"{'bit-identical' if repeat_bytes == 0 and hash_equal else 'DIFFERS'}; "
        f"{sources:,} sources + {derived:,} derived pages of {elements} float64, "
        f"{ticks:,} ticks"
    )
    notes = [f"layer {name} above its bound" for name in over]
    if repeat_bytes:
        notes.append(f"noise-free repeat differs in {repeat_bytes:,} bytes")
    elif not hash_equal:
        notes.append("noise-free repeat has another state hash")
    return Outcome(correct, figures, summary, notes, correct=correct)
