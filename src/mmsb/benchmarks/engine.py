"""Throughput-engine benchmarks: batched commits by payload shape and worker count, the
seed's own workload, and the floor (a plain numpy scatter of the same bytes).

Every figure is the wall time of a loop of whole ``Bus.apply_batch`` calls (checks, epochs,
log frame written, arena updated, LSN published) on an on-disk bus with the log on; a
multi-worker figure is measured with that many workers, never derived.

Run as ``python -m mmsb.benchmarks.engine [--scale X] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks.common import Result, scratch_dir

Progress = Callable[[int, int], None]


def make_batches(
    rng: np.random.Generator,
    ids: np.ndarray[Any, Any],
    page_size: int,
    payload: int,
    batch: int,
    count: int,
    dense: bool,
) -> list[mmsb.DeltaBatch]:
    """``count`` batches of ``batch`` random deltas of ``payload`` bytes (range, or dense
    masked with about half the mask set)."""
    out = []
    for _ in range(count):
        pids = rng.choice(ids, batch).astype(np.int64)
        offs = rng.integers(0, page_size - payload + 1, batch).astype(np.int64)
        data = rng.integers(0, 256, (batch, payload), dtype=np.uint8)
        if not dense:
            out.append(mmsb.DeltaBatch.from_ranges(pids, offs, data))
            continue
        starts = np.arange(batch, dtype=np.int64) * payload
        lengths = np.full(batch, payload, np.int64)
        mask = (rng.random(batch * payload) < 0.5).astype(np.uint8)
        b = mmsb.DeltaBatch(
            pids, offs, lengths, np.ones(batch, np.uint8), starts, lengths, starts,
            data.reshape(-1), mask, np.zeros(batch, np.uint16), ("bench",),
            np.full(batch, -1, np.int32), (),
        )  # fmt: skip
        b._check_structure()
        out.append(b)
    return out


def commits(
    *,
    payload: int = 16,
    dense: bool = False,
    workers: int = 1,
    batch: int = 100_000,
    pages: int = 4096,
    page_size: int = 1024,
    total: int = 10_000_000,
    sync: str = "normal",
    seed: int = 0,
    progress: Progress | None = None,
    name: str | None = None,
) -> Result:
    """Commit ``total`` deltas in batches of ``batch``; deltas/s over the whole loop."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync=sync) as bus:
        ids = bus.create_pages(pages, page_size)
        pool = make_batches(rng, ids, page_size, payload, batch, 8, dense)
        bus.apply_batch(pool[0], workers=workers)  # load compiled kernels, start threads
        n = calls = 0
        t0 = time.perf_counter()
        while n < total:
            bus.apply_batch(pool[calls % len(pool)], workers=workers)
            n += batch
            calls += 1
            if progress is not None and calls % 10 == 0:
                progress(n, total)
        dt = time.perf_counter() - t0
        log_bytes = bus.memory().log_bytes
    shape = "dense-masked" if dense else "range"
    return Result(
        name or f"{payload} B {shape} deltas, batch {batch:,}, {workers} worker(s)",
        n / dt,
        "deltas/s",
        {"payload_bytes": payload, "shape": shape, "batch": batch, "pages": pages,
         "page_size": page_size, "sync": sync, "log": "on", "workers": workers, "deltas": n},
        {"seconds": dt, "ns_per_delta": dt / n * 1e9, "log_bytes": log_bytes},
    )  # fmt: skip


def seed_workload(
    *, workers: int = 1, total: int = 10_000_000, progress: Progress | None = None
) -> Result:
    """The seed's own benchmark: 1-byte deltas over 4,096 pages of 1 byte, in chunks of
    4,096."""
    return commits(payload=1, workers=workers, batch=4096, pages=4096, page_size=1,
                   total=total, progress=progress,
                   name=f"seed workload: 1 B deltas, 4,096 x 1 B pages, chunks of 4,096, "
                        f"{workers} worker(s)")  # fmt: skip


def floor(
    *,
    payload: int = 16,
    batch: int = 100_000,
    pages: int = 4096,
    page_size: int = 1024,
    total: int = 10_000_000,
    seed: int = 0,
) -> Result:
    """A plain numpy scatter of the same bytes into the same arena: per batch, the flat
    byte index from the page slots, then one fancy assignment. No checks, no epochs, no log.
    The value counts the index computation; ``extra`` also gives the assignment alone."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync="normal") as bus:
        ids = bus.create_pages(pages, page_size)
        pool = make_batches(rng, ids, page_size, payload, batch, 8, False)
        state = bus._live_state()
        arena = state.arena.buf
        within = np.arange(payload, dtype=np.int64)
        n = calls = 0
        t0 = time.perf_counter()
        while n < total:
            b = pool[calls % len(pool)]
            idx = ((state.slot[b.page_ids] + b.offsets)[:, None] + within).reshape(-1)
            arena[idx] = b.payload
            n += batch
            calls += 1
        dt = time.perf_counter() - t0
        idxs = [((state.slot[b.page_ids] + b.offsets)[:, None] + within).reshape(-1)
                for b in pool]  # fmt: skip
        m = calls = 0
        t1 = time.perf_counter()
        while m < total:
            arena[idxs[calls % len(pool)]] = pool[calls % len(pool)].payload
            m += batch
            calls += 1
        dt_assign = time.perf_counter() - t1
        del arena, idx  # no view of the map may outlive the bus
    return Result(
        f"floor: numpy scatter of {payload} B rows, batch {batch:,}",
        n / dt,
        "deltas/s",
        {"payload_bytes": payload, "batch": batch, "pages": pages, "page_size": page_size,
         "log": "off", "checks": "none", "deltas": n},
        {"seconds": dt, "ns_per_delta": dt / n * 1e9,
         "assign_only_deltas_per_s": m / dt_assign},
    )  # fmt: skip


def scenarios(scale: float = 1.0) -> list[tuple[str, Callable[..., Result]]]:
    """(label, fn(progress=...)) for each engine benchmark at ``scale`` x the stated sizes."""
    total = max(int(10_000_000 * scale), 200_000)
    dense_total = max(int(3_000_000 * scale), 200_000)

    def run(**kw: Any) -> Callable[..., Result]:
        return lambda progress=None: commits(progress=progress, **kw)

    return [
        ("16 B range, 1 worker", run(payload=16, workers=1, total=total)),
        ("16 B range, 2 workers", run(payload=16, workers=2, total=total)),
        ("floor, 16 B numpy scatter", lambda progress=None: floor(total=total)),
        ("64 B dense masked, 1 worker", run(payload=64, dense=True, workers=1, total=dense_total)),
        ("64 B dense masked, 2 workers", run(payload=64, dense=True, workers=2, total=dense_total)),
        (
            "seed workload, 1 worker",
            lambda progress=None: seed_workload(workers=1, total=total, progress=progress),
        ),
        (
            "seed workload, 2 workers",
            lambda progress=None: seed_workload(workers=2, total=total, progress=progress),
        ),
    ]


def summarize(results: list[Result]) -> dict[str, float]:
    """Ratios the targets are stated in (2-worker speed-up, distance from the floor)."""
    by = {r.name: r for r in results}
    out: dict[str, float] = {}
    one = next((r for r in results if r.conditions.get("shape") == "range"
                and r.conditions.get("payload_bytes") == 16
                and r.conditions.get("workers") == 1), None)  # fmt: skip
    two = next((r for r in results if r.conditions.get("shape") == "range"
                and r.conditions.get("payload_bytes") == 16
                and r.conditions.get("workers") == 2), None)  # fmt: skip
    fl = next((r for n, r in by.items() if n.startswith("floor")), None)
    if one and two:
        out["speedup_2_workers"] = two.value / one.value
    if one and fl:
        out["floor_ratio_1_worker"] = fl.value / one.value
    if two and fl:
        out["floor_ratio_2_workers"] = fl.value / two.value
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    results = []
    for _, fn in scenarios(args.scale):
        r = fn()
        results.append(r)
        print(f"{r.name:<70} {r.value:>14,.0f} {r.unit}", flush=True)
    for k, v in summarize(results).items():
        print(f"{k:<70} {v:>14.2f}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"results": [r.to_json() for r in results],
                       "summary": summarize(results)}, f, indent=2)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
