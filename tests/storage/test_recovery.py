"""Recovery on open: torn tails, damaged frames, damaged checkpoints, process crashes and
read-only opens of a bus that needs repair."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import Delta, DeltaBatch
from mmsb.storage.checkpoint import read_header
from mmsb.storage.log import FRAME_HEADER_SIZE, SEG_HEADER_SIZE, Frame, LogReader


def random_batch(rng: np.random.Generator, pages: dict[int, int], rows: int) -> DeltaBatch:
    """Mixed range / dense / sparse rows on random pages (``pages``: id -> size)."""
    ids = sorted(pages)
    deltas = []
    for _ in range(rows):
        pid = int(rng.choice(ids))
        size = pages[pid]
        off = int(rng.integers(0, size))
        n = int(rng.integers(1, min(size - off, 48) + 1))
        data = rng.integers(0, 256, n, dtype=np.uint8)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            deltas.append(Delta.range(pid, data, off))
        else:
            mask = rng.random(n) < 0.5
            if kind == 1:
                deltas.append(Delta.dense(pid, mask, data, off))
            else:
                deltas.append(Delta.sparse(pid, mask, data[: int(mask.sum())], off))
    return DeltaBatch.from_deltas(deltas)


def build_history(
    path: Path,
    *,
    seed: int = 0,
    commits: int = 12,
    checkpoints_at: tuple[int, ...] = (),
    compact: bool = False,
    keep_checkpoints: int = 2,
    segment_size: int = 4096,
) -> dict[int, str]:
    """Commit a deterministic history, then drop the bus as a crash would (no clean
    shutdown). Returns the live state hash after every LSN."""
    rng = np.random.default_rng(seed)
    bus = mmsb.open(path, sync="off", segment_size=segment_size, keep_checkpoints=keep_checkpoints)
    hashes = {0: bus.state_hash()}
    pages: dict[int, int] = {}
    for size, dtype in ((64, "uint8"), (256, "float64"), (120, "int32")):
        pages[bus.create_page(size, dtype=dtype)] = size
        hashes[bus.lsn] = bus.state_hash()
    for i in range(commits):
        if i == commits // 2:
            pid = bus.create_page(32)
            pages[pid] = 32
        else:
            bus.apply_batch(random_batch(rng, pages, int(rng.integers(1, 6))))
        hashes[bus.lsn] = bus.state_hash()
        if i in checkpoints_at:
            bus.checkpoint()
    if compact:
        bus.compact()
    # the last frame is always a batch with several masked and unmasked rows
    bus.apply_batch(random_batch(rng, pages, 5))
    hashes[bus.lsn] = bus.state_hash()
    bus.abandon()
    return hashes


def frames(path: Path) -> list[Frame]:
    return list(LogReader(str(path / "log")).frames())


def flip(file: Path, offset: int) -> None:
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x5A
    file.write_bytes(bytes(data))


def dir_bytes(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# -- (a) torn tails -------------------------------------------------------------------------


def test_torn_tail_at_every_offset_of_the_last_frame(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    hashes = build_history(path)
    last = frames(path)[-1]
    final = max(hashes)
    assert last.lsn == final
    seg = path / "log" / last.segment
    original = seg.read_bytes()
    assert len(original) == last.offset + last.size
    assert last.size > 3 * FRAME_HEADER_SIZE  # cuts land in the header, payload and padding
    for cut in range(last.offset, len(original)):
        seg.write_bytes(original[:cut])
        bus = mmsb.open(path, sync="off")
        try:
            rec = bus.recovery
            assert rec.mode == "replay"
            assert bus.lsn == final - 1, cut
            assert bus.state_hash() == hashes[final - 1], cut
            assert rec.torn_tail_bytes == cut - last.offset, cut
            if cut > last.offset:
                assert rec.torn_tail_segment == last.segment
        finally:
            bus.abandon()
        assert seg.stat().st_size == last.offset, cut  # truncated to the frame start
    # the whole frame present: nothing torn, the last commit is there
    seg.write_bytes(original)
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.torn_tail_bytes == 0
        assert bus.lsn == final
        assert bus.state_hash() == hashes[final]


def test_log_after_a_truncated_tail_takes_new_commits(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    hashes = build_history(path)
    last = frames(path)[-1]
    seg = path / "log" / last.segment
    seg.write_bytes(seg.read_bytes()[: last.offset + last.size // 2])
    bus = mmsb.open(path, sync="off")
    assert bus.recovery.torn_tail_bytes == last.size // 2
    pid = int(bus.page_ids()[0])
    bus.write(pid, b"after the tear")
    expected = bus.state_hash()
    assert bus.lsn == last.lsn  # the torn LSN is reused by the new commit
    bus.abandon()
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.mode == "replay"
        assert bus.recovery.torn_tail_bytes == 0
        assert bus.lsn == last.lsn
        assert bus.state_hash() == expected
        assert bus.at(last.lsn - 1).state_hash() == hashes[last.lsn - 1]
        report = bus.verify()
        assert report.ok, report.summary()


def test_damaged_payload_of_the_last_frame_is_not_dropped_silently(tmp_path: Path) -> None:
    """A complete last frame may be an acknowledged, fsynced commit: a flipped bit in it
    must stop the open (it used to be taken for a torn tail and dropped silently)."""
    path = tmp_path / "bus"
    hashes = build_history(path)
    last = frames(path)[-1]
    seg = path / "log" / last.segment
    flip(seg, last.offset + FRAME_HEADER_SIZE + 3)
    assert not mmsb.verify(path).ok
    size = seg.stat().st_size
    with pytest.raises(mmsb.CorruptLogError, match=f"offset {last.offset} \\(LSN {last.lsn}\\)"):
        mmsb.open(path, sync="off")
    assert seg.stat().st_size == size
    with mmsb.open(path, sync="off", recovery="truncate") as bus:
        assert bus.recovery.torn_tail_bytes == last.size
        assert bus.recovery.dropped_lsns == (last.lsn,)
        assert bus.lsn == last.lsn - 1
        assert bus.state_hash() == hashes[last.lsn - 1]
    assert seg.stat().st_size == last.offset


@pytest.mark.parametrize("cut", [0, 1, SEG_HEADER_SIZE // 2, SEG_HEADER_SIZE - 1])
def test_torn_segment_header_after_a_checkpoint(tmp_path: Path, cut: int) -> None:
    """A checkpoint starts a new segment; a crash while its header was being written
    leaves a short file, which recovery drops."""
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    pid = bus.create_page(16)
    bus.write(pid, b"\x01" * 16)
    bus.checkpoint()
    expected = bus.state_hash()
    lsn = bus.lsn
    bus.abandon()
    newest = sorted((path / "log").iterdir())[-1]
    assert newest.stat().st_size == SEG_HEADER_SIZE
    newest.write_bytes(newest.read_bytes()[:cut])
    bus = mmsb.open(path, sync="off")
    assert bus.recovery.torn_tail_bytes == cut
    assert bus.lsn == lsn
    assert bus.state_hash() == expected
    assert not newest.exists()
    bus.write(pid, b"\x02" * 4)
    expected = bus.state_hash()
    bus.abandon()
    with mmsb.open(path, sync="off") as bus:
        assert bus.lsn == lsn + 1
        assert bus.state_hash() == expected
        assert bus.verify().ok


# -- (b) damage before the tail ------------------------------------------------------------


@pytest.mark.parametrize("part", ["header", "payload"])
@pytest.mark.parametrize("which", ["first", "middle", "before_last"])
def test_damaged_earlier_frame_raises_corrupt_log_error(
    tmp_path: Path, part: str, which: str
) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=20)
    all_frames = frames(path)
    assert len({f.segment for f in all_frames}) > 1  # damage in older and newest segments
    frame = {"first": all_frames[0], "middle": all_frames[len(all_frames) // 2],
             "before_last": all_frames[-2]}[which]  # fmt: skip
    if part == "header":
        at = frame.offset + 12  # inside the LSN field
    else:
        at = frame.offset + FRAME_HEADER_SIZE + frame.payload.nbytes // 2
    flip(path / "log" / frame.segment, at)

    with pytest.raises(mmsb.CorruptLogError, match=f"offset {frame.offset}") as info:
        mmsb.open(path, sync="off")
    assert info.value.segment == frame.segment
    assert info.value.offset == frame.offset
    # the bus was not opened: its lock is free and nothing was truncated
    with pytest.raises(mmsb.CorruptLogError):
        mmsb.open(path, readonly=True)
    report = mmsb.verify(path)
    assert not report.ok
    assert any(frame.segment in e and str(frame.offset) in e for e in report.errors)


def test_every_header_byte_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=4)
    frame = frames(path)[2]
    seg = path / "log" / frame.segment
    original = seg.read_bytes()
    for k in range(FRAME_HEADER_SIZE):  # the CRC covers 0-31; the reserved 36-39 must be zero
        flip(seg, frame.offset + k)
        with pytest.raises(mmsb.CorruptLogError) as info:
            mmsb.open(path, sync="off")
        assert (info.value.segment, info.value.offset) == (frame.segment, frame.offset), k
        seg.write_bytes(original)


def test_damage_after_a_clean_shutdown_is_found_on_open(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=4)
    with mmsb.open(path, sync="off"):
        pass  # a clean close, so the next open would take the fast path
    frame = frames(path)[1]
    flip(path / "log" / frame.segment, frame.offset + 5)
    with pytest.raises(mmsb.CorruptLogError) as info:
        mmsb.open(path, sync="off", verify_on_open="full")
    assert info.value.offset == frame.offset


def test_a_lazy_open_finds_damage_in_the_background_and_checkpoints_past_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=4)
    with mmsb.open(path, sync="off") as bus:
        want = bus.state_hash()
    frame = frames(path)[1]
    flip(path / "log" / frame.segment, frame.offset + 5)
    bus = mmsb.open(path, sync="off")  # lazy (the default): O(1) checks, the frames later
    assert bus.recovery.mode == "clean" and bus.recovery.verify == "lazy"
    assert bus.state_hash() == want
    check = bus._session.after_open  # type: ignore[union-attr]
    assert check is not None and check.done.wait(10)
    assert check.error is not None and check.error.offset == frame.offset
    assert "damaged before the clean-shutdown point" in caplog.text
    pid = int(bus.page_ids()[0])
    bus.write(pid, b"\1")  # the next commit takes the requested checkpoint
    bus._checkpointer.join()
    assert bus.last_checkpoint_error is None
    want = bus.state_hash()
    bus.abandon()  # a crash: recovery starts from that checkpoint, past the damage
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay" and again.state_hash() == want


@pytest.mark.parametrize("damage", [None, "header", "payload"])
def test_a_mapped_scan_reads_what_a_read_scan_reads(tmp_path: Path, damage: str | None) -> None:
    """``LogReader(mapped=True)`` (the lazy open's background check) yields the frames a
    scan of the segments read into memory yields (the oracle), byte for byte, and raises
    the same error at the same frame; ``ends`` scans a segment as if it ended there."""
    path = tmp_path / "bus"
    build_history(path, commits=20)
    all_frames = frames(path)
    if damage is not None:
        frame = all_frames[len(all_frames) // 2]
        extra = 12 if damage == "header" else FRAME_HEADER_SIZE + frame.payload.nbytes // 2
        flip(path / "log" / frame.segment, frame.offset + extra)

    def scan(**kw: object) -> tuple[list[tuple[int, int, str, int, bytes]], str]:
        got = []
        try:
            for f in LogReader(str(path / "log"), **kw).frames():  # type: ignore[arg-type]
                got.append((f.lsn, f.type, f.segment, f.offset, bytes(f.payload)))
        except mmsb.CorruptLogError as exc:
            return got, str(exc)
        return got, ""

    read, mapped = scan(), scan(mapped=True)
    assert mapped == read and read[0]
    assert bool(read[1]) == (damage is not None)
    if damage is None:  # the newest segment cut after its first frame: the frames up to it
        newest = [f for f in all_frames if f.segment == all_frames[-1].segment]
        assert len(newest) >= 2
        keep = len(all_frames) - len(newest) + 1
        cut = {newest[0].segment: newest[0].offset + newest[0].size}
        for mode in (False, True):
            got, err = scan(mapped=mode, ends=cut)
            assert not err and got == read[0][:keep]


@pytest.mark.parametrize("change", ["arena grew", "log grew", "log cut", "no record"])
def test_a_lazy_open_checks_in_full_when_its_evidence_does_not_hold(
    tmp_path: Path, change: str
) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=4)
    with mmsb.open(path, sync="off") as bus:
        want = bus.state_hash()
    arena = path / "arena.bin"
    seg = path / "log" / frames(path)[-1].segment
    if change == "arena grew":  # not the file the shutdown saw; its CRC still proves it
        arena.write_bytes(arena.read_bytes() + b"\0" * 4096)
    elif change == "log grew":
        seg.write_bytes(seg.read_bytes() + b"\0" * 64)  # a zeroed tail, as after a crash
    elif change == "log cut":
        data = seg.read_bytes()
        seg.write_bytes(data[: frames(path)[-1].offset])
    else:  # a clean-shutdown file without the lazy record: as older versions wrote
        import json
        import struct

        raw = (path / "state.clean").read_bytes()
        hlen = struct.unpack_from("<I", raw, 12)[0]
        head = json.loads(raw[24 : 24 + hlen])
        assert head.pop("log_end") and head.pop("arena_file")
        new = json.dumps(head, separators=(",", ":")).encode()
        new += b" " * ((-len(new)) % 8)
        from mmsb.engine.crc import crc32

        pre = raw[:12] + struct.pack("<II", len(new), crc32(new)) + raw[20:24]
        sections_base = 24 + hlen
        (path / "state.clean").write_bytes(pre + new + raw[sections_base:])
    if change == "log cut":
        with pytest.raises(mmsb.CorruptLogError, match="before LSN"):
            mmsb.open(path, sync="off")  # the clean file records the last commit as durable
        return
    with mmsb.open(path, sync="off") as bus:
        assert bus.state_hash() == want
        assert bus.recovery.mode == ("clean" if change != "log grew" else "replay")
        assert bus.recovery.verify == "full"


def test_damaged_last_payload_after_a_clean_shutdown_is_not_buried(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        pid = bus.create_page(8)
        bus.write(pid, b"a")
        before = bus.state_hash()
        bus.write(pid, b"b")
    last = frames(path)[-1]
    flip(path / "log" / last.segment, last.offset + FRAME_HEADER_SIZE + 1)
    with pytest.raises(mmsb.CorruptLogError, match=f"LSN {last.lsn}"):
        mmsb.open(path, sync="off")  # the clean-shutdown file says that commit is durable
    with pytest.raises(mmsb.CorruptLogError, match=f"before LSN {last.lsn}, which the clean"):
        mmsb.open(path, sync="off", recovery="truncate")  # so it is not dropped either
    (path / "state.clean").unlink()  # as after a crash: nothing records the commit now
    bus = mmsb.open(path, sync="off", recovery="truncate")
    # asked to: the damaged frame is dropped and reported, not trusted
    assert bus.recovery.dropped_lsns == (last.lsn,)
    assert bus.recovery.mode == "replay"
    assert bus.recovery.torn_tail_bytes == last.size
    assert (bus.lsn, bus.state_hash()) == (last.lsn - 1, before)
    bus.write(pid, b"c")
    expected = bus.state_hash()
    bus.abandon()  # crash: the next open replays across where the damage was
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == expected
    assert mmsb.verify(path).ok


# -- (c) damaged checkpoints ---------------------------------------------------------------


def checkpoint_spots(file: Path) -> dict[str, int]:
    """A byte inside each checksummed part of a checkpoint file."""
    with open(file, "rb") as f:
        header, base = read_header(f, str(file))
    spots = {"magic": 2, "header": base - 8}
    for name, (off, length, _) in header.sections.items():
        if length:
            spots[name] = base + off + length // 2
    return spots


def test_checkpoint_spots_cover_every_section(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build_history(path, checkpoints_at=(3,))
    (ckpt,) = (path / "ckpt").glob("*.ckpt")
    assert set(checkpoint_spots(ckpt)) == {
        "magic", "header", "slot", "size", "epoch", "dtype", "loc", "live", "metadata", "edges",
        "arena",
    }  # fmt: skip


@pytest.mark.parametrize(
    "spot",
    [
        "magic",
        "header",
        "slot",
        "size",
        "epoch",
        "dtype",
        "loc",
        "live",
        "metadata",
        "edges",
        "arena",
    ],
)
@pytest.mark.parametrize("compact", [False, True])
def test_damaged_newest_checkpoint_falls_back_to_an_older_one(
    tmp_path: Path, spot: str, compact: bool
) -> None:
    path = tmp_path / "bus"
    hashes = build_history(path, commits=16, checkpoints_at=(4, 10), compact=compact)
    ckpts = sorted((path / "ckpt").glob("*.ckpt"))
    assert len(ckpts) == 2
    older, newest = (int(p.name.split(".")[0]) for p in ckpts)
    flip(ckpts[-1], checkpoint_spots(ckpts[-1])[spot])
    assert not mmsb.verify(path).ok
    final = max(hashes)
    with mmsb.open(path, sync="off") as bus:
        rec = bus.recovery
        assert rec.mode == "replay"
        assert rec.checkpoint_lsn == older
        assert len(rec.skipped_checkpoints) == 1
        assert ckpts[-1].name in rec.skipped_checkpoints[0]
        assert bus.lsn == final
        assert bus.state_hash() == hashes[final]
        assert bus.at(newest).state_hash() == hashes[newest]
    assert not ckpts[-1].exists()  # set aside, so it is not tried again
    assert Path(str(ckpts[-1]) + ".corrupt").exists()


def test_only_checkpoint_damaged_and_log_compacted_is_unrecoverable(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build_history(path, commits=12, checkpoints_at=(5,), compact=True, keep_checkpoints=1)
    (ckpt,) = (path / "ckpt").glob("*.ckpt")
    ckpt_lsn = int(ckpt.name.split(".")[0])
    assert min(int(p.name.split(".")[0]) for p in (path / "log").glob("*.seg")) == ckpt_lsn + 1
    flip(ckpt, checkpoint_spots(ckpt)["arena"])
    before = dir_bytes(path)
    with pytest.raises(mmsb.CorruptCheckpointError, match="no usable checkpoint"):
        mmsb.open(path, readonly=True)
    assert dir_bytes(path) == before
    with pytest.raises(mmsb.CorruptCheckpointError, match="no usable checkpoint"):
        mmsb.open(path, sync="off")
    # a second attempt fails the same way (the bad file was set aside, not deleted)
    with pytest.raises(mmsb.CorruptCheckpointError, match="no usable checkpoint"):
        mmsb.open(path, sync="off")
    assert not mmsb.verify(path).ok


# -- (d) process crashes -------------------------------------------------------------------

CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import mmsb
    from mmsb import DeltaBatch

    path, sync = sys.argv[1], sys.argv[2]
    bus = mmsb.open(path, sync=sync, sync_interval=3600.0)
    ids = bus.create_pages(4, 128)
    rng = np.random.default_rng(7)
    for i in range(60):
        rows = rng.integers(0, 256, (3, 16), dtype=np.uint8)
        bus.apply_batch(DeltaBatch.from_ranges(rng.choice(ids, 3), rng.integers(0, 112, 3), rows))
        if i == 20:
            bus.checkpoint()
    print(bus.lsn, bus.state_hash(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("sync", ["off", "normal", "always"])
def test_process_crash_keeps_every_commit(tmp_path: Path, sync: str) -> None:
    """With the page cache intact, a killed writer loses nothing in any sync mode: every
    commit was in the log before the call returned."""
    script = tmp_path / "writer.py"
    script.write_text(CRASHING_WRITER)
    path = tmp_path / "bus"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), sync],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    lsn_text, digest = proc.stdout.split()
    assert not (path / "state.clean").exists()
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.mode == "replay"
        assert bus.recovery.checkpoint_lsn == 22  # create + 21 batches
        assert bus.recovery.torn_tail_bytes == 0
        assert bus.lsn == int(lsn_text) == 61
        assert bus.state_hash() == digest
        report = bus.verify()
        assert report.ok, report.summary()


# -- (e) read-only opens never write ------------------------------------------------------


def test_readonly_open_of_a_torn_tail_changes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    hashes = build_history(path)
    last = frames(path)[-1]
    seg = path / "log" / last.segment
    seg.write_bytes(seg.read_bytes()[: last.offset + 7])
    before = dir_bytes(path)
    with mmsb.open(path, readonly=True) as ro:
        assert ro.recovery.torn_tail_bytes == 7
        assert ro.lsn == last.lsn - 1
        assert ro.state_hash() == hashes[last.lsn - 1]
        assert ro.at(2).state_hash() == hashes[2]
        with pytest.raises(mmsb.ReadOnlyError):
            ro.write(int(ro.page_ids()[0]), b"x")
        with pytest.raises(mmsb.ReadOnlyError):
            ro.checkpoint()
    assert mmsb.verify(path).torn_tail_bytes == 7
    assert dir_bytes(path) == before
    # a writer open afterwards still finds (and repairs) the torn tail
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.torn_tail_bytes == 7
    assert seg.stat().st_size == last.offset


def test_readonly_open_with_a_damaged_checkpoint_changes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    hashes = build_history(path, checkpoints_at=(3, 8))
    newest = sorted((path / "ckpt").glob("*.ckpt"))[-1]
    flip(newest, checkpoint_spots(newest)["arena"])
    before = dir_bytes(path)
    with mmsb.open(path, readonly=True) as ro:
        assert len(ro.recovery.skipped_checkpoints) == 1
        assert ro.state_hash() == hashes[max(hashes)]
    assert dir_bytes(path) == before


def test_compaction_cut_short_leaves_a_verifiable_bus(tmp_path: Path) -> None:
    """A writer killed inside compact() after deleting an old checkpoint but before deleting
    the segments it covered: the log then starts well before the oldest checkpoint."""
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", checkpoint_every=None, keep_checkpoints=1) as bus:
        pid = bus.create_page(64)
        for i in range(30):
            bus.write(pid, bytes([i]) * 8, offset=i)
            if i == 10:
                first = bus.checkpoint().lsn
                bus.compact()  # the log now starts right after the first checkpoint
            if i == 20:
                bus.checkpoint()
        expected = bus.state_hash()
        (path / "ckpt" / f"{first:020d}.ckpt").unlink()  # compact()'s first step, then a kill
        bus.abandon()
    # (*.seg only: the crash-like close may leave the first compaction's files as *.drop)
    segments = sorted(p.name for p in (path / "log").glob("*.seg"))
    assert segments[0] == f"{first + 1:020d}.seg"  # covered segments are still there
    report = mmsb.verify(path)
    assert report.ok, report.summary()
    assert report.last_lsn == 31  # one create and 30 writes
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == expected


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_a_clean_open_maps_the_table_until_close(tmp_path: Path) -> None:
    """A clean open's page table is the clean-shutdown file mapped copy-on-write; the file
    is set aside at once and its mapping (so its blocks) goes at close, not later."""

    def mapped() -> list[str]:
        return [line for line in Path("/proc/self/maps").read_text().splitlines()
                if "state.clean" in line]  # fmt: skip

    path = str(tmp_path / "bus")
    with mmsb.open(path) as bus:
        ids = bus.create_pages(5000, 16)
        bus.write(int(ids[7]), b"x" * 16)
    gc.collect()
    gc.disable()  # the mapping must go at close, not when the cycle collector runs
    try:
        reopen_and_close(path, ids, mapped)
    finally:
        gc.enable()
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "clean"
        assert bus.read(int(ids[7])).tobytes() == b"x" * 16
        assert bus.read(int(ids[9])).tobytes() == b"y" * 16


def reopen_and_close(path: str, ids: np.ndarray, mapped: Callable[[], list[str]]) -> None:
    bus = mmsb.open(path)
    assert bus.recovery.mode == "clean"
    assert len(mapped()) == 1 and "state.clean.old" in mapped()[0]
    bus.write(int(ids[9]), b"y" * 16)  # a write to the table copies its page, not the file
    graph = bus.graph  # a user's object that refers to the bus's state outlives the close
    bus.close()
    assert mapped() == []
    del graph
