"""Target #6: tick latency.

The stated workload: pages of 1 KiB (float64), derived pages in diamonds and chains
(semiring and Python-function derivations mixed), random input deltas of 16–64 bytes per
tick, on an on-disk bus with ``sync="normal"``. Every tick commits its batch, propagates,
runs the maintenance step; p50/p99 over the measured ticks (after ten warm-up ticks), and
the latency of ticks with no input change. Correctness: after the run, every derived page
equals a recomputation from its parents (numpy, outside the bus).
"""

from __future__ import annotations

from typing import Any

from mmsb.benchmarks.graph import tick_latency
from mmsb.validation.runner import Context, Outcome

FLOOR_P99_MS = 16.0


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    r = tick_latency(
        pages=int(params["pages"]), derived=int(params["derived"]),
        deltas=int(params["deltas"]), ticks=int(params["ticks"]),
        seed=int(params["seed"]), progress=ctx.progress, check=True,
    )  # fmt: skip
    samples = r.pop("samples_ms")
    correct = r["derived_mismatches"] == 0
    speed = r["p99_ms"] <= FLOOR_P99_MS
    goal = speed and r["idle_p99_ms"] <= 1.0
    d = r["derivations"]
    summary = (
        f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.2f} ms over "
        f"{r['ticks']:,} ticks ({r['overruns']} over 16 ms); idle tick p99 "
        f"{r['idle_p99_ms']:.3f} ms; {r['pages']:,} pages of 1 KiB, {r['derived']:,} derived "
        f"({d['semiring']:,} semiring, {d['python']:,} Python), {r['deltas_per_tick']:,} "
        f"deltas/tick, {r['recomputed_mean']:.0f} recomputed/tick; derived pages equal "
        f"their recomputation: {r['derived'] - r['derived_mismatches']:,}/{r['derived']:,}"
    )
    figures = {**r, "goal_met": goal, "series": {"tick_ms": samples}}  # per-tick latencies
    return Outcome(correct and speed, figures, summary, correct=correct)
