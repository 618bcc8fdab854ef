"""The history component of a bus: ``at``, ``history``, ``diff``, ``export``, ``verify``
and provenance, over the log index it owns.

It reads the log and checkpoints but never writes the bus; it keeps its index current by
listening to the committer (:meth:`History.committed`) or, on a read-only bus, to the
frames the follower applies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mmsb.errors import HistoryUnavailableError, InvalidArgumentError
from mmsb.history import frames
from mmsb.history.provenance import Provenance, ProvenanceIndex
from mmsb.history.timeline import LogIndex, Snapshot, diff_states, export_prefix, touched_pages
from mmsb.storage import layout
from mmsb.storage.codec import META, NAME
from mmsb.storage.replay import copy_state, state_at
from mmsb.storage.state import State
from mmsb.types import DeltaRecord, PageDiff, integer_arg
from mmsb.verify import IntegrityReport, verify

if TYPE_CHECKING:
    from mmsb.storage.follow import Follower
    from mmsb.storage.log import Frame
    from mmsb.writer.committer import Change


class History:
    """Time travel and explanations over one bus directory.

    ``head()`` gives the bus's current ``(state, lsn, timestamp)`` (a read-only bus
    catches up with its writer first); ``follower`` is set on a read-only bus that
    follows a live writer; ``before_export`` syncs the writer's log.
    """

    def __init__(
        self,
        path: str,
        head: Callable[[], tuple[State, int, int]],
        *,
        follower: Follower | None = None,
        before_export: Callable[[], None] | None = None,
        readonly: bool = False,
    ) -> None:
        self.path = path
        self.log_dir = os.path.join(path, layout.LOG_DIR)
        self.head = head
        self.follower = follower
        self.before_export = before_export
        self.readonly = readonly
        self._index: LogIndex | None = None  # built on first use, then kept current
        self._prov: ProvenanceIndex | None = None  # built on first provenance query

    # -- keeping the index current ---------------------------------------------------------

    def committed(self, change: Change) -> None:
        """Committer listener: index the new frame, drop cached explanations of its pages."""
        if self._index is not None:
            pages = change.pages if change.count else None
            meta = None
            if change.ftype in (META, NAME) and change.pages is not None:
                meta = int(change.pages[0])
            self._index.add(change.lsn, change.timestamp, change.segment, change.offset,
                            change.first_delta_id, pages, meta,
                            change.ftype == NAME, change.ftype)  # fmt: skip
        if self._prov is not None and change.pages is not None:
            self._prov.invalidate(change.pages)

    def followed(self, frame: Frame) -> None:
        """Follower hook: a frame the reader applied."""
        if self._index is not None:
            self._index.add_frame(frame)

    def forget_index(self) -> None:
        """Log segments were removed or rewritten: rebuild the index on next use."""
        self._index = None

    def index(self) -> LogIndex:
        if self._index is None:
            self._index = LogIndex.build(self.log_dir, self.head()[1])
        return self._index

    # -- time travel --------------------------------------------------------------------------

    def snapshot(self, state: State, lsn: int, timestamp: int) -> Snapshot:
        snap = Snapshot(state, lsn, timestamp)
        snap._explain = self._snapshot_provenance
        return snap

    def at(self, lsn: int | None = None, *, time: int | None = None) -> Snapshot:
        """A detached read-only snapshot as of commit ``lsn`` (or the last commit at or
        before timestamp ``time``, in clock nanoseconds)."""
        state, head, head_ts = self.head()
        f = self.follower
        if f is not None and lsn is None and time is None:
            # the newest commit, whatever LSN that is: its bytes copied inside the seqlock
            return self.snapshot(*f.on_copy(lambda st: (copy_state(st), f.lsn, f.timestamp)))
        if lsn is not None and time is not None:
            raise InvalidArgumentError("give either lsn or time, not both")
        if time is not None:
            lsn = self.index().lsn_at_time(integer_arg(time, "time"))
        if lsn is None:
            lsn = head
        lsn = integer_arg(lsn, "lsn")
        if lsn < 0 or lsn > head:
            raise HistoryUnavailableError(f"LSN {lsn} is outside [0, {head}]")
        if lsn == head:
            if f is None:
                return self.snapshot(copy_state(state), lsn, head_ts)
            copied = f.stable_at(lsn, copy_state)  # None: the view moved past lsn meanwhile
            if copied is not None:
                return self.snapshot(copied, lsn, head_ts)
        st, ts = state_at(self.path, lsn)
        return self.snapshot(st, lsn, ts)

    def history(self, page_id: int, limit: int | None = None) -> list[DeltaRecord]:
        """Deltas that touched a page, newest first (from an index, not a log scan)."""
        pid = _page_arg(self.head()[0], page_id)
        if limit is not None and integer_arg(limit, "limit") < 0:
            raise InvalidArgumentError("limit must be >= 0")
        return self.index().records(self.log_dir, pid, limit)

    def history_table(
        self,
        page_id: int | None = None,
        *,
        start_lsn: int | None = None,
        end_lsn: int | None = None,
        level: Literal["delta", "commit"] = "delta",
        payload: bool = False,
        format: Literal["arrow", "pandas"] = "arrow",
    ) -> Any:
        """The history as a table (a ``pyarrow.Table``, or with ``format="pandas"`` a
        ``pandas.DataFrame``), oldest first, over commits ``start_lsn..end_lsn`` inclusive:
        a row per delta and metadata or name change (``level="delta"``: the rows of
        ``history``, of one page with ``page_id``) or a row per commit (``level="commit"``).
        Needs the ``mmsb[analysis]`` extra; see :mod:`mmsb.history.frames`."""
        state, head, _ = self.head()
        pid = None if page_id is None else _page_arg(state, page_id)
        lo, hi = frames.lsn_range(self.log_dir, head, start_lsn, end_lsn)
        return frames.history_table(self.log_dir, self.index(), pid, lo, hi, level=level,
                                    payload=payload, format=format)  # fmt: skip

    def diff(self, lsn_a: int, lsn_b: int) -> list[PageDiff]:
        """Pages and byte ranges that differ between two commits."""
        lo, hi = sorted((integer_arg(lsn_a, "lsn_a"), integer_arg(lsn_b, "lsn_b")))
        a, b = self.at(lo), self.at(hi)
        assert a._state is not None and b._state is not None
        diffs = diff_states(a._state, b._state, touched_pages(self.path, lo, hi))
        if lsn_a > lsn_b:
            flip = {"added": "removed", "removed": "added", "changed": "changed"}
            diffs = [PageDiff(d.page_id, flip[d.status], d.ranges) for d in diffs]  # type: ignore[arg-type]
        return diffs

    def export(self, out: str | os.PathLike[str], lsn: int | None = None) -> None:
        """Write a standalone bus at ``out`` holding this bus's history up to ``lsn``
        (default: now). Its log frames are byte-for-byte copies of this bus's."""
        head = self.head()[1]
        target = head if lsn is None else integer_arg(lsn, "lsn")
        if target < 0 or target > head:
            raise HistoryUnavailableError(f"LSN {target} is outside [0, {head}]")
        if self.before_export is not None:
            self.before_export()
        export_prefix(self.path, os.fspath(out), target)

    def verify(self) -> IntegrityReport:
        """Integrity report over the whole log and every checkpoint (see :mod:`mmsb.verify`)."""
        self.head()
        return verify(self.path)

    # -- provenance ---------------------------------------------------------------------------

    def _provenance_index(self) -> ProvenanceIndex:
        if self._prov is None:
            self._prov = ProvenanceIndex(self.log_dir, self.index)
        return self._prov

    def _snapshot_provenance(
        self, snap: Snapshot, page_id: int, byte: int | None, depth: int
    ) -> Provenance:
        self.head()
        upto = self.index().last_delta_at(snap.lsn)
        return self._provenance_index().resolve(
            snap._live_state(), page_id, byte, depth, snap.lsn, upto_did=upto, cache=False
        )

    def provenance(self, page_id: int, byte: int | None = None, depth: int = 32) -> Provenance:
        """Explain a page (or one byte of it): the delta that last wrote it and, for a
        derived page, the parents' last writes that fed it, recursively to ``depth``."""
        state, lsn, _ = self.head()
        # the cache is invalidated by this bus's own writes; a read-only bus sees another
        # process's writes, so it resolves every time
        return self._provenance_index().resolve(
            state, page_id, byte, depth, lsn, cache=not self.readonly
        )


def _page_arg(state: State, page_id: int) -> int:
    """``page_id`` checked as ``history`` checks it: any id ever allocated (a deleted page
    keeps its history); otherwise the same typed error as every other page-id argument."""
    if isinstance(page_id, str):  # a name: the live page that has it now
        return state.page_id(page_id)
    if isinstance(page_id, bool) or not isinstance(page_id, (int, np.integer)):
        state.require(page_id)
    pid = int(page_id)
    if not (0 < pid < state.next_page_id):
        state.require(pid)
    return pid
