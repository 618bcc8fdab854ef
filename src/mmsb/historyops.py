"""The bus's checkpoint, compaction and history methods: automatic checkpoints (in the
background for small arenas), ``checkpoint``, ``compact``, ``at``, ``history``, ``diff``,
``export``, ``verify``. :class:`HistoryOps` is mixed into :class:`mmsb.bus.Bus`; it holds no
state of its own (the attributes it uses are set up in ``Bus.__init__``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsb.errors import HistoryUnavailableError, InvalidArgumentError
from mmsb.history import (
    LogIndex,
    Snapshot,
    build_state,
    copy_state,
    diff_states,
    export_prefix,
    touched_pages,
)
from mmsb.storage.checkpoint import checkpoint_name, list_checkpoints, write_state
from mmsb.storage.log import SEG_HEADER_SIZE, LogWriter, fsync_dir, list_segments
from mmsb.storage.state import State
from mmsb.types import CheckpointInfo, CompactInfo, DeltaRecord, PageDiff
from mmsb.verify import IntegrityReport, verify

if TYPE_CHECKING:
    from mmsb.storage.follow import Follower

# automatic checkpoints of arenas up to this size are copied and written in the background
BACKGROUND_CHECKPOINT_BYTES = 64 << 20


def integer_arg(value: Any, what: str) -> int:
    """``value`` as an int, or :class:`InvalidArgumentError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    return int(value)


class HistoryOps:
    """Checkpoint, compaction and history methods of :class:`mmsb.bus.Bus`."""

    # state, set up by ``Bus.__init__``
    path: str
    sync: str
    auto_compact: bool
    keep_checkpoints: int
    last_checkpoint_error: BaseException | None
    _lsn: int
    _last_ts: int
    _log: LogWriter | None
    _index: LogIndex | None
    _follower: Follower | None
    _background: threading.Thread | None
    _background_error: BaseException | None

    if TYPE_CHECKING:  # the bus methods these use

        def _live_state(self) -> State: ...
        def _writable(self) -> tuple[State, LogWriter]: ...
        def _snapshot(self, state: State, lsn: int, ts: int) -> Snapshot: ...

    # -- checkpoints and compaction -----------------------------------------------------

    def _auto_checkpoint(self, log: LogWriter) -> None:
        """The checkpoint the log's growth calls for. A state whose arena is at most
        ``BACKGROUND_CHECKPOINT_BYTES`` is copied (a memcpy) and written by a helper thread,
        which first syncs the log up to that LSN, so the commit that crossed the threshold
        does not wait for the disk; a larger one is written here, as :meth:`checkpoint`."""
        if self._background is not None:
            return  # one at a time: the next commit asks again
        state = self._live_state()
        if state.end > BACKGROUND_CHECKPOINT_BYTES:
            self.checkpoint()
            if self.auto_compact:
                self.compact()
            return
        image, lsn, ts = copy_state(state), self._lsn, self._last_ts
        if log.pos > SEG_HEADER_SIZE:
            log.roll(lsn + 1)
        log.written = 0
        path = os.path.join(self.path, "ckpt", checkpoint_name(lsn))
        sync = self.sync != "off"

        def write() -> None:
            try:
                log.sync()  # the log up to ``lsn`` is durable before its image is
                write_state(path, image, lsn, ts, with_arena=True, sync=sync)
            except BaseException as exc:  # kept for the owner: see _join_checkpoint
                self._background_error = exc

        self._background_error = None
        self._background = threading.Thread(target=write, name="mmsb-checkpoint", daemon=True)
        self._background.start()

    def _join_checkpoint(self) -> None:
        """Wait for a background checkpoint; a failure leaves the log as the record (the
        next threshold tries again) and is kept in ``last_checkpoint_error``."""
        bg, self._background = self._background, None
        if bg is not None:
            bg.join()
            self.last_checkpoint_error = self._background_error

    def checkpoint(self) -> CheckpointInfo:
        """Write a full image at the current LSN and start a new log segment."""
        state, log = self._writable()
        self._join_checkpoint()
        t0 = time.perf_counter()
        log.sync()
        path = os.path.join(self.path, "ckpt", checkpoint_name(self._lsn))
        size = write_state(
            path, state, self._lsn, self._last_ts, with_arena=True, sync=self.sync != "off"
        )
        if log.pos > SEG_HEADER_SIZE:
            log.roll(self._lsn + 1)
        log.written = 0
        return CheckpointInfo(self._lsn, path, size, state.live_count, time.perf_counter() - t0)

    def compact(self) -> CompactInfo:
        """Drop checkpoints beyond the newest ``keep_checkpoints`` and the log segments
        wholly covered by the oldest kept one. History before it becomes unavailable."""
        self._writable()
        self._join_checkpoint()  # its temporary file must not be taken for debris
        ckpts = list_checkpoints(os.path.join(self.path, "ckpt"))
        removed_ck = 0
        for _, path in ckpts[self.keep_checkpoints :]:
            os.unlink(path)
            removed_ck += 1
        for name in os.listdir(os.path.join(self.path, "ckpt")):
            if name.endswith((".corrupt", ".tmp")):
                os.unlink(os.path.join(self.path, "ckpt", name))
        kept = ckpts[: self.keep_checkpoints]
        oldest = kept[-1][0] if kept else 0
        segs = list_segments(os.path.join(self.path, "log"))
        removed = nbytes = 0
        for (_, path), (next_first, _) in itertools.pairwise(segs):
            if next_first - 1 <= oldest:  # every frame in this segment is <= oldest
                nbytes += os.path.getsize(path)
                os.unlink(path)
                removed += 1
        if removed or removed_ck:
            fsync_dir(os.path.join(self.path, "log"))
            self._index = None
        return CompactInfo(removed, nbytes, removed_ck, oldest)

    # -- history ------------------------------------------------------------------------

    def at(self, lsn: int | None = None, *, time: int | None = None) -> Snapshot:
        """A detached read-only snapshot as of commit ``lsn`` (or the last commit at or
        before timestamp ``time``, in clock nanoseconds)."""
        state = self._live_state()
        f = self._follower
        if f is not None and lsn is None and time is None:
            # the newest commit, whatever LSN that is: its bytes copied inside the seqlock
            return self._snapshot(*f.on_copy(lambda st: (copy_state(st), f.lsn, f.timestamp)))
        if lsn is not None and time is not None:
            raise InvalidArgumentError("give either lsn or time, not both")
        if time is not None:
            lsn = self._log_index().lsn_at_time(integer_arg(time, "time"))
        if lsn is None:
            lsn = self._lsn
        if isinstance(lsn, bool) or not isinstance(lsn, (int, np.integer)):
            raise InvalidArgumentError(f"lsn must be an integer, got {lsn!r}")
        lsn = int(lsn)
        if lsn < 0 or lsn > self._lsn:
            raise HistoryUnavailableError(f"LSN {lsn} is outside [0, {self._lsn}]")
        if lsn == self._lsn:
            if f is None:
                return self._snapshot(copy_state(state), lsn, self._last_ts)
            copied = f.stable_at(lsn, copy_state)  # None: the view moved past lsn meanwhile
            if copied is not None:
                return self._snapshot(copied, lsn, self._last_ts)
        st, ts = build_state(self.path, lsn)
        return self._snapshot(st, lsn, ts)

    def history(self, page_id: int, limit: int | None = None) -> list[DeltaRecord]:
        """Deltas that touched a page, newest first (from an index, not a log scan)."""
        state = self._live_state()
        if isinstance(page_id, bool) or not isinstance(page_id, (int, np.integer)):
            state.require(page_id)  # the same typed error as every other page-id argument
        pid = int(page_id)
        if not (0 < pid < state.next_page_id):
            state.require(pid)
        if limit is not None and integer_arg(limit, "limit") < 0:
            raise InvalidArgumentError("limit must be >= 0")
        return self._log_index().records(os.path.join(self.path, "log"), pid, limit)

    def _log_index(self) -> LogIndex:
        if self._index is None:
            self._index = LogIndex.build(os.path.join(self.path, "log"), self._lsn)
        return self._index

    def diff(self, lsn_a: int, lsn_b: int) -> list[PageDiff]:
        """Pages and byte ranges that differ between two commits."""
        lo, hi = sorted((integer_arg(lsn_a, "lsn_a"), integer_arg(lsn_b, "lsn_b")))
        a, b = self.at(lo), self.at(hi)
        assert a._state is not None and b._state is not None
        candidates = touched_pages(self.path, lo, hi)
        diffs = diff_states(a._state, b._state, candidates)
        if lsn_a > lsn_b:
            flip = {"added": "removed", "removed": "added", "changed": "changed"}
            diffs = [PageDiff(d.page_id, flip[d.status], d.ranges) for d in diffs]  # type: ignore[arg-type]
        return diffs

    def export(self, out: str | os.PathLike[str], lsn: int | None = None) -> None:
        """Write a standalone bus at ``out`` holding this bus's history up to ``lsn``
        (default: now). Its log frames are byte-for-byte copies of this bus's."""
        self._live_state()
        target = self._lsn if lsn is None else integer_arg(lsn, "lsn")
        if target < 0 or target > self._lsn:
            raise HistoryUnavailableError(f"LSN {target} is outside [0, {self._lsn}]")
        if self._log is not None:
            self._log.sync()
        export_prefix(self.path, os.fspath(out), target)

    def verify(self) -> IntegrityReport:
        """Integrity report over the whole log and every checkpoint (see :mod:`mmsb.verify`)."""
        self._live_state()
        return verify(self.path)
