"""Pinned snapshots (``Bus.snapshot``) in one process and across processes.

The multi-process consistency runs (4 readers for 20 s, and the control that breaks them
by turning the before-images off) are in tests/storage/test_readers.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.errors import MMSBError, SnapshotTooOldError
from mmsb.storage import snapstore


def f64(*v: float) -> np.ndarray:
    return np.array(v, np.float64)


def fill(bus: mmsb.Bus, pid: int, value: float) -> None:
    bus.write(pid, np.full(int(bus.page(pid).size) // 8, value))


def test_a_snapshot_keeps_its_commit_through_writes_deletes_and_creates(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        a, b, c = bus.create_pages(3, 64, dtype="float64").tolist()
        bus.write(b, np.zeros(8), metadata=None)
        for p, v in ((a, 1.0), (b, 2.0), (c, 3.0)):
            fill(bus, p, v)
        meta = bus.create_page(64, dtype="float64", metadata={"name": "kept"})
        fill(bus, meta, 4.0)
        lsn, digest_pages = bus.lsn, {p: bus.read(p).copy() for p in (a, b, c, meta)}
        epochs = {p: bus.page(p).epoch for p in (a, b, c, meta)}
        with bus.snapshot() as snap:
            assert snap.lsn == lsn and not snap.closed
            fill(bus, a, 10.0)
            bus.delete_pages([b, meta])
            new = bus.create_page(64, dtype="float64")  # may reuse b's space
            fill(bus, new, 99.0)
            fill(bus, a, 11.0)
            for p, want in digest_pages.items():
                np.testing.assert_array_equal(snap.read(p), want)
                assert snap.page(p).epoch == epochs[p]
            assert snap.page(meta).metadata == {"name": "kept"}  # deleted since, still there
            assert snap.page_ids().tolist() == [a, b, c, meta]
            assert len(snap) == 4 and b in snap and new not in snap and 0 not in snap
            with pytest.raises(mmsb.PageNotFoundError):
                snap.read(new)  # created after the snapshot
            rows = snap.read_many([c, a, b, a])
            assert rows[:, 0].tolist() == [3.0, 1.0, 2.0, 1.0]
            v = snap.view(a)
            assert not v.flags.writeable and v[0] == 1.0
            # the bus itself moved on
            assert bus.read(a)[0] == 11.0 and b not in bus
        assert snap.closed
        with pytest.raises(mmsb.BusClosedError):
            snap.read(a)


def test_snapshots_at_different_lsns_each_see_their_own_version(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        (p,) = bus.create_pages(1, 16, dtype="float64").tolist()
        fill(bus, p, 1.0)
        s1 = bus.snapshot()
        fill(bus, p, 2.0)
        s2 = bus.snapshot()
        fill(bus, p, 3.0)
        s3 = bus.snapshot()
        fill(bus, p, 4.0)
        assert [s.read(p)[0] for s in (s1, s2, s3)] == [1.0, 2.0, 3.0]
        assert [s.page(p).epoch for s in (s1, s2, s3)] == [1, 2, 3]
        for s in (s1, s2, s3):
            s.close()


def test_read_many_in_a_snapshot_checks_its_input(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        a = bus.create_page(16, dtype="float64")
        b = bus.create_page(32, dtype="float64")
        with bus.snapshot() as snap:
            with pytest.raises(mmsb.InvalidArgumentError, match="one size and dtype"):
                snap.read_many([a, b])
            with pytest.raises(mmsb.PageNotFoundError):
                snap.read_many([a, 77])
            with pytest.raises(mmsb.InvalidArgumentError):
                snap.read_many([[a]])
            with pytest.raises(mmsb.InvalidArgumentError):
                snap.read(1.5)  # type: ignore[arg-type]
            assert snap.read_many([]).shape == (0, 0)


def test_read_many_of_a_past_commit_equals_its_reads(tmp_path: Path) -> None:
    """``at()`` snapshots (replayed, and the head's copy) gather as of their commit: one
    ``read`` per id is the oracle, taken after the bus has moved on."""
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(12, 64, dtype="float64")
        bus.rename_page(int(ids[3]), "third")
        for k in range(4):
            for i, pid in enumerate(ids.tolist()):
                fill(bus, pid, 100.0 * k + i)
        past = bus.at(bus.lsn - 12)  # replayed from the log
        head = bus.at()  # a copy of the head
        order = np.random.default_rng(0).integers(0, ids.size, 40)
        want_past = np.stack([past.read(int(ids[j])) for j in order])
        want_head = np.stack([head.read(int(ids[j])) for j in order])
        for pid in ids.tolist():
            fill(bus, pid, -1.0)  # the live bus moves on
        got = past.read_many(ids[order])
        assert got.dtype == np.float64 and np.array_equal(got, want_past)
        assert np.array_equal(head.read_many(ids[order]), want_head)
        assert np.array_equal(
            past.read_many(["third", int(ids[0])]),
            np.stack([past.read(int(ids[3])), past.read(int(ids[0]))]),
        )
        assert not np.array_equal(want_past, want_head)
        with pytest.raises(mmsb.PageNotFoundError):
            past.read_many([int(ids[0]), 999])
        past.close()
        with pytest.raises(mmsb.BusClosedError):
            past.read_many(ids)


def test_closed_snapshots_cost_the_writer_nothing(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        p = bus.create_page(4096)
        snaps = bus._committer.snapshots
        assert snaps is not None
        with bus.snapshot():
            bus.write(p, b"\x01" * 4096)
            bus.write(p, b"\x02" * 4096)  # the pinned version is saved once
        assert (snaps.saved, snaps.active) == (1, 0)
        for _ in range(10):
            bus.write(p, b"\x03" * 4096)
        assert snaps.saved == 1


def test_a_snapshot_held_too_long_expires_and_the_writer_never_waits(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off", snapshot_memory=65536) as bus:
        pages = bus.create_pages(40, 4096).tolist()
        old = bus.snapshot()
        assert old.read(pages[0]).sum() == 0
        for p in pages:  # 160 KiB of before-images against a 64 KiB ring
            bus.write(p, b"\x07" * 4096)
        with pytest.raises(SnapshotTooOldError, match="too old"):
            old.read(pages[0])
        with pytest.raises(SnapshotTooOldError):
            old.read(pages[-1])
        old.close()
        with bus.snapshot() as fresh:  # a new snapshot works at once
            bus.write(pages[0], b"\x08" * 4096)
            assert fresh.read(pages[0])[0] == 7
        assert bus._committer.snapshots.expired >= 1


def test_a_page_larger_than_the_ring_expires_the_snapshots_that_see_it(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off", snapshot_memory=65536) as bus:
        big = bus.create_page(1 << 17)
        small = bus.create_page(8)
        with bus.snapshot() as snap:
            bus.write(big, b"\x01" * (1 << 17))
            with pytest.raises(SnapshotTooOldError):
                snap.read(small)


def test_slots_run_out_with_a_clear_error_and_come_back(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        bus.create_page(8)
        held = [bus.snapshot() for _ in range(snapstore.SLOTS)]
        with pytest.raises(MMSBError, match="snapshot slots"):
            bus.snapshot()
        held.pop().close()
        with bus.snapshot() as again:
            assert again.lsn == bus.lsn
        for s in held:
            s.close()
        assert bus._committer.snapshots.active == 0


def test_a_taken_back_tick_leaves_snapshots_correct(tmp_path: Path) -> None:
    """A tick stages its inputs before its frame and saves their old bytes for the open
    snapshots as commit ``lsn + 1``; when its derivation fails the tick is taken back, and
    those images (still the bytes as of ``lsn``) must serve the next commit's snapshots."""
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        a, b = bus.create_pages(2, 16, dtype="float64").tolist()
        fail = [True]

        def double(x: np.ndarray) -> np.ndarray:
            if fail[0]:
                raise ValueError("not now")
            return x * 2

        bus.derive(b, double, [a], name="double")
        fill(bus, a, 1.0)
        fail[0] = False
        bus.tick()
        fail[0] = True
        batch = mmsb.DeltaBatch.from_deltas([mmsb.Delta.range(a, f64(5.0, 5.0))])
        with bus.snapshot() as s1:
            with pytest.raises(mmsb.PropagationError):
                bus.tick(batch)
            assert s1.read(a).tolist() == [1.0, 1.0]
        lsn = bus.lsn
        with bus.snapshot() as s2:
            assert s2.lsn == lsn
            fail[0] = False
            rep = bus.tick(batch)
            assert rep.lsn == lsn + 1
            assert s2.read(a).tolist() == [1.0, 1.0] and s2.read(b).tolist() == [2.0, 2.0]
            assert bus.read(b).tolist() == [10.0, 10.0]


def test_a_new_writer_generation_ends_reader_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off")
    p = w.create_page(8)
    reader = mmsb.open(path, readonly=True)
    try:
        snap = reader.snapshot()
        assert snap.read(p).sum() == 0
        w.close()
        w = mmsb.open(path, sync="off")
        w.write(p, b"\x01" * 8)
        with pytest.raises(SnapshotTooOldError, match="reopened"):
            snap.read(p)
        snap.close()
        with reader.snapshot() as again:
            assert again.read(p)[0] == 1
    finally:
        reader.close()
        w.close()


def test_entries_left_by_an_older_generation_are_never_served(tmp_path: Path) -> None:
    """A new writer does not clear the before-image entries of the last one: a snapshot of
    the new generation must read only entries its own writer published."""
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off")
    p, q = w.create_page(8), w.create_page(8)
    reader = mmsb.open(path, readonly=True)
    try:
        with reader.snapshot():  # pinned: the old writer saves before-images of p and q
            for v in range(1, 6):
                w.write(p, bytes([v]) * 8)
                w.write(q, bytes([10 + v]) * 8)
        w.close()
        w = mmsb.open(path, sync="off")  # entries 0..9 of the old generation stay in place
        with reader.snapshot() as snap:
            assert snap.read(q)[0] == 15  # entry 1 of the old generation holds q = 11
            w.write(p, b"\x07" * 8)  # this generation's entry 0: p as it was, 5
            assert snap.read(p)[0] == 5 and snap.read(q)[0] == 15
            w.write(q, b"\x08" * 8)
            assert snap.read(q)[0] == 15
            assert snap.read_many([p, q])[:, 0].tolist() == [5, 15]
        with reader.snapshot() as now:
            assert now.read_many([p, q])[:, 0].tolist() == [7, 8]
    finally:
        reader.close()
        w.close()


def test_a_reader_without_a_writer_pins_its_private_view(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w:
        p = w.create_page(8)
        w.write(p, b"\x02" * 8)
    with mmsb.open(path, readonly=True) as r, r.snapshot() as snap:
        assert snap.lsn == r.lsn and snap.read(p)[0] == 2 and snap.page_ids().tolist() == [p]


HOLDER = """
import sys, time, mmsb
bus = mmsb.open(sys.argv[1], readonly=True)
snap = bus.snapshot()
snap.read(1)
print("pinned", snap.lsn, flush=True)
time.sleep(600)
"""


def test_the_pin_of_a_killed_reader_is_cleared(tmp_path: Path) -> None:
    """A reader process dies holding a snapshot: the writer, short of ring space, clears
    its slot instead of expiring anything (LMDB's stale-reader check)."""
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", snapshot_memory=65536) as bus:
        pages = bus.create_pages(40, 4096).tolist()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().split()[0] == "pinned"
            snaps = bus._committer.snapshots
            assert snaps is not None and snaps.active == 1
            bus.write(pages[0], b"\x01" * 4096)
            assert snaps.saved == 1  # kept for the live reader
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=30)
            for p in pages:
                bus.write(p, b"\x02" * 4096)
            assert snaps.active == 0 and snaps.expired == 0
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait(timeout=30)
            if holder.stdout is not None:
                holder.stdout.close()


def test_options_are_checked() -> None:
    with pytest.raises(mmsb.InvalidArgumentError, match="snapshot_memory"):
        mmsb.open(None, snapshot_memory=1000)
    with pytest.raises(mmsb.InvalidArgumentError, match="snapshot_memory"):
        mmsb.open(None, snapshot_memory="big")


def test_a_pinned_snapshot_keeps_its_pages_through_a_two_worker_commit(tmp_path: Path) -> None:
    """Two workers apply a batch by page range: a snapshot pinned before still sees the
    old bytes of every page after the commit; the bus sees the new ones."""
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(512, 256)
        rng = np.random.default_rng(3)
        base = rng.integers(0, 255, (512, 256), dtype=np.uint8)
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids, np.zeros(512, np.int64), base))
        rows = 40_000  # enough for two shares
        pick = ids[rng.integers(0, 512, rows)]
        offs = rng.integers(0, 240, rows).astype(np.int64)
        batch = mmsb.DeltaBatch.from_ranges(pick, offs, rng.integers(0, 255, (rows, 16), np.uint8))
        with bus.snapshot() as snap:
            bus.apply_batch(batch, workers=2)
            assert np.array_equal(snap.read_many(ids), base)
            after = bus.read_many(ids)
            want = base.copy()
            for p, o, d in zip(
                (pick - ids[0]).tolist(),
                offs.tolist(),
                batch.payload.reshape(rows, 16),
                strict=True,
            ):
                want[p, o : o + 16] = d
            assert np.array_equal(after, want)  # the one-row-at-a-time oracle
