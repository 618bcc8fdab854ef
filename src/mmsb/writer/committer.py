"""The one write path: every change to a writable bus is committed here.

:meth:`Committer.commit` runs the protocol, in this order, for every kind of change (page
creation and deletion, deltas, batches, graph edges, GC relayouts, the derived pages of a
tick)::

    stamp (LSN, time) -> append the frame to the log (fsync when sync="always")
      -> seq odd -> keep before-images for pinned snapshots -> apply(state)
      -> publish (LSN, seq even) -> listeners

A tick changes the arena before its frame exists (its derivations read its inputs):
:meth:`Committer.stage` makes ``seq`` odd and keeps the snapshots' before-images first, and
the commit that follows takes a ``restore`` to put the staged bytes back if the frame
cannot be made durable (:meth:`Committer.unstage` when the tick gives up before logging).

with one failure rule:

* **Before the frame is durable** (the append or its fsync fails) nothing has changed:
  ``undo()`` takes back whatever the caller staged, a partly written frame is cut off the
  log, and the error surfaces as :class:`~mmsb.errors.LogWriteError`. A failed fsync also
  closes the bus (after a failed fsync the kernel may have dropped the file's dirty pages,
  so nothing written since the last good fsync can be trusted); the next open recovers.
* **After it** (``apply`` or anything up to publication raises, say a
  ``KeyboardInterrupt`` between two kernel calls) the arena may hold part of a logged
  commit: the bus closes as a crash would (no clean-shutdown state), the exception
  propagates, and the next open replays the frame from the log in full.

Nothing else in the package appends to the log; the import contract and a test keep it so.
Listeners (the history index, the propagator's pending set, the provenance cache, events)
run after publication; they see a :class:`Change` and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from mmsb.errors import BusClosedError, LogWriteError
from mmsb.storage.codec import BATCH, DELETE
from mmsb.storage.logwriter import LogWriter
from mmsb.storage.seqlock import SeqPublisher
from mmsb.storage.snapstore import SnapWriter

R = TypeVar("R")
I64 = npt.NDArray[np.int64]
Clock = Callable[[], int]
Pieces = Sequence[bytes | memoryview]


@dataclass(slots=True)
class Change:
    """What one published commit changed, as its listeners see it (not frozen only
    because a frozen dataclass costs a microsecond more to build, once per commit)."""

    ftype: int  # the frame type (storage.log: CREATE, DELETE, BATCH, GRAPH, RELAYOUT)
    lsn: int
    timestamp: int
    segment: str  # where its frame is: log segment file name and byte offset
    offset: int
    pages: I64 | None  # pages created, deleted or written (None: no page's bytes)
    first_delta_id: int = 0  # delta commits: the first delta id and the row count
    count: int = 0
    lo: Any = 0  # delta commits: each row's byte range [lo, hi) in its page
    hi: Any = 0


Listener = Callable[[Change], None]


class Committer:
    """Owns the LSN, the log writer, publication to readers and the commit listeners.

    ``on_fail_stop(cause)`` is called once when a failure leaves the arena and the log in
    disagreement; it must close the bus without a clean-shutdown state (the bus facade
    abandons its arena, log and lock there).
    """

    def __init__(
        self,
        log: LogWriter,
        seq: SeqPublisher,
        *,
        lsn: int,
        timestamp: int,
        clock: Clock,
        sync_always: bool,
        on_fail_stop: Callable[[BaseException], None],
    ) -> None:
        self.log = log
        self.seq = seq
        self.lsn = lsn  # the last published commit; the next frame gets lsn + 1
        self.timestamp = timestamp  # its time; commit times never go backwards
        self.clock = clock
        self.sync_always = sync_always
        self.listeners: list[Listener] = []
        self.after_publish: list[Callable[[], None]] = []  # e.g. the automatic checkpoint
        self.failure: str | None = None  # why the bus closed itself, once it has
        self.snapshots: SnapWriter | None = None  # keeps what pinned snapshots still see
        self.commits = 0  # commits published since open, and the deltas they carried
        self.deltas = 0
        self._staging = False  # arena changes made ahead of the next frame (see stage())
        self._on_fail_stop = on_fail_stop

    def _before_change(self, ftype: int, pages: I64 | None, lsn: int) -> None:
        """With ``seq`` odd: save the pages commit ``lsn`` overwrites or deletes for the
        snapshots pinned before it."""
        snaps = self.snapshots
        if snaps is not None and pages is not None and ftype in (BATCH, DELETE):
            snaps.before_change(pages, lsn, deleted=ftype == DELETE)

    def stage(self, pages: I64) -> None:
        """Begin changing the arena ahead of the next commit's frame (a tick applies its
        inputs first, because its derivations read them): ``seq`` goes odd, so readers
        wait, and the pinned snapshots keep ``pages``. The next :meth:`commit` (with
        ``restore``) or :meth:`unstage` ends it."""
        if self.failure is not None:
            raise BusClosedError(f"the bus closed itself after a failed commit ({self.failure})")
        self.seq.begin()
        self._staging = True
        try:
            self._before_change(BATCH, pages, self.lsn + 1)
        except BaseException:
            self.unstage()
            raise

    def unstage(self) -> None:
        """The staged changes were taken back (the caller restored the arena): publish
        the unchanged LSN again, so readers go on."""
        self._staging = False
        self.seq.publish(self.lsn, self.timestamp)

    def commit(
        self,
        ftype: int,
        pieces: Pieces,
        apply: Callable[[], R],
        *,
        undo: Callable[[], None] | None = None,
        restore: Callable[[], None] | None = None,
        crc: int | None = None,
        pages: I64 | None = None,
        first_delta_id: int = 0,
        count: int = 0,
        lo: Any = 0,
        hi: Any = 0,
    ) -> tuple[int, int, R]:
        """Log one frame, then ``apply()`` it and publish; return ``(lsn, timestamp,
        apply's result)``. ``undo()`` takes back what the caller staged before the call
        (epochs assigned, edges checked) when the frame could not be made durable;
        ``restore()``, given after :meth:`stage`, takes back the arena changes staged."""
        if self.failure is not None:
            raise BusClosedError(f"the bus closed itself after a failed commit ({self.failure})")
        if self.log.failed:  # an earlier fsync failed: close, raise
            self.log.raise_if_failed(self.fail_stop)
        lsn = self.lsn + 1
        ts = max(int(self.clock()), self.timestamp)
        log = self.log
        seg = log.name

        def take_back() -> None:
            if undo is not None:
                undo()
            if self._staging:
                assert restore is not None, "a staged commit needs restore()"
                restore()
                self.unstage()

        try:
            off = log.append(ftype, lsn, ts, pieces, crc=crc)
        except BaseException as exc:
            take_back()
            if isinstance(exc, OSError) and not isinstance(exc, LogWriteError):
                raise LogWriteError(f"could not append commit {lsn} to the log: {exc}") from exc
            raise
        if self.sync_always:
            try:
                log.sync()
            except BaseException as exc:
                log.cut(off)  # the frame was never acknowledged: no replay may find it
                take_back()
                self.fail_stop(exc)
                if isinstance(exc, OSError):
                    raise LogWriteError(
                        f"fsync of commit {lsn} failed ({exc}); the bus closed itself, and "
                        "reopening it recovers every commit acknowledged before"
                    ) from exc
                raise
        try:
            self.seq.begin()  # readers: the arena changes from here until publish
            self._staging = False
            self._before_change(ftype, pages, lsn)
            result = apply()
            self.lsn = lsn
            self.timestamp = ts
            self.seq.publish(lsn, ts)
        except BaseException as exc:
            # the frame is logged, the arena holds part of it: recover from disk
            self.fail_stop(exc)
            raise
        self.commits += 1
        self.deltas += count
        if self.listeners:
            change = Change(ftype, lsn, ts, seg, off, pages, first_delta_id, count, lo, hi)
            for listener in self.listeners:
                listener(change)
        for hook in self.after_publish:
            hook()
        return lsn, ts, result

    def fail_stop(self, cause: BaseException) -> None:
        """Close the bus as a crash would (see the module docstring); idempotent."""
        if self.failure is not None:
            return
        self.failure = f"{type(cause).__name__}: {cause}"
        self._on_fail_stop(cause)
