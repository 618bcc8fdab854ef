"""Recovery never ends behind an LSN the bus directory records as durable.

Two files record one: the clean-shutdown file (``state.clean``, written once the log was
closed at that LSN) and a checkpoint (written once the log was synced up to its LSN). A log
that ends before that LSN lost committed frames (a segment cut short or removed): opening
raises ``CorruptLogError`` naming the recorded LSN and where the log ends, and leaves the
record alone (log segments, checkpoints, the clean-shutdown file; the arena is a cache the
next recovery rebuilds), also with ``recovery="truncate"``, which may only drop frames after
every such LSN.
A checkpoint holds the state at its LSN, so recovery from it never ends behind it; what the
rule adds there is that the log must still reach it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import mmsb
from mmsb import CorruptLogError
from mmsb.storage.log import Frame, LogReader, list_segments


def frames(path: Path) -> list[Frame]:
    return list(LogReader(str(path / "log")).frames())


def files(path: Path) -> str:
    """A digest of the bus's record: log segments, checkpoints, the clean-shutdown file."""
    h = hashlib.blake2b(digest_size=16)
    for p in sorted([*path.glob("log/*"), *path.glob("ckpt/*"), *path.glob("state.clean")]):
        h.update(str(p.relative_to(path)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def build(path: Path, commits: int = 8, *, close: bool = True, **options: object) -> list[str]:
    """A bus with one page and ``commits`` one-row writes; the state hash after each LSN."""
    bus = mmsb.open(path, sync="off", **options)
    hashes = [bus.state_hash()]
    pid = bus.create_page(64)
    hashes.append(bus.state_hash())
    for i in range(commits):
        bus.write(pid, bytes([i + 1]) * 8, offset=8 * (i % 8))
        hashes.append(bus.state_hash())
    if close:
        bus.close()
    else:
        bus.abandon()
    return hashes


def cut(segment: str | Path, size: int) -> None:
    with open(segment, "r+b") as f:
        f.truncate(size)


def refused(path: Path, match: str, **options: object) -> CorruptLogError:
    before = files(path)
    with pytest.raises(CorruptLogError, match=match) as info:
        mmsb.open(path, sync="off", **options)
    assert files(path) == before  # the refused open changed nothing
    return info.value


# -- the clean-shutdown file ----------------------------------------------------------------


@pytest.mark.parametrize("recovery", ["strict", "truncate"])
@pytest.mark.parametrize("mid_frame", [False, True])
def test_a_log_cut_short_after_a_clean_close_is_refused(
    tmp_path: Path, recovery: str, mid_frame: bool
) -> None:
    path = tmp_path / "bus"
    build(path)
    fs = frames(path)
    last = fs[-1].lsn
    keep = fs[-4]  # three frames go: at a frame boundary, or in the middle of one
    end = keep.offset + keep.size + (13 if mid_frame else 0)
    cut(path / "log" / keep.segment, end)
    err = refused(
        path,
        rf"log ends at LSN {keep.lsn} \(.*segment {keep.segment}.*\), before LSN {last}, "
        r"which the clean-shutdown file \(state.clean\) records as durable",
        recovery=recovery,
    )
    assert (err.segment, err.offset) == (keep.segment, keep.offset + keep.size)
    with pytest.raises(CorruptLogError, match=f"before LSN {last}"):
        mmsb.open(path, readonly=True)  # a reader with no writer rebuilds the same way


def test_a_removed_last_segment_after_a_clean_close_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build(path, commits=60, segment_size=4096)
    last = frames(path)[-1].lsn
    segs = list_segments(str(path / "log"))
    assert len(segs) > 2
    os.unlink(segs[-1][1])
    end = segs[-1][0] - 1
    refused(path, f"log ends at LSN {end} .*before LSN {last}", recovery="truncate")


def test_a_damaged_final_frame_recorded_durable_is_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    build(path)
    last = frames(path)[-1]
    seg = path / "log" / last.segment
    data = bytearray(seg.read_bytes())
    data[last.offset + 40 + 1] ^= 0xFF  # a payload byte: the frame fails its checksum
    seg.write_bytes(bytes(data))
    refused(path, f"LSN {last.lsn}")
    refused(path, f"log ends at LSN {last.lsn - 1} .*before LSN {last.lsn}", recovery="truncate")


def test_tails_after_the_recorded_lsn_are_still_cut_as_before(tmp_path: Path) -> None:
    """A torn or damaged tail above every recorded LSN (commits after a clean open that a
    crash cut short) is still dropped, and reported."""
    path = tmp_path / "bus"
    hashes = build(path)
    with mmsb.open(path, sync="off") as bus:  # a clean open (the file is used up) ...
        assert bus.recovery.mode == "clean"
        good = bus.lsn
        bus.write(1, b"late")
        bus.abandon()  # ... then a crash
    last = frames(path)[-1]
    assert last.lsn == good + 1
    cut(path / "log" / last.segment, last.offset + 11)
    with mmsb.open(path, sync="off") as bus:
        assert bus.lsn == good and bus.recovery.torn_tail_bytes == 11
        assert bus.state_hash() == hashes[good]


# -- checkpoints ----------------------------------------------------------------------------


def test_a_log_cut_before_the_checkpoint_is_refused_even_with_a_torn_end(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    pid = bus.create_page(64)
    for i in range(6):
        bus.write(pid, bytes([i + 1]) * 8)
    k = bus.checkpoint().lsn
    bus.write(pid, b"after")
    bus.abandon()  # no clean-shutdown file: only the checkpoint records an LSN
    segs = list_segments(str(path / "log"))
    assert [first for first, _ in segs] == [1, k + 1]
    os.unlink(segs[1][1])
    victim = frames(path)[3]  # cut inside frame 4 of the only segment left
    cut(segs[0][1], victim.offset + 17)
    for recovery in ("strict", "truncate"):
        refused(path, rf"log ends at LSN 3 .*before LSN {k}, which the checkpoint at LSN {k} "
                "records as durable", recovery=recovery)  # fmt: skip


def test_recovery_from_a_checkpoint_never_ends_behind_it(tmp_path: Path) -> None:
    """The checkpoint holds the state at its LSN: with the log after it gone, recovery ends
    exactly there (not before), and the log goes on from it without a gap."""
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    pid = bus.create_page(64)
    for i in range(5):
        bus.write(pid, bytes([i + 1]) * 8)
    k = bus.checkpoint().lsn
    at_k = bus.state_hash()
    bus.write(pid, b"lost")
    bus.abandon()
    segs = list_segments(str(path / "log"))
    os.unlink(segs[-1][1])  # the frames after the checkpoint, never recorded as durable
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.checkpoint_lsn == k
        assert bus.lsn == k and bus.state_hash() == at_k
        bus.write(pid, b"next")
        after = bus.state_hash()
    with mmsb.open(path, sync="off") as bus:
        assert bus.lsn == k + 1 and bus.state_hash() == after
    assert mmsb.verify(path).ok
