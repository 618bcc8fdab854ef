"""Derived deltas do not carry their parents; provenance reads them from the graph's
history in the log (mmsb.history.lineage). Checked: re-registration, a deleted parent, a
compacted log (the checkpoint's edges as the base), a reopen, an
unknown base, and that a tick's frame holds one metadata string per derivation name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import mmsb
from mmsb.history.lineage import Lineage, base_edges
from mmsb.semiring import SUM_PRODUCT
from mmsb.storage import codec
from mmsb.storage.log import LogReader


def parents_of(bus: mmsb.Bus, page: int) -> list[int]:
    return [s.page_id for s in bus.provenance(page).root.parents]


def test_parents_follow_re_registration(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off") as bus:
        a, b, c, x = bus.create_pages(4, 8, dtype="float64").tolist()
        bus.derive_semiring(x, [a, b], SUM_PRODUCT)
        bus.write(a, np.ones(1))
        bus.tick()
        old_write = bus.history(x, limit=1)[0]
        assert parents_of(bus, x) == [a, b]
        bus.derive_semiring(x, [c, b], SUM_PRODUCT)  # one GRAPH frame swaps a for c
        bus.write(c, np.full(1, 2.0))
        bus.tick()
        assert parents_of(bus, x) == [b, c]
        # the older delta, seen from a snapshot before the swap, keeps its own parents
        snap = bus.at(old_write.lsn)
        assert [s.page_id for s in snap.provenance(x).root.parents] == [a, b]


def test_a_deleted_parent_is_still_listed(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off") as bus:
        a, b, x = bus.create_pages(3, 8, dtype="float64").tolist()
        bus.derive_semiring(x, [a, b], SUM_PRODUCT)
        bus.write(b, np.ones(1))
        bus.tick()
        bus.delete_pages([b])  # drops b's edges (and x's derivation) without a GRAPH frame
        root = bus.provenance(x).root
        assert [s.page_id for s in root.parents] == [a, b]
        assert root.parents[1].record is not None  # b's history outlives it


def test_compacted_log_takes_the_checkpoints_edges(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", keep_checkpoints=1) as bus:
        a, b, x = bus.create_pages(3, 8, dtype="float64").tolist()
        bus.derive_semiring(x, [a, b], SUM_PRODUCT)  # logged before the compaction point
        bus.write(a, np.ones(1))
        bus.tick()
        bus.checkpoint()
        bus.write(a, np.full(1, 3.0))
        bus.checkpoint()
        bus.write(b, np.full(1, 5.0))
        bus.tick()
        info = bus.compact()
        assert info.segments_removed >= 1
        first = next(iter(LogReader(str(path / "log")).frames())).lsn
        assert first > 1
        assert base_edges(str(path), first) is not None
        assert parents_of(bus, x) == [a, b]
    with mmsb.open(path, sync="off") as bus:  # a fresh index, built from the retained log
        assert parents_of(bus, x) == [a, b]


def test_unknown_base_is_not_guessed(tmp_path: Path) -> None:
    lin = Lineage(None)
    assert lin.at(7, 10) is None
    lin.graph(12, np.array([codec.EDGE_ADD], np.uint8), np.zeros(1, np.uint8),
              np.array([3], np.int64), np.array([7], np.int64))  # fmt: skip
    assert lin.at(7, 11) is None and lin.at(7, 12) == (3,)
    known = Lineage([(1, 7), (2, 7)])
    assert known.at(7, 5) == (1, 2) and known.at(8, 5) == ()
    known.delete(6, np.array([1], np.int64))
    assert known.at(7, 5) == (1, 2) and known.at(7, 6) == (2,)
    assert base_edges(str(tmp_path), 1) == []
    assert base_edges(str(tmp_path), 40) is None  # no checkpoint at LSN 39


def test_a_tick_logs_one_metadata_string_per_derivation_name(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    n = 64
    with mmsb.open(path, sync="off") as bus:
        src = bus.create_pages(n, 16, dtype="float64")
        out = bus.create_pages(n, 16, dtype="float64")
        for i in range(n):
            bus.derive_semiring(int(out[i]), [int(src[i]), int(src[(i + 1) % n])], SUM_PRODUCT)
        rows = np.stack([src, out], axis=1)
        twice = bus.create_pages(n, 16, dtype="float64")
        bus.derive_many(twice, lambda s: s[:, 0] + s[:, 1], rows, name="sum2")
        rep = bus.tick(mmsb.DeltaBatch.from_ranges(src, np.zeros(n, np.int64),
                                                   np.ones((n, 2))))  # fmt: skip
        assert rep.derived_deltas == 2 * n
        assert parents_of(bus, int(twice[3])) == [int(src[3]), int(out[3])]
    batches = [
        codec.decode_batch(f.payload)
        for f in LogReader(str(path / "log")).frames()
        if f.type == codec.BATCH
    ]
    tick = batches[-1].batch
    assert len(tick) == 3 * n
    assert sorted(tick.metas) == sorted(
        f'{{"cause_lsn":{rep.lsn},"derive":"{name}"}}' for name in ("SUM_PRODUCT", "sum2")
    )
