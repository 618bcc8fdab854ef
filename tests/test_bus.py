"""The public bus API end to end, compared with the dict-of-bytearrays model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import mmsb
import mmsb.history.component
import mmsb.writer.checkpointer
import mmsb.writer.checkpointer as checkpointer
from mmsb import (
    BusClosedError,
    BusLockedError,
    Commit,
    Delta,
    DeltaBatch,
    HistoryUnavailableError,
    InvalidArgumentError,
    PageDiff,
    PageInfo,
    PageNotFoundError,
    ReadOnlyError,
)
from mmsb.storage.arena import MemoryArena
from mmsb.storage.checkpoint import list_checkpoints, load_state
from mmsb.writer.checkpointer import WARM_CHUNK, prefaulted
from naive import Model, assert_matches


class Clock:
    """A deterministic clock: each call returns ``now`` and then advances it by ``step``."""

    def __init__(self, start: int = 1_000, step: int = 10) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> int:
        t = self.now
        self.now += self.step
        return t


def crash(bus: mmsb.Bus) -> None:
    """Drop the bus without a clean shutdown, as if the process had died."""
    bus.abandon()


@pytest.fixture
def bus(tmp_path: Path):
    with mmsb.open(tmp_path / "bus", sync="off", clock=Clock()) as b:
        yield b


# -- pages ------------------------------------------------------------------------------


def test_create_pages_and_page_info(bus: mmsb.Bus) -> None:
    assert (bus.lsn, len(bus), bus.page_ids().tolist()) == (0, 0, [])
    a = bus.create_page(16)
    assert a == 1
    assert bus.lsn == 1
    ids = bus.create_pages(3, 8, dtype="int32", metadata={"group": "g", "n": [1, 2]})
    assert ids.tolist() == [2, 3, 4]
    assert bus.lsn == 2  # one commit for the three pages
    assert bus.page(a) == PageInfo(1, 16, "uint8", "cpu", 0, {})
    assert bus.page(3) == PageInfo(3, 8, "int32", "cpu", 0, {"group": "g", "n": [1, 2]})
    got = bus.read(3)
    assert got.dtype == np.int32
    assert got.tolist() == [0, 0]
    assert bus.read(a).tobytes() == bytes(16)
    assert len(bus) == 4
    assert bus.page_ids().tolist() == [1, 2, 3, 4]
    assert 3 in bus
    assert np.int64(4) in bus
    assert 5 not in bus
    assert "3" not in bus


def test_create_page_with_numpy_dtype_objects(bus: mmsb.Bus) -> None:
    pid = bus.create_page(32, dtype=np.float32)
    assert bus.page(pid).dtype == "float32"
    pid2 = bus.create_page(16, dtype=np.dtype("complex128"))
    assert bus.read(pid2).dtype == np.complex128


def test_delete_pages(bus: mmsb.Bus) -> None:
    ids = bus.create_pages(4, 8).tolist()
    bus.write(ids[0], b"abcdefgh")
    bus.delete_page(ids[0])
    assert bus.lsn == 3
    bus.delete_pages([ids[1], ids[3]])
    assert bus.lsn == 4
    assert bus.page_ids().tolist() == [ids[2]]
    assert len(bus) == 1
    assert ids[0] not in bus
    bus.delete_pages([])  # nothing to do, nothing logged
    assert bus.lsn == 4
    new = bus.create_page(8)
    assert new == 5  # ids are never reused
    assert bus.read(new).tobytes() == bytes(8)  # reused space starts zeroed


# -- writes -------------------------------------------------------------------------------


def test_write_bytes_and_typed_arrays(bus: mmsb.Bus) -> None:
    raw = bus.create_page(16)
    f64 = bus.create_page(32, dtype="float64")
    d1 = bus.write(raw, b"hello", offset=3)
    d2 = bus.write(raw, bytearray(b"!"), offset=15)
    d3 = bus.write(f64, np.array([1.5, -2.25]), offset=8)
    d4 = bus.write(raw, np.frombuffer(b"xy", np.uint8))
    assert [d1, d2, d3, d4] == [1, 2, 3, 4]
    assert bus.read(raw).tobytes() == b"xy\x00hello" + bytes(7) + b"!"
    assert bus.read(f64).tolist() == [0.0, 1.5, -2.25, 0.0]
    assert bus.page(raw).epoch == 3
    assert bus.page(f64).epoch == 1
    assert bus.lsn == 6


def test_write_accepts_a_memoryview_and_typed_view_of_bytes(bus: mmsb.Bus) -> None:
    pid = bus.create_page(8, dtype="int16")
    bus.write(pid, memoryview(np.array([7, -1], np.int16).tobytes()), offset=2)
    assert bus.read(pid).tolist() == [0, 7, -1, 0]


def test_apply_single_deltas(bus: mmsb.Bus) -> None:
    pid = bus.create_page(8)
    model = Model()
    model.create(8)
    deltas = [
        Delta.range(pid, b"abcdefgh"),
        Delta.dense(pid, [1, 0, 1, 0], b"WXYZ", 2),
        Delta.sparse(pid, [0, 1, 1], b"12", 5, source="sparse", metadata={"x": 1}),
    ]
    for expected_id, d in enumerate(deltas, start=1):
        assert bus.apply(d) == expected_id
        model.apply_delta(d)
    assert_matches(bus, model)
    assert bus.read(pid).tobytes() == b"abWdYf12"


def test_apply_batch_commit_fields(tmp_path: Path) -> None:
    clock = Clock(start=500, step=7)
    with mmsb.open(tmp_path / "b", sync="off", clock=clock) as bus:
        a, b = bus.create_pages(2, 16).tolist()  # LSN 1 at t=500
        batch = DeltaBatch.from_deltas(
            [Delta.range(a, b"one"), Delta.dense(b, [1, 1], b"tw", 4), Delta.range(a, b"3", 1)]
        )
        c1 = bus.apply_batch(batch)
        assert c1 == Commit(lsn=2, first_delta_id=1, last_delta_id=3, count=3, timestamp=507)
        c2 = bus.apply_batch(DeltaBatch.from_ranges([b], [0], [b"zz"]))
        assert c2 == Commit(lsn=3, first_delta_id=4, last_delta_id=4, count=1, timestamp=514)
        assert bus.read(a).tobytes()[:3] == b"o3e"
        assert bus.page(a).epoch == 2
        assert bus.page(b).epoch == 2
        empty = bus.apply_batch(DeltaBatch.empty())
        assert (empty.lsn, empty.count) == (3, 0)
        assert bus.lsn == 3
        # a clock that goes backwards never makes commit times go backwards
        clock.now = 0
        c3 = bus.apply_batch(DeltaBatch.from_ranges([a], [0], [b"q"]))
        assert c3.timestamp == 514


def test_read_returns_a_copy(bus: mmsb.Bus) -> None:
    pid = bus.create_page(8, dtype="uint16")
    bus.write(pid, np.array([1, 2, 3, 4], np.uint16))
    got = bus.read(pid)
    got[:] = 99
    assert bus.read(pid).tolist() == [1, 2, 3, 4]
    bus.write(pid, np.array([5], np.uint16))
    assert got.tolist() == [99, 99, 99, 99]  # earlier reads never change under the caller


def random_workload(bus: mmsb.Bus, model: Model, steps: int, seed: int) -> dict[int, Model]:
    """Random creates, deletes, writes and masked batches on both; model copies by LSN."""
    rng = np.random.default_rng(seed)
    states = {bus.lsn: model.copy()}
    for _ in range(steps):
        live = sorted(model.pages)
        r = rng.random()
        if len(live) < 3 or r < 0.1:
            size = int(rng.choice([8, 24, 64]))
            n = int(rng.integers(1, 4))
            bus.create_pages(n, size)
            for _ in range(n):
                model.create(size)
            model.lsn -= n - 1  # one commit for all of them
        elif r < 0.17:
            gone = [int(p) for p in rng.choice(live, size=2, replace=False)]
            bus.delete_pages(gone)
            for p in gone:
                model.delete(p)
            model.lsn -= 1  # one commit for both
        elif r < 0.5:
            pid = int(rng.choice(live))
            size = len(model.pages[pid])
            n = int(rng.integers(1, size + 1))
            off = int(rng.integers(0, size - n + 1))
            data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            bus.write(pid, data, offset=off)
            model.apply_batch(DeltaBatch.from_ranges([pid], [off], [data]))
        else:
            deltas = []
            for _ in range(int(rng.integers(1, 8))):
                pid = int(rng.choice(live))
                size = len(model.pages[pid])
                n = int(rng.integers(1, size + 1))
                off = int(rng.integers(0, size - n + 1))
                mask = rng.random(n) < 0.5
                kind = int(rng.integers(0, 3))
                if kind == 0:
                    deltas.append(Delta.range(pid, rng.bytes(n), off))
                elif kind == 1:
                    deltas.append(Delta.dense(pid, mask, rng.bytes(n), off))
                else:
                    deltas.append(Delta.sparse(pid, mask, rng.bytes(int(mask.sum())), off))
            batch = DeltaBatch.from_deltas(deltas)
            bus.apply_batch(batch)
            model.apply_batch(batch)
        assert bus.lsn == model.lsn
        states[bus.lsn] = model.copy()
    return states


def test_random_workload_matches_the_model(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    with mmsb.open(path, sync="off") as bus:
        states = random_workload(bus, model, 150, seed=2024)
        assert_matches(bus, model)
        rng = np.random.default_rng(5)
        for lsn in sorted({int(x) for x in rng.integers(0, bus.lsn + 1, 12)} | {0, bus.lsn}):
            with bus.at(lsn) as snap:
                assert snap.lsn == lsn
                assert_matches(snap, states[lsn])
        live_hash = bus.state_hash()
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "clean"
        assert_matches(bus, model)
        assert bus.state_hash() == live_hash


# -- time travel --------------------------------------------------------------------------


def test_at_lsn_gives_detached_read_only_snapshots(bus: mmsb.Bus) -> None:
    pid = bus.create_page(4)
    bus.write(pid, b"aaaa")
    bus.write(pid, b"bb")
    snap1 = bus.at(2)
    now = bus.at()
    assert (snap1.lsn, now.lsn) == (2, 3)
    assert snap1.read(pid).tobytes() == b"aaaa"
    assert snap1.page(pid).epoch == 1
    assert now.read(pid).tobytes() == b"bbaa"
    bus.write(pid, b"c")
    bus.delete_page(pid)
    assert now.read(pid).tobytes() == b"bbaa"  # detached from later commits
    assert len(bus.at(0)) == 0
    assert bus.at(0).page_ids().tolist() == []
    with pytest.raises(ReadOnlyError, match="snapshots are read-only"):
        snap1.write(pid, b"x")
    snap1.close()
    with pytest.raises(BusClosedError, match="Snapshot is closed"):
        snap1.read(pid)
    with pytest.raises(HistoryUnavailableError, match=r"LSN 6 is outside \[0, 5\]"):
        bus.at(6)
    with pytest.raises(HistoryUnavailableError, match=r"LSN -1 is outside"):
        bus.at(-1)
    with pytest.raises(InvalidArgumentError, match="either lsn or time"):
        bus.at(1, time=5)
    with pytest.raises(InvalidArgumentError, match="lsn must be an integer"):
        bus.at("1")  # type: ignore[arg-type]


def test_at_time_with_an_injected_clock(tmp_path: Path) -> None:
    clock = Clock(start=100, step=100)
    with mmsb.open(tmp_path / "b", sync="off", clock=clock) as bus:
        pid = bus.create_page(2)  # t=100, LSN 1
        bus.write(pid, b"a")  # t=200, LSN 2
        clock.now = 1_000
        bus.write(pid, b"b")  # t=1000, LSN 3
        assert bus.at(time=99).lsn == 0
        assert bus.at(time=100).lsn == 1
        assert bus.at(time=999).read(pid).tobytes() == b"a\x00"
        snap = bus.at(time=999)
        assert (snap.lsn, snap.timestamp) == (2, 200)
        assert bus.at(time=1_000).read(pid).tobytes() == b"b\x00"
        assert bus.at(time=10**18).lsn == 3
        bus.write(pid, b"c", offset=1)  # the time index keeps up with new commits
        assert bus.at(time=10**18).read(pid).tobytes() == b"bc"


# -- history ------------------------------------------------------------------------------


def test_history_newest_first_with_fields(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", clock=Clock(start=10, step=1)) as bus:
        a, b = bus.create_pages(2, 16).tolist()  # t=10
        bus.write(a, b"xy", offset=2, source="tool", metadata={"why": "first"})  # t=11
        bus.apply_batch(
            DeltaBatch.from_deltas(
                [Delta.range(b, b"q"), Delta.dense(a, [1, 0, 1], b"abc", 5, source="mask")]
            )
        )  # t=12, deltas 2 and 3
        bus.apply(Delta.sparse(a, [0, 1], b"z", 14, metadata={"k": 2}))  # t=13
        hist = bus.history(a)
        assert [r.delta_id for r in hist] == [4, 3, 1]
        assert hist[0] == mmsb.DeltaRecord(
            delta_id=4, page_id=a, lsn=4, epoch=3, timestamp=13, source="api",
            metadata={"k": 2}, offset=14, length=2, shape="sparse",
        )  # fmt: skip
        assert hist[1] == mmsb.DeltaRecord(3, a, 3, 2, 12, "mask", None, 5, 3, "dense")
        assert hist[2] == mmsb.DeltaRecord(1, a, 2, 1, 11, "tool", {"why": "first"}, 2, 2, "range")
        assert [r.delta_id for r in bus.history(a, limit=2)] == [4, 3]
        assert bus.history(a, limit=0) == []
        assert [r.delta_id for r in bus.history(b)] == [2]
        c = bus.create_page(4)
        assert bus.history(c) == []
        bus.write(c, b"new")  # the index keeps up after it was built
        assert [r.delta_id for r in bus.history(c)] == [5]
        bus.delete_page(b)
        assert [r.delta_id for r in bus.history(b)] == [2]  # a deleted page keeps its past
        with pytest.raises(PageNotFoundError, match="page 99 does not exist"):
            bus.history(99)
        with pytest.raises(InvalidArgumentError, match="limit must be >= 0"):
            bus.history(a, limit=-1)
        before = bus.history(a)
    with mmsb.open(path) as bus:
        assert bus.history(a) == before
    bus = mmsb.open(path)
    bus.write(a, b"after")
    crash(bus)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert [r.delta_id for r in bus.history(a)] == [6, 4, 3, 1]


# -- diff -----------------------------------------------------------------------------------


def test_diff_reports_added_removed_and_changed_ranges(bus: mmsb.Bus) -> None:
    a, b, c = bus.create_pages(3, 16).tolist()  # LSN 1
    bus.write(a, b"xx", offset=1)  # LSN 2
    base = bus.lsn
    bus.write(a, b"yyy", offset=8)  # LSN 3
    bus.write(a, b"x", offset=2)  # rewrites an equal byte: not a change
    bus.apply_batch(DeltaBatch.from_deltas([Delta.dense(b, [1, 0, 1], b"abc", 0)]))
    bus.delete_page(c)
    d = bus.create_page(8)
    bus.write(a, b"\x00", offset=9)  # back to zero: ranges split around it
    diffs = bus.diff(base, bus.lsn)
    assert diffs == [
        PageDiff(a, "changed", ((8, 9), (10, 11))),
        PageDiff(b, "changed", ((0, 1), (2, 3))),
        PageDiff(c, "removed", ((0, 16),)),
        PageDiff(d, "added", ((0, 8),)),
    ]
    reverse = bus.diff(bus.lsn, base)
    assert [(x.page_id, x.status) for x in reverse] == [
        (a, "changed"), (b, "changed"), (c, "added"), (d, "removed"),
    ]  # fmt: skip
    assert bus.diff(base, base) == []
    assert bus.diff(0, 1) == [PageDiff(p, "added", ((0, 16),)) for p in (a, b, c)]


def test_diff_of_a_page_that_changed_and_changed_back(bus: mmsb.Bus) -> None:
    pid = bus.create_page(4)
    bus.write(pid, b"ab")
    bus.write(pid, b"\x00\x00")
    assert bus.diff(1, 3) == []
    assert bus.diff(1, 2) == [PageDiff(pid, "changed", ((0, 2),))]


# -- checkpoints, compaction, export ------------------------------------------------------


def test_checkpoint_and_compact_bound_history(tmp_path: Path) -> None:
    path = tmp_path / "b"
    model = Model()
    with mmsb.open(path, sync="off", keep_checkpoints=1) as bus:
        states = random_workload(bus, model, 20, seed=1)
        first = bus.checkpoint()
        states.update(random_workload(bus, model, 20, seed=2))
        kept = bus.checkpoint()
        states.update(random_workload(bus, model, 10, seed=3))
        assert first.lsn < kept.lsn < bus.lsn
        info = bus.compact()
        assert info.oldest_lsn == kept.lsn
        assert info.checkpoints_removed == 1
        assert info.segments_removed == 2
        assert info.bytes_removed > 0
        assert not os.path.exists(first.path)
        for lsn in (0, 1, first.lsn, kept.lsn - 1):
            with pytest.raises(HistoryUnavailableError, match=f"LSN {lsn} is older than"):
                bus.at(lsn)
        for lsn in (kept.lsn, kept.lsn + 1, bus.lsn - 1, bus.lsn):
            assert_matches(bus.at(lsn), states[lsn])
        assert bus.compact().segments_removed == 0  # nothing more to drop
        assert bus.verify().ok
    with mmsb.open(path) as bus:
        assert_matches(bus, model)


def test_export_makes_a_standalone_bus(tmp_path: Path) -> None:
    model = Model()
    with mmsb.open(tmp_path / "src", sync="off") as bus:
        states = random_workload(bus, model, 30, seed=8)
        ck = bus.checkpoint()
        states.update(random_workload(bus, model, 10, seed=9))
        bus.export(tmp_path / "whole")
        bus.export(tmp_path / "early", lsn=ck.lsn - 3)
        bus.export(tmp_path / "late", lsn=ck.lsn + 2)
        whole_hash = bus.state_hash()
        early_hash = bus.at(ck.lsn - 3).state_hash()
        late_hash = bus.at(ck.lsn + 2).state_hash()
        end = bus.lsn
        with pytest.raises(HistoryUnavailableError, match="outside"):
            bus.export(tmp_path / "future", lsn=end + 1)
        with pytest.raises(InvalidArgumentError, match="already exists and is not empty"):
            bus.export(tmp_path / "whole")
    with mmsb.open(tmp_path / "whole") as copy:
        assert copy.state_hash() == whole_hash
        assert copy.lsn == end
        assert_matches(copy, model)
    with mmsb.open(tmp_path / "early") as copy:
        assert copy.state_hash() == early_hash
        assert_matches(copy, states[ck.lsn - 3])
    with mmsb.open(tmp_path / "late") as copy:
        assert copy.state_hash() == late_hash
        assert copy.lsn == ck.lsn + 2
        copy.create_page(8)  # an export is a normal, writable bus
        assert copy.lsn == ck.lsn + 3


# -- opening and closing --------------------------------------------------------------------


def test_close_and_reopen_clean(tmp_path: Path) -> None:
    path = tmp_path / "b"
    model = Model()
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "new"
        random_workload(bus, model, 25, seed=3)
        lsn = bus.lsn
    assert bus.closed
    bus.close()  # idempotent
    assert "closed" in repr(bus)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "clean"
        assert bus.lsn == lsn
        assert_matches(bus, model)
        random_workload(bus, model, 10, seed=4)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "clean"
        assert_matches(bus, model)


def test_reopen_after_a_crash_replays(tmp_path: Path) -> None:
    path = tmp_path / "b"
    model = Model()
    bus = mmsb.open(path)
    random_workload(bus, model, 25, seed=5)
    lsn = bus.lsn
    crash(bus)
    assert not (path / "state.clean").exists()
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert bus.recovery.frames_replayed == lsn
        assert bus.recovery.checkpoint_lsn == 0
        assert bus.lsn == lsn
        assert_matches(bus, model)
        states = random_workload(bus, model, 10, seed=6)  # and it carries on writing
        crash(bus)
    with mmsb.open(path) as bus:
        assert_matches(bus, model)
        assert_matches(bus.at(lsn + 1), states[lsn + 1])


def test_crash_after_a_checkpoint_replays_only_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "b"
    model = Model()
    bus = mmsb.open(path, sync="off")
    random_workload(bus, model, 20, seed=7)
    ck = bus.checkpoint()
    random_workload(bus, model, 4, seed=8)
    crash(bus)
    with mmsb.open(path) as bus:
        assert bus.recovery.checkpoint_lsn == ck.lsn
        assert bus.recovery.frames_replayed == 4
        assert_matches(bus, model)


def test_ephemeral_bus_is_removed_on_close() -> None:
    with mmsb.open(None) as bus:
        assert bus.sync == "off"
        path = bus.path
        assert os.path.isdir(path)
        pid = bus.create_page(8)
        bus.write(pid, b"abc")
        assert bus.read(pid).tobytes()[:3] == b"abc"
    assert bus.closed
    assert not os.path.exists(path)


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), mmsb.open(tmp_path / "b") as bus:
        bus.create_page(8)
        raise RuntimeError("boom")
    assert bus.closed
    with mmsb.open(tmp_path / "b") as again:  # the lock was released
        assert again.recovery.mode == "clean"
        assert len(again) == 1


def test_closed_bus_refuses_reads_and_writes(tmp_path: Path) -> None:
    bus = mmsb.open(tmp_path / "b")
    pid = bus.create_page(8)
    bus.close()
    for call in (
        lambda: bus.read(pid),
        lambda: bus.page(pid),
        lambda: bus.page_ids(),
        lambda: len(bus),
        lambda: bus.write(pid, b"x"),
        lambda: bus.create_page(8),
        lambda: bus.at(0),
        lambda: bus.history(pid),
        lambda: bus.checkpoint(),
    ):
        with pytest.raises(BusClosedError, match="Bus is closed"):
            call()


def test_readonly_open_sees_the_state_and_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "b"
    model = Model()
    writer = mmsb.open(path)
    random_workload(writer, model, 15, seed=10)
    pid = int(writer.page_ids()[0])
    with mmsb.open(path, readonly=True) as ro:  # alongside the writer: no lock needed
        assert ro.readonly
        assert_matches(ro, model)
        assert ro.state_hash() == writer.state_hash()
        assert "readonly" in repr(ro)
        for call in (
            lambda: ro.write(pid, b"x"),
            lambda: ro.create_page(8),
            lambda: ro.delete_page(pid),
            lambda: ro.apply_batch(DeltaBatch.from_ranges([pid], [0], [b"x"])),
            lambda: ro.checkpoint(),
            lambda: ro.compact(),
        ):
            with pytest.raises(ReadOnlyError, match="open read-only"):
                call()
        assert_matches(ro, model)
        assert [r.delta_id for r in ro.history(pid)] == [r.delta_id for r in writer.history(pid)]
    writer.close()
    files = sorted(p.name for p in path.iterdir())
    with mmsb.open(path, readonly=True) as ro:
        assert_matches(ro, model)
    assert sorted(p.name for p in path.iterdir()) == files  # a read-only open changes nothing


def test_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b"
    first = mmsb.open(path)
    pid = first.create_page(8)
    with pytest.raises(BusLockedError, match=f"already open for writing \\(by pid {os.getpid()}"):
        mmsb.open(path)
    first.write(pid, b"ok")  # the refused open did not disturb the writer
    first.close()
    with mmsb.open(path) as second:
        assert second.read(pid).tobytes()[:2] == b"ok"


@pytest.mark.parametrize("sync", ["always", "normal", "off"])
def test_sync_modes(tmp_path: Path, sync: str) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync=sync) as bus:
        assert bus.sync == sync
        pid = bus.create_page(8)
        bus.write(pid, b"durable")
        bus.sync_now()
    bus = mmsb.open(path, sync=sync)
    assert bus.read(pid).tobytes() == b"durable\x00"
    bus.write(pid, b"D")
    crash(bus)
    with mmsb.open(path) as bus:
        assert bus.read(pid).tobytes() == b"Durable\x00"


@pytest.mark.parametrize("sync", ["sometimes", "", "ALWAYS", "batch"])
def test_bad_sync_mode(tmp_path: Path, sync: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"unknown sync mode {sync!r}"):
        mmsb.open(tmp_path / "b", sync=sync)
    assert not (tmp_path / "b").exists()


def test_bad_open_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="keep_checkpoints must be at least 1"):
        mmsb.open(tmp_path / "b", keep_checkpoints=0)
    with pytest.raises(InvalidArgumentError, match="segment_size must be at least 4096"):
        mmsb.open(tmp_path / "b", segment_size=100)
    with pytest.raises(InvalidArgumentError, match="ephemeral bus cannot be read-only"):
        mmsb.open(None, readonly=True)


def test_verify_reports_a_healthy_bus(tmp_path: Path) -> None:
    model = Model()
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        random_workload(bus, model, 30, seed=12)
        bus.checkpoint()
        random_workload(bus, model, 10, seed=13)
        report = bus.verify()
        assert report.ok, report.summary()
        assert report.state_hash == bus.state_hash()
        assert report.errors == []
        assert (report.first_lsn, report.last_lsn, report.frames) == (1, bus.lsn, bus.lsn)
        pid = int(bus.page_ids()[0])
        assert bus.write(pid, b"x") == report.deltas + 1  # every delta so far was counted
        assert report.orphan_deltas == report.invalid_deltas == report.epoch_violations == 0
        assert report.checkpoints_checked == 1
        assert report.summary().startswith("OK")
    assert mmsb.verify(tmp_path / "b").ok


def test_page_table_lists_live_pages_as_columns(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "pt") as bus:
        a = bus.create_page(16)
        b = bus.create_page(64, dtype="float64", location="cpu")
        c = bus.create_page(8)
        bus.write(b, np.ones(8))
        bus.delete_page(c)
        table = bus.page_table()
        assert table["id"].tolist() == [a, b]
        assert table["size"].tolist() == [16, 64]
        assert table["epoch"].tolist() == [0, 1]
        names = [mmsb.types.DTYPE_NAMES[int(x)] for x in table["dtype"]]
        assert names == ["uint8", "float64"]
        assert table["location"].tolist() == [0, 0]
        assert bus.at(bus.lsn - 2).page_table()["id"].tolist() == [a, b, c]


def _live(path: Path) -> list[Path]:
    """The bus's files in ``path``: not those renamed ``*.drop`` (out of the bus, being
    unlinked on the unlinker's thread, so they may vanish while this looks)."""
    return [f for f in path.iterdir() if not f.name.endswith(".drop")]


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in _live(path) if f.is_file())


def test_auto_compaction_keeps_the_log_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # checkpoints on the commit path: a helper thread that falls behind on a busy machine
    # (the next threshold does not start a second one) would let the log outgrow any bound
    monkeypatch.setattr(checkpointer, "BACKGROUND_CHECKPOINT_BYTES", 0)
    path = tmp_path / "bounded"
    every, segment = 64 << 10, 16 << 10
    rng = np.random.default_rng(5)
    with mmsb.open(
        path, checkpoint_every=every, auto_compact=True, segment_size=segment, sync="off"
    ) as bus:
        ids = bus.create_pages(64, 256)
        written = 0
        peak_log = peak_ckpt = 0
        for _ in range(400):
            rows = rng.integers(0, 256, (50, 16), dtype=np.uint8)
            bus.apply_batch(
                mmsb.DeltaBatch.from_ranges(rng.choice(ids, 50), rng.integers(0, 240, 50), rows)
            )
            written += 50 * 16
            peak_log = max(peak_log, _dir_bytes(path / "log"))
            peak_ckpt = max(peak_ckpt, len(_live(path / "ckpt")))
        expected = bus.state_hash()
        assert bus._committer.log is not None
        appended = bus._committer.log.appended  # log bytes this writer appended in all
    assert written == 400 * 50 * 16
    assert appended > 10 * every  # far more log than one checkpoint interval was written
    # the log keeps what the oldest kept checkpoint (of 2) needs: about 2 intervals, plus
    # the segments that straddle the checkpoints
    assert peak_log <= 2 * every + 2 * segment
    # the two kept, plus the one an automatic checkpoint is writing in the background until
    # the commit after it finishes compacts
    assert peak_ckpt <= 3
    with mmsb.open(path) as again:
        assert again.state_hash() == expected
    assert mmsb.verify(path).ok


def _batches(
    bus: mmsb.Bus, rng: np.random.Generator, count: int, *, until_bg: bool = False
) -> None:
    """``count`` batches of about 10 KiB of log each (or, with ``until_bg``, up to the one
    that starts an automatic checkpoint)."""
    ids = bus.create_pages(32, 512) if len(bus) == 0 else bus.page_ids()
    for _ in range(count):
        rows = rng.integers(0, 256, (200, 32), dtype=np.uint8)
        bus.apply_batch(
            mmsb.DeltaBatch.from_ranges(rng.choice(ids, 200), rng.integers(0, 480, 200), rows)
        )
        if until_bg and bus._checkpointer._thread is not None:
            return
    assert not until_bg, "no automatic checkpoint started"


def test_automatic_checkpoints_are_written_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "bg"
    rng = np.random.default_rng(8)
    with mmsb.open(path, checkpoint_every=32 << 10) as bus:
        _batches(bus, rng, 10, until_bg=True)  # the image is written off the commit path
        crossing = bus.lsn
        _batches(bus, rng, 2)
        bus._checkpointer.join()
        assert bus.last_checkpoint_error is None
        ckpts = list_checkpoints(str(path / "ckpt"))
        assert [lsn for lsn, _ in ckpts] == [crossing]
        image = bus.at(crossing).state_hash()
        final = bus.state_hash()
    # the image is the state as of its LSN: recovery from it alone (log before it gone)
    # reaches the same final state, and the checkpoint's own hash is the live one at that LSN
    for seg in (path / "log").iterdir():
        if int(seg.name.split(".")[0]) <= crossing:
            seg.unlink()
    (path / "state.clean").unlink()
    with mmsb.open(path) as again:
        assert again.state_hash() == final
        assert again.at(crossing).state_hash() == image


def test_background_images_reuse_memory_and_stay_exact(tmp_path: Path) -> None:
    """The second automatic image is copied into the first one's memory, filled here with
    junk first: the file it writes must still be exactly the state at its LSN."""
    path = tmp_path / "reuse"
    rng = np.random.default_rng(10)
    with mmsb.open(path, checkpoint_every=32 << 10) as bus:
        ck = bus._checkpointer
        _batches(bus, rng, 10, until_bg=True)
        ck.join()
        spare = ck._spare
        assert spare is not None
        spare[:] = 0xAB
        bus.create_pages(3, 512)  # the arena grows a little: the spare still fits
        _batches(bus, rng, 10, until_bg=True)
        second, want = bus.lsn, bus.state_hash()
        assert ck._image is not None and np.shares_memory(ck._image.arena.buf, spare)
        ck.join()
        assert bus.last_checkpoint_error is None
    ckpt = dict(list_checkpoints(str(path / "ckpt")))[second]
    image, lsn, _ = load_state(ckpt, MemoryArena())
    assert lsn == second and image.state_hash() == want


def test_warmed_memory_is_zeroed_and_writable() -> None:
    buf = prefaulted(3 * WARM_CHUNK + 5000, pause=0.0)
    assert buf.size == 3 * WARM_CHUNK + 5000 and buf.flags.writeable
    assert not buf.any()  # anonymous memory reads as zeros
    buf[-1] = 7
    assert buf[-1] == 7


def test_a_failed_background_checkpoint_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bgfail"
    rng = np.random.default_rng(9)

    def broken(*args: object, **kwargs: object) -> int:
        raise OSError(5, "Input/output error")

    with mmsb.open(path, checkpoint_every=32 << 10) as bus:
        monkeypatch.setattr(mmsb.writer.checkpointer, "write_state", broken)
        _batches(bus, rng, 10, until_bg=True)
        bus._checkpointer.join()
        assert isinstance(bus.last_checkpoint_error, OSError)
        assert list_checkpoints(str(path / "ckpt")) == []
        monkeypatch.undo()
        _batches(bus, rng, 10, until_bg=True)  # the next threshold tries again, and succeeds
        bus._checkpointer.join()
        assert bus.last_checkpoint_error is None
        assert list_checkpoints(str(path / "ckpt"))
        final = bus.state_hash()
    with mmsb.open(path) as again:
        assert again.state_hash() == final
    assert mmsb.verify(path).ok


def test_read_many_equals_one_read_per_page(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    with mmsb.open(tmp_path / "rm") as bus:
        ids = bus.create_pages(300, 48)
        n = 300
        bus.apply_batch(
            mmsb.DeltaBatch.from_ranges(
                ids, rng.integers(0, 32, n), rng.integers(0, 256, (n, 16), dtype=np.uint8)
            )
        )
        pick = rng.choice(ids, 1000)  # repeats included
        rows = bus.read_many(pick)
        assert rows.shape == (1000, 48) and rows.dtype == np.uint8
        assert all(np.array_equal(rows[i], bus.read(int(p))) for i, p in enumerate(pick))
        rows[0, 0] ^= 0xFF  # a copy: the bus is unchanged
        assert bus.read(int(pick[0]))[0] != rows[0, 0]
        floats = [bus.create_page(64, dtype="float64") for _ in range(3)]
        bus.write(floats[1], np.arange(8, dtype=np.float64))
        f = bus.read_many(floats[::-1])
        assert f.dtype == np.float64 and np.array_equal(f[1], np.arange(8.0))
        assert bus.read_many([]).shape == (0, 0)


def test_read_many_refuses_bad_ids_and_mixed_pages(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "rmbad") as bus:
        a, b = bus.create_page(16), bus.create_page(32)
        c = bus.create_page(16)
        bus.delete_page(c)
        with pytest.raises(PageNotFoundError) as err:
            bus.read_many([a, c, 999])
        assert err.value.page_ids == [c, 999]
        with pytest.raises(mmsb.InvalidArgumentError, match="one size and dtype"):
            bus.read_many([a, b])
        raw, f64 = bus.create_page(64), bus.create_page(64, dtype="float64")
        with pytest.raises(mmsb.InvalidArgumentError, match="one size and dtype"):
            bus.read_many([raw, raw, f64])  # one size, two dtypes
        with pytest.raises(mmsb.InvalidArgumentError, match="1-D"):
            bus.read_many([[a]])
        with pytest.raises(mmsb.InvalidArgumentError, match="integers"):
            bus.read_many([1.5])
    with pytest.raises(mmsb.BusClosedError):
        bus.read_many([a])


def test_export_creates_private_files_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are created 0600, not copied and chmod-ed afterwards (which leaves a window at
    the umask's mode): with chmod doing nothing, they are still private."""
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    with mmsb.open(tmp_path / "src") as bus:
        pid = bus.create_page(64)
        bus.write(pid, b"secret")
        bus.checkpoint()
        bus.write(pid, b"more")
        out = tmp_path / "out"
        out.mkdir(mode=0o755)  # an existing, empty, world-readable directory
        old = os.umask(0)
        try:
            bus.export(out)
        finally:
            os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 3  # manifest, a segment, a checkpoint
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in files)
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in out.rglob("*") if p.is_dir())
    with mmsb.open(out) as again:
        assert bytes(again.read(pid)[:4]) == b"more"


def test_lsn_after_close_is_the_last_commit(tmp_path: Path) -> None:
    bus = mmsb.open(tmp_path / "b", sync="off")
    pid = bus.create_page(8)
    bus.write(pid, b"x")
    last = bus.lsn
    bus.close()
    assert bus.closed and bus.lsn == last == 2
