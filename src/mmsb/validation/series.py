"""Measured series behind the HTML report's plots.

Runners keep these under one key of their figures, ``figures["series"]``: a dict of short
lists of numbers (parallel lists where they describe points). Everything here is measured in
the run that reports it; nothing is interpolated or projected.

* :func:`throughput_sweep`: deltas/s of whole ``apply_batch`` calls for several batch sizes
  and worker counts (target #5's delta shape);
* :func:`recovery_sweep`: the wall time of ``mmsb.open`` after a crash, for several lengths
  of log tail past the last checkpoint (target #1);
* :func:`log_histogram`: counts over logarithmic bins, for distributions too long to keep
  sample by sample (GC pauses, target #7).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import mmsb
from mmsb.benchmarks import engine
from mmsb.validation.workload import make_clock

# the recovery sweep's workload: 16-byte range deltas over 4,096 pages of 1 KiB
RECOVERY_PAGES = 4096
RECOVERY_PAGE_SIZE = 1024
RECOVERY_PAYLOAD = 16
RECOVERY_BATCH = 1000

Progress = Callable[[str, int, int], None]


def _noop(what: str, done: int, total: int) -> None:
    pass


def throughput_sweep(
    points: Sequence[tuple[int, int, int]],
    *,
    payload: int = 16,
    seed: int = 0,
    progress: Progress = _noop,
) -> dict[str, list[float]]:
    """Measure deltas/s for each ``(batch, workers, total)`` point with
    :func:`mmsb.benchmarks.engine.commits` (a fresh on-disk bus per point, log on,
    ``sync="normal"``); parallel lists ``batch``, ``workers``, ``deltas``, ``deltas_per_s``."""
    out: dict[str, list[float]] = {"batch": [], "workers": [], "deltas": [], "deltas_per_s": []}
    for i, (batch, workers, total) in enumerate(points):
        r = engine.commits(payload=payload, workers=workers, batch=batch, total=total, seed=seed)
        out["batch"].append(batch)
        out["workers"].append(workers)
        out["deltas"].append(int(r.conditions["deltas"]))
        out["deltas_per_s"].append(round(r.value))
        progress("throughput sweep", i + 1, len(points))
    return out


def recovery_sweep(
    workdir: Callable[[str], str],
    tails: Sequence[int],
    *,
    seed: int = 0,
    progress: Progress = _noop,
) -> tuple[dict[str, list[float]], list[str]]:
    """Time crash recovery for log tails of ``tails`` deltas past the last checkpoint.

    One writer (``sync="normal"``, no automatic checkpoint) creates the pages and takes a
    checkpoint, then commits range deltas in batches of :data:`RECOVERY_BATCH`. Whenever the
    tail reaches the next length, the writer's directory is copied while it is still open
    (after ``sync_now``: what a process crash leaves, with no clean-shutdown file) and
    ``mmsb.open`` of the copy is timed (after one untimed recovery, so that compiled kernels
    are loaded); it must recover by replay from that checkpoint, with
    the state hash the writer had. ``workdir(name)`` gives a fresh scratch path.

    Returns parallel lists (``tail_deltas``, ``frames_replayed``, ``deltas_replayed``,
    ``open_ms``, ``replay_ms``) and the problems found (empty when every recovery matched).
    """
    lengths = sorted({int(t) for t in tails})
    if not lengths or lengths[0] <= 0:
        raise ValueError("tail lengths must be positive")
    out: dict[str, list[float]] = {
        k: [] for k in ("tail_deltas", "frames_replayed", "deltas_replayed", "open_ms", "replay_ms")
    }
    problems: list[str] = []
    rng = np.random.default_rng([seed, 2])
    path = workdir("recovery-sweep")
    with mmsb.open(path, sync="normal", checkpoint_every=None, clock=make_clock()) as bus:
        ids = bus.create_pages(RECOVERY_PAGES, RECOVERY_PAGE_SIZE)
        pool = engine.make_batches(
            rng, ids, RECOVERY_PAGE_SIZE, RECOVERY_PAYLOAD, RECOVERY_BATCH, 8, False
        )
        ckpt_lsn = bus.checkpoint().lsn
        written = calls = 0
        for i, tail in enumerate(lengths):
            while written < tail:
                bus.apply_batch(pool[calls % len(pool)])
                written += RECOVERY_BATCH
                calls += 1
            bus.sync_now()
            if i == 0:  # one untimed recovery first: compiled kernels load on first use
                warm = workdir("recovery-warm-up")
                shutil.copytree(path, warm)
                mmsb.open(warm, sync="off", checkpoint_every=None).close()
                shutil.rmtree(warm, ignore_errors=True)
            copy = workdir(f"recovery-{written}")
            shutil.copytree(path, copy)
            want_hash, want_frames = bus.state_hash(), bus.lsn - ckpt_lsn
            t0 = time.perf_counter()
            reopened = mmsb.open(copy, sync="off", checkpoint_every=None)
            open_s = time.perf_counter() - t0
            with reopened:
                rec = reopened.recovery
                if rec.mode != "replay" or rec.checkpoint_lsn != ckpt_lsn:
                    problems.append(
                        f"tail of {written:,} deltas: recovery {rec.mode!r} from LSN "
                        f"{rec.checkpoint_lsn}, expected a replay from LSN {ckpt_lsn}"
                    )
                if rec.frames_replayed != want_frames:
                    problems.append(
                        f"tail of {written:,} deltas: {rec.frames_replayed} frames replayed, "
                        f"expected {want_frames}"
                    )
                if reopened.state_hash() != want_hash:
                    problems.append(f"tail of {written:,} deltas: recovered state differs")
                out["tail_deltas"].append(written)
                out["frames_replayed"].append(rec.frames_replayed)
                out["deltas_replayed"].append(rec.deltas_replayed)
                out["open_ms"].append(round(open_s * 1e3, 3))
                out["replay_ms"].append(round(rec.seconds * 1e3, 3))
            shutil.rmtree(copy, ignore_errors=True)
            progress("recovery sweep", i + 1, len(lengths))
    shutil.rmtree(path, ignore_errors=True)
    return out, problems


def log_histogram(
    values: Sequence[float] | np.ndarray[Any, Any],
    *,
    lo: float = 1e-3,
    per_decade: int = 5,
    top: float | None = None,
) -> dict[str, list[float]]:
    """Counts of ``values`` (positive) over logarithmic bins from ``lo`` up to at least
    ``top`` (default: the largest value; give the same ``top`` to histograms to be compared).

    ``edges`` has one more entry than ``counts``; the first bin also holds everything below
    ``lo`` and the last bin ends at or above the largest value, so the counts add up to the
    number of values."""
    v = np.asarray(values, dtype=np.float64)
    top = max(top or lo, float(v.max()) if v.size else lo)
    decades = max(1, math.ceil(math.log10(max(top, lo) / lo) + 1e-12))
    edges = lo * np.logspace(0, decades, decades * per_decade + 1)
    if edges[-1] < top:  # rounding at an exact power of ten
        edges = np.append(edges, top)
    counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
    return {"edges": [float(f"{e:.6g}") for e in edges], "counts": counts.tolist()}
