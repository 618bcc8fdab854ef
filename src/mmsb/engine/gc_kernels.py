"""Compiled kernels of the garbage collector (arrays and scalars only).

Compaction rule, shared by the live collector and by replay of RELAYOUT frames: the page
that ends at the arena end moves to the first free gap (lowest address) that holds it and
lies below it; the space it leaves, with any free gap just below, becomes the new end.
Repeating the rule packs the arena from the top down, and each step is O(1) array work
for equal-sized pages (gaps are consumed from the front, the end shrinks from the back).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mmsb.engine.jit import njit

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
B = npt.NDArray[np.bool_]


@njit(cache=True, nogil=True)
def plan_moves(
    order: I64,
    slot: I64,
    size: I64,
    gap_start: I64,
    gap_len: I64,
    g0: int,
    g_end: int,
    end: int,
    max_moves: int,
    expected: I64,
    check: bool,
    out_ids: I64,
    out_old: I64,
    out_new: I64,
) -> tuple[int, int, int, int]:
    """Apply the compaction rule to the pages of ``order``, in order, updating ``slot``
    and the live gap window ``gap_*[g0:g_end]`` in place (no bytes move here).

    Stops at the first page that is not at the top or has no gap below it, after
    ``max_moves`` moves, or (``check``) where the computed slot differs from
    ``expected``. Returns (moves, g0, g_end, end); the moves are in ``out_*``.
    """
    count = 0
    for k in range(order.size):
        if count >= max_moves:
            break
        p = order[k]
        a = (size[p] + 7) // 8 * 8
        s = slot[p]
        if s + a != end:
            break
        j = g0
        while j < g_end and gap_len[j] < a:
            j += 1
        if j == g_end or gap_start[j] >= s:
            break
        d = gap_start[j]
        if check and d != expected[k]:
            break
        gap_start[j] += a
        gap_len[j] -= a
        while g0 < g_end and gap_len[g0] == 0:
            g0 += 1
        slot[p] = d
        out_ids[count] = p
        out_old[count] = s
        out_new[count] = d
        count += 1
        end = s
        while g_end > g0 and gap_len[g_end - 1] == 0:
            g_end -= 1
        if g_end > g0 and gap_start[g_end - 1] + gap_len[g_end - 1] == end:
            end = gap_start[g_end - 1]
            g_end -= 1
    return count, g0, g_end, end


@njit(cache=True, nogil=True)
def move_bytes(arena: U8, old: I64, new: I64, sizes: I64) -> None:
    """Copy each moved page to its new slot, in order, and zero the slot it left."""
    for i in range(old.size):
        o = np.uint64(old[i])
        d = np.uint64(new[i])
        n = np.uint64(sizes[i])
        a = (n + np.uint64(7)) // np.uint64(8) * np.uint64(8)
        for j in range(n):
            arena[d + j] = arena[o + j]
        for j in range(a):
            arena[o + j] = 0


@njit(cache=True, nogil=True)
def top_candidates(
    slot: I64, size: I64, live: B, lo: int, hi: int, limit: int, out: I64, stats: I64
) -> int:
    """Ids in ``[lo, hi)`` of live pages that end above ``limit`` (they must move for the
    arena to pack below it). Returns how many; keeps ``stats[0]`` the lowest slot and
    ``stats[1]`` the smallest aligned size among all candidates seen so far."""
    c = 0
    for p in range(lo, hi):
        a = (size[p] + 7) // 8 * 8
        if live[p] and slot[p] + a > limit:
            out[c] = p
            c += 1
            stats[0] = min(stats[0], slot[p])
            stats[1] = min(stats[1], a)
    return c


@njit(cache=True, nogil=True)
def take(values: I64, index: I64, out: I64) -> None:
    """``out[i] = values[index[i]]`` without holding the GIL."""
    for i in range(index.size):
        out[i] = values[index[i]]


@njit(cache=True, nogil=True)
def refresh_access(lo: int, hi: int, epoch: I64, seen: U32, last: U32, now: int) -> None:
    """Mark pages in ``[lo, hi)`` written since the last look (epoch changed) as accessed
    ``now``."""
    for p in range(lo, hi):
        e = np.uint32(epoch[p] & 0xFFFFFFFF)
        if e != seen[p]:
            seen[p] = e
            last[p] = np.uint32(now)


@njit(cache=True, nogil=True)
def mark_hot(
    lo: int,
    hi: int,
    slot: I64,
    size: I64,
    live: B,
    last: U32,
    cutoff: int,
    os_page: int,
    hot: U8,
) -> int:
    """Mark in ``hot`` (one byte per OS page of the arena) every OS page that a live page
    of ``[lo, hi)`` accessed after ``cutoff`` overlaps. Returns the cold live pages seen."""
    cold = 0
    for p in range(lo, hi):
        if not live[p]:
            continue
        if last[p] <= cutoff:
            cold += 1
            continue
        first = slot[p] // os_page
        stop = (slot[p] + size[p] - 1) // os_page
        for q in range(first, min(stop + 1, hot.size)):
            hot[q] = 1
    return cold


@njit(cache=True, nogil=True)
def cold_spans(hot: U8, lo: int, hi: int, out_start: I64, out_len: I64) -> int:
    """Runs of unmarked OS pages in ``[lo, hi)`` as (first page, page count); returns how
    many runs were written."""
    c = 0
    q = lo
    while q < hi:
        if hot[q]:
            q += 1
            continue
        s = q
        while q < hi and not hot[q]:
            q += 1
        out_start[c] = s
        out_len[c] = q - s
        c += 1
    return c


@njit(cache=True, nogil=True)
def order_by_bucket(ids: I64, slot: I64, base: int, width: int, buckets: I64, out: I64) -> int:
    """Write ``ids`` into ``out`` by slot, highest first, through a direct-address table:
    with ``width`` at most the smallest page's aligned size, no two pages start in the same
    bucket, so one pass places them and one pass over ``buckets`` reads them back in order.
    ``buckets`` must hold -1 everywhere. Returns the number written (``ids.size``)."""
    for k in range(ids.size):
        buckets[(slot[ids[k]] - base) // width] = ids[k]
    c = 0
    for b in range(buckets.size - 1, -1, -1):
        if buckets[b] >= 0:
            out[c] = buckets[b]
            c += 1
    return c
