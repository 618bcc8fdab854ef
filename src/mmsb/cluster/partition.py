"""Where a page lives and how a global batch is split: no Ray here.

Page ids are global and consecutive from 1, as on a single bus. With ``N`` shards, page
``g`` lives on shard ``(g - 1) % N`` as that shard's local page ``(g - 1) // N + 2``: local
page 1 of every shard is its *control page*, which holds the global LSN of the last global
commit the shard applied (written in the same local commit as the rows it describes, so
the two never disagree). The mapping depends only on ``g`` and ``N``, and ``N`` is fixed
when the cluster is created, so it never changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.engine import kernels
from mmsb.errors import InvalidArgumentError, InvalidDeltaError, PageNotFoundError
from mmsb.storage import rowcheck
from mmsb.types import DTYPE_ITEMSIZE, DTYPE_NAMES, MAX_PAGE_SIZE, dtype_code

I64 = npt.NDArray[np.int64]
CONTROL_PAGE = 1  # local id of each shard's control page
CONTROL_SIZE = 64  # bytes: applied LSN u64, shard index u64, shard count u64, magic u64
CONTROL_MAGIC = 0x4D4D5342434C5553  # "MMSBCLUS"
CONTROL_SOURCE = "cluster"


def shard_of(page: Any, shards: int) -> Any:
    """The shard holding global page ``page`` (an int or an int64 array)."""
    return (page - 1) % shards


def to_local(page: Any, shards: int) -> Any:
    """The shard-local id of global page ``page``."""
    return (page - 1) // shards + 2


def to_global(local: Any, shard: int, shards: int) -> Any:
    """The global id of ``shard``'s local page ``local`` (not the control page)."""
    return (local - 2) * shards + shard + 1


def rows_of(batch: DeltaBatch, shard: int, shards: int) -> DeltaBatch | None:
    """The rows of a global ``batch`` that fall on ``shard``, in order, with local page ids
    (the pools are shared, not copied); None when there are none."""
    sel = np.flatnonzero(shard_of(batch.page_ids, shards) == shard)
    if sel.size == 0:
        return None
    return DeltaBatch(
        to_local(batch.page_ids[sel], shards), batch.offsets[sel], batch.lengths[sel],
        batch.kinds[sel], batch.pstarts[sel], batch.plens[sel], batch.mstarts[sel],
        batch.payload, batch.mask, batch.source_idx[sel], batch.sources, batch.meta_idx[sel],
        batch.metas, batch.dtypes[sel],
    )  # fmt: skip


def control_row(lsn: int) -> DeltaBatch:
    """The row that records global LSN ``lsn`` as applied, on the control page."""
    word = np.array([lsn], "<u8").view(np.uint8)
    return DeltaBatch.from_ranges([CONTROL_PAGE], [0], [word], source=CONTROL_SOURCE)


def control_header(shard: int, shards: int) -> npt.NDArray[np.uint8]:
    """The control page's fixed words (after the LSN): shard index, count, magic."""
    return np.array([shard, shards, CONTROL_MAGIC], "<u8").view(np.uint8)


def shards_touched(page_ids: I64, shards: int) -> list[int]:
    """The shards that hold at least one of ``page_ids``, ascending."""
    return sorted({int(s) for s in np.unique(shard_of(page_ids, shards))})


def preview(pages: dict[int, npt.NDArray[np.uint8]], batch: DeltaBatch) -> None:
    """Apply the rows of ``batch`` whose (local) page is a key of ``pages`` to those byte
    arrays in place, with the commit path's own kernel: rows in order, later bytes win."""
    ids = np.fromiter(pages, np.int64, len(pages))
    sel = np.flatnonzero(np.isin(batch.page_ids, ids))
    if sel.size == 0:
        return
    sizes = np.array([pages[int(i)].size for i in ids], np.int64)
    starts = np.zeros(ids.size, np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    buf = np.zeros(int(sizes.sum()), np.uint8)
    slot = np.zeros(int(ids.max()) + 1, np.int64)
    slot[ids] = starts
    for i, pid in enumerate(ids.tolist()):
        buf[starts[i] : starts[i] + sizes[i]] = pages[pid]
    kernels.apply_rows(
        buf, slot, batch.page_ids[sel], batch.offsets[sel], batch.lengths[sel],
        batch.kinds[sel], batch.pstarts[sel], batch.mstarts[sel], batch.payload, batch.mask,
    )  # fmt: skip
    for i, pid in enumerate(ids.tolist()):
        pages[pid][:] = buf[starts[i] : starts[i] + sizes[i]]


class PageTable:
    """The global page table the driver checks every commit against: the size and dtype
    code of each page, by global id (index 0 unused). Pages are never deleted."""

    def __init__(self, sizes: I64, dtypes: npt.NDArray[np.uint8]) -> None:
        self.size = np.asarray(sizes, np.int64)
        self.dtype = np.asarray(dtypes, np.uint8)
        self.live = np.arange(self.size.size) > 0  # what rowcheck reads: every page but 0

    @property
    def next_page_id(self) -> int:
        return int(self.size.size)

    def add(self, n: int, size: int, code: int) -> I64:
        first = self.next_page_id
        self.size = np.concatenate([self.size, np.full(n, size, np.int64)])
        self.dtype = np.concatenate([self.dtype, np.full(n, code, np.uint8)])
        self.live = np.concatenate([self.live, np.ones(n, bool)])
        return np.arange(first, first + n, dtype=np.int64)

    def require(self, ids: Any) -> I64:
        """``ids`` as int64 page ids; :class:`PageNotFoundError` naming those that are not
        pages."""
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu" and arr.size:
            raise InvalidArgumentError(f"page ids must be integers, got {arr.dtype}")
        arr = arr.astype(np.int64).reshape(-1)
        bad = arr[(arr < 1) | (arr >= self.next_page_id)]
        if bad.size:
            shown = sorted({int(p) for p in bad[:10]})
            raise PageNotFoundError(f"pages {shown} do not exist", shown)
        return arr

    def check_shape(self, n: Any, size: Any, dtype: Any) -> tuple[int, int, int]:
        """Check a create request as a bus does; return (n, size, dtype code)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"page count must be a positive integer, got {n!r}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise InvalidArgumentError(f"page size must be an integer, got {size!r}")
        if not 0 < size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError(f"page size must be in [1, {MAX_PAGE_SIZE}], got {size}")
        code = dtype_code(dtype)
        if size % int(DTYPE_ITEMSIZE[code]):
            raise InvalidArgumentError(
                f"page size {size} is not a multiple of the {DTYPE_NAMES[code]} itemsize"
            )
        return int(n), int(size), code

    def check(self, batch: DeltaBatch) -> None:
        """Raise as a bus's commit would unless every row targets a page, fits inside it
        and, when typed, matches its dtype at whole items; nothing is logged before."""
        if not isinstance(batch, DeltaBatch):
            raise InvalidArgumentError(f"expected a DeltaBatch, got {type(batch).__name__}")
        if len(batch) == 0:
            return
        problem = batch.structure_problem()
        if problem is not None:
            raise InvalidDeltaError(problem)
        rowcheck.check_rows(self, batch)  # the bus's own row checks and their words
