"""Pinned snapshots of a live bus: :meth:`mmsb.Bus.snapshot`.

A :class:`LiveSnapshot` reads the bus as of one commit while the writer keeps committing.
It copies nothing when it opens: it registers its LSN in the shared reader table, and the
writer keeps the before-image of each page it changes while the snapshot can still see
the old bytes (:mod:`mmsb.storage.snapstore`). A read takes the page from its first
before-image saved after the snapshot's LSN, or from the arena when the page has not
changed since; the arena read is followed by a second look at the before-images, because
the writer saves one *before* it overwrites the page.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any, Self, TypeVar

import numpy as np
import numpy.typing as npt

from mmsb.errors import BusClosedError, InvalidArgumentError, PageNotFoundError
from mmsb.storage.follow import Follower
from mmsb.storage.snapstore import DELETED, SnapTable
from mmsb.storage.state import State
from mmsb.types import DTYPE_NAMES, LOCATIONS, PageInfo

T = TypeVar("T")
I64 = npt.NDArray[np.int64]
_DTYPES = tuple(np.dtype(n) for n in DTYPE_NAMES)
Runner = Callable[[Callable[[State], Any]], Any]


class LiveSnapshot:
    """The bus as of commit :attr:`lsn`, for as long as it is open (a context manager).

    Every read returns that commit's bytes: never a torn page, never pages of two
    commits. Readers do not block the writer; if the writer needs the memory that keeps
    this snapshot's old pages (``snapshot_memory``) or reopens the bus, reads raise
    :class:`~mmsb.errors.SnapshotTooOldError`. Pages only: the graph at this LSN is in
    :meth:`mmsb.Bus.at`. Use from one thread.
    """

    def __init__(
        self,
        lsn: int,
        next_page_id: int,
        run: Runner,
        table_now: Callable[[], State],
        snaps: SnapTable | None = None,
        slot: int = -1,
        generation: int = 0,
    ) -> None:
        self.lsn = lsn
        self._next = next_page_id  # pages created later do not exist here
        self._run = run  # runs fn(state) against the arena as it is now, consistently
        self._table_now = table_now  # the current page table (sizes, dtypes, metadata)
        self._snaps = snaps
        self._slot = slot
        self._gen = generation
        # before-image entries looked at: from the oldest kept (a tick taken back may have
        # saved images for commit lsn + 1 already, and those are this snapshot's)
        self._seen = 0 if snaps is None else snaps.oldest()
        self._first: dict[int, int] = {}  # page -> its first entry saved after lsn
        self.closed = False

    # -- life ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Unpin (the writer may then reuse the memory kept for it). Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self._snaps is not None:
            self._snaps.release(self._slot, self.lsn)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown, anything goes
            self.close()

    def __repr__(self) -> str:
        return f"LiveSnapshot(lsn={self.lsn}{', closed' if self.closed else ''})"

    # -- reads ---------------------------------------------------------------------------------

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page as of :attr:`lsn`, a 1-D array of the page's dtype."""
        pid = self._check(page_id)
        hit = self._entry(pid)
        if hit < 0:
            out = self._run(lambda st: State.read(st, pid) if st.is_live(pid) else None)
            hit = self._entry(pid)  # the writer may have saved it and changed it meanwhile
            if hit < 0:
                self._valid()
                if out is None:
                    raise PageNotFoundError(f"page {pid} does not exist at LSN {self.lsn}", [pid])
                return out  # type: ignore[no-any-return]
        return self._from_entry(pid, hit)

    def view(self, page_id: int) -> npt.NDArray[Any]:
        """The page as of :attr:`lsn` as a read-only array (a private copy: it never
        changes, whatever the writer does)."""
        out = self.read(page_id)
        out.flags.writeable = False
        return out

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Pages of one size and dtype as of :attr:`lsn`, a row per id in the order given."""
        self._open()
        ids = np.asarray(self._table_now().ids_of(page_ids))
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise InvalidArgumentError("page ids must be a 1-D sequence of integers")
        ids = ids.astype(np.int64, copy=False)
        bad = ids[(ids <= 0) | (ids >= self._next)]
        if bad.size:
            raise PageNotFoundError(
                f"{bad.size} of {ids.size} page ids name no page at LSN {self.lsn} "
                f"(first: {int(bad[0])})",
                bad.tolist(),
            )
        if ids.size == 0:
            return np.empty((0, 0), np.uint8)
        st = self._table_now()
        sizes, codes = st.size[ids], st.dtype[ids]
        size, code = int(sizes[0]), int(codes[0])
        if (sizes != size).any() or (codes != code).any():
            raise InvalidArgumentError("read_many needs pages of one size and dtype")
        out = np.empty((ids.size, size), np.uint8)
        hits = self._entries(ids)
        miss = hits < 0
        if miss.any():
            rows = self._run(lambda s: State.read_many(s, ids[miss]))
            out[miss] = rows.view(np.uint8).reshape(-1, size)
            hits = self._entries(ids)  # saved (and changed) while we read: use the image
        for r in np.flatnonzero(hits >= 0).tolist():
            out[r] = self._image(int(hits[r]))[1][:size]
        self._valid()
        return st.typed(int(ids[0]), out)

    def page(self, page_id: int) -> PageInfo:
        """Id, size, dtype, location, epoch and metadata of the page as of :attr:`lsn`."""
        pid = self._check(page_id)
        st = self._table_now()
        hit = self._entry(pid)
        if hit < 0 and not st.is_live(pid):
            hit = self._entry(pid)
            if hit < 0:
                raise PageNotFoundError(f"page {pid} does not exist at LSN {self.lsn}", [pid])
        if hit < 0:
            info = st.info(pid)
            self._valid()
            return info
        assert self._snaps is not None
        epoch, _, n, meta_n, flags = self._snaps.entry(hit)
        if flags & DELETED:
            raw = self._image(hit)[1]
            meta = raw[n : n + meta_n].tobytes().decode() if meta_n else None
        else:
            meta = st.metadata.get(pid)
        self._valid()
        record = st.records.get(pid)
        return PageInfo(
            id=pid,
            size=int(st.size[pid]),
            dtype="record" if record else DTYPE_NAMES[int(st.dtype[pid])],
            location=LOCATIONS[int(st.loc[pid])],
            epoch=epoch,
            metadata={} if meta is None else json.loads(meta),
            record_dtype=None if record is None else st.np_dtype(pid),
        )

    def page_ids(self) -> I64:
        """Ids of the pages live at :attr:`lsn`, ascending."""
        self._open()
        st = self._table_now()
        live = st.live_ids()
        live = live[live < self._next]
        self._refresh()
        saved = np.fromiter(self._first, np.int64, len(self._first))
        self._valid()
        return np.union1d(live, saved[saved < self._next])

    def __len__(self) -> int:
        return int(self.page_ids().size)

    def __contains__(self, page_id: object) -> bool:
        if not isinstance(page_id, (int, np.integer)) or isinstance(page_id, bool):
            return False
        try:
            self.page(int(page_id))
        except PageNotFoundError:
            return False
        return True

    # -- internals -------------------------------------------------------------------------

    def _open(self) -> None:
        if self.closed:
            raise BusClosedError("the snapshot is closed")

    def _check(self, page_id: Any) -> int:
        self._open()
        if isinstance(page_id, str):  # names resolve against the live table (see design.md)
            return self._table_now().page_id(page_id)
        if isinstance(page_id, (bool, np.bool_)) or not isinstance(page_id, (int, np.integer)):
            raise InvalidArgumentError(f"page id must be an integer, got {page_id!r}")
        pid = int(page_id)
        if not 0 < pid < self._next:
            raise PageNotFoundError(f"page {pid} does not exist at LSN {self.lsn}", [pid])
        return pid

    def _valid(self) -> None:
        if self._snaps is not None:
            self._snaps.check(self.lsn, self._gen)

    def _refresh(self) -> None:
        snaps = self._snaps
        if snaps is None:
            return
        end = snaps.published()
        if end == self._seen:
            return
        idx, pages, commits = snaps.entries_since(self._seen, end)
        self._seen = end
        sel = commits > self.lsn
        if not sel.any():
            return
        pages, idx = pages[sel], idx[sel]
        uniq, first = np.unique(pages, return_index=True)  # entries are in commit order
        known = self._first
        for p, i in zip(uniq.tolist(), idx[first].tolist(), strict=True):
            known.setdefault(p, i)

    def _entry(self, pid: int) -> int:
        self._refresh()
        return self._first.get(pid, -1)

    def _entries(self, ids: I64) -> I64:
        self._refresh()
        if not self._first:  # nothing changed since the pin: every page is in the arena
            return np.full(ids.size, -1, np.int64)
        get = self._first.get
        return np.fromiter((get(p, -1) for p in ids.tolist()), np.int64, ids.size)

    def _image(self, hit: int) -> tuple[int, npt.NDArray[np.uint8]]:
        assert self._snaps is not None
        _, pos, n, meta_n, _ = self._snaps.entry(hit)
        return n, self._snaps.copy(pos, n + meta_n)

    def _from_entry(self, pid: int, hit: int) -> npt.NDArray[Any]:
        n, raw = self._image(hit)
        self._valid()  # after the copy: the bytes were not reused while we copied them
        return self._table_now().typed(pid, raw[:n])


def open_snapshot(
    state_of: Callable[[], State],
    lsn_of: Callable[[], int],
    follower: Follower | None,
    snaps: SnapTable | None,
) -> LiveSnapshot:
    """Pin a snapshot: on the writer (``follower`` None) at its last commit; on a live
    reader at the writer's last published commit (see :meth:`Follower.pin`); on a
    private reader view (no writer), at the view itself, which never changes."""
    state = state_of()
    if follower is not None and not follower.live:
        return LiveSnapshot(follower.lsn, state.next_page_id, lambda fn: fn(state), lambda: state)
    assert snaps is not None
    slot = snaps.claim()
    try:
        gen = snaps.generation
        run: Runner
        if follower is None:
            lsn = lsn_of()
            snaps.pin(slot, lsn)  # same thread as every commit: none is under way

            def run(fn: Callable[[State], Any]) -> Any:
                return fn(state_of())
        else:
            lsn = follower.pin(lambda at: snaps.pin(slot, at))
            run = follower.stable
            state = follower.state
    except BaseException:
        snaps.unclaim(slot)
        raise
    return LiveSnapshot(lsn, state.next_page_id, run, state_of, snaps, slot, gen)
