"""Compiled kernels over arrays and scalars only: no validation, no I/O, no Python objects.

Callers validate first (``mmsb.storage.state``); these loops assume every index is in range.
They release the GIL (``nogil``) so a later multi-worker driver can run them on threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine import memops
from mmsb.engine.jit import njit

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

# numba intrinsics (mmsb.engine.memops), set before the first kernel here compiles
_numba_globals = memops.numba_globals
_prefetch: Any = None
AHEAD = memops.PREFETCH_ROWS


@njit(cache=True, nogil=True)
def apply_rows_in(
    order: I64,
    lo: int,
    hi: int,
    indexed: bool,
    arena: U8,
    slots: I64,
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    mstarts: I64,
    payload: U8,
    mask: U8,
) -> None:
    """The one apply loop: rows ``order[lo:hi]`` in that order (a block of one worker's rows,
    found by :func:`apply_in_pages`) or, unless ``indexed``, rows ``lo..hi-1``.
    Later rows overwrite earlier ones byte for byte; kinds: 0 = range (copy), 1 = dense
    masked, 2 = sparse masked (payload holds only the bytes at set mask positions).

    One loop body for both (LLVM unswitches the loop on ``indexed``): a helper called per
    row, even one numba inlines, measured 8-20x slower, the copies no longer vectorised.
    Byte positions are unsigned: with signed indices numba adds a negative-index check to
    every access, which keeps LLVM from vectorising the copy (about 10x slower here).
    (Asking for later rows' bytes early, as :func:`gather_slots` does, measured no faster
    here: stores do not wait for their cache line the way loads do.)
    """
    for t in range(lo, hi):
        i = order[t] if indexed else t
        base = np.uint64(slots[page_ids[i]] + offsets[i])
        n = np.uint64(lengths[i])
        ps = np.uint64(pstarts[i])
        k = kinds[i]
        if k == 0:
            for j in range(n):
                arena[base + j] = payload[ps + j]
        elif k == 1:
            # branchless blend: random masks would mispredict a branch on every other byte
            ms = np.uint64(mstarts[i])
            for j in range(n):
                v = arena[base + j]
                keep = np.uint8(0) - np.uint8(mask[ms + j] != 0)
                arena[base + j] = v ^ ((v ^ payload[ps + j]) & keep)
        else:
            ms = np.uint64(mstarts[i])
            c = ps
            for j in range(n):
                if mask[ms + j]:
                    arena[base + j] = payload[c]
                    c += np.uint64(1)


# rows a worker of a multi-worker apply looks at per block: their numbers fit in 32 KiB
APPLY_BLOCK = 4096


@njit(cache=True, nogil=True)
def apply_in_pages(
    plo: int,
    phi: int,
    arena: U8,
    slots: I64,
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    mstarts: I64,
    payload: U8,
    mask: U8,
) -> None:
    """Apply, in row order, the rows whose page id is in ``[plo, phi)``: one worker's share
    of a multi-worker apply (the workers' page ranges do not overlap, so each page still
    sees its rows in order). Block by block, the rows kept are listed in a small buffer
    without a branch (the entry is written for every row, the count moves only for a row
    kept: a branch on random page ids mispredicts on about every other row), then applied
    by :func:`apply_rows_in`. Every worker reads the whole page-id column, at the same time
    as the others, where grouping the rows for all of them first took one thread 0.53 ms
    per 100,000 rows."""
    rows = np.empty(APPLY_BLOCK, np.int64)
    n = page_ids.size
    for b0 in range(0, n, APPLY_BLOCK):
        k = 0
        for i in range(b0, min(n, b0 + APPLY_BLOCK)):
            p = page_ids[i]
            rows[k] = i
            k += (p >= plo) & (p < phi)
        apply_rows_in(rows, 0, k, True, arena, slots, page_ids, offsets, lengths, kinds,
                      pstarts, mstarts, payload, mask)  # fmt: skip


@njit(cache=True, nogil=True)
def apply_rows(
    arena: U8,
    slots: I64,
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    mstarts: I64,
    payload: U8,
    mask: U8,
) -> None:
    """Apply batch rows in order; later rows overwrite earlier ones byte for byte.

    kinds: 0 = range (copy), 1 = dense masked, 2 = sparse masked (payload holds only the
    bytes at set mask positions, in order).
    """
    apply_rows_in(
        np.empty(0, np.int64), 0, page_ids.size, False, arena, slots, page_ids, offsets,
        lengths, kinds, pstarts, mstarts, payload, mask,
    )  # fmt: skip


@njit(cache=True, nogil=True)
def assign_epochs(epoch: I64, page_ids: I64, out: I64) -> None:
    """Give each row the next epoch of its page, bumping the page's epoch as it goes."""
    for i in range(page_ids.size):
        p = page_ids[i]
        e = epoch[p] + 1
        epoch[p] = e
        out[i] = e


@njit(cache=True, nogil=True)
def undo_epochs(epoch: I64, page_ids: I64, out: I64) -> None:
    """Reverse :func:`assign_epochs` exactly (walk backwards restoring each page's value)."""
    for i in range(page_ids.size - 1, -1, -1):
        epoch[page_ids[i]] = out[i] - 1


@njit(cache=True, nogil=True)
def fill_slots(arena: U8, starts: I64, lengths: I64, value: np.uint8) -> None:
    """Set ``arena[starts[i] : starts[i] + lengths[i]]`` to ``value`` for every i."""
    for i in range(starts.size):
        s = starts[i]
        arena[s : s + lengths[i]] = value


@njit(cache=True, nogil=True)
def gather_slots(arena: U8, starts: I64, lengths: I64, out: U8) -> None:
    """Concatenate the given arena slices into ``out`` (sized to their total)."""
    c = np.uint64(0)
    m = starts.size
    for i in range(m):
        if i + AHEAD < m:  # slices at random places: ask for a later one's bytes early
            _prefetch(arena, starts[i + AHEAD], False)
        s = np.uint64(starts[i])
        n = np.uint64(lengths[i])
        for j in range(n):
            out[c + j] = arena[s + j]
        c += n


@njit(cache=True, nogil=True)
def read_pages(
    arena: U8, slot: I64, ids: I64, size: int, out: U8, last_access: Any, now: int
) -> None:
    """``read_many``'s copy: page ``ids[i]`` (``size`` bytes each) to ``out[i * size:]``,
    each page stamped with the access clock ``now`` (ids checked by the caller)."""
    m = ids.size
    n = np.uint64(size)
    for i in range(m):
        if i + AHEAD < m:
            _prefetch(arena, slot[ids[i + AHEAD]], False)
        p = ids[i]
        last_access[p] = now
        s = np.uint64(slot[p])
        c = np.uint64(i) * n
        for j in range(n):
            out[c + j] = arena[s + j]


@njit(cache=True, nogil=True)
def same_live_pages(ids: I64, limit: int, live: Any, size: I64, dtype: Any) -> int:
    """Whether every id names a live page (``0 < id < limit``) and all have the first
    one's size and dtype code: 0 if so, 1 if an id names no live page, 2 if sizes or
    dtypes differ. One pass (``read_many``'s checks; the caller words the error)."""
    n = ids.size
    if n == 0:
        return 0
    for i in range(n):
        p = ids[i]
        if p <= 0 or p >= limit or not live[p]:
            return 1
    s0, d0 = size[ids[0]], dtype[ids[0]]
    for i in range(n):
        if size[ids[i]] != s0 or dtype[ids[i]] != d0:
            return 2
    return 0


@njit(cache=True, nogil=True)
def structure_ok(
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    plens: I64,
    mstarts: I64,
    payload_size: int,
    mask: U8,
    max_page_size: int,
) -> bool:
    """One pass over a batch's columns: every row's ids, span and pool slices are sane.

    The same rules as ``DeltaBatch.structure_problem`` (which finds *which* rows fail, for
    the error message); this is the fast yes/no used on every commit.
    """
    msize = mask.size
    for i in range(page_ids.size):
        off = offsets[i]
        n = lengths[i]
        k = kinds[i]
        ps = pstarts[i]
        pl = plens[i]
        if page_ids[i] <= 0 or k > 2 or off < 0 or n <= 0 or off + n > max_page_size:
            return False
        if ps < 0 or pl < 0 or ps + pl > payload_size:
            return False
        if k != 2 and pl != n:
            return False
        if k != 0:
            ms = mstarts[i]
            if ms < 0 or ms + n > msize:
                return False
            if k == 2:
                bits = 0
                for j in range(n):
                    if mask[ms + j]:
                        bits += 1
                if bits != pl:
                    return False
    return True
