"""Target #5: throughput of the whole commit call.

Real deltas with payloads (16-byte range deltas, 64-byte dense-masked deltas) are committed
in batches on an on-disk bus with ``sync="normal"`` and the log on; each figure is the wall
time of the loop of whole ``apply_batch`` calls (checks, epochs, log frame, apply, publish).
The 2-worker figure is its own run; the speed-up is the median of five paired,
interleaved runs, reported with the machine's own ceiling (two independent processes doing
the same work) measured in the same run (:func:`mmsb.benchmarks.engine.scaling`). The floor
is a plain numpy scatter of the same bytes.
Before the timings, the same batches committed with 1 and with 2 workers must leave equal
states and byte-identical logs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks import engine
from mmsb.benchmarks.common import Result
from mmsb.storage.log import list_segments
from mmsb.validation.runner import Context, Outcome
from mmsb.validation.series import throughput_sweep
from mmsb.validation.workload import make_clock

SEED_SINGLE = 1_000_000  # deltas/s, the seed's floor for one worker
SEED_MULTI = 10_000_000  # deltas/s, the seed's floor for "multi"
GOAL_SINGLE = 10_000_000
GOAL_SPEEDUP = 1.7
GOAL_CEILING = 0.9  # of what two independent processes reach on the same machine
GOAL_DENSE = 3_000_000
GOAL_FLOOR_RATIO = 2.0
SWEEP_BATCHES = (1_000, 10_000)  # besides the target's own batch, for the HTML report's plot


def same_result_for_worker_counts(ctx: Context, batches: int, seed: int) -> bool:
    """The same batches through 1 and 2 workers: equal state hashes and log bytes."""
    digests, logs = [], []
    for workers in (1, 2):
        path = ctx.path(f"workers-{workers}")
        rng = np.random.default_rng(seed)
        with mmsb.open(path, sync="normal", clock=make_clock()) as bus:
            ids = bus.create_pages(4096, 1024)
            for b in engine.make_batches(rng, ids, 1024, 16, 100_000, batches, False):
                bus.apply_batch(b, workers=workers)
            digests.append(bus.state_hash())
        logs.append(b"".join(Path(p).read_bytes() for _, p in list_segments(path + "/log")))
    return digests[0] == digests[1] and logs[0] == logs[1]


def _rounded(v: float | None) -> int | None:
    return None if v is None else round(v)


def _cap(r: Result) -> str:
    """What the log's write calls alone allowed in run ``r`` (its share of the time)."""
    cap = r.extra["log_write_cap"]
    if cap is None:
        return "no time in the log write"
    return (f"the log write alone caps it at {cap / 1e6:.2f} M/s, "
            f"{r.value / cap:.0%} reached")  # fmt: skip


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    total = int(params["deltas"])
    dense_total = int(params["dense_deltas"])
    batch = int(params["batch"])
    seed = int(params["seed"])
    same = same_result_for_worker_counts(ctx, int(params["check_batches"]), seed)

    def progress(what: str) -> engine.Progress:
        return lambda done, of: ctx.progress(what, done, of)

    one = engine.commits(payload=16, workers=1, total=total, batch=batch, seed=seed,
                         progress=progress("1 worker"))  # fmt: skip
    two = engine.commits(payload=16, workers=2, total=total, batch=batch, seed=seed,
                         progress=progress("2 workers"))  # fmt: skip
    dense = engine.commits(payload=64, dense=True, workers=1, total=dense_total, batch=batch,
                           seed=seed, progress=progress("dense, 1 worker"))  # fmt: skip
    fl = engine.floor(payload=16, total=total, batch=batch, seed=seed)
    seed_wl = engine.seed_workload(workers=1, total=total, progress=progress("seed workload"))
    ctx.progress("2-worker speed-up, paired, and the machine's ceiling", 0, 1)
    scaled = engine.scaling(workers=2, pairs=5, total=max(total // 5, 200_000), batch=batch,
                            seed=seed)  # fmt: skip
    # throughput against batch size and workers: smaller batches measured here (at most 200
    # calls each), the target's batch size from the two runs above
    sweep = throughput_sweep(
        [(b, w, min(max(total // 10, 50 * b), 200 * b)) for b in SWEEP_BATCHES for w in (1, 2)],
        seed=seed, progress=ctx.progress,
    )  # fmt: skip
    for r in (one, two):
        sweep["batch"].append(batch)
        sweep["workers"].append(int(r.conditions["workers"]))
        sweep["deltas"].append(int(r.conditions["deltas"]))
        sweep["deltas_per_s"].append(round(r.value))
    results: list[Result] = [one, two, dense, fl, seed_wl, scaled]
    # the speed-up is the median of paired, interleaved runs (1 worker, 2 workers, ...),
    # read against what two independent processes reach on this machine in the same run
    speedup = scaled.value
    ceiling = float(scaled.extra["ceiling"])
    fraction = float(scaled.extra["fraction_of_ceiling"])
    reliable = bool(scaled.extra["reliable"])
    floor_ratio = fl.value / one.value
    figures: dict[str, Any] = {
        "single_deltas_per_s": round(one.value),
        "two_workers_deltas_per_s": round(two.value),
        "speedup_2_workers": round(speedup, 3),
        "speedup_2_workers_one_pair": round(two.value / one.value, 3),
        "ceiling_2_processes": round(ceiling, 3),
        "fraction_of_ceiling": round(fraction, 3),
        "log_write_share_1_worker": scaled.extra["log_write_share"],
        "bound_log_write": scaled.extra["bound_log_write"],
        "fraction_of_bound": scaled.extra["fraction_of_bound"],
        "speedup_reliable": reliable,
        "speedup_ratios": scaled.extra["ratios"],
        "ceiling_ratios": scaled.extra["ceiling_ratios"],
        "fractions_of_ceiling": scaled.extra["fractions"],
        "log_mb_per_s_1_worker": scaled.extra["log_mb_per_s"],
        "dense64_deltas_per_s": round(dense.value),
        "dense64_log_write_share": round(dense.extra["log_write_share"], 3),
        "dense64_log_write_cap": _rounded(dense.extra["log_write_cap"]),
        "dense64_without_log_write": _rounded(dense.extra["without_log_write"]),
        "floor_deltas_per_s": round(fl.value),
        "floor_ratio": round(floor_ratio, 3),
        "seed_workload_deltas_per_s": round(seed_wl.value),
        "same_state_and_log_1_vs_2_workers": same,
        "runs": [r.to_json() for r in results],
        "series": sweep,
    }
    passed = same and one.value >= SEED_SINGLE and two.value >= SEED_MULTI
    summary = (
        f"1 worker {one.value / 1e6:.2f} M/s, 2 workers {two.value / 1e6:.2f} M/s; paired "
        f"speed-up x{speedup:.2f} against a machine ceiling of x{ceiling:.2f} "
        f"({fraction:.0%} of it, round by round"
        f"{'' if reliable else ', unreliable: runs spread > 30 %'}; the log "
        f"write alone caps it at x{scaled.extra['bound_log_write']:.2f}); "
        f"64 B dense {dense.value / 1e6:.2f} M/s ({_cap(dense)}), "
        f"{floor_ratio:.2f}x the numpy floor, seed workload {seed_wl.value / 1e6:.2f} M/s"
    )
    notes = [f"{total:,} x 16 B range deltas, batches of {batch:,}, 4,096 x 1 KiB pages, "
             f"sync=normal, log on, load average {os.getloadavg()[0]:.1f} at the end"]  # fmt: skip
    missed = [
        name
        for name, ok in (
            (f"1 worker >= {GOAL_SINGLE / 1e6:.0f} M/s", one.value >= GOAL_SINGLE),
            (f"2 workers >= x{GOAL_SPEEDUP}", speedup >= GOAL_SPEEDUP),
            (f"2 workers >= {GOAL_CEILING:.0%} of the ceiling", fraction >= GOAL_CEILING),
            (f"64 B dense >= {GOAL_DENSE / 1e6:.0f} M/s", dense.value >= GOAL_DENSE),
            (f"within {GOAL_FLOOR_RATIO:.0f}x of the floor", floor_ratio <= GOAL_FLOOR_RATIO),
        )
        if not ok
    ]
    if missed:
        notes.append("goals missed: " + ", ".join(missed))
    if not same:
        notes.append("1- and 2-worker runs differ")
    return Outcome(passed, figures, summary, notes, correct=same)
