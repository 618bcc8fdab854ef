"""Target #3: graph validation and cycle detection at scale.

A bus with N pages gets M random DAG edges (a hidden random order keeps it acyclic while
insertion order ignores page ids), inserted one ``add_edge`` call at a time, each with its
incremental cycle check and its log frame. Then 1,000 reversed edges, each of which would
close a cycle, must all be refused; ``validate()`` and ``topo_order()`` are timed (median of
five) and the order is checked against every edge.
"""

from __future__ import annotations

from typing import Any

from mmsb.benchmarks.graph import graph_scale
from mmsb.validation.runner import Context, Outcome

FLOOR_VALIDATE_MS_PER_10K = 10.0  # seed: cycle detection < 10 ms per 10k pages
FLOOR_MS_PER_PAGE = 1.0  # seed: validation < 1 ms per page
GOAL_INSERT_US = 100.0


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    pages, edges = int(params["pages"]), int(params["edges"])
    r = graph_scale(pages, edges, int(params["seed"]), progress=ctx.progress)
    per_10k = r["validate_ms"] * 10_000 / pages
    per_page = r["validate_ms"] / pages
    correct = r["validate_ok"] and r["topo_valid"] and r["cycles_refused"] == r["cycles_tried"] > 0
    speed = per_10k <= FLOOR_VALIDATE_MS_PER_10K and per_page <= FLOOR_MS_PER_PAGE
    goal = speed and r["insert_us_mean"] <= GOAL_INSERT_US and r["topo_ms"] <= 10.0
    summary = (
        f"{pages:,} pages / {edges:,} edges: insert with cycle check {r['insert_us_mean']:.1f} "
        f"µs/edge (p99 {r['insert_us_p99']:.0f} µs), validate {r['validate_ms']:.2f} ms "
        f"({per_10k:.2f} ms per 10k pages), topo_order {r['topo_ms']:.2f} ms; "
        f"{r['cycles_refused']:,}/{r['cycles_tried']:,} cycle-closing edges refused"
    )
    return Outcome(correct and speed, {**r, "ms_per_10k_pages": per_10k, "goal_met": goal},
                   summary, correct=correct)  # fmt: skip
