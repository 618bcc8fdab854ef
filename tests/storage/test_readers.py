"""Live readers (``mmsb.storage.follow`` and ``mmsb.storage.seqlock``).

In-process tests compare a read-only bus with its writer (and with a plain replay of the log)
after every step. The multi-process test runs this file as a script: one writer process
commits batches in which every page of a group gets one value, and reader processes read
continuously; no read may see a mix of two batches, and every snapshot must equal the state
the log defines at its LSN.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import Delta, DeltaBatch, InvalidArgumentError
from mmsb.storage import codec
from mmsb.storage.codec import BATCH
from mmsb.storage.log import LogReader
from mmsb.storage.logtail import apply_table_only, batch_rows, replay_to
from mmsb.storage.seqlock import SEQ_FILE, SeqPublisher, SeqReader

# -- helpers ----------------------------------------------------------------------------------


def crash(bus: mmsb.Bus) -> None:
    """Drop the bus without a clean shutdown, as if the process had died."""
    bus.abandon()


def table(bus: mmsb.Bus) -> dict[str, object]:
    """The reader-visible layout of a bus: live ids and their slots, sizes, epochs, free
    gaps (the layout is a function of the log, so a follower must match its writer)."""
    st = bus._state
    assert st is not None
    ids = st.live_ids()
    return {
        "ids": ids.tolist(),
        "slot": st.slot[ids].tolist(),
        "size": st.size[ids].tolist(),
        "epoch": st.epoch[ids].tolist(),
        "next": (st.next_page_id, st.next_delta_id, st.end),
        "gaps": (st.gap_start.tolist(), st.gap_len.tolist()),
    }


def same(reader: mmsb.Bus, writer: mmsb.Bus) -> None:
    assert reader.lsn == writer.lsn
    assert reader.state_hash() == writer.state_hash()
    assert table(reader) == table(writer)
    for pid in writer.page_ids()[:20].tolist():
        assert reader.read(pid).tobytes() == writer.read(pid).tobytes()


def steps(bus: mmsb.Bus, rng: np.random.Generator, n: int) -> None:
    """Random creates, deletes, single writes and batches."""
    for _ in range(n):
        ids = bus.page_ids()
        r = rng.random()
        if ids.size < 4 or r < 0.15:
            bus.create_pages(int(rng.integers(1, 40)), int(rng.integers(1, 9)) * 64)
        elif r < 0.3:
            bus.delete_pages(rng.choice(ids, size=min(ids.size // 3, 5), replace=False).tolist())
        elif r < 0.5:
            pid = int(rng.choice(ids))
            bus.write(pid, rng.integers(0, 256, 8, dtype=np.uint8).tobytes())
        else:
            pids = rng.choice(ids, size=12)
            pays = rng.integers(0, 256, (12, 16), dtype=np.uint8)
            bus.apply_batch(DeltaBatch.from_ranges(pids, np.zeros(12, np.int64), pays))


# -- the header -------------------------------------------------------------------------------


def test_seq_header_parity_and_generations(tmp_path: Path) -> None:
    assert SeqReader.open(str(tmp_path)) is None  # no writer ever ran here
    pub = SeqPublisher(str(tmp_path))
    reader = SeqReader.open(str(tmp_path))
    assert reader is not None
    assert pub.seq % 2 == 1 and reader.snapshot() is None  # recovering: not published
    assert reader.pid == os.getpid()
    pub.publish(7, 70)
    snap = reader.snapshot()
    assert snap is not None and snap[1:] == (1, 7, 70) and snap[0] % 2 == 0
    pub.begin()
    pub.begin()  # idempotent while odd
    assert reader.snapshot() is None
    pub.publish(8, 80)
    assert reader.snapshot() == (snap[0] + 2, 1, 8, 80)
    pub.close()
    assert reader.pid == 0
    again = SeqPublisher(str(tmp_path))  # a new writer: next generation, seq odd
    assert reader.snapshot() is None
    again.publish(8, 80)
    assert reader.snapshot() == (snap[0] + 4, 2, 8, 80)
    again.close()
    reader.close()


def test_a_damaged_header_is_ignored_by_readers_and_rebuilt_by_the_writer(tmp_path: Path) -> None:
    (tmp_path / SEQ_FILE).write_bytes(b"garbage")
    assert SeqReader.open(str(tmp_path)) is None
    pub = SeqPublisher(str(tmp_path))
    pub.publish(0, 0)
    reader = SeqReader.open(str(tmp_path))
    assert reader is not None and reader.snapshot() is not None
    pub.close()
    reader.close()


# -- the table-only replay --------------------------------------------------------------------


def test_batch_rows_agrees_with_the_full_decoder(tmp_path: Path) -> None:
    """The reader's light BATCH parse against codec.decode_batch (the slow oracle), for
    range, dense and sparse rows, with and without sources and metadata."""
    rng = np.random.default_rng(5)
    with mmsb.open(tmp_path / "b", sync="off") as w:
        ids = w.create_pages(10, 64).tolist()
        for i in range(40):
            deltas = []
            for _ in range(int(rng.integers(1, 9))):
                pid, off = int(rng.choice(ids)), int(rng.integers(0, 32))
                mask = rng.random(int(rng.integers(1, 32))) < 0.5
                mask[0] = True
                kind = rng.integers(0, 3)
                if kind == 0:
                    deltas.append(Delta.range(pid, rng.bytes(int(rng.integers(1, 32))), off))
                elif kind == 1:
                    deltas.append(Delta.dense(pid, mask, rng.bytes(mask.size), off))
                else:
                    deltas.append(Delta.sparse(pid, mask, rng.bytes(int(mask.sum())), off))
            batch = DeltaBatch.from_deltas(deltas)
            if i % 3 == 0:
                batch = DeltaBatch.from_deltas(
                    [Delta.range(ids[0], b"m", source="other", metadata={"i": i}), *deltas]
                )
            w.apply_batch(batch)
    checked = 0
    for frame in LogReader(str(tmp_path / "b" / "log")).frames():
        if frame.type != BATCH:
            continue
        first, pids, epochs, ends = batch_rows(frame.payload)
        dec = codec.decode_batch(frame.payload)
        assert first == dec.first_delta_id
        assert np.array_equal(pids, dec.batch.page_ids)
        assert np.array_equal(epochs, dec.epochs)
        assert np.array_equal(ends, dec.batch.offsets + dec.batch.lengths)
        checked += 1
    assert checked == 40


def test_table_only_replay_refuses_a_frame_that_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w:
        pid = w.create_page(8)
        w.write(pid, b"x")
    frames = list(LogReader(str(path / "log")).frames())
    state, _, _ = replay_to(str(path), 1)  # the page exists, no delta yet
    state.next_delta_id = 5  # as if a frame had been skipped
    with pytest.raises(mmsb.CorruptLogError, match="first delta id 1, expected 5"):
        apply_table_only(state, frames[1])
    state, _, _ = replay_to(str(path), 1)
    state.live[pid] = False  # the page is gone in this table
    with pytest.raises(mmsb.CorruptLogError, match="unknown or deleted page"):
        apply_table_only(state, frames[1])
    state, _, _ = replay_to(str(path), 1)
    apply_table_only(state, frames[1])
    assert (int(state.epoch[pid]), state.next_delta_id) == (1, 2)
    assert state.read(pid).tobytes() == bytes(8)  # bytes are the writer's job, not replayed


# -- following a writer (in process) ----------------------------------------------------------


def test_reader_sees_every_commit_without_refresh(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w:
        w.create_pages(4, 64)
        with mmsb.open(path, readonly=True) as r:
            assert r._follower is not None and r._follower.live
            rng = np.random.default_rng(1)
            for _ in range(60):
                steps(w, rng, 1)
                same(r, w)  # no refresh(): every read call catches up
            assert r.refresh() == w.lsn
            assert r.writer_alive


def test_reader_table_equals_a_replay_of_the_log(tmp_path: Path) -> None:
    """The follower's table is built by the table-only path; a full replay is the oracle."""
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w, mmsb.open(path, readonly=True) as r:
        steps(w, np.random.default_rng(2), 150)
        r.refresh()
        oracle, _, _ = replay_to(str(path), w.lsn)
        ids = oracle.live_ids()
        st = r._state
        assert st is not None
        assert np.array_equal(st.live_ids(), ids)
        for col in ("slot", "size", "epoch", "dtype", "loc"):
            assert np.array_equal(getattr(st, col)[ids], getattr(oracle, col)[ids]), col
        assert (st.end, st.next_page_id, st.next_delta_id) == (
            oracle.end,
            oracle.next_page_id,
            oracle.next_delta_id,
        )
        assert r.state_hash() == oracle.state_hash() == w.state_hash()


def test_reader_follows_arena_growth_checkpoints_and_gc(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w, mmsb.open(path, readonly=True) as r:
        first = w.create_pages(8, 64)
        assert r.lsn == w.lsn
        mapped = r._follower._arena.capacity  # type: ignore[union-attr]
        big = w.create_pages(3000, 1024)  # ~3 MiB: the writer grows the file
        w.write(int(big[-1]), b"end")
        assert r.read(int(big[-1])).tobytes()[:3] == b"end"
        assert r._follower._arena.capacity > mapped  # type: ignore[union-attr]  # remapped
        w.checkpoint()
        w.delete_pages(big[::2].tolist())  # holes for the compaction to close
        w.write(int(first[0]), b"kept")
        for _ in range(50):
            w.gc(budget_ms=50)
        same(r, w)
        assert r.read(int(first[0])).tobytes()[:4] == b"kept"


def test_lagging_reader_catches_up_after_compaction(tmp_path: Path) -> None:
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off", segment_size=4096, keep_checkpoints=1)
    pid = w.create_page(64)
    r = mmsb.open(path, readonly=True)
    assert r.read(pid).tobytes() == bytes(64)
    for i in range(300):  # many segments; the reader does not look meanwhile
        w.write(pid, i.to_bytes(8, "little"))
        if i % 100 == 99:
            w.checkpoint()
            w.compact()
    assert len(list((path / "log").glob("*.seg"))) < 30
    same(r, w)
    w.write(pid, b"last")
    assert [d.lsn for d in r.history(pid)] == [d.lsn for d in w.history(pid)] == [w.lsn]
    r.close()
    w.close()


def test_history_and_snapshots_on_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w, mmsb.open(path, readonly=True) as r:
        pid = w.create_page(16)
        w.write(pid, b"one")
        assert [d.lsn for d in r.history(pid)] == [2]
        w.write(pid, b"two")
        assert [d.lsn for d in r.history(pid)] == [3, 2]  # index kept current by the tail
        snap = r.at()
        w.write(pid, b"six")
        assert snap.lsn == 3 and snap.read(pid).tobytes()[:3] == b"two"  # detached
        assert r.at(3).read(pid).tobytes()[:3] == b"two"
        assert r.at(r.lsn).read(pid).tobytes()[:3] == b"six"


def test_wait_for(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w, mmsb.open(path, readonly=True) as r:
        assert r.wait_for(w.lsn, timeout=0)
        t0 = time.monotonic()
        assert not r.wait_for(w.lsn + 1, timeout=0.05)
        assert time.monotonic() - t0 >= 0.05
        w.create_page(8)
        assert r.wait_for(w.lsn, timeout=1)
        assert w.wait_for(w.lsn, timeout=0)
        for bad in (-1, 1.5, True, "3"):
            with pytest.raises(InvalidArgumentError, match="lsn must be a non-negative"):
                r.wait_for(bad)  # type: ignore[arg-type]
        for bad_timeout in (-1, float("nan"), "1", True):
            with pytest.raises(InvalidArgumentError, match="timeout must be >= 0"):
                r.wait_for(1, timeout=bad_timeout)  # type: ignore[arg-type]


# -- writer gone, writer back -----------------------------------------------------------------


def test_writer_close_keeps_the_view_and_a_new_writer_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off")
    pid = w.create_page(8)
    w.write(pid, b"before")
    r = mmsb.open(path, readonly=True)
    assert r.read(pid).tobytes()[:6] == b"before"
    w.close()
    assert not r.writer_alive
    assert r.read(pid).tobytes()[:6] == b"before" and r.lsn == 2
    w = mmsb.open(path, sync="off")  # a new generation: recovery ran under the reader
    assert r.writer_alive
    w.write(pid, b"after!")
    assert r.read(pid).tobytes()[:6] == b"after!"
    assert r._follower is not None and r._follower.live
    same(r, w)
    w.close()
    r.close()


def test_writer_dying_mid_apply_leaves_the_last_consistent_view(tmp_path: Path) -> None:
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off")
    pid = w.create_page(8)
    w.write(pid, b"AAAAAAAA")
    r = mmsb.open(path, readonly=True)
    assert r.read(pid).tobytes() == b"AAAAAAAA"
    expect = r.state_hash()
    # what a crash inside apply leaves: seq odd, half of a later write in the arena
    st = w._state
    assert st is not None and w._committer is not None
    w._committer.seq.begin()
    st.arena.buf[int(st.slot[pid]) : int(st.slot[pid]) + 4] = np.frombuffer(b"BBBB", np.uint8)
    crash(w)
    assert not r.writer_alive
    assert r.read(pid).tobytes() == b"AAAAAAAA"  # not the torn BBBBAAAA
    assert r._follower is not None and not r._follower.live  # rebuilt from the log
    assert r.state_hash() == expect and r.lsn == 2
    with mmsb.open(path, sync="off") as w2:  # recovery repairs the arena; reader follows
        w2.write(pid, b"CC")
        assert r.read(pid).tobytes() == b"CCAAAAAA"
        same(r, w2)
    r.close()


@pytest.mark.parametrize("with_reader", [False, True])
def test_crash_recovery_never_shortens_the_arena_under_a_reader(
    tmp_path: Path, with_reader: bool
) -> None:
    path = tmp_path / "b"
    w = mmsb.open(path, sync="off")
    keep = w.create_page(64)
    big = w.create_pages(3000, 1024)
    w.delete_pages(big.tolist())
    w.checkpoint()  # recovery starts here: a small arena
    w.write(keep, b"survives")
    r = mmsb.open(path, readonly=True) if with_reader else None
    size = os.path.getsize(path / "arena.bin")
    crash(w)  # the next open rebuilds the arena from the checkpoint
    with mmsb.open(path, sync="off") as w:
        assert w.recovery.mode == "replay"
        after = os.path.getsize(path / "arena.bin")
        if r is None:
            assert after < size  # truncated: the cheap way when nobody maps the file
        else:
            assert after == size  # zeroed in place: a reader's mapping stays valid
            same(r, w)
            r.close()
        assert w.read(keep).tobytes()[:8] == b"survives"


def test_reader_opened_without_a_writer_changes_nothing_then_attaches(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as w:
        pid = w.create_page(8)
        w.write(pid, b"x")
    before = sorted(p.name for p in path.iterdir())
    r = mmsb.open(path, readonly=True)
    assert r._follower is not None and not r._follower.live and not r.writer_alive
    assert r.read(pid).tobytes()[:1] == b"x"
    assert sorted(p.name for p in path.iterdir()) == before  # not even READERS
    with mmsb.open(path, sync="off") as w:
        w.write(pid, b"y")
        assert r.wait_for(w.lsn, timeout=2)
        assert r.read(pid).tobytes()[:1] == b"y" and r._follower.live
    r.close()


@pytest.mark.parametrize("seed", [11, 12])
def test_reader_follows_a_random_writer_lifecycle(tmp_path: Path, seed: int) -> None:
    """Random commits, checkpoints, compactions, GC steps, clean closes and crashes of the
    writer; one long-lived reader, compared with the writer (or with a replay of the log at
    its LSN while no writer runs) after every step."""
    path = tmp_path / "b"
    rng = np.random.default_rng(seed)
    w: mmsb.Bus | None = mmsb.open(path, sync="off", segment_size=8192, keep_checkpoints=1)
    assert w is not None
    w.create_pages(8, 128)
    r = mmsb.open(path, readonly=True)
    try:
        for _ in range(120):
            x = rng.random()
            if w is None:
                w = mmsb.open(path, sync="off", segment_size=8192, keep_checkpoints=1)
            elif x < 0.05:
                w.close()
                w = None
            elif x < 0.1:
                crash(w)
                w = None
            elif x < 0.15:
                w.checkpoint()
                w.compact()
            elif x < 0.2:
                w.gc(budget_ms=20)
            else:
                steps(w, rng, int(rng.integers(1, 6)))
            if w is not None:
                same(r, w)
            else:
                assert not r.writer_alive
                oracle, _, _ = replay_to(str(path), r.lsn)
                assert r.state_hash() == oracle.state_hash()
    finally:
        r.close()
        if w is not None:
            w.close()


# -- real processes ---------------------------------------------------------------------------

GROUPS, PER_GROUP, WORDS, ROWS = 8, 8, 64, 4  # pages of 64 int64 words, 4 deltas per page


def expected(batches: int) -> np.ndarray:
    """Slow oracle: each group's value after ``batches`` batches (batch k writes k to every
    word of every page of group k % GROUPS)."""
    out = np.zeros(GROUPS, np.int64)
    for k in range(1, batches + 1):
        out[k % GROUPS] = k
    return out


def consistent(values: np.ndarray) -> bool:
    """Whether each group's value is what one commit left (the values of one batch count,
    whichever): batch k writes k to group k % GROUPS, so the newest value m fixes the rest."""
    m = int(values.max())
    ks = m - (m - np.arange(GROUPS)) % GROUPS
    return bool(np.array_equal(values, np.where(ks >= 1, ks, 0)))


def writer_main(path: str, seconds: float, out: str, alone: float = 0.0) -> None:
    if os.environ.get("MMSB_TEST_NO_BEFORE_IMAGES"):  # the control: snapshots must break
        from mmsb.storage.snapstore import SnapWriter

        SnapWriter.before_change = lambda *a, **k: None  # type: ignore[method-assign]
    bus = mmsb.open(path, sync="off")
    ids = bus.create_pages(GROUPS * PER_GROUP, WORDS * 8, dtype="int64")
    words = WORDS // ROWS
    offsets = np.tile(np.arange(ROWS) * words * 8, PER_GROUP)
    rec: list[tuple[int, int, int, int]] = []  # lsn, batch number (0: no batch), t0, t1
    k = 0
    extra = None
    deadline = float("inf")
    rates = {}
    while time.monotonic() < deadline:
        if k == 1:  # the first batch compiled the kernels
            if alone:  # the commit rate with no reader attached
                t0, n0 = time.monotonic(), len(rec)
                deadline = t0 + alone
                while time.monotonic() < deadline:
                    k += 1
                    g = k % GROUPS
                    pids = np.repeat(ids[g * PER_GROUP : (g + 1) * PER_GROUP], ROWS)
                    pays = np.full((pids.size, words), k, np.int64).view(np.uint8)
                    c = bus.apply_batch(DeltaBatch.from_ranges(pids, offsets, pays))
                    rec.append((c.lsn, k, 0, time.monotonic_ns()))
                rates["alone"] = (len(rec) - n0) / (time.monotonic() - t0)
            print("ready", flush=True)  # start when the readers are ready
            sys.stdin.readline()
            start, n0 = time.monotonic(), len(rec)
            deadline = start + seconds
        k += 1
        g = k % GROUPS
        pids = np.repeat(ids[g * PER_GROUP : (g + 1) * PER_GROUP], ROWS)
        pays = np.full((pids.size, words), k, np.int64).view(np.uint8)
        t0 = time.monotonic_ns()
        c = bus.apply_batch(DeltaBatch.from_ranges(pids, offsets, pays))
        rec.append((c.lsn, k, t0, time.monotonic_ns()))
        if k % 400 == 0:  # grow the arena past its mapping, then free the space again
            t0 = time.monotonic_ns()
            if extra is None:
                extra = bus.create_pages(320, 4096)
            else:
                bus.delete_pages(extra.tolist())
                extra = None
            rec.append((bus.lsn, 0, t0, time.monotonic_ns()))
    rates["with_readers"] = (len(rec) - n0) / (time.monotonic() - start)
    snaps = bus._committer.snapshots
    assert snaps is not None
    stats = {"rates": rates, "images_saved": snaps.saved, "image_bytes": snaps.saved_bytes,
             "expiries": snaps.expired}  # fmt: skip
    Path(out + ".json").write_text(json.dumps(stats))
    np.save(out, np.array(rec, np.int64))
    bus.close()


def reader_main(path: str, seconds: float, out: str) -> None:
    bus = mmsb.open(path, readonly=True)
    assert bus._follower is not None and bus._follower.live
    ids = bus.page_ids()[: GROUPS * PER_GROUP]
    with bus.snapshot() as snap:  # compile what reading needs before the clock starts
        snap.read_many(ids)
    bus.read_many(ids)
    print("ready", flush=True)
    sys.stdin.readline()
    rng = np.random.default_rng(os.getpid())
    reads = torn = mixed = opened = 0
    seen: list[tuple[int, int]] = [(bus.lsn, time.monotonic_ns())]
    snaps: list[list[int]] = []  # lsn, then each group's value
    deadline = time.monotonic() + seconds
    slowest = 0
    loops = 0
    while time.monotonic() < deadline:
        loop_start = time.monotonic_ns()
        loops += 1
        with bus.snapshot() as snap:  # all pages at one LSN, read page by page...
            opened += 1
            values = [snap.lsn]
            for g in range(GROUPS):
                group = np.concatenate(
                    [snap.read(int(p)) for p in ids[g * PER_GROUP : (g + 1) * PER_GROUP]]
                )
                reads += PER_GROUP
                torn += int(not (group == group[0]).all())
                values.append(int(group[0]))
            rows = snap.read_many(ids)  # ... and in one call, still at the same LSN
            reads += ids.size
            mixed += int(not (rows.reshape(GROUPS, -1) == np.array(values[1:])[:, None]).all())
        snaps.append(values)
        mixed += int(not consistent(np.array(values[1:])))
        rows = bus.read_many(ids)  # outside a snapshot: one call is one commit
        reads += ids.size
        by_group = rows.reshape(GROUPS, -1)
        torn += int(not (by_group == by_group[:, :1]).all())
        mixed += int(not consistent(by_group[:, 0]))
        for pid in rng.choice(ids, 4):  # single live reads: a page is never half-written
            page = bus.read(int(pid))
            reads += 1
            torn += int(not (page == page[0]).all())
        lsn = bus.lsn
        now = time.monotonic_ns()
        if lsn > seen[-1][0]:
            seen.append((lsn, now))
        slowest = max(slowest, now - loop_start)
    result = {
        "calls": 6 * loops,  # consistent calls: a snapshot, a read_many and 4 reads per loop
        "reads": reads,
        "torn": torn,
        "mixed": mixed,
        "snapshots_opened": opened,
        "retries": bus._follower.retries,
        "rebuilds": bus._follower.rebuilds,
        "mapped_bytes": bus._follower._arena.capacity if bus._follower._arena else 0,
        "slowest_loop_ms": slowest / 1e6,
        "live": bus._follower.live,
        "writer_alive": bus.writer_alive,
    }
    np.save(out + ".seen.npy", np.array(seen, np.int64))
    np.save(out + ".snaps.npy", np.array(snaps, np.int64))
    Path(out + ".json").write_text(json.dumps(result))
    bus.close()


def finish(p: subprocess.Popen[str], timeout: float) -> int:
    try:
        return p.wait(timeout=timeout)
    finally:
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()


def watcher_main(path: str, seconds: float, out: str) -> None:
    """Only watches the LSN (every 0.2 ms): the visibility delay without a read workload."""
    bus = mmsb.open(path, readonly=True)
    print("ready", flush=True)
    sys.stdin.readline()
    seen = [(bus.lsn, time.monotonic_ns())]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        lsn = bus.lsn
        if lsn > seen[-1][0]:
            seen.append((lsn, time.monotonic_ns()))
        time.sleep(0.0002)
    np.save(out + ".seen.npy", np.array(seen, np.int64))
    bus.close()


def visibility_ms(seen: np.ndarray, lsns: np.ndarray, t_commit: np.ndarray) -> np.ndarray:
    """For each commit made while an observer ran: from the writer's return from the
    commit call to the observer's first sight of that LSN or a later one."""
    ok = (lsns > seen[0, 0]) & (lsns <= seen[-1, 0])
    j = np.searchsorted(seen[:, 0], lsns[ok])
    return np.asarray((seen[j, 1] - t_commit[ok]) / 1e6)


def run_readers(
    tmp_path: Path,
    seconds: float,
    n_readers: int = 4,
    watcher: bool = True,
    alone: float = 0.0,
    control: bool = False,
) -> dict[str, float]:
    path = str(tmp_path / "bus")
    me = [sys.executable, __file__]
    env = dict(os.environ)
    if control:
        env["MMSB_TEST_NO_BEFORE_IMAGES"] = "1"
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    writer = subprocess.Popen(
        [*me, "writer", path, str(seconds + 0.5), str(tmp_path / "writer.npy"), str(alone)],
        env=env, **pipes,
    )  # fmt: skip
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    readers = [
        subprocess.Popen([*me, "reader", path, str(seconds), str(tmp_path / f"r{i}")], **pipes)
        for i in range(n_readers)
    ]
    if watcher:
        readers.append(
            subprocess.Popen([*me, "watcher", path, str(seconds), str(tmp_path / "w")], **pipes)
        )
    for p in readers:  # opened and warmed up
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in [writer, *readers]:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in [*readers, writer]:
        assert finish(p, seconds + 120) == 0
    rec = np.load(tmp_path / "writer.npy")
    lsns, ks, _, t1 = rec.T
    # batches committed up to each LSN (LSN 1 created the pages)
    batches_at = np.zeros(int(lsns.max()) + 1, np.int64)
    batches_at[lsns] = ks
    batches_at = np.maximum.accumulate(batches_at)
    wstats = json.loads((tmp_path / "writer.npy.json").read_text())
    reads = torn = wrong = snaps_checked = retries = calls = rebuilds = mixed = opened = 0
    remapped = 0  # readers whose mapping grew past the initial 1 MiB arena
    slowest = 0.0
    lat: list[np.ndarray] = []
    cache: dict[int, np.ndarray] = {}
    for i in range(n_readers):
        res = json.loads((tmp_path / f"r{i}.json").read_text())
        assert res["live"]
        reads += res["reads"]
        torn += res["torn"]
        mixed += res["mixed"]
        opened += res["snapshots_opened"]
        retries += res["retries"]
        calls += res["calls"]
        rebuilds += res["rebuilds"]
        remapped += int(res["mapped_bytes"] > 1 << 20)
        slowest = max(slowest, res["slowest_loop_ms"])
        snaps = np.load(tmp_path / f"r{i}.snaps.npy")
        for row in snaps:  # every snapshot equals the log's state at its LSN
            n = int(batches_at[row[0]])
            if n not in cache:
                cache[n] = expected(n)
            wrong += int(not np.array_equal(row[1:], cache[n]))
            snaps_checked += 1
        lat.append(visibility_ms(np.load(tmp_path / f"r{i}.seen.npy"), lsns, t1))
    readers_ms = np.concatenate(lat)
    watcher_ms = visibility_ms(np.load(tmp_path / "w.seen.npy"), lsns, t1) if watcher else None
    figures = {
        "seconds": seconds,
        "readers": n_readers,
        "commits": int(lsns.size),
        "reads": reads,
        "torn": torn,
        "mixed": mixed,
        "wrong_snapshots": wrong,
        "snapshots_checked": snaps_checked,
        "snapshots_opened": opened,
        "writer_commits_per_s_alone": round(wstats["rates"].get("alone", 0.0)),
        "writer_commits_per_s_with_readers": round(wstats["rates"]["with_readers"]),
        "before_images": wstats["images_saved"],
        "before_image_mib": round(wstats["image_bytes"] / 2**20, 1),
        "snapshot_expiries": wstats["expiries"],
        "guarded_calls": calls,
        "retries": retries,
        "rebuilds": rebuilds,
        "readers_remapped": remapped,
        "slowest_reader_loop_ms": round(slowest, 1),
        "readers_visible_ms_p50": round(float(np.percentile(readers_ms, 50)), 3),
        "readers_visible_ms_p99": round(float(np.percentile(readers_ms, 99)), 3),
        "load_avg_1min": os.getloadavg()[0],
    }
    if watcher_ms is not None:
        figures["watcher_visible_ms_p50"] = round(float(np.percentile(watcher_ms, 50)), 3)
        figures["watcher_visible_ms_p99"] = round(float(np.percentile(watcher_ms, 99)), 3)
    print("live readers:", json.dumps(figures))
    return figures


def check_figures(fig: dict[str, float]) -> None:
    assert fig["reads"] > 0 and fig["snapshots_checked"] > 0 and fig["commits"] > 10
    assert fig["torn"] == 0
    assert fig["mixed"] == 0
    assert fig["wrong_snapshots"] == 0


def test_the_consistency_check_can_fail() -> None:
    assert consistent(expected(13)) and consistent(expected(0)) and consistent(expected(3))
    bad = expected(13)
    bad[2] = 2  # group 2 from an older batch than the rest: two commits mixed
    assert not consistent(bad)


def test_snapshots_mix_commits_without_before_images(tmp_path: Path) -> None:
    """The control: a writer that keeps no before-images breaks the snapshots, and the
    readers' checks see it."""
    fig = run_readers(tmp_path, seconds=1.5, n_readers=1, watcher=False, control=True)
    assert fig["wrong_snapshots"] + fig["mixed"] > 0


def test_reader_processes_never_see_a_torn_batch(tmp_path: Path) -> None:
    """The short version for the default run (each process spends seconds importing and
    loading compiled kernels, so it runs two readers; the slow test runs four)."""
    check_figures(run_readers(tmp_path, seconds=1.5, n_readers=2, watcher=False))


@pytest.mark.slow
def test_four_reader_processes_for_twenty_seconds(tmp_path: Path) -> None:
    fig = run_readers(tmp_path, seconds=20.0, n_readers=4, watcher=True, alone=5.0)
    check_figures(fig)
    assert fig["snapshots_opened"] > 100
    assert fig["commits"] > 800 and fig["readers_remapped"] == 4  # the arena grew under them


def test_reader_survives_a_killed_writer_process(tmp_path: Path) -> None:
    path = str(tmp_path / "bus")
    writer = subprocess.Popen(
        [sys.executable, __file__, "writer", path, "60", str(tmp_path / "w.npy")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    assert writer.stdin is not None
    writer.stdin.write("go\n")
    writer.stdin.flush()
    r = mmsb.open(path, readonly=True)
    try:
        assert r.wait_for(50, timeout=30)
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        assert not r.writer_alive
        view = r.at()
        for g in range(GROUPS):  # the kept view holds whole batches only
            pages = [view.read(p) for p in range(1 + g * PER_GROUP, 1 + (g + 1) * PER_GROUP)]
            assert len({int(x) for page in pages for x in page}) == 1
        oracle, _, _ = replay_to(path, view.lsn)
        assert view.state_hash() == oracle.state_hash()  # last published state, intact
        assert r.state_hash() == oracle.state_hash()
        with mmsb.open(path, sync="off") as w:  # a new writer: recovery, then followed
            assert w.lsn >= view.lsn
            w.write(1, np.full(WORDS, -1, np.int64))
            assert r.wait_for(w.lsn, timeout=10)
            assert int(r.read(1)[0]) == -1
            same(r, w)
    finally:
        r.close()
        if writer.poll() is None:
            writer.kill()
        finish(writer, 30)


if __name__ == "__main__":
    role, bus_path, secs, out_path = sys.argv[1:5]
    if role == "writer":
        writer_main(bus_path, float(secs), out_path, float(sys.argv[5]) if sys.argv[5:] else 0)
    else:
        {"reader": reader_main, "watcher": watcher_main}[role](bus_path, float(secs), out_path)
