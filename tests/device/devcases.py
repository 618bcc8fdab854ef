"""Random cases for the device tests, and the host kernels they are compared with."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.delta import Delta
from mmsb.device.apply import apply_rows_device
from mmsb.device.arena import DeviceArena
from mmsb.engine import kernels

I64 = npt.NDArray[np.int64]


def random_pages(rng: np.random.Generator, n: int, max_size: int) -> tuple[I64, I64, int]:
    """Slots and sizes of pages 1..n laid out 8-aligned with random gaps (row 0 unused);
    the arena end."""
    sizes = np.zeros(n + 1, np.int64)
    slots = np.zeros(n + 1, np.int64)
    pos = 0
    for p in range(1, n + 1):
        pos += 8 * int(rng.integers(0, 3))
        sizes[p] = int(rng.integers(1, max_size + 1))
        slots[p] = pos
        pos += (int(sizes[p]) + 7) // 8 * 8
    return slots, sizes, pos


def _delta(rng: np.random.Generator, pid: int, off: int, n: int, kinds: tuple[int, ...]) -> Delta:
    data = rng.integers(0, 256, n).astype(np.uint8)
    kind = int(rng.choice(kinds))
    if kind == 0:
        return Delta.range(pid, data, off)
    mask = (rng.random(n) < rng.random()).astype(np.uint8)
    mask[int(rng.integers(0, n))] = 1  # a sparse delta needs one set bit
    if kind == 1:
        return Delta.dense(pid, mask, data, off)
    return Delta.sparse(pid, mask, data[: int(mask.sum())], off)


def overlapping_batch(
    rng: np.random.Generator, sizes: I64, rows: int, kinds: tuple[int, ...] = (0, 1, 2),
    max_len: int = 40, pages: int | None = None,
) -> DeltaBatch:  # fmt: skip
    """Rows on a few pages at a few offsets, so many rows overlap (whole pages too)."""
    n_pages = sizes.size - 1
    choice = rng.choice(np.arange(1, n_pages + 1), size=min(pages or n_pages, n_pages),
                        replace=False)  # fmt: skip
    deltas = []
    for _ in range(rows):
        pid = int(rng.choice(choice))
        size = int(sizes[pid])
        if rng.random() < 0.1:
            off, n = 0, size  # a dense page write: every byte
        else:
            off = int(rng.integers(0, min(size, 4 * max_len)) // 4 * 4) % size
            n = int(rng.integers(1, min(max_len, size - off) + 1))
        deltas.append(_delta(rng, pid, off, n, kinds))
    return DeltaBatch.from_deltas(deltas)


def disjoint_batch(
    rng: np.random.Generator, sizes: I64, rows_per_page: int, *, shuffle: bool,
    kinds: tuple[int, ...] = (0, 1, 2),
) -> DeltaBatch:  # fmt: skip
    """Rows that share no byte: each page cut into spans, some spans written."""
    deltas = []
    for pid in range(1, sizes.size):
        size = int(sizes[pid])
        cuts = np.unique(rng.integers(1, size, min(rows_per_page, size - 1))) if size > 1 else []
        edges = [0, *[int(c) for c in cuts], size]
        for a, b in itertools.pairwise(edges):
            if rng.random() < 0.7:
                deltas.append(_delta(rng, pid, a, b - a, kinds))
    if shuffle:
        deltas = [deltas[i] for i in rng.permutation(len(deltas))]
    return DeltaBatch.from_deltas(deltas)


def columns(b: DeltaBatch) -> tuple[Any, ...]:
    return (b.page_ids, b.offsets, b.lengths, b.kinds, b.pstarts, b.mstarts, b.payload, b.mask)


def host_apply(arena: npt.NDArray[np.uint8], slots: I64, b: DeltaBatch) -> None:
    kernels.apply_rows(arena, slots, *columns(b))


def device_apply(arena: DeviceArena, slots: I64, b: DeltaBatch, **kw: Any) -> str:
    return apply_rows_device(arena, slots, *columns(b), **kw)


def rows_overlap(b: DeltaBatch) -> bool:
    """Slow oracle: whether two rows of one page share a byte (pairwise)."""
    n = len(b)
    for x in range(n):
        for y in range(x + 1, n):
            if b.page_ids[x] == b.page_ids[y]:
                lo = max(b.offsets[x], b.offsets[y])
                hi = min(b.offsets[x] + b.lengths[x], b.offsets[y] + b.lengths[y])
                if lo < hi:
                    return True
    return False


def random_bytes(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint8]:
    return rng.integers(0, 256, n).astype(np.uint8)
