"""Memory benchmarks: batch page creation rate, and the million-page run (footprint, GC
pauses, CPython's own GC pauses), all measured.

The million-page run: create ``pages`` pages of ``page_size`` bytes in one call, write every
page once (range deltas covering the page, in batches), read every page back and compare,
then delete half of them and let GC steps compact the arena, shrink the file, drop covered
log segments and finally evict the (now cold) pages. Throughout, RSS is sampled from
``/proc``, every GC step's pause is recorded, and ``gc.callbacks`` times each CPython
collection.

Run as ``python -m mmsb.benchmarks.memory [--scale X] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks.common import Result, scratch_dir
from mmsb.monitor.gc import GCReport
from mmsb.monitor.memory import mapping_resident_bytes, rss_bytes

Progress = Callable[[str, int, int], None]


def create_rate(pages: int = 1_000_000, page_size: int = 1024, repeats: int = 3) -> Result:
    """``Bus.create_pages(pages, page_size)`` on a fresh on-disk bus (log on, sync normal):
    pages per second of the whole call, best of ``repeats`` fresh buses."""
    best = float("inf")
    for _ in range(repeats):
        with scratch_dir() as path, mmsb.open(path, sync="normal") as bus:
            bus.create_pages(1, page_size)  # the first commit opens the log segment
            t0 = time.perf_counter()
            bus.create_pages(pages, page_size)
            best = min(best, time.perf_counter() - t0)
    return Result(
        f"create_pages({pages:,}, {page_size})",
        pages / best,
        "pages/s",
        {"pages": pages, "page_size": page_size, "sync": "normal", "repeats": repeats},
        {"seconds": best},
    )


@dataclass
class GCPauses:
    """CPython cyclic-GC pauses, timed through ``gc.callbacks``."""

    pauses_ns: list[int] = field(default_factory=list)
    _start: int = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
        elif self._start:
            self.pauses_ns.append(time.perf_counter_ns() - self._start)
            self._start = 0


def _page_data(lo: int, hi: int, page_size: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Deterministic contents for pages lo..hi-1 (recomputed to check the read-back)."""
    rows = np.arange(lo, hi, dtype=np.int64)
    row_term = ((rows * 131) ^ (rows >> 8)).astype(np.uint8)
    col_term = (np.arange(page_size, dtype=np.int64) * 7).astype(np.uint8)
    return np.add.outer(row_term, col_term)  # uint8: wraps mod 256


def _trim() -> None:
    """Hand the benchmark's own freed temporaries back to the OS (glibc keeps freed heap
    memory otherwise, and RSS would count it against the bus)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _warm_up(page_size: int, workers: int) -> None:
    """Run every code path once (compiled kernels load on first use) before measuring."""
    with scratch_dir() as path, mmsb.open(path, sync="normal") as bus:
        ids = bus.create_pages(40_000, page_size)
        data = _page_data(0, ids.size, page_size)
        bus.apply_batch(
            mmsb.DeltaBatch.from_ranges(ids, np.zeros(ids.size, np.int64), data), workers=workers
        )
        bus.delete_pages(ids[1::2].tolist())
        bus._live_state().gather(ids[::2])
        for _ in range(200):
            bus.gc(budget_ms=1.0, cold_after_s=0)
        bus.memory()


class _IdRange:
    """Consecutive page ids ``first .. first + n - 1``, sliced into arrays on demand."""

    def __init__(self, first: int, n: int) -> None:
        self.first, self.n = first, n

    def __getitem__(self, key: slice | int) -> Any:
        if isinstance(key, int):
            return self.first + key
        start, stop, step = key.indices(self.n)
        return np.arange(self.first + start, self.first + stop, step, dtype=np.int64)


def _digest(state: Any, ids: np.ndarray[Any, Any], chunk: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    for lo in range(0, ids.size, chunk):
        h.update(state.gather(ids[lo : lo + chunk]).tobytes())
    return h.hexdigest()


def million_pages(
    pages: int = 1_000_000,
    page_size: int = 1024,
    chunk: int = 8192,
    gc_budget_ms: float = 1.0,
    workers: int = 2,
    progress: Progress | None = None,
    series: dict[str, list[float]] | None = None,
) -> Result:
    """The million-page run (see the module doc). The value is the RSS growth in bytes.

    ``series``, when given, receives the samples behind the figures (for plots):
    ``pages_written`` and ``rss_growth_bytes`` after each written chunk, every GC step's
    pause (``gc_pause_ms``) and every CPython collection's (``cpython_gc_pause_ms``)."""
    _warm_up(page_size, workers)
    t0 = time.perf_counter()
    gc.collect()
    unfrozen_full_ms = (time.perf_counter() - t0) * 1e3
    # start-up objects (numpy, numba, ...: about 1e5) leave the collector's reach; what the
    # run allocates afterwards does not grow with pages, so collections stay short
    gc.freeze()
    frozen = gc.get_freeze_count()
    tracker = GCPauses()
    _trim()
    gc.callbacks.append(tracker)
    pauses: list[int] = []
    cpu: list[int] = []  # CPU time of each GC step (its wall time minus time not running)
    slow: list[tuple[int, ...]] = []  # steps over twice the budget: pause and phase times
    rss_samples: list[int] = []
    try:
        with (
            scratch_dir() as path,
            mmsb.open(
                path, sync="normal", checkpoint_every=None, auto_compact=True, keep_checkpoints=1
            ) as bus,
        ):
            bus.create_pages(1, 8)  # open the log segment before the baseline
            bus.gc(budget_ms=gc_budget_ms)
            base_rss = rss_bytes()
            arena_path = bus.path + "/arena.bin"
            base_arena = mapping_resident_bytes(arena_path)
            t0 = time.perf_counter()
            first = int(bus.create_pages(pages, page_size)[0])
            create_s = time.perf_counter() - t0
            gc.collect()
            _trim()
            made = bus.memory()  # bookkeeping after creation, before any page is written
            created_overhead = ((made.rss_bytes - base_rss)
                                - (made.arena_resident_bytes - base_arena)) / pages  # fmt: skip
            # ids are consecutive (create_pages' contract): hold the first, not an array
            ids = _IdRange(first, pages)

            def gc_steps(k: int, **kw: Any) -> None:
                for _ in range(k):
                    step(**kw)

            def step(**kw: Any) -> GCReport:
                r = bus.gc(budget_ms=gc_budget_ms, **kw)
                pauses.append(r.pause_ns)
                cpu.append(r.cpu_ns)
                if r.pause_ns > 2 * gc_budget_ms * 1e6:
                    phases = bus.__dict__["_collector"].last_phases
                    slow.append((r.pause_ns, r.cpu_ns, *phases, r.pages_moved,
                                 r.pages_examined))  # fmt: skip
                return r

            t0 = time.perf_counter()
            for lo in range(0, pages, chunk):
                hi = min(pages, lo + chunk)
                data = _page_data(lo, hi, page_size)
                batch = mmsb.DeltaBatch.from_ranges(ids[lo:hi], np.zeros(hi - lo, np.int64), data)
                bus.apply_batch(batch, workers=workers)
                del batch, data
                gc_steps(5)
                rss_samples.append(rss_bytes())
                if progress is not None:
                    progress("write pages", hi, pages)
            write_s = time.perf_counter() - t0
            state = bus._live_state()
            t0 = time.perf_counter()
            mismatched = 0
            for lo in range(0, pages, chunk):
                hi = min(pages, lo + chunk)
                got = state.gather(ids[lo:hi]).reshape(hi - lo, page_size)
                mismatched += int((got != _page_data(lo, hi, page_size)).any(axis=1).sum())
                rss_samples.append(rss_bytes())
                if progress is not None:
                    progress("read back", hi, pages)
            sample = np.random.default_rng(1).choice(pages, 2000, replace=False)
            for i in sample.tolist():  # and through the public per-page read
                want = _page_data(i, i + 1, page_size)[0]
                mismatched += int(bus.read(int(ids[i])).tobytes() != want.tobytes())
            read_s = time.perf_counter() - t0
            gc.collect()
            _trim()
            after = bus.memory()
            rss_growth = after.rss_bytes - base_rss
            arena_growth = after.arena_resident_bytes - base_arena
            overhead = (rss_growth - arena_growth) / pages
            peak_growth = max(rss_samples) - base_rss
            live = ids[::2]
            digest_before = _digest(state, live, chunk)
            # half the pages go; GC compacts, shrinks, drops covered log segments
            bus.checkpoint()
            bus.delete_pages(ids[1::2].tolist())
            t0 = time.perf_counter()
            moved = shrunk = segments = 0
            steps = 0
            while steps < 200_000:
                r = step(cold_after_s=3600)
                steps += 1
                moved += r.pages_moved
                shrunk += r.arena_bytes_shrunk
                segments += r.segments_dropped
                idle = r.pages_moved == 0 and r.segments_dropped == 0 and not r.deferred
                if idle and r.arena_bytes_shrunk == 0:
                    break
                if progress is not None and steps % 20 == 0:
                    progress("compaction steps", min(moved, pages // 4), pages // 4)
            compact_s = time.perf_counter() - t0
            same_after = _digest(state, live, chunk) == digest_before
            compacted = bus.memory()
            evicted = examined = 0
            while examined < pages + 1:  # one full pass notes every page's last write
                r = step(cold_after_s=3600)
                examined += r.pages_examined
            time.sleep(1.1)  # then nothing has been touched for a second
            examined = 0
            while examined < pages + 1:  # a second pass marks what is still in use ...
                r = step(cold_after_s=0.5)
                evicted += r.bytes_evicted
                examined += r.pages_examined
            while True:  # ... and sweeps the rest out, until marking starts over
                r = step(cold_after_s=0.5)
                evicted += r.bytes_evicted
                if r.pages_examined:
                    break
            _trim()
            evicted_mem = bus.memory()
    finally:
        gc.callbacks.remove(tracker)
        gc.unfreeze()
    p = np.array(pauses, np.int64)
    cp = np.array(tracker.pauses_ns or [0], np.int64)
    if series is not None:
        written = -(-pages // chunk)  # the first samples are the write loop's, one per chunk
        series["pages_written"] = [min(pages, (i + 1) * chunk) for i in range(written)]
        series["rss_growth_bytes"] = [s - base_rss for s in rss_samples[:written]]
        series["gc_pause_ms"] = (p / 1e6).tolist()
        series["cpython_gc_pause_ms"] = [n / 1e6 for n in tracker.pauses_ns]
    return Result(
        f"{pages:,} pages of {page_size} B: RSS growth",
        float(rss_growth),
        "bytes",
        {"pages": pages, "page_size": page_size, "write_batch": chunk, "workers": workers,
         "sync": "normal", "gc_budget_ms": gc_budget_ms},
        {
            "rss_growth_bytes": rss_growth,
            "peak_rss_growth_bytes": peak_growth,
            "arena_resident_growth_bytes": arena_growth,
            "bookkeeping_bytes_per_page": overhead,
            "bookkeeping_after_create_bytes_per_page": created_overhead,
            "table_bytes_per_page": after.table_bytes / max(after.pages, 1),
            "bytes_per_page": after.bytes_per_page,
            "create_pages_per_s": pages / create_s,
            "write_deltas_per_s": pages / write_s,
            "read_back_s": read_s,
            "mismatched_pages": mismatched,
            "live_pages_unchanged_by_gc": same_after,
            "gc_steps": int(p.size),
            "gc_pause_p50_ms": float(np.percentile(p, 50)) / 1e6,
            "gc_pause_p99_ms": float(np.percentile(p, 99)) / 1e6,
            "gc_pause_max_ms": float(p.max()) / 1e6,
            "gc_cpu_p99_ms": float(np.percentile(np.array(cpu), 99)) / 1e6,
            "gc_cpu_max_ms": float(max(cpu)) / 1e6,
            "pages_moved": moved,
            "compaction_s": compact_s,
            "arena_file_before_bytes": after.arena_file_bytes,
            "arena_file_after_bytes": compacted.arena_file_bytes,
            "arena_shrunk_bytes": shrunk,
            "log_segments_dropped": segments,
            "evicted_bytes": evicted,
            "rss_after_eviction_bytes": evicted_mem.rss_bytes - base_rss,
            "arena_resident_after_eviction_bytes": evicted_mem.arena_resident_bytes,
            "gc_slow_steps": len(slow),
            "gc_slow_steps_sample": [list(t) for t in sorted(slow, reverse=True)[:5]],
            "cpython_gc_collections": len(tracker.pauses_ns),
            "cpython_gc_full_collect_unfrozen_ms": unfrozen_full_ms,
            "cpython_objects_frozen": frozen,
            "cpython_gc_max_ms": float(cp.max()) / 1e6,
            "cpython_gc_p99_ms": float(np.percentile(cp, 99)) / 1e6,
        },
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--json", dest="json_path")
    args = ap.parse_args(argv)
    n = max(int(1_000_000 * args.scale), 10_000)
    results = [create_rate(n), million_pages(n)]
    for r in results:
        print(f"{r.name:<50} {r.value:>16,.0f} {r.unit}")
        for k, v in r.extra.items():
            if isinstance(v, float):
                print(f"    {k:<44} {v:>16,.3f}")
            else:
                print(f"    {k:<44} {v!s:>16}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump([r.to_json() for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
