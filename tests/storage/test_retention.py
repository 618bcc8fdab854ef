"""Retention: compaction keeps the newest keep_checkpoints, and older ones too while the log
after the oldest kept one holds fewer than retain_bytes or is younger than retain_seconds;
the history in that window stays readable (at() to any commit in it), older history is gone
with a typed error, and the collector's segment drops follow the same rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.storage.checkpoint import list_checkpoints


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        self.now += 1_000_000_000  # a second per commit
        return self.now


def grow(bus: mmsb.Bus, page: int, rounds: int) -> list[int]:
    """Commits of 8 KiB each, a checkpoint after every fourth: checkpoints at known LSNs."""
    marks = []
    for r in range(rounds):
        for _ in range(4):
            bus.write(page, np.full(1024, r, np.float64))
        bus.checkpoint()
        marks.append(bus.lsn)
    return marks


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        ({}, 2),  # keep_checkpoints alone, as before
        ({"retain_bytes": 3 * 4 * 8300}, 4),  # three checkpoints' worth of log after it
        ({"retain_seconds": 10.5}, 4),  # 4 commits a checkpoint, one second each
        ({"retain_bytes": 1, "retain_seconds": 0.0}, 2),  # both met by the newest two
    ],
)
def test_compaction_keeps_what_retention_asks(
    tmp_path: Path, options: dict[str, float], kept: int
) -> None:
    with mmsb.open(tmp_path / "b", sync="off", clock=Clock(), checkpoint_every=None,
                   segment_size=4096, **options) as bus:  # fmt: skip
        page = bus.create_page(8192, dtype="float64")
        marks = grow(bus, page, 8)
        bus.compact()
        lsns = [lsn for lsn, _ in list_checkpoints(str(tmp_path / "b" / "ckpt"))]
        assert lsns == marks[::-1][:kept]
        oldest = lsns[-1]
        assert bus.at(oldest).read(page)[0] == 8 - kept  # round r writes r
        assert bus.at(oldest + 1).read(page)[0] == 8 - kept + 1
        with pytest.raises(mmsb.HistoryUnavailableError):
            bus.at(oldest - 1)


def test_the_collector_drops_segments_by_the_same_rule(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off", clock=Clock(), checkpoint_every=None,
                   segment_size=4096, auto_compact=True, retain_seconds=10.5,
                   tick_gc_budget_ms=0) as bus:  # fmt: skip
        page = bus.create_page(8192, dtype="float64")
        marks = grow(bus, page, 8)
        for _ in range(50):
            bus.gc(budget_ms=5)
        first = min(int(p.name.split(".")[0]) for p in (tmp_path / "b" / "log").glob("*.seg"))
        oldest_kept = marks[::-1][3]  # four checkpoints cover the last 10.5 s
        assert first <= oldest_kept + 1
        bus.at(oldest_kept + 1)  # the window is readable


@pytest.mark.parametrize(
    "bad",
    [
        {"retain_bytes": -1},
        {"retain_bytes": 1.5},
        {"retain_seconds": -2},
        {"retain_seconds": "1"},
        {"retain_seconds": True},
    ],
)
def test_bad_retention_values_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(mmsb.InvalidArgumentError, match="retain"):
        mmsb.open(tmp_path / "b", **bad)
