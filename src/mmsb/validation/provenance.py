"""Target #10: provenance resolution time and chain depth.

A log of at least N deltas in which a derived chain of the stated depth is recomputed on
every tick; ``provenance()`` of the chain's last page must reach the chain's input through
every level (depth = chain length) and is timed without its cache (median of 20), after
the history index was built once (reported separately).
"""

from __future__ import annotations

from typing import Any

from mmsb.benchmarks.graph import provenance_depth
from mmsb.validation.runner import Context, Outcome

FLOOR_MS = 50.0
GOAL_MS = 10.0


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    depth = int(params["depth"])
    r = provenance_depth(int(params["deltas"]), depth, seed=int(params["seed"]),
                         progress=ctx.progress)  # fmt: skip
    correct = r["resolved_depth"] == depth and r["steps"] == depth + 1 and r["cache_hit"]
    speed = r["resolve_ms_max"] <= FLOOR_MS
    goal = speed and r["resolve_ms_median"] <= GOAL_MS
    summary = (
        f"resolve {r['resolve_ms_median']:.2f} ms median (max {r['resolve_ms_max']:.2f} ms), "
        f"depth {r['resolved_depth']}/{depth} with {r['steps']} steps on a log of "
        f"{r['log_deltas']:,} deltas; byte-level {r['byte_resolve_ms']:.2f} ms; cached "
        f"{r['cached_ms']:.3f} ms; history index built once in {r['index_build_ms']:.0f} ms"
    )
    return Outcome(correct and speed, {**r, "goal_met": goal}, summary, correct=correct)
