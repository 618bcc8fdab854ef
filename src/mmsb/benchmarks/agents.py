"""Agent simulation: derived pages on a bus against the same computation in plain numpy.

``agents`` agents of ``fields`` float64 values each (one page of ``8 * fields`` bytes per
agent), each with ``neighbours`` random neighbours (distinct, never itself). One tick:

1. **input**: every agent's state becomes its action of the previous tick plus a small
   drift (one batch of ``agents`` range rows, committed by the tick);
2. **semiring layer**: ``influence[i] = Σ_j w[i, j] · state[nbr[i, j]]``, one
   ``derive_semiring`` (SUM_PRODUCT) per agent, run by the compiled kernel;
3. **Python layer**: ``action[i] = 0.9 · state[i] + 0.1 · tanh(influence[i])``, one
   ``derive_many`` over all agents: one numpy call per tick on the stacked parents.

The bus reads the actions back with one ``read_many`` per tick and ticks the new states in;
the numpy version computes the same arrays in the same order (the fold of the kernel, then
the same function), so the two end bit-identical, which the run checks. Both run in one
process, interleaved (MMSB, numpy, MMSB, numpy, ...): each pair's ticks/s, and the median
over the pairs.

Run as ``python -m mmsb.benchmarks.agents [--quick] [--sync MODE]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb import semiring
from mmsb.benchmarks.common import Result, scratch_dir

F64 = npt.NDArray[np.float64]
Progress = Callable[[str, int, int], None]


def _noop(what: str, done: int, total: int) -> None:
    return None


def step(x: F64) -> F64:
    """The Python layer: ``x`` is ``(agents, 2, fields)`` (own state, own influence)."""
    return np.asarray(0.9 * x[:, 0] + 0.1 * np.tanh(x[:, 1]))


def neighbours(agents: int, k: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """``k`` distinct random neighbours per agent, never the agent itself."""
    pick = np.argsort(rng.random((agents, agents - 1)), axis=1)[:, :k]
    return (pick + (pick >= np.arange(agents)[:, None])).astype(np.int64)


def _one_agent(state: F64, influence: F64) -> F64:
    return np.asarray(step(np.stack([state, influence])[None])[0])


class NumpySim:
    """The same simulation on plain numpy arrays."""

    def __init__(self, nbr: npt.NDArray[np.int64], w: F64, action: F64) -> None:
        self.nbr, self.w, self.action = nbr, w, action.copy()

    def tick(self, drift: F64) -> None:
        state = self.action + drift
        infl = np.zeros_like(state)
        for j in range(self.nbr.shape[1]):  # the kernel's order: acc = acc + w * parent
            infl = infl + self.w[:, j, None] * state[self.nbr[:, j]]
        self.action = step(np.stack([state, infl], axis=1))


class BusSim:
    """The simulation as derived pages of ``bus``."""

    def __init__(
        self, bus: mmsb.Bus, nbr: npt.NDArray[np.int64], w: F64, action: F64, many: bool = True
    ) -> None:
        n, fields = action.shape
        self.bus = bus
        self.state = bus.create_pages(n, fields * 8, dtype="float64")
        self.infl = bus.create_pages(n, fields * 8, dtype="float64")
        self.act = bus.create_pages(n, fields * 8, dtype="float64")
        self.zeros = np.zeros(n, np.int64)
        # the actions start as ``action`` (the first tick reads them to make the states)
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(self.act, self.zeros, action))
        for i in range(n):
            bus.derive_semiring(int(self.infl[i]), self.state[nbr[i]].tolist(),
                                semiring.SUM_PRODUCT, weights=w[i], name="influence")  # fmt: skip
        rows = np.stack([self.state, self.infl], axis=1)
        if many:
            bus.derive_many(self.act, step, rows, name="step")
        else:  # the same layer as one derive per agent: one Python call each
            for c, r in zip(self.act.tolist(), rows.tolist(), strict=True):
                bus.derive(c, _one_agent, r, name="step")

    def tick(self, drift: F64) -> mmsb.TickReport:
        action = self.bus.read_many(self.act)
        batch = mmsb.DeltaBatch.from_ranges(self.state, self.zeros, action + drift)
        return self.bus.tick(batch)

    def actions(self) -> F64:
        return np.asarray(self.bus.read_many(self.act))


def agent_sim(
    agents: int = 4096, fields: int = 8, neighbours_k: int = 8, ticks: int = 100,
    pairs: int = 7, warmup: int = 20, sync: str = "normal", seed: int = 0,
    progress: Progress = _noop, many: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Ticks/s of the bus and of plain numpy, interleaved in ``pairs`` pairs of ``ticks``
    ticks each; the figures are medians over the pairs. ``many=False`` registers the
    Python layer as one ``derive`` per agent instead (for comparison)."""
    rng = np.random.default_rng(seed)
    nbr = neighbours(agents, neighbours_k, rng)
    w = rng.uniform(0.0, 1.0 / neighbours_k, (agents, neighbours_k))
    action0 = rng.standard_normal((agents, fields))
    drifts = [rng.normal(0.0, 0.01, (agents, fields)) for _ in range(16)]
    with scratch_dir() as path, mmsb.open(path, sync=sync, invariant_every=0) as bus:
        t = time.perf_counter()
        sim = BusSim(bus, nbr, w, action0, many)
        setup_s = time.perf_counter() - t
        ref = NumpySim(nbr, w, action0)
        done = 0
        for _ in range(warmup):  # compiles the kernels, faults the pages in
            sim.tick(drifts[done % 16])
            ref.tick(drifts[done % 16])
            done += 1
        bus_tps: list[float] = []
        np_tps: list[float] = []
        write_ms: list[float] = []  # the bus's time in the log's write calls, per tick
        recomputed: list[int] = []
        for p in range(pairs):
            w0 = bus.stats().log_write_ms
            t = time.perf_counter()
            for i in range(ticks):
                rep = sim.tick(drifts[(done + i) % 16])
                recomputed.append(rep.pages_recomputed)
            bus_tps.append(ticks / (time.perf_counter() - t))
            write_ms.append((bus.stats().log_write_ms - w0) / ticks)
            t = time.perf_counter()
            for i in range(ticks):
                ref.tick(drifts[(done + i) % 16])
            np_tps.append(ticks / (time.perf_counter() - t))
            done += ticks
            progress("agents: pairs", p + 1, pairs)
        identical = bool(np.array_equal(sim.actions().view(np.uint64),
                                        ref.action.view(np.uint64)))  # fmt: skip
    bus_med = float(np.median(bus_tps))
    np_med = float(np.median(np_tps))
    ratios = [b / n for b, n in zip(np_tps, bus_tps, strict=True)]
    # the same ratio with the log's write calls taken out of the bus's ticks: how far the
    # rest of the tick is from numpy, where the machine's page-cache copy is slow
    rest = [(1e3 / b - wm) / (1e3 / n) for b, n, wm in zip(bus_tps, np_tps, write_ms, strict=True)]
    return {
        "agents": agents,
        "fields": fields,
        "neighbours": neighbours_k,
        "ticks_per_segment": ticks,
        "pairs": pairs,
        "warmup_ticks": warmup,
        "sync": sync,
        "python_layer": "derive_many" if many else "one derive per agent",
        "setup_s": setup_s,
        "bus_ticks_per_s": bus_med,
        "numpy_ticks_per_s": np_med,
        "ratio": float(np.median(ratios)),  # numpy's speed over the bus's, per pair
        "ratio_without_log_write": float(np.median(rest)),
        "log_write_ms_per_tick": float(np.median(write_ms)),
        "log_write_ms_per_tick_pairs": [round(x, 3) for x in write_ms],
        "bus_ticks_per_s_pairs": [round(x, 1) for x in bus_tps],
        "numpy_ticks_per_s_pairs": [round(x, 1) for x in np_tps],
        "recomputed_per_tick": float(np.mean(recomputed)),
        "identical": identical,
    }


def scenarios(scale: float = 1.0) -> list[Callable[[], list[Result]]]:
    """``mmsb bench --suite agents``: the simulation at ``scale`` times 4,096 agents."""
    agents = max(int(4096 * scale), 64)

    def run() -> list[Result]:
        r = agent_sim(agents=agents)
        if not r["identical"]:
            raise AssertionError("the bus and numpy simulations differ")
        cond = {k: r[k] for k in ("agents", "fields", "neighbours", "sync", "pairs")}
        extra = {k: r[k] for k in ("ticks_per_segment", "warmup_ticks", "setup_s",
                                   "bus_ticks_per_s_pairs", "numpy_ticks_per_s_pairs",
                                   "log_write_ms_per_tick_pairs", "ratio_without_log_write",
                                   "recomputed_per_tick", "identical")}  # fmt: skip
        return [
            Result("agent simulation, bus (derive_semiring + derive_many)",
                   r["bus_ticks_per_s"], "ticks/s", cond, extra),
            Result("agent simulation, plain numpy", r["numpy_ticks_per_s"], "ticks/s", cond),
            Result("agent simulation, numpy / bus (median of pairs)", r["ratio"], "x", cond),
        ]  # fmt: skip

    return [run]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer ticks and pairs")
    ap.add_argument("--sync", default="normal", choices=["off", "normal", "always"])
    ap.add_argument("--agents", type=int, default=4096)
    ap.add_argument(
        "--each",
        action="store_true",
        help="the Python layer as one derive per agent, not derive_many",
    )
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    ticks, pairs, warmup = (30, 5, 5) if args.quick else (100, 7, 20)
    out = agent_sim(args.agents, ticks=ticks, pairs=pairs, warmup=warmup, sync=args.sync,
                    many=not args.each)  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(Result("agents", 0, "", {}, out).to_json(), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
