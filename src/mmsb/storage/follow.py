"""Live readers: following a writer in another process through ``SEQ`` and the log.

A reader keeps its own page table and reads page bytes straight from a read-only mapping
of the writer's ``arena.bin``. The slot layout is a pure function of the log, so the table
is brought forward by tailing log frames up to the LSN the writer published in ``SEQ``
(:func:`apply_table_only`: epochs, ids, slots; never the bytes, which the writer already
put in the shared arena). Byte reads are wrapped in the seqlock (:meth:`Follower.stable`):
copy, then recheck ``seq``, and retry when the writer changed the arena meanwhile. Readers
take no lock the writer waits for: they only read ``SEQ``, the log and the arena, and hold
a shared registration in ``READERS`` (so the writer never shrinks the arena under them).

Views a reader can be in:

- *live*: following the writer generation recorded in ``SEQ``;
- *private*: a copy in process memory, as of one LSN. A reader opened with no writer
  holding ``LOCK`` starts here (the state is rebuilt from checkpoint + log, as a read-only
  open always did, and no file is written). A live reader moves here when its writer dies
  in the middle of changing the arena (the bytes of its last LSN are rebuilt from the log).

A writer that opens (for the first time, or again after a crash or clean close) starts a
new generation. Every reader then follows it: it rebuilds its table from checkpoint + log
at the new writer's first published LSN and maps the arena afresh.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptLogError, CorruptStateError, MMSBError
from mmsb.storage.arena import MemoryArena, ReadOnlyArena
from mmsb.storage.crc import crc32
from mmsb.storage.lock import writer_active
from mmsb.storage.log import (
    BATCH,
    CREATE,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    FRAME_TYPES,
    GRAPH,
    SEG_HEADER,
    SEG_HEADER_SIZE,
    SEGMENT_MAGIC,
    Frame,
    LogReader,
    list_segments,
    segment_name,
)
from mmsb.storage.readers import ReaderRegistration
from mmsb.storage.recovery import apply_frame, load_base, recover
from mmsb.storage.seqlock import SeqReader
from mmsb.storage.state import State
from mmsb.types import RecoveryInfo

T = TypeVar("T")
I64 = npt.NDArray[np.int64]

DEATH_CHECK = 0.005  # seconds between writer liveness checks while ``seq`` stays odd
HEADER_PROBE = 0.005  # seconds between looks for a ``SEQ`` file that did not exist yet
MAX_SLEEP = 0.001  # back-off ceiling while waiting for the writer
ARENA_FREE_TYPES = (CREATE, GRAPH)  # frames whose replay writes no arena bytes
_BATCH_HEAD = struct.Struct("<IIQQQII")  # n, flags, first delta id, three lengths, 0


class Resync(CorruptStateError):
    """The incremental path cannot go on (a segment was compacted away while the reader
    lagged, the log no longer reaches the published LSN): rebuild the table by replay.
    Raised to the caller only when the rebuild cannot be done either."""


# -- the table-only replay ------------------------------------------------------------------


def apply_table_only(state: State, frame: Frame) -> None:
    """Bring ``state``'s page table forward by one frame without writing the shared arena.

    BATCH frames get the checks of :func:`~mmsb.storage.recovery.apply_frame` and advance
    epochs and delta ids, but their bytes are not applied (the writer put them in the shared
    arena). CREATE and GRAPH frames write no bytes and replay as they are (a CREATE only
    grows the read-only mapping). Every other frame (DELETE zeroes slots, RELAYOUT moves
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
    if payload.nbytes < _BATCH_HEAD.size:
        raise CorruptLogError("batch frame too short for its header")
    n, _, first, _, _, _, _ = _BATCH_HEAD.unpack_from(payload, 0)
    col4 = 4 * n + (-4 * n) % 8
    if _BATCH_HEAD.size + 8 * n + 3 * col4 > payload.nbytes:
        raise CorruptLogError("batch frame too short for its rows")
    pos = _BATCH_HEAD.size
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
    base = load_base(directory, MemoryArena(), upto=lsn)
    state, ts = base.state, base.timestamp
    if state is None:
        if base.first_log_lsn > 1:
            raise Resync(f"no checkpoint at or before LSN {lsn} and the log starts later")
        state = State(MemoryArena())
    frames = deltas = 0
    cur = base.lsn
    if cur < lsn:
        for frame in LogReader(os.path.join(directory, "log")).frames(after_lsn=cur):
            if frame.lsn != cur + 1:
                raise Resync(f"log resumes at LSN {frame.lsn} after LSN {cur}")
            deltas += apply_frame(state, frame)
            frames += 1
            cur, ts = frame.lsn, frame.timestamp
            if cur == lsn:
                break
    if cur != lsn:
        raise Resync(f"the log ends at LSN {cur}, before the published LSN {lsn}")
    skipped = tuple(f"{os.path.basename(p)}: {msg}" for p, msg in base.rejected)
    info = RecoveryInfo(
        "new" if lsn == 0 else "replay",
        base.lsn,
        frames,
        deltas,
        0,
        None,
        skipped,
        time.perf_counter() - t0,
    )
    return state, ts, info


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
        frame = Frame(ftype, flags, lsn, ts, memoryview(body)[:length], self._name, self._pos)
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


class FollowState(State):
    """A page table over the writer's arena: whole reads run inside the seqlock."""

    follower: Follower

    @classmethod
    def adopt(cls, state: State, follower: Follower) -> FollowState:
        out = cls.__new__(cls)
        out.__dict__.update(state.__dict__)
        out.follower = follower
        return out

    def read(self, page_id: int) -> Any:
        return self.follower.stable(lambda st: State.read(st, page_id))

    def state_hash(self) -> str:
        return self.follower.on_copy(State.state_hash)


class Follower:
    """The reader's view of one bus directory (see the module doc).

    ``state``, ``lsn`` and ``timestamp`` describe the view; they change only inside
    :meth:`poll`, :meth:`refresh` and :meth:`stable`, in the calling thread (a reader, like
    a writer, is used from one thread at a time).
    """

    def __init__(
        self,
        directory: str,
        *,
        on_frame: Callable[[Frame], None] | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self._lock_path = os.path.join(directory, "LOCK")
        self._on_frame = on_frame
        self._on_reset = on_reset
        self._header: SeqReader | None = SeqReader.open(directory)
        self._registration: ReaderRegistration | None = None
        self._arena: ReadOnlyArena | None = None
        self._tail: LogTail | None = None
        self._next_probe = 0.0
        self.live = False  # True while bytes come from the writer's arena
        self.generation = -1  # the writer generation the view belongs to (-1: none seen)
        self.retries = 0  # byte reads repeated because the writer changed the arena meanwhile
        self.rebuilds = 0  # tables rebuilt by replay after open (new writer, lost segment)
        self.state: State
        try:
            if self._header is not None and writer_active(self._lock_path) and self._attach():
                return
            # no live writer: the state as of the log end, in process memory (writes nothing)
            rec = recover(directory, MemoryArena(), readonly=True)
            self.state, self.lsn, self.timestamp = rec.state, rec.lsn, rec.timestamp
            self.info = rec.info
            snap = None if self._header is None else self._header.snapshot()
            if snap is not None:
                self.generation = snap[1]
        except BaseException:
            self.close()
            raise

    # -- keeping the view current ---------------------------------------------------------

    def poll(self, *, force: bool = False) -> None:
        """Bring the view to the writer's last published commit, if it moved (cheap when it
        did not: a few loads from ``SEQ``). A commit being applied right now is left for
        the next call; :meth:`stable` waits for it."""
        hdr = self._header
        if hdr is None:
            now = time.monotonic()
            if not force and now < self._next_probe:
                return
            self._next_probe = now + HEADER_PROBE
            self._header = hdr = SeqReader.open(self.directory)
            if hdr is None:
                return
        snap = hdr.snapshot()
        if snap is None:
            if force and self.live:
                self._await_even(hdr)
            return
        _, gen, lsn, _ = snap
        if gen != self.generation:
            self._follow_new_writer()
        elif self.live and lsn != self.lsn:
            self._catch_up(lsn)

    def stable(self, fn: Callable[[State], T]) -> T:
        """Run ``fn`` (which copies bytes out of the arena) until it ran while the arena held
        exactly the view's LSN, bringing the view forward first; the result is never a mix
        of two commits."""
        while True:
            if not self.live:
                return fn(self.state)
            hdr = self._header
            assert hdr is not None
            snap = hdr.snapshot()
            if snap is None:
                if hdr.seq & 1:
                    self._await_even(hdr)
                continue
            seq, gen, lsn, _ = snap
            if gen != self.generation:
                self._follow_new_writer()
                continue
            if lsn != self.lsn:
                self._catch_up(lsn)
                continue
            out = fn(self.state)
            if hdr.seq == seq:
                return out
            self.retries += 1

    def on_copy(self, fn: Callable[[State], T]) -> T:
        """Run ``fn`` over the current table and a private copy of the arena bytes, taken in
        one seqlock-guarded ``memcpy``: for whole-state work (hashing, snapshots) whose
        own duration must not widen the window in which a commit forces a retry."""
        data = self.stable(lambda st: st.arena.buf[: st.end].copy())
        st = self.state  # the table the copy was taken for: nothing moved it since
        shared, st.arena = st.arena, MemoryArena(0)
        st.arena.buf = data
        try:
            return fn(st)
        finally:
            st.arena = shared

    def stable_at(self, lsn: int, fn: Callable[[State], T]) -> T | None:
        """Like :meth:`stable`, but only at exactly ``lsn``: None once the view moved on."""
        return self.stable(lambda st: fn(st) if self.lsn == lsn else None)

    @property
    def writer_alive(self) -> bool:
        return writer_active(self._lock_path)

    # -- transitions ----------------------------------------------------------------------

    def _await_even(self, hdr: SeqReader) -> None:
        """Wait while the writer changes the arena; if it dies meanwhile, go private."""
        delay = 20e-6
        next_check = time.monotonic() + DEATH_CHECK
        while hdr.seq & 1:
            now = time.monotonic()
            if now >= next_check:
                if not writer_active(self._lock_path) and hdr.seq & 1:
                    # died mid-change: the arena holds part of a later commit
                    if self.live:
                        self._go_private()
                    return
                next_check = now + DEATH_CHECK
            time.sleep(delay)
            delay = min(delay * 2, MAX_SLEEP)

    def _wait_published(self, hdr: SeqReader) -> tuple[int, int, int, int] | None:
        while True:
            snap = hdr.snapshot()
            if snap is not None:
                return snap
            if hdr.seq & 1:
                self._await_even(hdr)
                if hdr.seq & 1:
                    return None  # the writer died before publishing

    def _attach(self) -> bool:
        """Follow the writer generation in ``SEQ`` from its published LSN: table by replay,
        bytes from a fresh mapping. False when nothing is published (writer died first)."""
        hdr = self._header
        assert hdr is not None
        for attempt in range(4):
            # register before reading what to map: a writer that checked for readers
            # before this had already made ``seq`` odd, so the wait below outlasts any
            # truncation it does (see ``ReaderSafeArena``)
            if self._registration is None:
                self._registration = ReaderRegistration(self.directory)
            snap = self._wait_published(hdr)
            if snap is None:
                if not self.live:
                    self._unregister()  # nothing mapped: do not hold the writer's GC back
                return False
            _, gen, lsn, ts = snap
            try:
                state, _, info = replay_to(self.directory, lsn)
                arena = ReadOnlyArena(os.path.join(self.directory, "arena.bin"))
            except (Resync, OSError, MMSBError):
                # a checkpoint or segment compacted away while replaying: try again
                if attempt == 3:
                    raise
                continue
            try:
                arena.ensure(state.end)
            except MMSBError:
                arena.close()
                if attempt == 3:
                    raise
                continue
            state.arena = arena
            self._drop_mapping()
            self._arena = arena
            self._tail = LogTail(os.path.join(self.directory, "log"), lsn)
            self.state = FollowState.adopt(state, self)
            if self.generation != -1 or self.live:
                self.rebuilds += 1
            self.lsn, self.timestamp, self.generation = lsn, ts, gen
            self.info = info
            self.live = True
            if self._on_reset is not None:
                self._on_reset()
            return True
        return False  # pragma: no cover - the loop returns or raises

    def _follow_new_writer(self) -> None:
        if not self._attach():
            if self.live:
                self._go_private()
            hdr = self._header
            snap = None if hdr is None else hdr.snapshot()
            if snap is not None:
                self.generation = snap[1]

    def _go_private(self) -> None:
        """Keep the current LSN's view in process memory, rebuilt from the log (the shared
        arena may hold part of a later commit, or be rebuilt by a new writer)."""
        try:
            state, ts, _ = replay_to(self.directory, self.lsn)
        except Resync:
            # compacted past this LSN while the reader lagged: the newest state instead
            rec = recover(self.directory, MemoryArena(), readonly=True)
            state, ts, self.lsn = rec.state, rec.timestamp, rec.lsn
        self._drop_mapping()
        self.state, self.timestamp = state, ts
        self.live = False
        self._unregister()

    def _unregister(self) -> None:
        if self._registration is not None:
            self._registration.release()
            self._registration = None

    def _catch_up(self, target: int) -> None:
        tail, arena = self._tail, self._arena
        assert tail is not None and arena is not None
        try:
            for frame in tail.frames(target):
                apply_table_only(self.state, frame)
                self.lsn, self.timestamp = frame.lsn, frame.timestamp
                if self._on_frame is not None:
                    self._on_frame(frame)
            arena.ensure(self.state.end)
        except (Resync, MMSBError, OSError):
            # the table may be half-way through a frame: rebuild it by canonical replay
            self._follow_new_writer()

    def _drop_mapping(self) -> None:
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        if self._arena is not None:
            self._arena.close()
            self._arena = None

    def close(self) -> None:
        self.live = False
        self._drop_mapping()
        self._unregister()
        if self._header is not None:
            self._header.close()
            self._header = None
