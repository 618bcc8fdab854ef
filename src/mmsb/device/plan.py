"""The host side of a device apply: each row's arena address, and which kernel may run.

:func:`plan_rows` computes ``bases[i] = slot[page_ids[i]] + offsets[i]`` and decides
whether the batch is *provably disjoint* (no two rows share a byte). Slots of different
pages never overlap, so only rows of one page can; the proof is, in order of cost:

1. rows sorted by arena address, each starting at or after the previous one's end (one
   pass; batches built in page and offset order, the common case, stop here);
2. otherwise the rows grouped by page (a counting sort, stable, so each group keeps batch
   order) and each group's spans checked in offset order (sorted only where the batch
   did not already list the group's rows by offset).

A disjoint batch may run the one-thread-per-row kernel; any other runs the ordered kernel
over the groups of step 2. This module is CPU code (numba's CPU compiler, no numba.cuda).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mmsb.engine.jit import njit

I64 = npt.NDArray[np.int64]
_EMPTY = np.zeros(0, np.int64)


@dataclass(frozen=True)
class RowPlan:
    """What a device apply needs besides the batch columns."""

    bases: I64  # per row: arena byte address of its first byte
    disjoint: bool  # proved: no two rows share a byte
    order: I64  # rows grouped by page, batch order inside a group (empty if not grouped)
    gstarts: I64  # group g is order[gstarts[g]:gstarts[g + 1]]
    end: int  # one past the highest arena byte any row touches (0 for no rows)
    spanned: int  # bytes spanned by all rows together (overlaps counted again)

    @property
    def grouped(self) -> bool:
        return self.gstarts.size > 0


@njit(cache=True, nogil=True)
def _bases(
    slots: I64, page_ids: I64, offsets: I64, lengths: I64, bases: I64
) -> tuple[bool, int, int]:
    """Fill ``bases``; return (rows in increasing, non-overlapping address order, max end,
    total length)."""
    sorted_ok = True
    prev_end = np.int64(-1)
    end = np.int64(0)
    total = np.int64(0)
    for i in range(page_ids.size):
        b = slots[page_ids[i]] + offsets[i]
        bases[i] = b
        e = b + lengths[i]
        end = max(end, e)
        total += lengths[i]
        if b < prev_end:
            sorted_ok = False
        prev_end = e
    return sorted_ok, int(end), int(total)


@njit(cache=True, nogil=True)
def _group(page_ids: I64, offsets: I64, lengths: I64) -> tuple[I64, I64, bool]:
    """Rows grouped by page id (stable counting sort); the starts of the non-empty groups;
    whether no two rows of any group overlap."""
    n = page_ids.size
    limit = 0
    for i in range(n):
        limit = max(limit, page_ids[i] + 1)
    count = np.zeros(limit + 1, np.int64)
    for i in range(n):
        count[page_ids[i] + 1] += 1
    groups = 0
    for p in range(limit):
        if count[p + 1] > 0:
            groups += 1
        count[p + 1] += count[p]
    order = np.empty(n, np.int64)
    fill = count[:limit].copy()
    for i in range(n):
        p = page_ids[i]
        order[fill[p]] = i
        fill[p] += 1
    gstarts = np.empty(groups + 1, np.int64)
    g = 0
    for p in range(limit):
        if count[p + 1] > count[p]:
            gstarts[g] = count[p]
            g += 1
    gstarts[groups] = n
    disjoint = True
    for g in range(groups):
        lo, hi = gstarts[g], gstarts[g + 1]
        prev_end = np.int64(-1)
        in_order = True
        for t in range(lo, hi):
            i = order[t]
            if offsets[i] < prev_end:
                in_order = False
                break
            prev_end = offsets[i] + lengths[i]
        if in_order:
            continue
        rows = order[lo:hi]
        offs = offsets[rows]
        by_offset = rows[np.argsort(offs)]
        for t in range(1, by_offset.size):
            a, b = by_offset[t - 1], by_offset[t]
            if offsets[b] < offsets[a] + lengths[a]:
                disjoint = False
                break
        if not disjoint:
            break
    return order, gstarts, disjoint


def plan_rows(slots: I64, page_ids: I64, offsets: I64, lengths: I64) -> RowPlan:
    """The plan of a validated batch (every page live, every row inside its page)."""
    n = int(page_ids.size)
    if n == 0:
        return RowPlan(_EMPTY, True, _EMPTY, _EMPTY, 0, 0)
    page_ids = np.ascontiguousarray(page_ids, np.int64)
    offsets = np.ascontiguousarray(offsets, np.int64)
    lengths = np.ascontiguousarray(lengths, np.int64)
    bases = np.empty(n, np.int64)
    sorted_ok, end, total = _bases(np.ascontiguousarray(slots, np.int64), page_ids, offsets,
                                   lengths, bases)  # fmt: skip
    if sorted_ok:
        return RowPlan(bases, True, _EMPTY, _EMPTY, int(end), int(total))
    order, gstarts, disjoint = _group(page_ids, offsets, lengths)
    return RowPlan(bases, bool(disjoint), order, gstarts, int(end), int(total))


def grouped(plan: RowPlan, page_ids: I64, offsets: I64, lengths: I64) -> RowPlan:
    """``plan`` with its rows grouped by page (for the ordered kernel)."""
    if plan.grouped or page_ids.size == 0:
        return plan
    order, gstarts, _ = _group(
        np.ascontiguousarray(page_ids, np.int64), np.ascontiguousarray(offsets, np.int64),
        np.ascontiguousarray(lengths, np.int64),
    )  # fmt: skip
    return RowPlan(plan.bases, plan.disjoint, order, gstarts, plan.end, plan.spanned)
