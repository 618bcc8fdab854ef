"""Storage-engine benchmarks: batched commits per sync mode, per-call writes, recovery of a
long log tail, and checkpoint time.

Run as ``python -m mmsb.benchmarks.storage [--scale X] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable

import numpy as np

import mmsb
from mmsb.benchmarks.common import Result, scratch_dir


def _batches(
    rng: np.random.Generator, ids: np.ndarray, page: int, payload: int, batch: int, count: int
) -> list[mmsb.DeltaBatch]:
    out = []
    for _ in range(count):
        pids = rng.choice(ids, batch)
        offs = rng.integers(0, page - payload + 1, batch)
        data = rng.integers(0, 256, (batch, payload), dtype=np.uint8)
        out.append(mmsb.DeltaBatch.from_ranges(pids, offs, data))
    return out


def batch_commits(
    payload: int = 16,
    sync: str = "normal",
    batch: int = 10_000,
    pages: int = 4096,
    page_size: int = 1024,
    total: int = 2_000_000,
    seed: int = 0,
) -> Result:
    """Commit ``total`` range deltas in batches; wall time of the whole loop, log on."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync=sync) as bus:
        ids = bus.create_pages(pages, page_size)
        pool = _batches(rng, ids, page_size, payload, batch, 16)
        bus.apply_batch(pool[0])  # warm the compiled kernels
        n = commits = 0
        t0 = time.perf_counter()
        while n < total:
            bus.apply_batch(pool[commits % len(pool)])
            n += batch
            commits += 1
        dt = time.perf_counter() - t0
    return Result(
        f"batched commits, {payload} B range deltas, sync={sync}",
        n / dt,
        "deltas/s",
        {"payload_bytes": payload, "batch": batch, "pages": pages, "page_size": page_size,
         "sync": sync, "workers": 1, "deltas": n},
        {"commits_per_s": commits / dt, "seconds": dt},
    )  # fmt: skip


def single_writes(count: int = 50_000, payload: int = 16, sync: str = "normal") -> Result:
    """Per-call ``Bus.write`` rate (one delta and one log frame per call)."""
    rng = np.random.default_rng(1)
    with scratch_dir() as path, mmsb.open(path, sync=sync) as bus:
        ids = bus.create_pages(1024, 1024).tolist()
        data = [rng.integers(0, 256, payload, dtype=np.uint8).tobytes() for _ in range(64)]
        offs = rng.integers(0, 1024 - payload, count).tolist()
        bus.write(ids[0], data[0])
        t0 = time.perf_counter()
        for i in range(count):
            bus.write(ids[i % 1024], data[i % 64], offset=offs[i])
        dt = time.perf_counter() - t0
    return Result(
        f"Bus.write() calls, {payload} B, sync={sync}",
        count / dt,
        "writes/s",
        {"payload_bytes": payload, "sync": sync, "calls": count},
        {"seconds": dt},
    )


def recovery(tail: int = 1_000_000, batch: int = 10_000, payload: int = 16) -> Result:
    """Reopen time after a crash with ``tail`` deltas logged after the last checkpoint."""
    rng = np.random.default_rng(2)
    with scratch_dir() as path:
        bus = mmsb.open(path, sync="normal", checkpoint_every=None)
        ids = bus.create_pages(4096, 1024)
        bus.checkpoint()
        pool = _batches(rng, ids, 1024, payload, batch, 8)
        for i in range(tail // batch):
            bus.apply_batch(pool[i % len(pool)])
        expected = bus.state_hash()
        bus.abandon()  # a crash: no clean-shutdown file, the tail must be replayed
        t0 = time.perf_counter()
        with mmsb.open(path) as again:
            dt = time.perf_counter() - t0
            ok = again.state_hash() == expected
            info = again.recovery
    if not ok:
        raise AssertionError("recovered state differs from the state before the crash")
    return Result(
        f"recovery of a {tail:,}-delta log tail",
        dt,
        "s",
        {"tail_deltas": info.deltas_replayed, "frames": info.frames_replayed,
         "batch": batch, "payload_bytes": payload, "pages": 4096, "page_size": 1024},
        {"mode": info.mode, "state_matches": ok},
    )  # fmt: skip


def checkpoint_time(pages: int = 65_536, page_size: int = 4096, sync: str = "normal") -> Result:
    """Time of ``Bus.checkpoint()`` for ``pages`` pages of ``page_size`` bytes, all written."""
    rng = np.random.default_rng(3)
    with scratch_dir() as path, mmsb.open(path, sync=sync, checkpoint_every=None) as bus:
        ids = bus.create_pages(pages, page_size)
        fill = rng.integers(0, 256, (pages, page_size), dtype=np.uint8)
        for lo in range(0, pages, 4096):
            hi = min(lo + 4096, pages)
            bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids[lo:hi], np.zeros(hi - lo, np.int64),
                                                        fill[lo:hi]))  # fmt: skip
        info = bus.checkpoint()
    return Result(
        f"checkpoint of {pages:,} pages x {page_size} B",
        info.seconds,
        "s",
        {"pages": pages, "page_size": page_size, "sync": sync},
        {"bytes": info.bytes, "MB_per_s": info.bytes / info.seconds / 1e6},
    )


def scenarios(scale: float = 1.0) -> list[Callable[[], Result]]:
    def n(x: int) -> int:
        return max(int(x * scale), 10_000)

    out: list[Callable[[], Result]] = []
    for sync in ("off", "normal", "always"):
        for payload in (16, 64):
            total = n(10_000_000) if sync != "always" else n(2_000_000)
            out.append(functools.partial(batch_commits, payload, sync, total=total))
    out.append(lambda: single_writes(n(100_000)))
    out.append(lambda: single_writes(max(int(2_000 * scale), 200), sync="always"))
    out.append(lambda: recovery(n(1_000_000)))
    out.append(lambda: checkpoint_time(max(int(65_536 * scale), 1024)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    results = []
    for fn in scenarios(args.scale):
        r = fn()
        results.append(r)
        extra = ", ".join(f"{k} {v:,.1f}" for k, v in r.extra.items() if isinstance(v, float))
        print(f"{r.name:<55} {r.value:>14,.3f} {r.unit:<9} {extra}")
        sys.stdout.flush()
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump([r.to_json() for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
