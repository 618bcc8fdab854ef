"""Throughput-engine benchmarks: batched commits by payload shape and worker count, the
seed's own workload, and the floor (a plain numpy scatter of the same bytes).

Every figure is the wall time of a loop of whole ``Bus.apply_batch`` calls (checks, epochs,
log frame written, arena updated, LSN published) on an on-disk bus with the log on; a
multi-worker figure is measured with that many workers, never derived.

Run as ``python -m mmsb.benchmarks.engine [--scale X] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import contextlib
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
    """Commit ``total`` deltas in batches of ``batch``; deltas/s over the whole loop.

    ``extra`` also gives the time spent in the log's write calls (``log_write_s``) and two
    rates read from it: ``log_write_cap`` (deltas/s if nothing but those calls took time,
    a bound no change outside the log write can pass) and ``without_log_write`` (deltas/s
    of everything else)."""
    rng = np.random.default_rng(seed)
    with scratch_dir() as path, mmsb.open(path, sync=sync) as bus:
        ids = bus.create_pages(pages, page_size)
        pool = make_batches(rng, ids, page_size, payload, batch, 8, dense)
        bus.apply_batch(pool[0], workers=workers)  # load compiled kernels, start threads
        n = calls = 0
        w0 = bus.stats().log_write_ms
        t0 = time.perf_counter()
        while n < total:
            bus.apply_batch(pool[calls % len(pool)], workers=workers)
            n += batch
            calls += 1
            if progress is not None and calls % 10 == 0:
                progress(n, total)
        dt = time.perf_counter() - t0
        wrote = (bus.stats().log_write_ms - w0) / 1e3
        log_bytes = bus.memory().log_bytes
    shape = "dense-masked" if dense else "range"
    return Result(
        name or f"{payload} B {shape} deltas, batch {batch:,}, {workers} worker(s)",
        n / dt,
        "deltas/s",
        {"payload_bytes": payload, "shape": shape, "batch": batch, "pages": pages,
         "page_size": page_size, "sync": sync, "log": "on", "workers": workers, "deltas": n},
        {"seconds": dt, "ns_per_delta": dt / n * 1e9, "log_bytes": log_bytes,
         "log_write_s": wrote, "log_write_share": wrote / dt,
         "log_write_cap": n / wrote if wrote > 0 else None,
         "without_log_write": n / (dt - wrote) if dt > wrote else None},
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


RELIABLE_SPREAD = 0.30  # paired ratios spread wider than this: the figure is unreliable


def _leg(bus: mmsb.Bus, pool: list[mmsb.DeltaBatch], workers: int, total: int) -> float:
    """Deltas/s of committing ``total`` deltas from ``pool`` with ``workers``."""
    return _timed_leg(bus, pool, workers, total)[0]


def _timed_leg(
    bus: mmsb.Bus, pool: list[mmsb.DeltaBatch], workers: int, total: int
) -> tuple[float, float]:
    """(deltas/s, the share of the leg's wall time spent in the log's write calls)."""
    n = calls = 0
    w0 = bus.stats().log_write_ms
    t0 = time.perf_counter()
    while n < total:
        b = pool[calls % len(pool)]
        bus.apply_batch(b, workers=workers)
        n += len(b)
        calls += 1
    took = time.perf_counter() - t0
    return n / took, (bus.stats().log_write_ms - w0) / 1e3 / took


def _paired(ratios: list[float], workers: int) -> dict[str, Any]:
    med = float(np.median(ratios))
    spread = (max(ratios) - min(ratios)) / med if med > 0 else float("inf")
    return {"median": med, "ratios": [round(r, 3) for r in ratios], "spread": spread,
            "reliable": spread <= RELIABLE_SPREAD and med <= workers * 1.05}  # fmt: skip


CEILING_CHILD = """
import sys, time
from mmsb.benchmarks import engine
bus_path, total, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import numpy as np, mmsb
rng = np.random.default_rng(int(sys.argv[4]))
with mmsb.open(bus_path, sync="normal") as bus:
    ids = bus.create_pages(4096, 1024)
    pool = engine.make_batches(rng, ids, 1024, 16, batch, 8, False)
    engine._leg(bus, pool, 1, batch)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        print(engine._leg(bus, pool, 1, total), flush=True)
"""


def scaling(
    *,
    workers: int = 2,
    pairs: int = 5,
    total: int = 2_000_000,
    batch: int = 100_000,
    seed: int = 0,
    timeout: float = 300.0,
) -> Result:
    """The N-worker speed-up measured honestly, with the machine's own ceiling beside it.

    Each of the ``pairs`` rounds runs four legs of ``total`` deltas, one after the other
    (in reverse order every other round, so a drift in the machine's speed favours neither
    side):

    * on one bus, 1 worker and ``workers`` workers: the round's speed-up is their ratio;
    * ``workers`` independent processes, each committing the same 1-worker loop on its own
      bus, one of them alone and then all at once: the round's ceiling is (the sum of the
      concurrent rates / the lone rate), how much this machine gives N copies of the work,
      which no thread split can beat.

    The figure is the median of the rounds' speed-ups; ``fraction_of_ceiling`` is the median
    of each round's speed-up over the same round's ceiling. Both halves of a round see the
    same phase of the machine: on a virtual machine whose host backs guest memory lazily,
    the log's append (a copy into new page-cache pages) can run several times slower for
    minutes at a time (``log_mb_per_s`` gives the 1-worker legs' log rate).

    * Bound: one commit's frame goes to the log in one write call, which one thread makes
      while the others wait; its share ``s`` of the 1-worker legs' time (the median) caps
      any N-worker speed-up at ``1 / (s + (1 - s) / N)`` (Amdahl's law, everything else
      split perfectly). N processes each write their own log, so the ceiling has no such
      part; ``fraction_of_bound`` reads the speed-up against this cap instead.

    A speed-up above N, or paired ratios that spread more than 30 %, mark the figure as
    unreliable (``extra["reliable"]`` False) rather than as a result.
    """
    import subprocess
    import sys

    rng = np.random.default_rng(seed)
    ratios: list[float] = []
    shares: list[float] = []
    rates: list[float] = []
    ceilings: list[float] = []
    fractions: list[float] = []
    with contextlib.ExitStack() as stack:
        path = stack.enter_context(scratch_dir())
        base = stack.enter_context(scratch_dir())
        bus = stack.enter_context(mmsb.open(path, sync="normal"))
        ids = bus.create_pages(4096, 1024)
        pool = make_batches(rng, ids, 1024, 16, batch, 8, False)
        for w in (1, workers):
            _leg(bus, pool, w, batch)  # compiled kernels loaded, threads started
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CEILING_CHILD, f"{base}-{i}", str(total), str(batch),
                 str(seed + i)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            for i in range(workers)
        ]  # fmt: skip
        stack.callback(_stop_children, procs, timeout)
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a ceiling process failed to start")

        def run(group: list[subprocess.Popen[str]]) -> list[float]:
            for p in group:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            return [float(p.stdout.readline()) for p in group]  # type: ignore[union-attr]

        def one() -> float:
            a0 = bus.stats().log_appended_bytes
            t0 = time.perf_counter()
            rate, share = _timed_leg(bus, pool, 1, total)
            took = time.perf_counter() - t0
            shares.append(share)
            rates.append((bus.stats().log_appended_bytes - a0) / took / 1e6)
            return rate

        legs: dict[str, Callable[[], float]] = {
            "one": one,
            "many": lambda: _leg(bus, pool, workers, total),
            "alone": lambda: run(procs[:1])[0],
            "together": lambda: sum(run(procs)),
        }
        for k in range(pairs):
            names = list(legs) if k % 2 == 0 else list(legs)[::-1]
            got = {name: legs[name]() for name in names}
            ratios.append(got["many"] / got["one"])
            ceilings.append(got["together"] / got["alone"])
            fractions.append(ratios[-1] / ceilings[-1])
    speed = _paired(ratios, workers)
    ceil = _paired(ceilings, workers)
    frac = float(np.median(fractions))
    serial = float(np.median(shares))
    bound = 1.0 / (serial + (1.0 - serial) / workers)
    reliable = bool(speed["reliable"] and ceil["reliable"])
    return Result(
        f"{workers}-worker speed-up, 16 B range deltas (median of {pairs} paired runs)",
        speed["median"],
        "x",
        {"payload_bytes": 16, "shape": "range", "batch": batch, "pages": 4096,
         "page_size": 1024, "sync": "normal", "workers": workers, "pairs": pairs,
         "deltas_per_leg": total},
        {"ratios": speed["ratios"], "spread": round(speed["spread"], 3),
         "ceiling": round(ceil["median"], 3), "ceiling_ratios": ceil["ratios"],
         "ceiling_spread": round(ceil["spread"], 3), "fraction_of_ceiling": round(frac, 3),
         "fractions": [round(f, 3) for f in fractions],
         "log_mb_per_s": [round(r) for r in rates],
         "log_write_share": round(serial, 3), "log_write_shares": [round(s, 3) for s in shares],
         "bound_log_write": round(bound, 3), "fraction_of_bound": round(speed["median"] / bound, 3),
         "reliable": reliable},
    )  # fmt: skip


def _stop_children(procs: list[Any], timeout: float) -> None:
    """Close the ceiling processes' input (they exit) and wait for them, killing any that
    hang."""
    import subprocess

    for p in procs:
        if p.stdin is not None:
            p.stdin.close()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=30)
        if p.stdout is not None:
            p.stdout.close()


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
        (
            "2-worker speed-up, paired, with the machine's ceiling",
            lambda progress=None: scaling(total=max(total // 5, 200_000)),
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
    paired = next((r for r in results if "ceiling" in r.extra), None)
    if paired:
        out["speedup_2_workers_paired"] = paired.value
        out["ceiling_2_processes"] = float(paired.extra["ceiling"])
        out["fraction_of_ceiling"] = float(paired.extra["fraction_of_ceiling"])
        out["bound_log_write"] = float(paired.extra["bound_log_write"])
        out["fraction_of_bound"] = float(paired.extra["fraction_of_bound"])
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
