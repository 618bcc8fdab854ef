"""Graph, tick and provenance benchmarks (shared by ``mmsb validate`` targets #3, #6, #10).

* :func:`graph_scale`: N pages, M random DAG edges inserted one ``add_edge`` call at a time
  (cycle check and log frame included), then ``validate()`` and ``topo_order()``.
* :func:`tick_latency`: the tick workload of the propagation issue: pages of 1 KiB
  (float64), derived pages in diamonds and chains (semiring and Python-function derivations
  mixed), a fixed number of input deltas of 16–64 bytes per tick; tick wall-time
  percentiles, and the time of a tick with no input change.
* :func:`provenance_depth`: a log of ≥ N deltas in which a derived chain of the given
  depth is recomputed every tick; time to resolve the chain's last page.

Run as ``python -m mmsb.benchmarks.graph [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb import semiring
from mmsb.benchmarks.common import Result, scratch_dir

Progress = Callable[[str, int, int], None]


def _noop(what: str, done: int, total: int) -> None:
    return None


def random_dag(n_nodes: int, n_edges: int, seed: int) -> npt.NDArray[np.int64]:
    """``n_edges`` distinct edges (as node indices) that respect a hidden random order, so
    the graph is acyclic but insertion order does not follow page ids."""
    rng = np.random.default_rng(seed)
    rank = rng.permutation(n_nodes)
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_edges:
        a = rng.integers(0, n_nodes, 2 * n_edges)
        b = rng.integers(0, n_nodes, 2 * n_edges)
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            if x == y:
                continue
            u, v = (x, y) if rank[x] < rank[y] else (y, x)
            pairs.add((u, v))
            if len(pairs) == n_edges:
                break
    out = np.array(sorted(pairs), np.int64)
    return out[rng.permutation(len(out))]


def graph_scale(
    pages: int = 10_000, edges: int = 40_000, seed: int = 0, progress: Progress = _noop
) -> dict[str, Any]:
    """Insert ``edges`` random DAG edges one call at a time; time validate and topo_order."""
    pairs = random_dag(pages, edges, seed)
    with scratch_dir() as path, mmsb.open(path, sync="normal") as bus:
        ids = bus.create_pages(pages, 8)
        rows = ids[pairs]
        g = bus.graph
        per_call = np.empty(len(rows), np.int64)
        step = max(1, len(rows) // 20)
        for i, (p, c) in enumerate(rows.tolist()):
            t = time.perf_counter_ns()
            g.add_edge(p, c)
            per_call[i] = time.perf_counter_ns() - t
            if i % step == 0:
                progress("graph: inserting edges", i, len(rows))
        # the cycle check alone: every edge that would close a cycle is refused
        rng = np.random.default_rng(seed + 1)
        back = rows[rng.choice(len(rows), min(1000, len(rows)), replace=False)][:, ::-1]
        refused = 0
        t = time.perf_counter_ns()
        for p, c in back.tolist():
            try:
                g.add_edge(p, c)
            except mmsb.CycleError:
                refused += 1
        reject_ns = (time.perf_counter_ns() - t) / max(1, len(back))
        validate_ns = []
        topo_ns = []
        for _ in range(5):
            t = time.perf_counter_ns()
            rep = g.validate()
            validate_ns.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            order = g.topo_order()
            topo_ns.append(time.perf_counter_ns() - t)
        pos = np.empty(int(ids.max()) + 1, np.int64)
        pos[order] = np.arange(order.size)
        topo_ok = bool((pos[rows[:, 0]] < pos[rows[:, 1]]).all())
    return {
        "pages": pages,
        "edges": edges,
        "insert_us_mean": float(per_call.mean() / 1e3),
        "insert_us_p99": float(np.percentile(per_call, 99) / 1e3),
        "reject_us_mean": float(reject_ns / 1e3),
        "cycles_refused": refused,
        "cycles_tried": len(back),
        "validate_ms": float(np.median(validate_ns) / 1e6),
        "validate_ok": rep.ok,
        "topo_ms": float(np.median(topo_ns) / 1e6),
        "topo_valid": topo_ok,
    }


def build_tick_graph(
    bus: mmsb.Bus, pages: int, derived: int, python_every: int, page_size: int
) -> tuple[npt.NDArray[np.int64], dict[str, int]]:
    """Create ``pages`` float64 pages; make ``derived`` of them derived, in groups of five:
    B = A1 + A2, C = min(A2, A3) (min-plus with weight 0), D = max(B, C) (a diamond; every
    ``python_every``-th group's D is a Python function), E = D / 2, F = E + A1 (chains).
    Returns the input page ids and counts of each derivation kind."""
    ids = bus.create_pages(pages, page_size, dtype="float64")
    groups = derived // 5
    inputs = ids[: pages - 5 * groups]
    rng = np.random.default_rng(7)
    counts = {"semiring": 0, "python": 0}

    def py_max(b: npt.NDArray[np.float64], c: npt.NDArray[np.float64]) -> Any:
        return np.maximum(b, c)

    for g in range(groups):
        b, c, d, e, f = ids[pages - 5 * groups + 5 * g : pages - 5 * groups + 5 * g + 5].tolist()
        a1, a2, a3 = rng.choice(inputs, 3, replace=False).tolist()
        bus.derive_semiring(b, [a1, a2], semiring.SUM_PRODUCT)
        bus.derive_semiring(c, [a2, a3], semiring.MIN_PLUS, weights=[0.0, 0.0])
        if python_every and g % python_every == 0:
            bus.derive(d, py_max, [b, c], name="py_max")
            counts["python"] += 1
        else:
            bus.derive_semiring(d, [b, c], semiring.MAX_PLUS, weights=[0.0, 0.0])
            counts["semiring"] += 1
        bus.derive_semiring(e, [d], semiring.SUM_PRODUCT, weights=[0.5])
        bus.derive_semiring(f, [e, a1], semiring.SUM_PRODUCT)
        counts["semiring"] += 4
    return inputs, counts


def tick_batches(
    rng: np.random.Generator, inputs: npt.NDArray[np.int64], deltas: int, page_size: int,
    count: int,
) -> list[mmsb.DeltaBatch]:  # fmt: skip
    """``count`` batches of ``deltas`` range deltas of 2–8 float64 values (16–64 bytes)."""
    out = []
    for _ in range(count):
        pids = rng.choice(inputs, deltas)
        nel = rng.integers(2, 9, deltas)
        offs = rng.integers(0, page_size // 8 - nel + 1) * 8
        payloads = [rng.standard_normal(int(k)).tobytes() for k in nel.tolist()]
        out.append(mmsb.DeltaBatch.from_ranges(pids, offs, payloads))
    return out


def tick_latency(
    pages: int = 65_536, derived: int = 10_000, deltas: int = 10_000, ticks: int = 200,
    python_every: int = 20, page_size: int = 1024, seed: int = 0, sync: str = "normal",
    progress: Progress = _noop, check: bool = False, warmup: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Tick wall-time percentiles over ``ticks`` ticks of the stated workload."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync=sync, invariant_every=0) as bus:
        inputs, counts = build_tick_graph(bus, pages, derived, python_every, page_size)
        pool = tick_batches(rng, inputs, deltas, page_size, 16)
        # warm-up (default: each batch of the pool once): compile the kernels, compute every
        # derived page once, and write every arena page the measured ticks write, since the
        # first write to a page of a new arena file costs a page fault and the file system's
        # block conversion: a one-off per page, not the steady state the percentiles describe
        warmup = len(pool) if warmup is None else warmup
        for i in range(warmup):
            bus.tick(pool[i % len(pool)])
        totals = np.empty(ticks, np.int64)
        phases: dict[str, list[int]] = {}
        recomputed = np.empty(ticks, np.int64)
        derived_deltas = np.empty(ticks, np.int64)
        for i in range(ticks):
            rep = bus.tick(pool[i % len(pool)])
            totals[i] = rep.total_ns
            recomputed[i] = rep.pages_recomputed
            derived_deltas[i] = rep.derived_deltas
            for k, v in rep.phases_ns.items():
                phases.setdefault(k, []).append(v)
            if i % max(1, ticks // 20) == 0:
                progress("ticks", i, ticks)
        idle = np.array([bus.tick().total_ns for _ in range(50)], np.int64)
        mismatches = recompute_mismatches(bus) if check else -1
    return {
        "derived_mismatches": mismatches,
        "pages": pages,
        "derived": derived,
        "derivations": counts,
        "deltas_per_tick": deltas,
        "ticks": ticks,
        "warmup_ticks": warmup,
        "sync": sync,
        "p50_ms": float(np.percentile(totals, 50) / 1e6),
        "p99_ms": float(np.percentile(totals, 99) / 1e6),
        "max_ms": float(totals.max() / 1e6),
        "overruns": int((totals > 16e6).sum()),
        "phase_p50_ms": {k: float(np.percentile(v, 50) / 1e6) for k, v in phases.items()},
        "recomputed_mean": float(recomputed.mean()),
        "derived_deltas_mean": float(derived_deltas.mean()),
        "idle_p50_ms": float(np.percentile(idle, 50) / 1e6),
        "idle_p99_ms": float(np.percentile(idle, 99) / 1e6),
        "samples_ms": (totals / 1e6).round(4).tolist(),
    }


def recompute_mismatches(bus: mmsb.Bus) -> int:
    """How many derived pages differ from a recomputation of their derivation over their
    parents' current contents (numpy, outside the propagation engine)."""
    bad = 0
    for child, d in bus._propagator._derivations.items():
        parents = [bus.read(p) for p in d.parents]
        want: Any
        if d.semiring is not None:
            want = d.semiring.fold(parents, d.weights, dtype=bus.read(child).dtype)
        else:
            assert d.fn is not None
            want = d.fn(*parents)
        if not np.array_equal(np.asarray(want).view(np.uint8), bus.read(child).view(np.uint8)):
            bad += 1
    return bad


def provenance_depth(
    total_deltas: int = 1_000_000, depth: int = 30, batch: int = 10_000, pages: int = 4096,
    seed: int = 0, progress: Progress = _noop,
) -> dict[str, Any]:  # fmt: skip
    """Resolve provenance of the end of a ``depth``-long derived chain on a log of at least
    ``total_deltas`` deltas (the chain is recomputed every tick)."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync="off", invariant_every=0) as bus:
        ids = bus.create_pages(pages, 64, dtype="float64")
        chain = bus.create_pages(depth, 64, dtype="float64")
        root = int(ids[0])
        prev = root
        for c in chain.tolist():
            bus.derive_semiring(c, [prev], semiring.SUM_PRODUCT, weights=[1.5])
            prev = c
        written = 0
        ticks = 0
        while written < total_deltas:
            pids = rng.choice(ids, batch)
            pids[0] = root  # the chain's input changes every tick
            offs = rng.integers(0, 7, batch) * 8
            vals = rng.standard_normal((batch, 2))
            rep = bus.tick(mmsb.DeltaBatch.from_ranges(pids, offs, vals.view(np.uint8)))
            written += rep.input_deltas + rep.derived_deltas
            ticks += 1
            if ticks % 10 == 0:
                progress("provenance: writing the log", written, total_deltas)
        tail = int(chain[-1])
        bus._history.forget_index()  # time the one log scan that builds the history index
        t = time.perf_counter_ns()
        bus._history.index()
        index_ns = time.perf_counter_ns() - t
        t = time.perf_counter_ns()
        bus.provenance(tail, depth=depth + 2)
        first_ns = time.perf_counter_ns() - t
        resolve = []
        for _ in range(20):
            t = time.perf_counter_ns()
            p = bus._history._provenance_index().resolve(
                bus._live_state(), tail, None, depth + 2, bus.lsn, cache=False
            )
            resolve.append(time.perf_counter_ns() - t)
        t = time.perf_counter_ns()
        cached = bus.provenance(tail, depth=depth + 2)
        cached_ns = time.perf_counter_ns() - t
        byte_t = time.perf_counter_ns()
        bus.provenance(tail, byte=8, depth=depth + 2)
        byte_ns = time.perf_counter_ns() - byte_t
    return {
        "log_deltas": written,
        "ticks": ticks,
        "depth": depth,
        "resolved_depth": p.depth,
        "steps": p.steps,
        "first_call_ms": first_ns / 1e6,
        "index_build_ms": index_ns / 1e6,
        "resolve_ms_median": float(np.median(resolve) / 1e6),
        "resolve_ms_max": float(np.max(resolve) / 1e6),
        "byte_resolve_ms": byte_ns / 1e6,
        "cached_ms": cached_ns / 1e6,
        "cache_hit": cached.cached,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="reduced sizes")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args(argv)
    q = args.quick

    def progress(what: str, done: int, total: int) -> None:
        print(f"  {what}: {done}/{total}", file=sys.stderr)

    out: dict[str, Any] = {}
    out["graph"] = graph_scale(*((2000, 8000) if q else (10_000, 40_000)), progress=progress)
    print("graph:", json.dumps(out["graph"]))
    tick = tick_latency(ticks=50 if q else 200, progress=progress)
    out["tick"] = {k: v for k, v in tick.items() if k != "samples_ms"}
    print("tick:", json.dumps(out["tick"]))
    out["provenance"] = provenance_depth(
        total_deltas=100_000 if q else 1_000_000, progress=progress
    )
    print("provenance:", json.dumps(out["provenance"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: Result(k, 0, "", {}, v).to_json() for k, v in out.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
