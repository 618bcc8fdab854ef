"""The automatic checkpoint's cadence: counted in log bytes since the newest checkpoint on
disk, so a writer that restarts more often than ``checkpoint_every`` still checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mmsb
from mmsb.storage.checkpoint import list_checkpoints, log_bytes_since_checkpoint

EVERY = 256 << 10


def write_log_bytes(bus: mmsb.Bus, ids: np.ndarray, nbytes: int) -> None:
    """Commit batches until about ``nbytes`` of log have been written."""
    payload = np.ones((len(ids), 64), np.uint8)
    batch = mmsb.DeltaBatch.from_ranges(ids, np.zeros(len(ids), np.int64), payload)
    per = len(ids) * (64 + 24)  # payload plus per-row columns, roughly
    for _ in range(max(1, nbytes // per)):
        bus.apply_batch(batch)


def test_restarts_shorter_than_the_interval_still_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=EVERY) as bus:
        ids = bus.create_pages(256, 4096)
    for _ in range(4):  # each session writes about 60 % of the interval
        with mmsb.open(path, sync="off", checkpoint_every=EVERY) as bus:
            write_log_bytes(bus, ids, int(EVERY * 0.6))
    assert list_checkpoints(str(path / "ckpt")), "no automatic checkpoint in 2.4 intervals"
    with mmsb.open(path, sync="off") as bus:
        assert bus.verify().ok


def test_the_count_starts_at_the_newest_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=None) as bus:
        ids = bus.create_pages(64, 4096)
        write_log_bytes(bus, ids, 100_000)
        before = log_bytes_since_checkpoint(str(path))
        assert before > 50_000
        bus.checkpoint()
        assert log_bytes_since_checkpoint(str(path)) == 0
        write_log_bytes(bus, ids, 30_000)
    after = log_bytes_since_checkpoint(str(path))
    assert 10_000 < after < before
