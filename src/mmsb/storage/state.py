"""The page table, the slot allocator and the apply path over an arena.

:class:`State` is the in-memory truth of a bus at one LSN: a columnar page table indexed by
page id (no Python object per page), the free space of the arena, the arena itself, and
(``dev``) where device pages' bytes are. It knows nothing about logs: the bus validates,
logs, then calls :meth:`State.apply`; recovery and snapshots replay through the same.
"""

from __future__ import annotations

import hashlib
import json
import mmap
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.engine import kernels
from mmsb.errors import InvalidArgumentError, PageNotFoundError
from mmsb.storage import rowcheck
from mmsb.storage.arena import Arena
from mmsb.storage.edges import EdgeTable
from mmsb.storage.rowcheck import ALIGN as ALIGN  # re-exported
from mmsb.storage.rowcheck import aligned as aligned  # re-exported
from mmsb.storage.rowcheck import check_page_shape
from mmsb.types import DTYPE_NAMES, LOCATIONS, PageInfo, check_name, record_dtype

if TYPE_CHECKING:
    from mmsb.storage.devicepages import DevicePages
I64 = npt.NDArray[np.int64]
_DTYPES = tuple(np.dtype(name) for name in DTYPE_NAMES)  # by code; "uint8" is code 0
TOUCH_FLUSH = 4096  # single reads whose access stamps are written together
# the page table's columns, one entry per page id
TABLE_COLUMNS = ("slot", "size", "epoch", "dtype", "loc", "live", "last_access", "seen_epoch")
assert _DTYPES[0] == np.uint8


def zeroed(n: int, dtype: Any) -> npt.NDArray[Any]:
    """A column of ``n`` zeros. From 64 KiB on it is an anonymous mapping of its own: the
    kernel hands out zero pages as they are first touched, so nothing is cleared or faulted
    in up front (``np.zeros`` of a few hundred KiB may reuse heap memory, which it must
    clear: 50-90 us of a clean open at 100,000 pages, for columns most opens barely touch)."""
    dt = np.dtype(dtype)
    nbytes = n * dt.itemsize
    if nbytes < 1 << 16:
        return np.zeros(n, dt)
    try:
        buf = mmap.mmap(-1, nbytes)
    except (OSError, ValueError):
        return np.zeros(n, dt)
    return np.frombuffer(buf, dt, count=n)


class State:
    """Page table + allocator + arena.

    Page table columns are indexed by page id; row 0 is never used (ids start at 1).
    Always true: for every live id, ``slot[id] .. slot[id] + aligned(size[id])`` lies inside
    ``[0, end)`` and overlaps no other live page's slot; ``gap_start/gap_len`` list exactly
    the free, non-empty regions of ``[0, end)`` in address order, coalesced; free bytes are
    zero in the arena.
    """

    def __init__(self, arena: Arena, capacity: int = 1024) -> None:
        self.arena = arena
        self.slot = np.zeros(capacity, np.int64)
        self.size = np.zeros(capacity, np.int64)
        self.epoch = np.zeros(capacity, np.int64)
        self.dtype = np.zeros(capacity, np.uint8)
        self.loc = np.zeros(capacity, np.uint8)
        self.live = np.zeros(capacity, bool)
        # access tracking for the GC's eviction of cold pages (volatile, never persisted):
        # last_access[id] is the access clock (whole seconds) when the page was last read,
        # created or seen written; seen_epoch[id] is its epoch (mod 2**32) at that time
        self.last_access = np.zeros(capacity, np.uint32)
        self.seen_epoch = np.zeros(capacity, np.uint32)
        self.access_now = 0  # the access clock; the bus's collector advances it
        # ids read one at a time since the last flush_access(): a single read appends its
        # id here instead of stamping last_access (a cache miss on a random page)
        self.touched: list[int] = []
        # bumped by every change of slots or free space (create, delete, relayout), so a
        # compaction plan made against an older layout is known to be stale
        self.layout_version = 0
        self.metadata: dict[int, str] = {}  # JSON text, only for pages that have metadata
        self.names: dict[int, str] = {}  # page id -> name, only for named pages
        self.by_name: dict[str, int] = {}  # the inverse: name -> page id
        self.records: dict[int, str] = {}  # page id -> record spec (deleted ones too)
        self.edges = EdgeTable()  # the dependency graph (deleting a page drops its edges)
        self.next_page_id = 1
        self.next_delta_id = 1
        self.live_count = 0
        self.end = 0
        self.gap_start = np.zeros(0, np.int64)
        self.gap_len = np.zeros(0, np.int64)
        self.dev: DevicePages | None = None  # None: all bytes in the arena (devicepages)

    # -- page table ---------------------------------------------------------------------

    def _grow_table(self, needed: int) -> None:
        cap = self.slot.size
        if needed <= cap:
            return
        new = max(needed, cap * 2)
        for name in TABLE_COLUMNS:
            old = getattr(self, name)
            col = np.zeros(new, old.dtype)
            col[:cap] = old
            setattr(self, name, col)

    def release_table(self) -> None:
        """Drop the page-table columns (the bus is closing). A table loaded by a clean open
        maps the clean-shutdown file, whose blocks are freed when its last view goes: here,
        at close, not whenever the garbage collector reaches the closed bus."""
        for name in TABLE_COLUMNS:
            setattr(self, name, np.zeros(0, getattr(self, name).dtype))

    def is_live(self, page_id: int) -> bool:
        return 0 < page_id < self.next_page_id and bool(self.live[page_id])

    def require(self, page_id: Any) -> int:
        """The id of a live page named by its id or its name; ``PageNotFoundError`` if none."""
        if isinstance(page_id, str):
            pid = self.by_name.get(page_id)
            if pid is not None:
                return pid
            try:
                check_name(page_id)
            except InvalidArgumentError:
                raise PageNotFoundError(
                    f"page id must be an integer or a page name, got {page_id!r}", []
                ) from None
            raise PageNotFoundError(f"no live page is named {page_id!r}", [])
        if isinstance(page_id, (bool, np.bool_)) or not isinstance(page_id, (int, np.integer)):
            raise PageNotFoundError(
                f"page id must be an integer or a page name, got {page_id!r}", []
            )
        pid = int(page_id)
        if not self.is_live(pid):
            state = "was deleted" if 0 < pid < self.next_page_id else "does not exist"
            raise PageNotFoundError(f"page {pid} {state}", [pid])
        return pid

    def page_id(self, name: str) -> int:
        """The id of the live page called ``name``; ``PageNotFoundError`` if none is."""
        pid = self.by_name.get(name)
        if pid is None:
            check_name(name)
            raise PageNotFoundError(f"no live page is named {name!r}", [])
        return pid

    def ids_of(self, pages: Any) -> Any:
        """``pages`` (ids or names, one or a sequence) with every name replaced by its id."""
        if isinstance(pages, str):
            return self.page_id(pages)
        if isinstance(pages, (list, tuple)) and any(isinstance(p, str) for p in pages):
            return [self.page_id(p) if isinstance(p, str) else p for p in pages]
        if isinstance(pages, np.ndarray) and pages.dtype.kind == "U":
            return np.array([self.page_id(str(p)) for p in pages.reshape(-1)],
                            np.int64).reshape(pages.shape)  # fmt: skip
        return pages

    def np_dtype(self, pid: int) -> np.dtype[Any]:
        """The numpy dtype a live page's bytes are read as: its record dtype or page dtype."""
        spec = self.records.get(pid) if self.records else None
        return _DTYPES[int(self.dtype[pid])] if spec is None else record_dtype(spec)

    def typed(self, pid: int, raw: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        """``raw`` (bytes of page ``pid``, rows of them if 2-D) viewed with the page's dtype."""
        code = int(self.dtype[pid])
        if code == 0 and not (self.records and pid in self.records):
            return raw
        return raw.view(self.np_dtype(pid))

    def set_name(self, pid: int, name: str | None) -> None:
        """Give live page ``pid`` the name ``name`` (None: no name). The caller checked that
        no other live page has it; replay raises ``InvalidArgumentError`` if one does."""
        if name is not None and self.by_name.get(name, pid) != pid:
            raise InvalidArgumentError(f"page name {name!r} is taken by page {self.by_name[name]}")
        old = self.names.pop(pid, None)
        if old is not None:
            del self.by_name[old]
        if name is not None:
            self.names[pid] = name
            self.by_name[name] = pid

    def set_metadata(self, pid: int, meta: str | None) -> None:
        """Replace live page ``pid``'s metadata (canonical JSON text; None clears it)."""
        if meta is None:
            self.metadata.pop(pid, None)
        else:
            self.metadata[pid] = meta

    def live_ids(self) -> I64:
        return np.nonzero(self.live[: self.next_page_id])[0].astype(np.int64)

    def info(self, page_id: int) -> PageInfo:
        pid = self.require(page_id)
        meta = self.metadata.get(pid)
        record = self.records.get(pid)
        return PageInfo(
            id=pid,
            size=int(self.size[pid]),
            dtype="record" if record else DTYPE_NAMES[int(self.dtype[pid])],
            location=LOCATIONS[int(self.loc[pid])],
            epoch=int(self.epoch[pid]),
            metadata={} if meta is None else json.loads(meta),
            name=self.names.get(pid),
            record_dtype=None if record is None else record_dtype(record),
        )

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page's bytes viewed with its dtype."""
        # the common case without require()'s type checks: a plain int naming a live page
        if type(page_id) is int and 0 < page_id < self.next_page_id and self.live[page_id]:
            pid = page_id
        else:
            pid = self.require(page_id)
        touched = self.touched
        touched.append(pid)
        if len(touched) >= TOUCH_FLUSH:
            self.flush_access()
        if self.dev is not None and self.loc[pid]:
            return self.typed(pid, self.dev.read(pid))
        s = self.slot.item(pid)
        out = self.arena.buf[s : s + self.size.item(pid)].copy()
        if self.records:  # record pages exist: the general view (a read's hot path skips it)
            return self.typed(pid, out)
        code = self.dtype.item(pid)
        return out if code == 0 else out.view(_DTYPES[code])

    def flush_access(self) -> None:
        """Stamp the pages read one at a time since the last flush with the access clock
        (the collector flushes before it advances the clock or looks at the stamps)."""
        if self.touched:
            self.last_access[np.array(self.touched, np.int64)] = self.access_now
            self.touched.clear()

    def read_many(self, page_ids: Any) -> npt.NDArray[Any]:
        """Copies of several pages of one size and dtype as one 2-D array (a row each, in
        the order given; repeats allowed), gathered by one compiled loop."""
        ids = np.asarray(self.ids_of(page_ids))
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise InvalidArgumentError("page ids must be a 1-D sequence of integers")
        ids = np.ascontiguousarray(ids, np.int64)
        n = self.next_page_id
        status = kernels.same_live_pages(ids, n, self.live, self.size, self.dtype)
        if status == 1:
            inside = (ids > 0) & (ids < n)
            live = np.zeros(ids.size, bool)
            live[inside] = self.live[ids[inside]]
            bad = ids[~live]
            raise PageNotFoundError(
                f"{bad.size} of {ids.size} page ids name no live page (first: {int(bad[0])})",
                bad.tolist(),
            )
        if ids.size == 0:
            return np.empty((0, 0), np.uint8)
        if status == 2 or (
            self.records and len({self.records.get(int(p)) for p in np.unique(ids)}) > 1
        ):
            raise InvalidArgumentError("read_many needs pages of one size and dtype")
        size = int(self.size[ids[0]])
        out = np.empty(ids.size * size, np.uint8)
        if self.dev is None:  # one pass: copy and stamp
            kernels.read_pages(self.arena.buf, self.slot, ids, size, out, self.last_access,
                               self.access_now)  # fmt: skip
        else:
            self.last_access[ids] = self.access_now
            self.gather_into(ids, np.full(ids.size, size, np.int64), out)
        return self.typed(int(ids[0]), out.reshape(ids.size, size))

    def raw(self, page_id: int) -> npt.NDArray[np.uint8]:
        """A view (no copy; a copy of a device page) valid until the arena next grows."""
        if self.dev is not None and self.loc[page_id]:
            return self.dev.read(page_id)
        s, n = int(self.slot[page_id]), int(self.size[page_id])
        return self.arena.buf[s : s + n]

    # -- allocation ---------------------------------------------------------------------

    def create(
        self,
        n: int,
        size: int,
        dtype: int,
        loc: int,
        meta: str | None,
        record: str | None = None,
        names: tuple[str | None, ...] | None = None,
    ) -> int:
        """Allocate ``n`` zeroed pages of ``size`` bytes; return the first new id.

        ``record``: the record spec of record pages; ``names``: a name or None per page
        (``InvalidArgumentError`` before any change if one is taken). First fit in address
        order, then bump at the end: deterministic given the page table, so replay and
        restored checkpoints allocate exactly as the live bus did.
        """
        check_page_shape(n, size, dtype)
        if record is not None and size % record_dtype(record).itemsize:
            raise InvalidArgumentError(f"page size {size} is not a whole number of records")
        if names is not None:
            taken = [x for x in names if x is not None and x in self.by_name]
            if taken:
                raise InvalidArgumentError(f"page name {taken[0]!r} is taken by page "
                                           f"{self.by_name[taken[0]]}")  # fmt: skip
        first = self.next_page_id
        self._grow_table(first + n)
        offsets = self._allocate(n, int(aligned(size)))
        ids = slice(first, first + n)
        self.slot[ids] = offsets
        self.size[ids] = size
        self.epoch[ids] = 0
        self.dtype[ids] = dtype
        self.loc[ids] = loc
        self.live[ids] = True
        self.last_access[ids] = self.access_now
        self.seen_epoch[ids] = 0
        self.layout_version += 1
        if self.dev is not None:
            self.dev.created(first, n, int(aligned(size)), loc)
        if meta is not None:
            for pid in range(first, first + n):
                self.metadata[pid] = meta
        if record is not None:
            for pid in range(first, first + n):
                self.records[pid] = record
        if names is not None:
            for pid, name in enumerate(names, first):
                if name is not None:
                    self.set_name(pid, name)
        self.next_page_id = first + n
        self.live_count += n
        return first

    def _allocate(self, n: int, step: int) -> I64:
        out = np.empty(n, np.int64)
        filled = 0
        if self.gap_len.size:
            fits = self.gap_len // step
            usable = np.nonzero(fits)[0]
            if usable.size:
                counts = fits[usable]
                cum = np.cumsum(counts)
                last = int(np.searchsorted(cum, n))  # index into usable of the last gap used
                last = min(last, usable.size - 1)
                counts = counts[: last + 1].copy()
                counts[-1] -= max(int(cum[last]) - n, 0)
                used = usable[: last + 1]
                filled = int(counts.sum())
                starts = np.repeat(self.gap_start[used], counts)
                within = np.arange(filled) - np.repeat(np.cumsum(counts) - counts, counts)
                out[:filled] = starts + within * step
                take = counts * step
                self.gap_start[used] += take
                self.gap_len[used] -= take
                keep = self.gap_len > 0
                self.gap_start, self.gap_len = self.gap_start[keep], self.gap_len[keep]
        rest = n - filled
        if rest:
            out[filled:] = self.end + np.arange(rest, dtype=np.int64) * step
            self.end += rest * step
            self.arena.ensure(self.end)
        return out

    def delete(self, ids: I64) -> None:
        """Free the given live pages (callers checked them): zero their slots, free space."""
        lengths = aligned(self.size[ids]).astype(np.int64)
        starts = self.slot[ids]
        kernels.fill_slots(self.arena.buf, starts, lengths, np.uint8(0))
        if self.dev is not None:
            self.dev.deleted(ids)
        self.live[ids] = False
        self.layout_version += 1
        self.edges.drop_pages(ids)
        if self.metadata or self.names:  # no per-page Python loop without them
            for pid in ids.tolist():  # (record specs stay: ids are never reused, and
                self.metadata.pop(pid, None)  # snapshots read deleted pages with them)
                self.set_name(pid, None)
        self.live_count -= int(ids.size)
        if ids.size > 64:
            self.rebuild_gaps()
            return
        for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
            self._free(s, n)

    def _free(self, start: int, length: int) -> None:
        i = int(np.searchsorted(self.gap_start, start))
        gs, gl = self.gap_start, self.gap_len
        merge_prev = i > 0 and gs[i - 1] + gl[i - 1] == start
        merge_next = i < gs.size and start + length == gs[i]
        if merge_prev and merge_next:
            gl[i - 1] += length + gl[i]
            self.gap_start, self.gap_len = np.delete(gs, i), np.delete(gl, i)
            i -= 1
        elif merge_prev:
            gl[i - 1] += length
            i -= 1
        elif merge_next:
            gs[i] = start
            gl[i] += length
        else:
            self.gap_start = np.insert(gs, i, start)
            self.gap_len = np.insert(gl, i, length)
        # a gap that reaches the end is not a gap: the end moves back instead
        if self.gap_start.size and self.gap_start[-1] + self.gap_len[-1] == self.end:
            self.end = int(self.gap_start[-1])
            self.gap_start, self.gap_len = self.gap_start[:-1], self.gap_len[:-1]

    def rebuild_gaps(self) -> None:
        """Derive ``end`` and the free gaps from the page table alone."""
        ids = self.live_ids()
        if ids.size == 0:
            self.end = 0
            self.gap_start = self.gap_len = np.zeros(0, np.int64)
            return
        starts = self.slot[ids]
        order = np.argsort(starts, kind="stable")
        starts = starts[order]
        ends = starts + aligned(self.size[ids][order])
        self.end = int(ends[-1])
        prev_end = np.concatenate(([0], ends[:-1]))
        gap = starts - prev_end
        has = gap > 0
        self.gap_start = prev_end[has].astype(np.int64)
        self.gap_len = gap[has].astype(np.int64)

    # -- deltas -------------------------------------------------------------------------

    def validate(self, batch: DeltaBatch) -> None:
        """Raise unless every row of ``batch`` fits its page (:func:`rowcheck.check_rows`)."""
        rowcheck.check_rows(self, batch)

    def apply(self, batch: DeltaBatch) -> None:
        """Write a validated batch into the arena, in row order."""
        if self.dev is not None:
            return self.dev.apply_batch(batch)
        kernels.apply_rows(
            self.arena.buf, self.slot, batch.page_ids, batch.offsets, batch.lengths,
            batch.kinds, batch.pstarts, batch.mstarts, batch.payload, batch.mask,
        )  # fmt: skip

    def assign_epochs(self, page_ids: I64) -> I64:
        out = np.empty(page_ids.size, np.int64)
        kernels.assign_epochs(self.epoch, page_ids, out)
        return out

    def undo_epochs(self, page_ids: I64, epochs: I64) -> None:
        kernels.undo_epochs(self.epoch, page_ids, epochs)

    # -- whole-state views --------------------------------------------------------------

    def state_hash(self) -> str:
        """A digest of the logical state (ids, shapes, epochs, metadata, bytes), independent
        of where pages sit in the arena."""
        h = hashlib.blake2b(digest_size=16)
        ids = self.live_ids()
        h.update(np.int64(self.next_page_id).tobytes())
        h.update(ids.tobytes())
        for col in (self.size, self.epoch, self.dtype, self.loc):
            h.update(np.ascontiguousarray(col[ids]).tobytes())
        h.update(json.dumps(sorted(self.metadata.items())).encode())
        if self.names or self.records:  # absent from digests of states without them
            attrs = [sorted(self.names.items()), sorted(self.records.items())]
            h.update(json.dumps(attrs).encode())
        if self.edges.count:
            h.update(self.edges.encode())
        h.update(self.gather(ids).tobytes())
        return h.hexdigest()

    def gather(self, ids: I64) -> npt.NDArray[np.uint8]:
        """The bytes of the given pages, concatenated in the given order."""
        lengths = self.size[ids]
        out = np.empty(int(lengths.sum()), np.uint8)
        self.gather_into(ids, lengths, out)
        return out

    def gather_into(self, ids: I64, lengths: I64, out: Any, offsets: I64 | None = None) -> None:
        """Bytes ``[offsets, offsets + lengths)`` of pages ``ids`` (0: page starts), joined."""
        if self.dev is not None:
            return self.dev.gather(ids, offsets, lengths, out)
        starts = self.slot[ids] if offsets is None else self.slot[ids] + offsets
        kernels.gather_slots(self.arena.buf, starts, lengths, out)
