"""How much log each workload writes, with and without compressed frames.

Three patterns users run: a heat-diffusion grid rewritten whole every step (512 KiB of
float64 state), 16 B range deltas scattered over many pages, and agent records updated
field by field. Each runs on a plain bus and on one opened with ``compression="zstd"``,
alternated (plain, zstd, plain, zstd, ...) so both see the same machine; the figures are
log bytes per step, the compression ratio and the time per step, medians of the rounds.
Both buses end in the same state (checked by state hash), so the codec changes nothing
but the bytes on disk.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks.common import Result, scratch_dir

Step = Callable[[mmsb.Bus, int], None]


def _heat(steps: int) -> tuple[Callable[[mmsb.Bus], Step], str]:
    side = 256  # 256 x 256 float64 = 512 KiB

    def setup(bus: mmsb.Bus) -> Step:
        grid = bus.create_page(side * side * 8, dtype="float64")
        u = np.random.default_rng(0).random((side, side)) * 100.0  # a warm, uneven start

        def step(bus: mmsb.Bus, k: int) -> None:
            nonlocal u
            u = 0.25 * (np.roll(u, 1, 0) + np.roll(u, -1, 0) + np.roll(u, 1, 1)
                        + np.roll(u, -1, 1))  # fmt: skip
            u[0, :] = 100.0
            bus.write(grid, u.reshape(-1))

        return step

    return setup, "heat diffusion: a 512 KiB float64 grid rewritten whole each step"


def _scatter(steps: int) -> tuple[Callable[[mmsb.Bus], Step], str]:
    pages, rows = 10_000, 10_000

    def setup(bus: mmsb.Bus) -> Step:
        ids = bus.create_pages(pages, 1024)
        rng = np.random.default_rng(1)

        def step(bus: mmsb.Bus, k: int) -> None:
            pids = ids[rng.integers(0, pages, rows)]
            offs = rng.integers(0, 1024 // 16, rows) * 16
            data = rng.random((rows, 2))  # 16 B of float64 per row
            bus.apply_batch(mmsb.DeltaBatch.from_ranges(pids, offs, data.view(np.uint8)))

        return step

    return setup, "16 B range deltas: 10,000 rows over 10,000 pages of 1 KiB per step"


def _agents(steps: int) -> tuple[Callable[[mmsb.Bus], Step], str]:
    agent = np.dtype([("pos", "f8", (2,)), ("vel", "f8", (2,)), ("energy", "f4"),
                      ("alive", "?")])  # fmt: skip
    n = 4096

    def setup(bus: mmsb.Bus) -> Step:
        herd = bus.create_page(agent.itemsize * n, dtype=agent)
        rng = np.random.default_rng(2)
        pos = rng.random((n, 2))

        def step(bus: mmsb.Bus, k: int) -> None:
            nonlocal pos
            pos = pos + 0.01 * rng.standard_normal((n, 2))
            bus.write_field(herd, "pos", pos)
            bus.write_field(herd, "energy", rng.random(n // 8), index=slice(0, n, 8))

        return step

    return setup, "agent records: 4,096 records, positions every step, an eighth's energy"


def _run(setup: Callable[[mmsb.Bus], Step], steps: int, compression: str | None,
         root: str, tag: str) -> tuple[float, int, str]:  # fmt: skip
    path = os.path.join(root, tag)
    with mmsb.open(path, sync="off", checkpoint_every=None, compression=compression,
                   clock=lambda: 1) as bus:  # fmt: skip
        step = setup(bus)
        start = bus.lsn
        before = _log_bytes(path)
        t0 = time.perf_counter()
        for k in range(steps):
            step(bus, k)
        seconds = time.perf_counter() - t0
        bus.sync_now()
        written = _log_bytes(path) - before
        digest = bus.state_hash()
        assert bus.lsn > start
    return seconds / steps, written // steps, digest


def _log_bytes(path: str) -> int:
    log = os.path.join(path, "log")
    return sum(os.path.getsize(os.path.join(log, f)) for f in os.listdir(log))


def measure(name: str, make: Callable[[int], tuple[Callable[[mmsb.Bus], Step], str]],
            steps: int, rounds: int = 3) -> list[Result]:  # fmt: skip
    setup, what = make(steps)
    times: dict[str, list[float]] = {"plain": [], "zstd": []}
    sizes: dict[str, int] = {}
    with scratch_dir() as root:
        for r in range(rounds):
            digests = []
            for tag, comp in (("plain", None), ("zstd", "zstd")):
                per_step, per_bytes, digest = _run(setup, steps, comp, root, f"{tag}{r}")
                times[tag].append(per_step)
                sizes[tag] = per_bytes
                digests.append(digest)
            if digests[0] != digests[1]:
                raise RuntimeError(f"{name}: the compressed bus ended in another state")
    plain_t, zstd_t = statistics.median(times["plain"]), statistics.median(times["zstd"])
    cond: dict[str, Any] = {"workload": what, "steps": steps, "rounds": rounds,
                            "sync": "off", "codec": "zstandard level 1"}  # fmt: skip
    return [
        Result(f"log per step, {name} (plain)", sizes["plain"] / 1024, "KiB", cond),
        Result(f"log per step, {name} (zstd)", sizes["zstd"] / 1024, "KiB", cond),
        Result(f"log compression ratio, {name}", sizes["plain"] / max(sizes["zstd"], 1), "x", cond),
        Result(
            f"time per step with zstd / plain, {name}",
            zstd_t / plain_t,
            "x",
            cond,
            {"plain_ms": plain_t * 1e3, "zstd_ms": zstd_t * 1e3},
        ),
    ]


def scenarios(scale: float = 1.0) -> list[Callable[[], list[Result]]]:
    steps = max(int(100 * scale), 10)
    return [
        lambda: measure("heat diffusion", _heat, steps),
        lambda: measure("16 B scatter", _scatter, max(steps // 4, 5)),
        lambda: measure("agent records", _agents, steps),
    ]
