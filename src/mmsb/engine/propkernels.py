"""Compiled propagation kernel: recompute a tick's semiring pages in topological order.

Arrays and scalars only. Nodes are the derived pages of a propagation plan, in topological
order. Each node reads its parents either from the arena (pages not recomputed this tick)
or from the staging buffer (derived pages recomputed this tick whose bytes changed), writes
its new contents to its own staging slot, and compares them with its current bytes: only a
page whose bytes change marks its own children (cutoff). The kernel stops at the first node
it cannot run itself (a Python function, a user-defined semiring) that needs recomputing and
returns its position; the caller computes it and resumes.

Every kernel here but :func:`changed_rows` (which allocates its result) is compiled with
``refcounts=False`` (:mod:`mmsb.engine.jit`): the node loops call helpers per node, and
with numba's reference counting each such call cost more than the helper's own work
(``run_nodes`` of 4,096 eight-parent float64 nodes: 415 -> 320 us; ``stage_rows`` of 4,096
rows of 64 bytes: 142 -> 62 us).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmsb.engine import memops
from mmsb.engine.jit import njit

# numba intrinsics (mmsb.engine.memops), set before the first kernel here compiles
_numba_globals = memops.numba_globals
_move: Any = None
_load64: Any = None


# node kinds: built-in semiring codes 0..4 (see mmsb.semiring), then host-run nodes
HOST = 100
# dtype groups the kernel runs
G_BOOL, G_F32, G_F64 = 0, 1, 2


@njit(cache=True, nogil=True, refcounts=False)
def _apply(code: int, out: Any, o: int, src: Any, base: int, w: Any, j0: int, j1: int) -> None:
    """out[o+j] = out[o+j] ⊕ (w ⊗ src[base+j]) for j in [j0, j1); one tight loop per
    operation. min and max propagate NaN like numpy's."""
    if code == 4:  # SUM_PRODUCT: + and *
        for j in range(j0, j1):
            out[o + j] = out[o + j] + w * src[base + j]
    elif code == 1:  # MIN_PLUS: min and +
        for j in range(j0, j1):
            a = out[o + j]
            v = w + src[base + j]
            out[o + j] = a if (a <= v or a != a) else v
    elif code == 2:  # MAX_PLUS: max and +
        for j in range(j0, j1):
            a = out[o + j]
            v = w + src[base + j]
            out[o + j] = a if (a >= v or a != a) else v
    elif code == 3:  # MAX_MIN: max and min
        for j in range(j0, j1):
            a = out[o + j]
            x = src[base + j]
            v = w if (w <= x or w != w) else x
            out[o + j] = a if (a >= v or a != a) else v
    else:  # BOOLEAN over bytes: or and and (w is non-zero here)
        for j in range(j0, j1):
            if src[base + j] != 0:
                out[o + j] = 1


@njit(cache=True, nogil=True, refcounts=False)
def _fold(
    code: int, zero: Any, out: Any, o: int, arena: Any, stage: Any, a0s: Any, s0s: Any,
    fs: Any, slos: Any, shis: Any, ws: Any, k0: int, k1: int, e0: int, e1: int,
) -> None:  # fmt: skip
    """out[o+e0 : o+e1] = ⊕_k (ws[k] ⊗ parent_k[e0:e1]). A parent recomputed this pass is
    read from its staging slot inside the elements it computed, [slos, shis), and from the
    arena elsewhere: up to three contiguous segments per parent."""
    for j in range(e0, e1):
        out[o + j] = zero
    for k in range(k0, k1):
        w = ws[k]
        if code == 0 and w == 0:
            continue  # BOOLEAN: false ⊗ x is false, the identity of ⊕
        if not fs[k]:  # the parent's current bytes are all in the arena
            _apply(code, out, o, arena, a0s[k], w, e0, e1)
            continue
        m0 = min(max(e0, slos[k]), e1)
        m1 = max(min(e1, shis[k]), m0)
        _apply(code, out, o, arena, a0s[k], w, e0, m0)
        _apply(code, out, o, stage, s0s[k], w, m0, m1)
        _apply(code, out, o, arena, a0s[k], w, m1, e1)


@njit(cache=True, nogil=True, refcounts=False)
def _sum_product(
    zero: Any, out: Any, o: int, arena: Any, slot: Any, ppage: Any, ws: Any, k0: int, k1: int,
    sh: int, e0: int, e1: int,
) -> None:  # fmt: skip
    """out[o+e0 : o+e1] = Σ_k ws[k] · parent_k[e0:e1], every parent read from the arena at
    its slot (``sh``: log2 of the itemsize). Four running sums, four elements at a time, so
    that their additions overlap; each element still gets the same additions in the same
    order as :func:`_fold`'s. Unsigned indices: no negative-index check per load."""
    j = e0
    while j + 4 <= e1:
        c0 = c1 = c2 = c3 = zero
        for k in range(k0, k1):
            w = ws[k]
            b = np.uint64((slot[ppage[k]] >> sh) + j)
            c0 = c0 + w * arena[b]
            c1 = c1 + w * arena[b + np.uint64(1)]
            c2 = c2 + w * arena[b + np.uint64(2)]
            c3 = c3 + w * arena[b + np.uint64(3)]
        out[o + j] = c0
        out[o + j + 1] = c1
        out[o + j + 2] = c2
        out[o + j + 3] = c3
        j += 4
    for jr in range(j, e1):
        acc = zero
        for k in range(k0, k1):
            acc = acc + ws[k] * arena[(slot[ppage[k]] >> sh) + jr]
        out[o + jr] = acc


@njit(cache=True, nogil=True, refcounts=False)
def run_nodes(
    start: int,
    kind: Any,  # per node: semiring code or HOST
    group: Any,  # per node: dtype group
    zero64: Any,  # per node: the semiring zero as float64
    pptr: Any,  # node -> parent rows [pptr[i], pptr[i+1])
    ppage: Any,  # parent row -> page id
    pnode: Any,  # parent row -> node index, or -1 for an input page
    w32: Any,
    w64: Any,
    child: Any,  # node -> page id
    nbytes: Any,  # node -> page size in bytes
    stage_off: Any,  # node -> byte offset in the staging buffer (8-aligned)
    slot: Any,  # page table slot column (bytes, 8-aligned)
    mark: Any,  # uint8 by page id: changed this pass (small, so the scan stays in cache)
    mr: Any,  # (page ids, 2): a marked page's changed byte range [mr[p, 0], mr[p, 1])
    changed: Any,  # uint8 by node: recomputed and different
    lo: Any,  # by node: its changed byte range
    hi: Any,
    slo: Any,  # by node: the byte range of its staging slot that was computed
    shi: Any,
    arena8: Any,
    arena32: Any,
    arena64: Any,
    stage8: Any,
    stage32: Any,
    stage64: Any,
    a0s: Any,  # scratch, one per parent row
    s0s: Any,
    fs: Any,
    slos: Any,
    shis: Any,
) -> tuple[int, int]:
    """Run nodes from ``start``; return (position of the next host node to run, or the node
    count when done; nodes recomputed by the kernel).

    Element-wise nodes recompute only the elements inside the union of their parents'
    changed ranges: outside it no parent changed, so neither does the node."""
    n = kind.size
    recomputed = 0
    for i in range(start, n):
        k0, k1 = pptr[i], pptr[i + 1]
        rlo = nbytes[i]
        rhi = 0
        staged = False  # a parent recomputed this pass (so marked) whose bytes changed
        for k in range(k0, k1):
            p = ppage[k]
            if mark[p]:
                rlo = min(rlo, mr[p, 0])
                rhi = max(rhi, mr[p, 1])
                pn = pnode[k]
                if pn >= 0 and changed[pn]:
                    staged = True
        if rhi <= rlo:
            continue
        code = kind[i]
        if code == HOST:
            return i, recomputed
        g = group[i]
        so = stage_off[i]
        sh = 0 if g == G_BOOL else (2 if g == G_F32 else 3)  # log2 of the itemsize
        e0 = rlo >> sh
        e1 = min((rhi + (1 << sh) - 1) >> sh, nbytes[i] >> sh)
        if code == 4 and g != G_BOOL and not staged:  # the common case: its own loop
            if g == G_F32:
                _sum_product(np.float32(zero64[i]), stage32, so >> 2, arena32, slot, ppage,
                             w32, k0, k1, sh, e0, e1)  # fmt: skip
            else:
                _sum_product(zero64[i], stage64, so >> 3, arena64, slot, ppage, w64, k0, k1,
                             sh, e0, e1)  # fmt: skip
        else:
            for k in range(k0, k1):
                pn = pnode[k]
                a0s[k] = slot[ppage[k]] >> sh
                fs[k] = pn >= 0 and changed[pn] != 0
                if fs[k]:
                    s0s[k] = stage_off[pn] >> sh
                    slos[k] = slo[pn] >> sh
                    shis[k] = shi[pn] >> sh
            if g == G_BOOL:
                _fold(0, np.uint8(0), stage8, so, arena8, stage8, a0s, s0s, fs, slos, shis,
                      w64, k0, k1, e0, e1)  # fmt: skip
            elif g == G_F32:
                _fold(code, np.float32(zero64[i]), stage32, so >> 2, arena32, stage32, a0s,
                      s0s, fs, slos, shis, w32, k0, k1, e0, e1)  # fmt: skip
            else:
                _fold(code, zero64[i], stage64, so >> 3, arena64, stage64, a0s, s0s, fs,
                      slos, shis, w64, k0, k1, e0, e1)  # fmt: skip
        recomputed += 1
        b0 = e0 << sh
        b1 = e1 << sh
        slo[i] = b0
        shi[i] = b1
        first, end = _diff(stage8, so + b0, arena8, slot[child[i]] + b0, b1 - b0)
        if first >= 0:
            changed[i] = 1
            lo[i] = b0 + first
            hi[i] = b0 + end
            mark[child[i]] = 1
            mr[child[i], 0] = lo[i]
            mr[child[i], 1] = hi[i]
    return n, recomputed


@njit(cache=True, nogil=True, refcounts=False)
def mark_ranges(mark: Any, mr: Any, pages: Any, lo: Any, hi: Any) -> None:
    """Mark each row's page and widen its changed range [mr[p, 0], mr[p, 1]) to cover
    [lo, hi). The two ends of a page's range sit side by side: the scan over a node's
    parents reads one cache line per parent, not two."""
    for r in range(pages.size):
        p = pages[r]
        if not mark[p]:
            mark[p] = 1
            mr[p, 0] = lo[r]
            mr[p, 1] = hi[r]
        else:
            mr[p, 0] = min(mr[p, 0], lo[r])
            mr[p, 1] = max(mr[p, 1], hi[r])


@njit(cache=True, nogil=True, refcounts=False)
def _diff(a: Any, ao: int, b: Any, bo: int, size: int) -> tuple[int, int]:
    """First differing byte of a[ao:ao+size] and b[bo:bo+size] (uint8 arrays, any offsets)
    and one past the last one; (-1, -1) when equal. Whole 8-byte words are compared first,
    then the bytes of the first and last differing words."""
    nw = size >> 3
    first = -1
    for j in range(nw):
        if _load64(a, ao + 8 * j) != _load64(b, bo + 8 * j):
            first = 8 * j
            break
    if first < 0:
        for j in range(8 * nw, size):
            if a[ao + j] != b[bo + j]:
                first = j
                break
        if first < 0:
            return -1, -1
    while a[ao + first] == b[bo + first]:
        first += 1
    last = -1
    for j in range(size - 1, 8 * nw - 1, -1):
        if a[ao + j] != b[bo + j]:
            last = j
            break
    if last < 0:
        for j in range(nw - 1, -1, -1):
            if _load64(a, ao + 8 * j) != _load64(b, bo + 8 * j):
                last = 8 * j + 7
                break
        while a[ao + last] == b[bo + last]:
            last -= 1
    return first, last + 1


@njit(cache=True, nogil=True, refcounts=False)
def diff_range(a: Any, b: Any) -> tuple[int, int]:
    """First differing byte of two uint8 arrays of one size and one past the last one
    (-1, -1 when equal)."""
    return _diff(a, 0, b, 0, a.size)


@njit(cache=True, nogil=True, refcounts=False)
def gather_ranges(stage8: Any, starts: Any, lengths: Any, out: Any) -> None:
    pos = 0
    for i in range(starts.size):
        _move(out, pos, stage8, starts[i], lengths[i])
        pos += lengths[i]


@njit(cache=True, nogil=True, refcounts=False)
def gather_parents(
    arena8: Any, stage8: Any, slot: Any, size: Any, ppage: Any, pnode: Any, changed: Any,
    stage_off: Any, slo: Any, shi: Any, k0: int, k1: int, offs: Any, out: Any,
) -> None:  # fmt: skip
    """Copy the current bytes of parent rows ``[k0, k1)`` into ``out`` (row ``k`` at
    ``offs[k - k0]``): each parent's page from the arena, overlaid inside ``[slo, shi)``
    with its staging slot when it was recomputed (and changed) earlier in this pass."""
    for k in range(k0, k1):
        pos = offs[k - k0]
        p = ppage[k]
        pn = pnode[k]
        n = size[p]
        if pn >= 0 and changed[pn] != 0:  # [slo, shi) holds whole elements: 8-aligned or
            a, b = slo[pn], shi[pn]  # a float32's or a byte's
            _move(out, pos, arena8, slot[p], a)
            _move(out, pos + a, stage8, stage_off[pn] + a, b - a)
            _move(out, pos + b, arena8, slot[p] + b, n - b)
        else:
            _move(out, pos, arena8, slot[p], n)


@njit(cache=True, nogil=True)
def changed_rows(
    changed: Any, child: Any, item: Any, lo: Any, hi: Any, stage_off: Any, meta_of: Any,
    n_meta: int,
) -> tuple[Any, Any, Any, Any, Any, Any, Any, Any]:  # fmt: skip
    """The rows of a pass's batch, one per node whose bytes changed, in node order: (node
    index, page id, offset, length, staging offset, payload start, metadata index), and
    the metadata entries present (indices into the ``n_meta`` entries ``meta_of`` refers
    to, ascending; a row's metadata index counts among these). Each changed range
    ``[lo, hi)`` is widened to whole elements of ``item`` bytes."""
    m = 0
    for i in range(changed.size):
        if changed[i]:
            m += 1
    rows = np.empty(m, np.int64)
    pages = np.empty(m, np.int64)
    offsets = np.empty(m, np.int64)
    lengths = np.empty(m, np.int64)
    starts = np.empty(m, np.int64)
    pstarts = np.empty(m, np.int64)
    rank = np.zeros(n_meta, np.int32)
    r = 0
    pos = 0
    for i in range(changed.size):
        if changed[i]:
            rank[meta_of[i]] = 1
            it = item[i]
            if it & (it - 1) == 0:  # a power of two (every dtype's itemsize): masks, since
                a = lo[i] & -it  # a division by a number known only at run time costs
                b = (hi[i] + it - 1) & -it  # tens of cycles (48 -> 31 us for 8,192 rows)
            else:  # (no page dtype has such an itemsize today)
                a = lo[i] // it * it
                b = (hi[i] + it - 1) // it * it
            rows[r] = i
            pages[r] = child[i]
            offsets[r] = a
            lengths[r] = b - a
            starts[r] = stage_off[i] + a
            pstarts[r] = pos
            pos += b - a
            r += 1
    names = np.flatnonzero(rank)
    for k in range(names.size):
        rank[names[k]] = k
    meta_idx = np.empty(m, np.int32)
    for r in range(m):
        meta_idx[r] = rank[meta_of[rows[r]]]
    return rows, pages, offsets, lengths, starts, pstarts, meta_idx, names


@njit(cache=True, nogil=True, refcounts=False)
def dirty_nodes(
    i0: int, i1: int, pptr: Any, ppage: Any, nbytes: Any, mark: Any, mr: Any, dirty: Any,
) -> int:  # fmt: skip
    """``dirty[i - i0]`` = whether node ``i`` of ``[i0, i1)`` needs recomputing (a parent
    changed inside the node's span: the test :func:`run_nodes` applies); returns the count."""
    count = 0
    for i in range(i0, i1):
        rlo = nbytes[i]
        rhi = 0
        for k in range(pptr[i], pptr[i + 1]):
            p = ppage[k]
            if mark[p]:
                rlo = min(rlo, mr[p, 0])
                rhi = max(rhi, mr[p, 1])
        if rhi > rlo:
            dirty[i - i0] = 1
            count += 1
        else:
            dirty[i - i0] = 0
    return count


@njit(cache=True, nogil=True, refcounts=False)
def stage_rows(
    rows8: Any, i0: int, i1: int, dirty: Any, nbytes: Any, stage8: Any, stage_off: Any,
    arena8: Any, slot: Any, child: Any, changed: Any, lo: Any, hi: Any, slo: Any, shi: Any,
    mark: Any, mr: Any,
) -> None:  # fmt: skip
    """Stage row ``i - i0`` of ``rows8`` (one page of ``nbytes[i]`` bytes each, back to
    back) for every dirty node ``i`` of ``[i0, i1)``, compare it with the page's current
    bytes and mark the node and its page changed where they differ (as :func:`run_nodes`
    does for the nodes it computes)."""
    pos = 0
    for i in range(i0, i1):
        n = nbytes[i]
        if dirty[i - i0]:
            so = stage_off[i]
            _move(stage8, so, rows8, pos, n)
            slo[i] = 0
            shi[i] = n
            first, end = _diff(stage8, so, arena8, slot[child[i]], n)
            if first >= 0:
                changed[i] = 1
                lo[i] = first
                hi[i] = end
                mark[child[i]] = 1
                mr[child[i], 0] = first
                mr[child[i], 1] = end
        pos += n


def empty_scratch(n: int) -> tuple[Any, ...]:
    """Per-parent-row scratch columns for :func:`run_nodes`."""
    z = np.zeros(n, np.int64)
    return z, z.copy(), np.zeros(n, np.bool_), z.copy(), z.copy()
