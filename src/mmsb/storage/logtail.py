"""Tailing the log for live readers: frames past an LSN, read as the writer appends them,
and the page-table-only replay a reader applies them with (:mod:`mmsb.storage.follow`).

:class:`LogTail` reads segments through its own descriptors, frame by frame, checking each
frame's header and payload CRCs; a frame not yet wholly written is simply not there yet.
:func:`apply_table_only` brings a page table forward by one frame without touching arena
bytes (the writer has put them in the shared arena already).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from mmsb.engine.crc import crc32
from mmsb.errors import CorruptLogError, CorruptStateError
from mmsb.storage import codec
from mmsb.storage.arena import MemoryArena
from mmsb.storage.codec import BATCH, CREATE, FRAME_TYPES, GRAPH, META, NAME
from mmsb.storage.log import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEG_HEADER,
    SEG_HEADER_SIZE,
    SEGMENT_MAGIC,
    Frame,
    list_segments,
    payload_of,
    segment_name,
)
from mmsb.storage.recovery import apply_frame, replay
from mmsb.storage.state import State
from mmsb.types import RecoveryInfo

I64 = npt.NDArray[np.int64]

ARENA_FREE_TYPES = (CREATE, GRAPH, META, NAME)  # frames whose replay writes no arena bytes


class Resync(CorruptStateError):
    """The incremental path cannot go on (a segment was compacted away while the reader
    lagged, the log no longer reaches the published LSN): rebuild the table by replay.
    Raised to the caller only when the rebuild cannot be done either."""


# -- the table-only replay ------------------------------------------------------------------


def apply_table_only(state: State, frame: Frame) -> None:
    """Bring ``state``'s page table forward by one frame without writing the shared arena.

    BATCH frames get the checks of :func:`~mmsb.storage.recovery.apply_frame` and advance
    epochs and delta ids, but their bytes are not applied (the writer put them in the shared
    arena). CREATE, GRAPH, META and NAME frames write no bytes and replay as they are (a CREATE
    only grows the read-only mapping). Every other frame (DELETE zeroes slots, RELAYOUT moves
    bytes) is replayed by the canonical :func:`apply_frame` over a throwaway zero buffer the
    size of the arena, so the table changes exactly as the writer's did: only the pages
    those writes touch are ever allocated, and they are freed straight after.
    """
    if frame.type == BATCH:
        try:
            first, pids, epochs, ends = batch_rows(frame.payload)
            if first != state.next_delta_id:
                raise CorruptLogError(f"first delta id {first}, expected {state.next_delta_id}")
            known = (pids > 0) & (pids < state.next_page_id)
            if not known.all() or not state.live[pids].all():
                raise CorruptLogError("a row targets an unknown or deleted page")
            if (ends > state.size[pids]).any():
                raise CorruptLogError("a row reaches past the end of its page")
            assigned = state.assign_epochs(pids)
            if not np.array_equal(assigned, epochs):
                state.undo_epochs(pids, assigned)
                raise CorruptLogError("logged epochs differ from the page epochs")
        except CorruptLogError as e:
            raise CorruptLogError(
                f"log frame LSN {frame.lsn} in segment {frame.segment} at offset "
                f"{frame.offset} does not replay: {e}",
                frame.segment,
                frame.offset,
            ) from None
        state.next_delta_id += int(pids.size)
        return
    if frame.type in ARENA_FREE_TYPES:
        apply_frame(state, frame)
        return
    shared = state.arena
    state.arena = MemoryArena(max(state.end, 1))  # np.zeros: untouched pages cost nothing
    try:
        apply_frame(state, frame)
    finally:
        state.arena.close()
        state.arena = shared


def batch_rows(payload: memoryview) -> tuple[int, I64, I64, I64]:
    """What the page table needs from a BATCH payload (layout in :mod:`mmsb.storage.codec`):
    the first delta id, and per row the page id, the epoch and where the row ends in its
    page. Lengths are checked; the payload bytes themselves are not looked at."""
    if payload.nbytes < codec.BATCH_HEAD.size:
        raise CorruptLogError("batch frame too short for its header")
    n, _, first, _, _, _, _ = codec.BATCH_HEAD.unpack_from(payload, 0)
    col4 = 4 * n + (-4 * n) % 8
    if codec.BATCH_HEAD.size + 8 * n + 3 * col4 > payload.nbytes:
        raise CorruptLogError("batch frame too short for its rows")
    pos = codec.BATCH_HEAD.size
    pids = np.frombuffer(payload, "<u8", n, pos).astype(np.int64)
    pos += 8 * n
    epochs = np.frombuffer(payload, "<u4", n, pos).astype(np.int64)
    pos += col4
    offsets = np.frombuffer(payload, "<u4", n, pos).astype(np.int64)
    pos += col4
    lengths = np.frombuffer(payload, "<u4", n, pos).astype(np.int64)
    return int(first), pids, epochs, offsets + lengths


def replay_to(directory: str, lsn: int) -> tuple[State, int, RecoveryInfo]:
    """The state at exactly ``lsn`` in process memory: newest usable checkpoint at or before
    it plus the log after it (the canonical replay; nothing on disk changes)."""
    t0 = time.perf_counter()
    done = replay(directory, MemoryArena(), upto=lsn)
    base, state, cur = done.base, done.state, done.lsn
    if state is None:
        raise Resync(f"no checkpoint at or before LSN {lsn} and the log starts later")
    if done.gap is not None:
        raise Resync(f"log resumes at LSN {done.gap.lsn} after LSN {cur}")
    if cur != lsn:
        raise Resync(f"the log ends at LSN {cur}, before the published LSN {lsn}")
    skipped = tuple(f"{os.path.basename(p)}: {msg}" for p, msg in base.rejected)
    info = RecoveryInfo(
        "new" if lsn == 0 else "replay",
        base.lsn,
        done.frames,
        done.deltas,
        0,
        None,
        skipped,
        time.perf_counter() - t0,
    )
    return state, done.timestamp, info


# -- reading the log incrementally ----------------------------------------------------------


class LogTail:
    """Reads the frames after a position one by one with ``pread``, following segment rolls.

    Only frames the writer has published are asked for, so each is complete on disk; any
    check that fails is damage (:class:`CorruptLogError`), except a segment that is gone
    (compacted while this reader lagged), which raises :class:`Resync`.
    """

    def __init__(self, log_dir: str, after_lsn: int) -> None:
        self.log_dir = log_dir
        self.next_lsn = after_lsn + 1
        self._fd = -1
        self._name = ""
        self._pos = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def frames(self, upto: int) -> Iterator[Frame]:
        """Frames ``next_lsn .. upto``, in order."""
        while self.next_lsn <= upto:
            frame = self._next()
            self.next_lsn += 1
            yield frame

    def _corrupt(self, reason: str) -> CorruptLogError:
        return CorruptLogError(
            f"corrupt log frame in segment {self._name} at offset {self._pos}: {reason}",
            self._name,
            self._pos,
        )

    def _next(self) -> Frame:
        if self._fd < 0:
            self._locate(self.next_lsn)
        head = os.pread(self._fd, FRAME_HEADER_SIZE, self._pos)
        if not head:  # the writer rolled to a new segment
            self._open_segment(self.next_lsn)
            head = os.pread(self._fd, FRAME_HEADER_SIZE, self._pos)
        if len(head) < FRAME_HEADER_SIZE:
            raise self._corrupt("frame header is cut short")
        magic, ftype, flags, lsn, ts, length, pcrc, hcrc, zero = FRAME_HEADER.unpack(head)
        if magic != FRAME_MAGIC or crc32(head[:32]) != hcrc or zero:
            raise self._corrupt("bad frame header checksum")
        if lsn != self.next_lsn:
            raise self._corrupt(f"frame has LSN {lsn}, expected {self.next_lsn}")
        if ftype not in FRAME_TYPES:
            raise self._corrupt(f"unknown frame type {ftype}")
        padded = length + (-length) % 8
        body = os.pread(self._fd, padded, self._pos + FRAME_HEADER_SIZE)
        if len(body) != padded or crc32(body) != pcrc:
            raise self._corrupt("payload checksum mismatch")
        payload = payload_of(flags, memoryview(body)[:length], f"segment {self._name}")
        frame = Frame(ftype, flags, lsn, ts, payload, self._name, self._pos, length)
        self._pos += FRAME_HEADER_SIZE + padded
        return frame

    def _open_segment(self, first_lsn: int) -> None:
        path = os.path.join(self.log_dir, segment_name(first_lsn))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise Resync(f"no log segment starts at LSN {first_lsn}") from None
        head = os.pread(fd, SEG_HEADER_SIZE, 0)
        ok = len(head) == SEG_HEADER_SIZE
        if ok:
            magic, _, _, first, crc, _ = SEG_HEADER.unpack(head)
            ok = magic == SEGMENT_MAGIC and first == first_lsn and crc32(head[:24]) == crc
        if not ok:
            os.close(fd)
            raise CorruptLogError(
                f"log segment {os.path.basename(path)} has a bad header", os.path.basename(path), 0
            )
        self.close()
        self._fd, self._name, self._pos = fd, os.path.basename(path), SEG_HEADER_SIZE

    def _locate(self, lsn: int) -> None:
        """Open the segment holding frame ``lsn`` and find its offset (one read of it)."""
        held = [(first, path) for first, path in list_segments(self.log_dir) if first <= lsn]
        if not held:
            raise Resync(f"no log segment holds LSN {lsn}")
        first = held[-1][0]
        self._open_segment(first)
        data = _read_file(self._fd)
        pos, cur = SEG_HEADER_SIZE, first
        while cur < lsn:
            if pos + FRAME_HEADER_SIZE > len(data):
                raise Resync(f"LSN {lsn} is not in segment {self._name}")
            fields = FRAME_HEADER.unpack_from(data, pos)
            if fields[0] != FRAME_MAGIC or fields[3] != cur:
                self._pos = pos
                raise self._corrupt(f"expected the frame of LSN {cur}")
            pos += FRAME_HEADER_SIZE + fields[5] + (-fields[5]) % 8
            cur += 1
        self._pos = pos


def _read_file(fd: int) -> bytes:
    parts = []
    pos = 0
    while chunk := os.pread(fd, 1 << 24, pos):
        parts.append(chunk)
        pos += len(chunk)
    return b"".join(parts)


# -- the follower ---------------------------------------------------------------------------
