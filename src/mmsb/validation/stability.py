"""Target #8: zero invariant failures over a long run with random graph mutations.

Each cycle is one tick committing a batch of dense-masked deltas over the lower half of the
byte pages (derived pages are drawn from the upper half, so input never overwrites them), with
random graph mutations between ticks: new derivations (boolean semiring or a Python XOR),
edges of every kind added (cycle-closing ones must be refused with the graph unchanged)
and removed, derivations dropped. Every ``check_every`` cycles all invariants run in full
(not sampled); a checkpoint is taken every 1,000 cycles so replay checks stay bounded.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import mmsb
from mmsb import semiring
from mmsb.benchmarks.graph import recompute_mismatches
from mmsb.validation.runner import Context, Outcome


def _xor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.bitwise_xor(a, b)
    return out


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    cycles, deltas = int(params["cycles"]), int(params["deltas"])
    pages, size = int(params["pages"]), int(params["page_size"])
    every = int(params["check_every"])
    rng = np.random.default_rng(int(params["seed"]))
    t0 = time.perf_counter()
    failures: list[str] = []
    runs = refused = mutations = edges_removed = 0
    with mmsb.open(ctx.path("stability"), sync="normal", invariant_every=0) as bus:
        ids = bus.create_pages(pages, size)
        width = 64
        for cycle in range(1, cycles + 1):
            # graph mutation
            r = rng.random()
            if r < 0.05:
                # children come from the upper half, never written by the input batches
                child = int(rng.choice(ids[pages // 2 :]))
                a, b = (int(x) for x in rng.choice(ids[ids != child], 2, replace=False))
                try:
                    if rng.random() < 0.5:
                        bus.derive_semiring(child, [a, b], semiring.BOOLEAN)
                    else:
                        bus.derive(child, _xor, [a, b], name="xor")
                    mutations += 1
                except mmsb.CycleError:
                    refused += 1
            elif r < 0.08:
                a, b = (int(x) for x in rng.choice(ids, 2, replace=False))
                kind = str(rng.choice(["control", "gpu", "compiler"]))
                before = len(bus.graph)
                try:
                    bus.graph.add_edge(a, b, kind)
                    mutations += 1
                except mmsb.CycleError:
                    refused += 1
                    if len(bus.graph) != before:
                        failures.append(f"cycle {cycle}: a refused edge changed the graph")
            elif r < 0.10 and len(bus.graph):
                e = bus.graph.edges()
                row = e[int(rng.integers(0, e.size))]
                bus.graph.remove_edge(int(row["parent"]), int(row["child"]),
                                      mmsb.graph.KINDS[int(row["kind"])])  # fmt: skip
                edges_removed += 1
            # one tick of masked deltas
            pids = rng.choice(ids[: pages // 2], deltas)
            offs = rng.integers(0, size - width + 1, deltas)
            masks = rng.random((deltas, width)) < 0.5
            data = rng.integers(0, 256, (deltas, width), dtype=np.uint8)
            batch = mmsb.DeltaBatch.from_deltas(
                [mmsb.Delta.dense(int(p), m, d, int(o)) for p, m, d, o in
                 zip(pids, masks, data, offs, strict=True)]
            )  # fmt: skip
            bus.tick(batch)
            if cycle % 1000 == 0:
                bus.checkpoint()
            if cycle % every == 0 or cycle == cycles:
                runs += 1
                for res in bus.invariants.run(sample=False):
                    if not res.passed:
                        failures.append(f"cycle {cycle}: {res.name}: {res.detail}")
                ctx.progress("stability cycles", cycle, cycles)
        stale_derived = recompute_mismatches(bus)
        verify = bus.verify()
        edges = len(bus.graph)
        derivations = len(bus.derivations())
        lsn = bus.lsn
    correct = not failures and stale_derived == 0 and verify.ok and runs > 0
    summary = (
        f"{len(failures)} invariant failures over {cycles:,} cycles × {deltas} masked deltas "
        f"({pages} pages of {size} B), all 6 built-in invariants "
        f"run {runs} times; {mutations} graph mutations, {refused} cycle-closing changes "
        f"refused, {edges_removed} edges removed ({edges} edges, {derivations} derivations at "
        f"the end); derived pages equal recomputation; verify "
        f"{'clean' if verify.ok else 'FAILED'} over {lsn:,} commits"
    )
    figures = {
        "cycles": cycles, "deltas_per_cycle": deltas, "pages": pages, "page_size": size,
        "invariant_runs": runs, "invariant_failures": len(failures), "failures": failures[:20],
        "graph_mutations": mutations, "cycles_refused": refused, "edges_removed": edges_removed,
        "final_edges": edges, "final_derivations": derivations, "derived_mismatches": stale_derived,
        "verify_ok": verify.ok, "commits": lsn, "seconds": round(time.perf_counter() - t0, 3),
    }  # fmt: skip
    return Outcome(correct, figures, summary, failures[:3])
