"""Full-size throughput stress: 10,000,000 real deltas with 1 and with 2 workers.

Each run commits 16-byte range deltas in batches of 100,000 over 4,096 pages of 1 KiB on an
on-disk bus (sync="normal", log on). The final bytes and epochs are checked against a numpy
oracle built from each batch's own expansion (a route independent of the kernels), the two
runs' logs must be byte-identical, and replaying the log must give the same state. Figures
are printed, never asserted.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.benchmarks.engine import make_batches
from mmsb.storage.log import list_segments

pytestmark = pytest.mark.stress_throughput

TOTAL = 10_000_000
BATCH = 100_000
PAGES = 4096
SIZE = 1024


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1
        return self.now


def oracle_apply(pages: np.ndarray, epochs: np.ndarray, batch: mmsb.DeltaBatch) -> None:
    """Later bytes win: keep the last write to each (page, position)."""
    pids, pos, vals = batch.expand()
    flat = pids * SIZE + pos
    rev = flat[::-1]
    uniq, first = np.unique(rev, return_index=True)
    pages.reshape(-1)[uniq] = vals[::-1][first]
    epochs += np.bincount(batch.page_ids, minlength=epochs.size)


def log_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for _, seg in list_segments(str(path / "log")):
        with open(seg, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def run(path: Path, workers: int) -> tuple[str, str, float]:
    rng = np.random.default_rng(42)
    with mmsb.open(path, sync="normal", clock=Clock()) as bus:
        ids = bus.create_pages(PAGES, SIZE)
        pool = make_batches(rng, ids, SIZE, 16, BATCH, 10, False)
        oracle = np.zeros((PAGES + 1, SIZE), np.uint8)
        epochs = np.zeros(PAGES + 1, np.int64)
        elapsed = 0.0
        for i in range(TOTAL // BATCH):
            batch = pool[i % len(pool)]
            t0 = time.perf_counter()
            bus.apply_batch(batch, workers=workers)
            elapsed += time.perf_counter() - t0
            oracle_apply(oracle, epochs, batch)
        for pid in ids.tolist():
            assert bus.read(pid).tobytes() == oracle[pid].tobytes(), f"page {pid}"
            assert bus.page(pid).epoch == epochs[pid]
        digest = bus.state_hash()
    rate = TOTAL / elapsed
    print(f"\n{workers} worker(s): {TOTAL:,} x 16 B deltas in batches of {BATCH:,}: "
          f"{rate:,.0f} deltas/s (apply_batch wall time, sync=normal)")  # fmt: skip
    return digest, log_digest(path), TOTAL / elapsed


def test_ten_million_deltas_one_and_two_workers(tmp_path: Path) -> None:
    one = run(tmp_path / "w1", 1)
    two = run(tmp_path / "w2", 2)
    assert one[0] == two[0], "states differ between 1 and 2 workers"
    assert one[1] == two[1], "logs differ between 1 and 2 workers"
    print(f"2 workers / 1 worker: x{two[2] / one[2]:.2f} (this machine, shared cores)")
    (tmp_path / "w2" / "state.clean").unlink()  # force a replay of the whole log
    with mmsb.open(tmp_path / "w2", readonly=True) as again:
        assert again.state_hash() == two[0]
