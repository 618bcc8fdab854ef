"""The incremental GC: compaction (RELAYOUT frames), shrinking, segment drops, eviction.

Every test compares the bus with an oracle (a dict of page bytes, or the naive model) after
GC steps, and checks that replaying the log reproduces the compacted layout exactly.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.errors import CorruptLogError, InvalidArgumentError
from mmsb.monitor.gc import Collector
from mmsb.monitor.memory import mapping_resident_bytes
from mmsb.storage.codec import RELAYOUT, decode_relayout, encode_relayout
from mmsb.storage.log import Frame, LogReader, list_segments
from mmsb.storage.readers import ReaderRegistration
from mmsb.storage.recovery import apply_frame
from mmsb.storage.state import TOUCH_FLUSH
from naive import Model, assert_matches


def collector(bus: mmsb.Bus) -> Collector:
    bus.gc(budget_ms=1.0, cold_after_s=3600)  # creates the collector
    col = bus._collector
    assert isinstance(col, Collector)
    col.min_free_bytes = 0
    return col


def use_clock(bus: mmsb.Bus, now: list[float]) -> None:
    """Drive the bus's collector from ``now[0]`` (seconds) instead of the monotonic clock."""
    col = bus._collector
    col.clock = lambda: now[0]
    col._t0 = now[0]


def run_gc(bus: mmsb.Bus, steps: int = 10_000) -> list[mmsb.Bus]:
    """GC steps until a step moves nothing and defers nothing."""
    reports = []
    for _ in range(steps):
        r = bus.gc(budget_ms=1.0, cold_after_s=3600)
        reports.append(r)
        if r.pages_moved == 0 and not r.deferred and r.arena_bytes_shrunk == 0:
            return reports  # type: ignore[return-value]
    raise AssertionError("GC did not settle")


def wait_for_unlinks(bus: mmsb.Bus) -> None:
    """Wait (bounded) for the unlinker's thread to unlink dropped segments."""
    col = bus._collector
    assert isinstance(col, Collector)
    assert col.unlinker.wait(10), "dropped segments were not unlinked"
    assert not list((Path(bus.path) / "log").glob("*.drop"))


def fill(bus: mmsb.Bus, ids: np.ndarray, size: int, seed: int) -> dict[int, bytes]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (ids.size, size), dtype=np.uint8)
    bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids, np.zeros(ids.size, np.int64), data))
    return {int(p): data[i].tobytes() for i, p in enumerate(ids)}


def check_pages(bus: mmsb.Bus, oracle: dict[int, bytes]) -> None:
    assert sorted(int(p) for p in bus.page_ids()) == sorted(oracle)
    for pid, data in oracle.items():
        assert bus.read(pid).view(np.uint8).tobytes() == data, f"page {pid}"


def test_compacting_a_half_deleted_arena_packs_it_and_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        ids = bus.create_pages(4096, 1024)
        oracle = fill(bus, ids, 1024, 0)
        dead = ids[1::2]
        bus.delete_pages(dead.tolist())
        for p in dead.tolist():
            del oracle[p]
        epochs = {p: bus.page(p).epoch for p in oracle}
        state = bus._state
        assert state is not None
        file_before = os.path.getsize(path / "arena.bin")
        collector(bus)
        reports = run_gc(bus)
        assert sum(r.pages_moved for r in reports) > 0
        assert state.end == 2048 * 1024  # packed: no gap left
        assert state.gap_len.size == 0
        assert os.path.getsize(path / "arena.bin") < file_before
        assert sum(r.arena_bytes_shrunk for r in reports) == file_before - os.path.getsize(
            path / "arena.bin"
        )
        check_pages(bus, oracle)
        assert {p: bus.page(p).epoch for p in oracle} == epochs
        slots = state.slot[: state.next_page_id].copy()
        digest = bus.state_hash()
        assert bus.verify().ok
    # replay from the log alone: same bytes and the same slots
    (path / "state.clean").unlink()
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay"
        assert again.state_hash() == digest
        st = again._state
        assert st is not None
        live = st.live[: st.next_page_id]
        assert np.array_equal(st.slot[: st.next_page_id][live], slots[live])
        check_pages(again, oracle)


def test_gc_interleaved_with_writes_matches_the_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    model = Model()
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        col = collector(bus)
        col.min_free_fraction = 0.05
        evicted = 0
        for step in range(60):
            op = rng.random()
            if op < 0.35 or not model.pages:
                size = int(rng.choice([8, 24, 64, 200]))
                n = int(rng.integers(1, 20))
                first = int(bus.create_pages(n, size)[0])
                for _ in range(n):
                    assert model.create(size) >= first
            elif op < 0.6:
                live = sorted(model.pages)
                doomed = rng.choice(live, max(1, len(live) // 3), replace=False).tolist()
                bus.delete_pages(doomed)
                for p in doomed:
                    model.delete(int(p))
            else:
                live = sorted(model.pages)
                pids = rng.choice(live, 40)
                rows = []
                offs = []
                for p in pids.tolist():
                    size = len(model.pages[p])
                    k = int(rng.integers(1, size + 1))
                    offs.append(int(rng.integers(0, size - k + 1)))
                    rows.append(rng.integers(0, 256, k, dtype=np.uint8).tobytes())
                batch = mmsb.DeltaBatch.from_ranges(pids, offs, rows)
                bus.apply_batch(batch, workers=int(rng.integers(1, 3)))
                model.apply_batch(batch)
            # every page counts as cold: evicted pages must read back unchanged
            evicted += bus.gc(budget_ms=0.05 if step % 2 else 5.0, cold_after_s=0).bytes_evicted
            assert_matches(bus, model)
        run_gc(bus)
        assert_matches(bus, model)
        assert evicted > 0
        digest = bus.state_hash()
        report = bus.verify()
        assert report.ok, report
    (path / "state.clean").unlink()
    with mmsb.open(path, readonly=True) as again:
        assert again.state_hash() == digest
        assert_matches(again, model)


def test_snapshots_across_relayout_frames(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(512, 256)
        oracle = fill(bus, ids, 256, 1)
        bus.delete_pages(ids[:256].tolist())
        lsn_before = bus.lsn
        collector(bus)
        run_gc(bus)
        assert bus.lsn > lsn_before  # relayout frames were logged
        for p in ids[:256].tolist():
            del oracle[p]
        old, now = bus.at(lsn_before), bus.at(bus.lsn - 1)
        for snap in (old, now):
            for pid, data in oracle.items():
                assert snap.read(pid).view(np.uint8).tobytes() == data
        assert bus.diff(lsn_before, bus.lsn) == []  # moves change no content


def _relayout_frames(path: Path) -> list[Frame]:
    return [f for f in LogReader(str(path / "log")).frames() if f.type == RELAYOUT]


def test_a_relayout_frame_breaking_the_rule_does_not_replay(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(64, 64)
        fill(bus, ids, 64, 2)
        bus.delete_pages(ids[:32].tolist())
        collector(bus)
        run_gc(bus)
    frame = _relayout_frames(tmp_path / "b")[0]
    ids_moved, slots = decode_relayout(frame.payload)
    assert ids_moved.size > 0
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        state = bus._state
        assert state is not None
        # a fresh state that has the pages but not the gaps the frame expects
        bad_slots = slots.copy()
        bad_slots[0] += 8
        payload = memoryview(b"".join(bytes(p) for p in encode_relayout(ids_moved, bad_slots)))
        bad = Frame(RELAYOUT, 0, frame.lsn, 0, payload, frame.segment, frame.offset)
        with pytest.raises(CorruptLogError, match="does not follow the compaction rule"):
            apply_frame(state, bad)
        short = Frame(RELAYOUT, 0, 1, 0, memoryview(b"\x05\0\0\0\0\0\0\0"), "x.seg", 0)
        with pytest.raises(CorruptLogError, match="length does not match"):
            apply_frame(state, short)


def test_shrink_is_deferred_while_a_reader_is_attached(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        ids = bus.create_pages(4096, 1024)
        oracle = fill(bus, ids, 1024, 3)
        bus.delete_pages(ids[2048:].tolist())  # the top half: the end drops at once
        for p in ids[2048:].tolist():
            del oracle[p]
        size = os.path.getsize(path / "arena.bin")
        reader = ReaderRegistration(str(path))
        try:
            r = bus.gc(budget_ms=1.0, cold_after_s=3600)
            assert any("reader processes attached" in d for d in r.deferred), r
            assert r.arena_bytes_shrunk == 0
            assert os.path.getsize(path / "arena.bin") == size
        finally:
            reader.release()
        r = bus.gc(budget_ms=1.0, cold_after_s=3600)
        assert r.arena_bytes_shrunk > 0 and r.bytes_reclaimed >= r.arena_bytes_shrunk
        assert os.path.getsize(path / "arena.bin") < size
        check_pages(bus, oracle)


def test_eviction_drops_resident_memory_and_keeps_bytes(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        ids = bus.create_pages(2048, 4096)
        oracle = fill(bus, ids, 4096, 4)
        check_pages(bus, oracle)  # everything resident
        arena = str(path / "arena.bin")
        before = mapping_resident_bytes(arena)
        assert before >= 2048 * 4096
        now = [0.0]
        use_clock(bus, now)
        bus.gc(budget_ms=50.0)  # first look: pages are fresh, nothing is cold
        assert mapping_resident_bytes(arena) >= 2048 * 4096
        now[0] = 100.0
        evicted = 0
        for _ in range(100):
            r = bus.gc(budget_ms=50.0, cold_after_s=10.0)
            evicted += r.bytes_evicted
            if evicted >= 2048 * 4096:
                break
        after = mapping_resident_bytes(arena)
        assert evicted >= 2048 * 4096
        assert after < before / 4, (before, after)
        check_pages(bus, oracle)  # faulted back in from the file, unchanged
        digest = bus.state_hash()
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == digest


def test_recently_written_pages_are_not_cold(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(64, 4096)
        now = [0.0]
        use_clock(bus, now)
        bus.gc(budget_ms=50.0)
        now[0] = 100.0
        fill(bus, ids, 4096, 5)  # written after the last look: seen as accessed now
        r = bus.gc(budget_ms=50.0, cold_after_s=10.0)
        assert r.bytes_evicted == 0 and r.pages_evicted == 0


def test_recently_read_pages_are_not_cold(tmp_path: Path) -> None:
    """Single reads stamp their pages lazily (state.touched); the collector must see them
    before it judges what is cold, however many reads came since its last look."""
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(64, 4096)
        fill(bus, ids, 4096, 6)
        now = _access_clock_at_51(bus)
        first, tail = ids[:16].tolist(), ids[16:32].tolist()
        for i in range(TOUCH_FLUSH):  # one automatic flush stamps these
            bus.read(first[i % len(first)])
        for p in tail:  # these wait in state.touched for the collector's flush
            bus.read(p)
        now[0] = 100.0  # cold: last seen before 41 (the unread pages: at the first look)
        assert _evict_cold(bus) == 32 * 4096  # the 32 unread pages, none of the read ones


def test_pages_read_by_read_many_are_not_cold(tmp_path: Path) -> None:
    """``read_many`` stamps every page it copies (in its compiled copy loop)."""
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(64, 4096)
        fill(bus, ids, 4096, 7)
        now = _access_clock_at_51(bus)
        rows = bus.read_many(ids[5:25])
        now[0] = 100.0
        assert _evict_cold(bus) == 44 * 4096  # the 44 pages read_many did not read
        assert np.array_equal(rows, np.stack([bus.read(int(p)) for p in ids[5:25]]))


def _access_clock_at_51(bus: mmsb.Bus) -> list[float]:
    """Two looks by the collector (every page seen at 1), after which the access clock
    reads 51; returns the clock's setting, for the test to move on."""
    now = [0.0]
    use_clock(bus, now)
    bus.gc(budget_ms=50.0)
    now[0] = 50.0
    bus.gc(budget_ms=50.0)
    return now


def _evict_cold(bus: mmsb.Bus) -> int:
    """Bytes evicted by collector steps (pages unseen for 60 s) until one evicts nothing."""
    evicted = 0
    for _ in range(100):
        r = bus.gc(budget_ms=50.0, cold_after_s=60.0)
        evicted += r.bytes_evicted
        if r.bytes_evicted == 0 and evicted:
            break
    return evicted


def test_segments_covered_by_a_checkpoint_are_dropped_with_auto_compact(tmp_path: Path) -> None:
    path = tmp_path / "b"
    opts = {"sync": "off", "segment_size": 4096, "checkpoint_every": None}
    with mmsb.open(path, auto_compact=True, keep_checkpoints=1, **opts) as bus:  # type: ignore[arg-type]
        ids = bus.create_pages(16, 256)
        for i in range(20):
            fill(bus, ids, 256, i)
        bus.checkpoint()
        segs = len(list_segments(str(path / "log")))
        assert segs > 2
        dropped = 0
        for _ in range(segs * 3):
            r = bus.gc(budget_ms=1.0, cold_after_s=3600)
            dropped += r.segments_dropped
            assert r.segments_dropped <= 1
            wait_for_unlinks(bus)
        assert dropped == segs - 1
        assert len(list_segments(str(path / "log"))) == 1
        assert bus.verify().ok
        digest = bus.state_hash()
    (path / "state.clean").unlink()
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == digest
    with mmsb.open(tmp_path / "keep", **opts) as bus:  # type: ignore[arg-type]
        ids = bus.create_pages(16, 256)
        for i in range(20):
            fill(bus, ids, 256, i)
        bus.checkpoint()
        r = bus.gc(budget_ms=1.0)
        assert r.segments_dropped == 0
        assert any("auto_compact is off" in d for d in r.deferred)


def counting_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the collector's listings of the log and checkpoint directories."""
    import mmsb.monitor.gc as gc_module
    import mmsb.storage.retention as retention_module

    calls: list[str] = []
    segments, checkpoints = gc_module.list_segments, retention_module.list_checkpoints

    def count(fn, what: str):  # type: ignore[no-untyped-def]
        return lambda d: calls.append(what) or fn(d)

    monkeypatch.setattr(gc_module, "list_segments", count(segments, "log"))
    monkeypatch.setattr(retention_module, "list_checkpoints", count(checkpoints, "ckpt"))
    return calls


def drop_all(bus: mmsb.Bus) -> int:
    dropped = 0
    for _ in range(50):
        r = bus.gc(budget_ms=1.0, cold_after_s=3600)
        wait_for_unlinks(bus)
        if not r.segments_dropped:
            return dropped
        dropped += r.segments_dropped
    raise AssertionError("segments kept being dropped")


def test_the_collector_lists_the_directories_again_only_when_checkpoints_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    opts = {"sync": "off", "segment_size": 4096, "checkpoint_every": None}
    with mmsb.open(path, auto_compact=True, keep_checkpoints=1, **opts) as bus:  # type: ignore[arg-type]
        ids = bus.create_pages(16, 256)
        calls = counting_listings(monkeypatch)
        for i in range(8):
            fill(bus, ids, 256, i)
        assert drop_all(bus) == 0 and calls  # no checkpoint yet: nothing to drop
        calls.clear()
        for i in range(8):  # more segments, no checkpoint: the steps list nothing
            fill(bus, ids, 256, 100 + i)
            bus.gc(budget_ms=1.0, cold_after_s=3600)
        assert calls == []
        bus.checkpoint()
        segs = len(list_segments(str(path / "log")))
        assert drop_all(bus) == segs - 1 and calls  # the checkpoint is seen at once
        calls.clear()
        assert drop_all(bus) == 0 and calls == []
        assert bus.verify().ok


def test_the_collector_sees_a_background_checkpoint_without_another_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", segment_size=4096, checkpoint_every=16384,
                   auto_compact=True, keep_checkpoints=1) as bus:  # fmt: skip
        ids = bus.create_pages(16, 256)
        assert drop_all(bus) == 0
        i = 0
        while bus._checkpointer._thread is None:  # commit until one starts in the background
            fill(bus, ids, 256, i)
            i += 1
            assert i < 100
        bus._checkpointer._thread.join(30)  # done, and no commit since to reap it
        assert drop_all(bus) > 0  # the collector found it by itself
        (first, _), *rest = list_segments(str(path / "log"))
        ckpt = int(sorted(os.listdir(path / "ckpt"))[-1].split(".")[0])
        assert first == ckpt + 1 and rest == []


@pytest.mark.parametrize("bad", [0, -1, True, "1", float("nan")])
def test_gc_budget_must_be_positive(bad: object) -> None:
    with mmsb.open(None) as bus, pytest.raises(InvalidArgumentError, match="budget_ms"):
        bus.gc(budget_ms=bad)  # type: ignore[arg-type]


def test_gc_report_fields() -> None:
    with mmsb.open(None) as bus:
        bus.create_pages(10, 64)
        r = bus.gc()
        assert r.pause_ns > 0 and r.pages_moved == 0 and r.bytes_reclaimed == 0
        assert set(r.to_json()) >= {"pause_ns", "bytes_reclaimed", "segments_dropped",
                                    "pages_evicted", "pages_moved", "deferred"}  # fmt: skip


def test_files_left_renamed_by_a_crash_are_removed(tmp_path: Path) -> None:
    """Segments and checkpoints renamed for removal before a crash (or a close that did not
    wait) are unlinked by the first GC step's sweep, off its thread."""
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        leftovers = [path / "log" / ("0" * 19 + "1.seg.drop"),
                     path / "ckpt" / ("0" * 19 + "1.ckpt.drop")]  # fmt: skip
        for f in leftovers:
            f.write_bytes(b"old")
        r = bus.gc(budget_ms=1.0)
        assert r.segments_dropped == 0
        col = bus._collector
        assert isinstance(col, Collector)
        assert col.unlinker.wait(10)
        assert not any(f.exists() for f in leftovers)
        r = bus.gc(budget_ms=1.0)
        assert not r.deferred


def test_a_ticks_eviction_scan_starts_once_per_second_of_the_access_clock(
    tmp_path: Path,
) -> None:
    """The tick's step marks pages at most once per second of the access clock (a second
    pass in that second would learn nothing); an explicit gc() is never held back, and a
    page written since the last pass is still seen as accessed by the next."""
    with mmsb.open(tmp_path / "b", sync="off", tick_gc_budget_ms=50.0) as bus:
        ids = bus.create_pages(64, 4096)
        fill(bus, ids, 4096, 7)
        now = [0.0]
        use_clock(bus, now)
        col = bus._collector
        assert isinstance(col, Collector)
        first = bus.tick()  # a whole pass fits the budget: every page examined
        assert first.maintenance is not None and first.maintenance.pages_examined == 64
        for _ in range(3):  # the same second: no second pass
            r = bus.tick()
            assert r.maintenance is not None and r.maintenance.pages_examined == 0
        assert col.gc(budget_ms=50.0).pages_examined == 64  # explicit: not paced
        now[0] = 1.0  # the next second: the tick's next pass runs
        r = bus.tick()
        assert r.maintenance is not None and r.maintenance.pages_examined == 64
        now[0] = 100.0
        bus.write(int(ids[0]), b"\x01" * 8)  # written just before the next pass
        cold = []
        for _ in range(3):
            r = bus.tick()
            assert r.maintenance is not None
            cold.append(r.maintenance.pages_evicted)
            now[0] += 1.0
        assert cold[0] == 63  # the pass at 100 finds all but the page written at 100 cold


def _top_half_deleted(bus: mmsb.Bus, pages: int, size: int) -> dict[int, bytes]:
    ids = bus.create_pages(pages, size)
    oracle = fill(bus, ids, size, 5)
    bus.delete_pages(ids[pages // 2 :].tolist())  # the top half: the end drops at once
    for p in ids[pages // 2 :].tolist():
        del oracle[p]
    return oracle


def test_the_arena_shrink_waits_while_a_removed_file_is_unlinked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A truncate queued behind another file's block frees (online discard) stalled GC
    steps for 15-25 ms: while the unlinker works, the step defers the shrink."""
    from mmsb.storage import unlinker as unlinker_mod

    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        oracle = _top_half_deleted(bus, 4096, 1024)
        col = collector(bus)
        size = os.path.getsize(path / "arena.bin")
        gate = threading.Event()
        real = os.unlink

        def held(p: str) -> None:
            assert gate.wait(10)
            real(p)

        monkeypatch.setattr(unlinker_mod.os, "unlink", held)
        junk = tmp_path / "junk"
        junk.write_bytes(b"j")
        col.unlinker.drop(str(junk))
        r = bus.gc(budget_ms=1.0, cold_after_s=3600)
        assert any("being freed" in d for d in r.deferred), r
        assert r.arena_bytes_shrunk == 0 and os.path.getsize(path / "arena.bin") == size
        gate.set()
        assert col.unlinker.wait(10)
        r = bus.gc(budget_ms=1.0, cold_after_s=3600)
        assert r.arena_bytes_shrunk > 0 and os.path.getsize(path / "arena.bin") < size
        check_pages(bus, oracle)


def test_the_arena_shrinks_by_a_piece_sized_to_the_budget(tmp_path: Path) -> None:
    """The piece cut per step follows the measured cost of earlier pieces: at least
    MIN_SHRINK, at most MAX_SHRINK."""
    from mmsb.monitor.gc import MAX_SHRINK, MIN_SHRINK

    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        oracle = _top_half_deleted(bus, 8192, 4096)  # 16 MiB to shrink
        col = collector(bus)
        cuts = []
        for per_ms in (1.0, 1e12, 1.0):
            col._shrink_per_ms = per_ms  # (each shrink updates the estimate)
            cuts.append(bus.gc(budget_ms=1.0, cold_after_s=3600).arena_bytes_shrunk)
        assert cuts == [MIN_SHRINK, MAX_SHRINK, MIN_SHRINK], cuts
        assert col._shrink_per_ms > 1.0  # measured: 0.3 of the last piece's rate
        run_gc(bus)
        check_pages(bus, oracle)
