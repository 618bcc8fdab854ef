"""Snapshot benchmarks: what pinning a commit costs the reader and the writer.

* opening (and closing) a snapshot, on the writer and on a live reader;
* a read inside a snapshot against a plain read, for a page unchanged since the pin (read
  from the arena) and for one changed since (read from its before-image);
* the writer's commit time with a snapshot pinned against none, and the memory the
  before-images hold under a reader that keeps one snapshot open while the writer goes on.

The reader is a ``readonly=True`` bus in the same process (the same code path as in another
process: ``SEQ``, the shared arena mapping and the snapshot table), so the figures carry no
inter-process scheduling noise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks.common import Result, scratch_dir


def _median_ns(fn: Callable[[], Any], n: int) -> float:
    fn()
    times = np.empty(n, np.int64)
    for i in range(n):
        t = time.perf_counter_ns()
        fn()
        times[i] = time.perf_counter_ns() - t
    return float(np.median(times))


def _pin_unpin(bus: mmsb.Bus) -> Callable[[], None]:
    def run() -> None:
        bus.snapshot().close()

    return run


def costs(pages: int = 1024, page_size: int = 4096, repeats: int = 2000) -> list[Result]:
    """Open time, read time inside vs outside a snapshot, on the writer and a reader."""
    cond = {"pages": pages, "page_size": page_size, "repeats": repeats, "sync": "off"}
    out: list[Result] = []
    with scratch_dir() as path:
        w = mmsb.open(path, sync="off")
        r = mmsb.open(path, readonly=True)
        try:
            ids = w.create_pages(pages, page_size).tolist()
            w.write(ids[0], b"\x01" * page_size)
            r.refresh()
            for who, bus in (("writer", w), ("reader", r)):
                t_open = _median_ns(_pin_unpin(bus), repeats)
                out.append(Result(f"snapshot open+close ({who})", t_open / 1e3, "µs", cond))
            rng = np.random.default_rng(1)
            pick = rng.choice(ids[1:], repeats).tolist()
            it = iter(pick * 3)
            t_plain = _median_ns(lambda: r.read(next(it)), repeats)
            with r.snapshot() as snap:
                it = iter(pick * 3)
                t_snap = _median_ns(lambda: snap.read(next(it)), repeats)
                for p in pick[: min(len(pick), 256)]:  # change them: now read from images
                    w.write(p, b"\x02" * page_size)
                changed = pick[:256]
                it = iter(changed * (3 * repeats // len(changed) + 3))
                t_image = _median_ns(lambda: snap.read(next(it)), repeats)
            extra = {"plain_read_us": t_plain / 1e3, "snapshot_read_unchanged_us": t_snap / 1e3,
                     "snapshot_read_changed_us": t_image / 1e3}  # fmt: skip
            out.append(Result("snapshot read / plain read (unchanged page, reader)",
                              t_snap / t_plain, "x", cond, extra))  # fmt: skip
            out.append(Result("snapshot read / plain read (changed page, reader)",
                              t_image / t_plain, "x", cond, extra))  # fmt: skip
        finally:
            r.close()
            w.close()
    return out


def slow_reader(
    pages: int = 4096, page_size: int = 4096, commits: int = 20_000, rows: int = 4
) -> list[Result]:
    """A reader holds one snapshot while the writer makes ``commits`` commits of ``rows``
    64-byte writes to random pages: the before-image memory held, and the writer's commit
    time against the same commits with no snapshot open."""
    cond = {"pages": pages, "page_size": page_size, "commits": commits, "rows": rows,
            "payload": 64, "sync": "off"}  # fmt: skip
    rng = np.random.default_rng(2)
    targets = rng.integers(1, pages + 1, (2, commits, rows))
    payload = np.full((rows, 64), 7, np.uint8)
    offsets = np.zeros(rows, np.int64)
    with scratch_dir() as path:
        ring = max(64 << 20, 2 * pages * page_size)  # room for every page once
        w = mmsb.open(path, sync="off", snapshot_memory=ring, checkpoint_every=None)
        r = mmsb.open(path, readonly=True)
        try:
            w.create_pages(pages, page_size)
            batches = [[mmsb.DeltaBatch.from_ranges(t, offsets, payload) for t in targets[k]]
                       for k in range(2)]  # fmt: skip
            w.apply_batch(batches[0][0])

            def run(k: int) -> float:
                t = time.perf_counter_ns()
                for b in batches[k]:
                    w.apply_batch(b)
                return (time.perf_counter_ns() - t) / commits

            free = run(0)
            r.refresh()
            c = w._committer  # the figure is the writer's own count
            snaps = None if c is None else c.snapshots
            assert snaps is not None
            before = snaps.saved_bytes
            with r.snapshot() as snap:
                pinned = run(1)
                held = snaps.saved_bytes - before
                touched = np.unique(targets[1])
                distinct = int(touched.size)
                # the pinned view is intact: pages first written after the pin read as zero
                before_pin = np.isin(touched, targets[0])
                firsts = snap.read_many(touched)[:, 0]
                ok = bool((firsts == np.where(before_pin, 7, 0)).all())
            if not ok:
                raise AssertionError("the pinned snapshot read bytes written after its LSN")
        finally:
            r.close()
            w.close()
    extra = {"commit_us_no_snapshot": free / 1e3, "commit_us_snapshot_pinned": pinned / 1e3,
             "before_image_bytes": held, "distinct_pages_written": distinct,
             "bytes_per_distinct_page": held / max(distinct, 1)}  # fmt: skip
    return [
        Result("before-image memory held by one pinned snapshot", held / 2**20, "MiB", cond, extra),
        Result("commit time with a snapshot pinned / without", pinned / free, "x", cond, extra),
    ]


def scenarios(scale: float = 1.0) -> list[Callable[[], list[Result]]]:
    n = max(int(20_000 * scale), 1000)
    return [lambda: costs(), lambda: slow_reader(commits=n)]
