"""Compiled kernels of the multi-worker commit path (arrays and scalars only).

Each kernel handles one worker's share of a batch and releases the GIL, so the driver in
:mod:`mmsb.engine.driver` can run the shares on threads at the same time. Two kinds of share:

* a *row range* ``[lo, hi)`` for work that only reads shared state (checking rows, writing
  their log columns);
* a *page range* for work that writes per-page state (arena bytes): the rows of a range of
  page ids, in row order (each worker finds its own:
  :func:`mmsb.engine.kernels.apply_in_pages`), so no two workers write the same page and
  each page sees its rows in order.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mmsb.engine.jit import njit

I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

# check_rows status codes, in the order the bus reports problems
OK, BAD_STRUCTURE, BAD_PAGE, PAST_END, BAD_TYPE = 0, 1, 2, 3, 4


@njit(cache=True, nogil=True)
def check_rows(
    lo: int,
    hi: int,
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    plens: I64,
    mstarts: I64,
    source_idx: U16,
    meta_idx: I32,
    payload_size: int,
    mask: U8,
    n_sources: int,
    n_metas: int,
    max_page_size: int,
    next_page_id: int,
    live: npt.NDArray[np.bool_],
    size: I64,
    dtypes: U8 | None = None,
    page_dtype: U8 | None = None,
    itemsize: I64 | None = None,
) -> int:
    """Check rows ``[lo, hi)`` (:func:`prepare_rows` writing nothing) and return the worst
    status found."""
    u32 = np.empty(0, np.uint32)
    status, _ = prepare_rows(
        lo, hi, lo, page_ids, offsets, lengths, kinds, pstarts, plens, mstarts, source_idx,
        meta_idx, payload_size, mask, n_sources, n_metas, max_page_size, next_page_id, live,
        size, False, None, u32, u32, mask[:0], u32, None, u32, dtypes, page_dtype, itemsize,
    )  # fmt: skip
    return status


@njit(cache=True, nogil=True)
def prepare_rows(
    lo: int,
    hi: int,
    chk: int,
    page_ids: I64,
    offsets: I64,
    lengths: I64,
    kinds: U8,
    pstarts: I64,
    plens: I64,
    mstarts: I64,
    source_idx: U16,
    meta_idx: I32,
    payload_size: int,
    mask: U8,
    n_sources: int,
    n_metas: int,
    max_page_size: int,
    next_page_id: int,
    live: npt.NDArray[np.bool_],
    size: I64,
    masked: bool,
    col_pid: U64 | None,
    col_off: U32,
    col_len: U32,
    col_kind: U8,
    col_plen: U32,
    epoch: I64 | None,
    col_epoch: U32,
    dtypes: U8 | None = None,
    page_dtype: U8 | None = None,
    itemsize: I64 | None = None,
) -> tuple[int, bool]:
    """One pass over rows ``[lo, hi)`` of a batch: check those from ``chk`` on; unless
    ``col_pid`` is None, write their log frame columns (and, when ``masked``, the kind and
    payload-length columns); unless ``epoch`` (the page table's column) is None, give each
    row its page's next epoch, in row order, into ``col_epoch``. Returns (the worst status
    found, whether the payload pool holds the rows back to back, so the frame can use it
    as it is). A None is a type to numba: the loop it compiles for a caller that checks
    only has neither branch in it.

    The checks: structure (as ``DeltaBatch._check_structure``), then that each row targets
    a live page and fits inside it. Structure problems outrank page problems, which outrank
    bounds, as in the single-thread path. After a structure problem no later row is checked
    (nothing outranks it), but columns and epochs are still written for every row, so the
    caller takes back the epochs of all of them (:func:`undo_epochs_rows`). Epochs skip ids
    outside ``[1, next_page_id)``, as that function does.

    With ``dtypes`` (the batch's payload dtype codes), ``page_dtype`` (the page table's
    dtype column) and ``itemsize`` (by code, ``mmsb.types.DTYPE_ITEMSIZE``), also the typed
    rows: a row whose code is not 0 (raw bytes) must have its page's code and an offset and
    length that are multiples of the itemsize (``BAD_TYPE``). A code no page can have (out
    of the table: a structure problem, which the oracle names as such) matches no page, so
    it is ``BAD_TYPE`` too, and ``itemsize`` is only read for a code that matched. Left out
    (``None``: the caller knows every row is raw), numba compiles the loop without that
    branch, so raw batches pay nothing for it. Every page dtype's itemsize is a power of
    two: alignment is a mask, not a division. In this loop the type check adds about 0.6 ns
    per typed row; a separate pass took 2 ns (it streams page ids, offsets and lengths
    again), and a bounds check on the code here another 0.25 ns.

    One pass rather than three (epochs, checks, frame columns): the commit path is bound by
    reading the batch's columns, and each is read once here. The structure rules are
    written out rather than shared with :func:`mmsb.engine.kernels.structure_ok` through a
    per-row helper: the helper (inlined by numba or by LLVM) made the one-worker commit of
    16 B deltas about 40 % slower (19 -> 11.5 M/s). The tests hold both kernels and the
    numpy rules to the same answers."""
    worst = OK
    contiguous = True
    msize = mask.size
    last = page_ids.size
    for i in range(lo, hi):
        p = page_ids[i]
        off = offsets[i]
        n = lengths[i]
        k = kinds[i]
        ps = pstarts[i]
        pl = plens[i]
        if col_pid is not None:
            col_pid[i] = np.uint64(p)
            col_off[i] = np.uint32(off)
            col_len[i] = np.uint32(n)
            if masked:
                col_kind[i] = k
                col_plen[i] = np.uint32(pl)
            if i + 1 < last and ps + pl != pstarts[i + 1]:
                contiguous = False
        if epoch is not None and 0 < p < next_page_id:
            e = epoch[p] + 1
            epoch[p] = e
            col_epoch[i] = np.uint32(e)
        if i < chk or worst == BAD_STRUCTURE:
            continue
        if p <= 0 or k > 2 or off < 0 or n <= 0 or off + n > max_page_size:
            worst = BAD_STRUCTURE
            continue
        if ps < 0 or pl < 0 or ps + pl > payload_size:
            worst = BAD_STRUCTURE
            continue
        if k != 2 and pl != n:
            worst = BAD_STRUCTURE
            continue
        if source_idx[i] >= n_sources or meta_idx[i] < -1 or meta_idx[i] >= n_metas:
            worst = BAD_STRUCTURE
            continue
        if k != 0:
            ms = mstarts[i]
            if ms < 0 or ms + n > msize:
                worst = BAD_STRUCTURE
                continue
            if k == 2:
                bits = 0
                for j in range(n):
                    if mask[ms + j]:
                        bits += 1
                if bits != pl:
                    worst = BAD_STRUCTURE
                    continue
        if p >= next_page_id or not live[p]:
            worst = max(worst, BAD_PAGE)
        elif off + n > size[p]:
            worst = max(worst, PAST_END)
        elif dtypes is not None and page_dtype is not None and itemsize is not None:
            t = dtypes[i]
            if t != 0 and (page_dtype[p] != t or ((off | n) & (itemsize[t] - 1)) != 0):
                worst = max(worst, BAD_TYPE)
    return worst, contiguous


@njit(cache=True, nogil=True)
def undo_epochs_rows(limit: int, epoch: I64, page_ids: I64) -> None:
    """Take back the epochs :func:`prepare_rows` or :func:`epochs_rows` gave
    (one step back per row whose id is in ``[1, limit)``)."""
    for i in range(page_ids.size):
        p = page_ids[i]
        if 0 < p < limit:
            epoch[p] -= 1


@njit(cache=True, nogil=True)
def epochs_rows(lo: int, hi: int, limit: int, epoch: I64, page_ids: I64, col_epoch: U32) -> None:
    """Give rows ``[lo, hi)`` their pages' next epochs, in row order, as :func:`prepare_rows`
    does (ids outside ``[1, limit)`` are skipped). With several workers the first share
    runs this over the rows the others check and encode: it reads one column, so it costs
    about a ninth of the one pass over the same rows (0.08 against 0.71 ms for 100,000
    rows), and only this thread writes the epoch column (two threads writing interleaved
    entries of it measured 4x slower, from false sharing)."""
    for i in range(lo, hi):
        p = page_ids[i]
        if 0 < p < limit:
            e = epoch[p] + 1
            epoch[p] = e
            col_epoch[i] = np.uint32(e)


@njit(cache=True, nogil=True)
def pack_mask_rows(
    lo: int,
    hi: int,
    mstarts: I64,
    lengths: I64,
    kinds: U8,
    bit_starts: I64,
    mask: U8,
    out: U8,
) -> None:
    """Pack the mask bits of masked rows ``[lo, hi)`` into ``out`` (MSB first, as
    ``numpy.packbits``). ``bit_starts[i]`` is row i's first bit in the packed stream;
    shares must start on byte boundaries (the driver picks such split points)."""
    for i in range(lo, hi):
        if kinds[i] == 0:
            continue
        b = bit_starts[i]
        ms = mstarts[i]
        n = lengths[i]
        j = 0
        if b % 8 == 0:  # whole bytes at a time, branch-free
            while j + 8 <= n:
                v = 0
                for q in range(8):
                    v = (v << 1) | (1 if mask[ms + j + q] != 0 else 0)
                out[(b + j) >> 3] = np.uint8(v)
                j += 8
        while j < n:
            if mask[ms + j]:
                out[(b + j) >> 3] |= np.uint8(0x80 >> ((b + j) & 7))
            j += 1
