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
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidArgumentError, MMSBError
from mmsb.storage import layout
from mmsb.storage.arena import MemoryArena, ReadOnlyArena
from mmsb.storage.devicepages import hide
from mmsb.storage.lock import writer_active
from mmsb.storage.log import Frame
from mmsb.storage.logtail import LogTail, Resync, apply_table_only, replay_to
from mmsb.storage.readers import ReaderRegistration
from mmsb.storage.recovery import recover
from mmsb.storage.seqlock import SeqReader
from mmsb.storage.state import State

T = TypeVar("T")
I64 = npt.NDArray[np.int64]

DEATH_CHECK = 0.005  # seconds between writer liveness checks while ``seq`` stays odd
HEADER_PROBE = 0.005  # seconds between looks for a ``SEQ`` file that did not exist yet
MAX_SLEEP = 0.001  # back-off ceiling while waiting for the writer


class FollowState(State):
    """A page table over the writer's arena: whole reads run inside the seqlock."""

    follower: Follower

    @classmethod
    def adopt(cls, state: State, follower: Follower) -> FollowState:
        out = cls.__new__(cls)
        out.__dict__.update(state.__dict__)
        out.follower = follower
        hide(out)  # device pages' bytes are not in the writer's arena file: reads raise
        return out

    def read(self, page_id: int) -> Any:
        return self.follower.stable(lambda st: State.read(st, page_id))

    def read_many(self, page_ids: Any) -> Any:
        # one seqlock bracket around the whole gather: every row from the same commit
        return self.follower.stable(lambda st: State.read_many(st, page_ids))

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
        self._lock_path = os.path.join(directory, layout.LOCK_FILE)
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
            seq = self._settled()
            if seq is None:
                continue
            out = fn(self.state)
            if self._seq() == seq:
                return out
            self.retries += 1

    def _settled(self) -> int | None:
        """The ``seq`` under which the live view holds the writer's published commit, or
        None after one step towards it (waiting for a publish, following a new writer,
        catching up): call again."""
        hdr = self._header
        assert hdr is not None
        snap = hdr.snapshot()
        if snap is None:
            if hdr.seq & 1:
                self._await_even(hdr)
            return None
        seq, gen, lsn, _ = snap
        if gen != self.generation:
            self._follow_new_writer()
            return None
        if lsn != self.lsn:
            self._catch_up(lsn)
            return None
        return seq

    def _seq(self) -> int:
        hdr = self._header
        assert hdr is not None
        return hdr.seq

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

    def pin(self, publish: Callable[[int], None]) -> int:
        """Pin the view's current commit for a snapshot: bring the view to the writer's
        last published LSN, ``publish(lsn)`` the pin (it must store and fence), and keep
        it only if no commit began meanwhile (``seq`` unchanged); else pin again. Return
        the pinned LSN. With the writer, ``seq`` odd -> fence -> read pins, this is
        Dekker's pattern: the writer sees the pin or the reader sees ``seq`` move."""
        while True:
            if not self.live or self._header is None:
                publish(self.lsn)  # a private view never changes
                return self.lsn
            seq = self._settled()
            if seq is None:
                continue
            publish(self.lsn)
            if self._seq() == seq:
                return self.lsn

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
                arena = ReadOnlyArena(os.path.join(self.directory, layout.ARENA_FILE))
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
            self._tail = LogTail(os.path.join(self.directory, layout.LOG_DIR), lsn)
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


def wait_until(refresh: Callable[[], int], lsn: int, timeout: float | None) -> bool:
    """Poll ``refresh()`` (which returns the LSN a reader reflects) until it reaches
    ``lsn``, backing off from 20 µs to 1 ms; False when ``timeout`` seconds pass first."""
    if isinstance(lsn, bool) or not isinstance(lsn, (int, np.integer)) or lsn < 0:
        raise InvalidArgumentError(f"lsn must be a non-negative integer, got {lsn!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise InvalidArgumentError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 20e-6
    while refresh() < lsn:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return False
        time.sleep(delay if left is None else min(delay, left))
        delay = min(delay * 2, 1e-3)
    return True
