"""The page table's checks of what a commit may do: every row of a batch fits its page,
and a page's shape fits the format. Vectorised; :class:`~mmsb.storage.state.State` calls
them, and their error words are the ones users see (the commit path's compiled checks,
:mod:`mmsb.engine.commit_kernels`, only say yes or no)."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmsb.batch import DeltaBatch
from mmsb.delta import format_rows
from mmsb.errors import InvalidArgumentError, InvalidDeltaError, PageNotFoundError
from mmsb.types import DTYPE_ITEMSIZE, DTYPE_NAMES, MAX_PAGE_SIZE

ALIGN = 8
MAX_PAGES_PER_CREATE = 2**32  # a create frame claiming more is corrupt
MAX_ARENA_BYTES = 2**46  # 64 TiB


def aligned(size: Any) -> Any:
    return (size + (ALIGN - 1)) // ALIGN * ALIGN


def check_rows(state: Any, batch: DeltaBatch) -> None:
    """Raise unless every row targets a live page and fits inside it, and every typed
    row (``batch.dtypes`` not 0, raw bytes) has its page's dtype and starts and ends on
    whole items. Vectorised; the words of the errors the commit path raises (its
    compiled checks, :mod:`mmsb.engine.commit_kernels`, only say yes or no). ``state`` is a
    :class:`~mmsb.storage.state.State` (typed loosely: that module imports this one)."""
    if len(batch) == 0:
        return
    pids = batch.page_ids
    known = (pids > 0) & (pids < state.next_page_id)
    ok = known.copy()
    ok[known] = state.live[pids[known]]
    if not ok.all():
        bad = np.nonzero(~ok)[0]
        shown = sorted({int(p) for p in pids[bad[:10]]})
        raise PageNotFoundError(
            f"batch rows {format_rows(bad)} target unknown or deleted pages {shown}",
            [int(p) for p in pids[bad[:20]]],
        )
    over = batch.offsets + batch.lengths > state.size[pids]
    if over.any():
        bad = np.nonzero(over)[0]
        r = int(bad[0])
        raise InvalidDeltaError(
            f"batch rows {format_rows(bad)} reach past the end of their page (row {r}: "
            f"offset {int(batch.offsets[r])} + length {int(batch.lengths[r])} > page "
            f"{int(pids[r])} size {int(state.size[pids[r]])})",
            bad[:20].tolist(),
        )
    typed = np.flatnonzero(batch.dtypes)
    if typed.size == 0:
        return
    codes = batch.dtypes[typed].astype(np.intp)
    pages = batch.page_ids[typed]
    page_codes = state.dtype[pages].astype(np.intp)
    span = batch.offsets[typed] | batch.lengths[typed]
    bad_rows = (codes != page_codes) | ((span & (DTYPE_ITEMSIZE[codes] - 1)) != 0)
    if not bad_rows.any():
        return
    bad = typed[bad_rows]
    k = int(np.argmax(bad_rows))
    r, p, code = int(typed[k]), int(pages[k]), int(codes[k])
    off, n = int(batch.offsets[r]), int(batch.lengths[r])
    have, want = DTYPE_NAMES[code], DTYPE_NAMES[int(page_codes[k])]
    item = int(DTYPE_ITEMSIZE[code])
    if code != page_codes[k]:
        why = f"payload dtype {have} does not match page {p} dtype {want} (offset {off})"
    elif off % item:
        why = f"offset {off} is not a multiple of page {p}'s {want} itemsize {item}"
    else:
        why = (f"length {n} at offset {off} is not a multiple of page {p}'s {want} "
                   f"itemsize {item}")  # fmt: skip
    raise InvalidDeltaError(
        f"batch rows {format_rows(bad)} do not fit the dtype of their page (row {r}: {why})",
        bad[:20].tolist(),
    )


def check_page_shape(n: int, size: Any, dtype: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise InvalidArgumentError(f"page size must be an integer, got {size!r}")
    if n < 0:
        raise InvalidArgumentError(f"page count must be >= 0, got {n}")
    if size <= 0 or size > MAX_PAGE_SIZE:
        raise InvalidArgumentError(f"page size must be in [1, {MAX_PAGE_SIZE}], got {size}")
    if n > MAX_PAGES_PER_CREATE or n * aligned(int(size)) > MAX_ARENA_BYTES:
        raise InvalidArgumentError(
            f"{n} pages of {size} bytes exceed the format's limits ({MAX_PAGES_PER_CREATE} pages "
            f"per commit, {MAX_ARENA_BYTES} arena bytes)"
        )
    item = int(DTYPE_ITEMSIZE[dtype])
    if size % item:
        raise InvalidArgumentError(
            f"page size {size} is not a multiple of the {DTYPE_NAMES[dtype]} itemsize {item}"
        )
