"""Helpers of the cluster tests: a numpy oracle and random batches."""

from __future__ import annotations

import numpy as np

import mmsb
from mmsb.delta import DENSE, RANGE, SPARSE


class Oracle:
    """Every page's bytes as a numpy array, changed row by row as a commit would."""

    def __init__(self) -> None:
        self.pages: dict[int, np.ndarray] = {}

    def create(self, ids: np.ndarray, size: int) -> None:
        for p in ids.tolist():
            self.pages[p] = np.zeros(size, np.uint8)

    def apply(self, batch: mmsb.DeltaBatch) -> None:
        for d in batch:
            page = self.pages[d.page_id]
            data = np.frombuffer(bytes(d.payload), np.uint8)
            if d.shape == RANGE:
                page[d.offset : d.offset + data.size] = data
                continue
            mask = np.asarray(d.mask, bool)
            where = d.offset + np.flatnonzero(mask)
            if d.shape == DENSE:
                page[where] = data[mask]
            else:
                assert d.shape == SPARSE
                page[where] = data

    def rows(self, ids: np.ndarray, dtype: str) -> np.ndarray:
        return np.stack([self.pages[int(p)] for p in ids]).view(dtype)


def random_batch(
    rng: np.random.Generator, ids: np.ndarray, size: int, rows: int
) -> mmsb.DeltaBatch:
    """Range, dense and sparse rows on random pages at random offsets (raw bytes)."""
    deltas = []
    for _ in range(rows):
        p = int(rng.choice(ids))
        off = int(rng.integers(0, size - 8))
        n = int(rng.integers(1, min(32, size - off) + 1))
        kind = rng.integers(0, 3)
        data = rng.integers(0, 256, n, dtype=np.uint8)
        if kind == 0:
            deltas.append(mmsb.Delta.range(p, data, off))
        else:
            mask = rng.integers(0, 2, n).astype(np.uint8)
            mask[0] = 1
            if kind == 1:
                deltas.append(mmsb.Delta.dense(p, mask, data, off))
            else:
                deltas.append(mmsb.Delta.sparse(p, mask, data[: int(mask.sum())], off))
    return mmsb.DeltaBatch.from_deltas(deltas)


def fill(ids: np.ndarray, value: float) -> mmsb.DeltaBatch:
    """Every element of the float64 pages ``ids`` (8 elements each) set to ``value``."""
    return mmsb.DeltaBatch.from_ranges(ids, np.zeros(ids.size, np.int64),
                                       np.full((ids.size, 8), value, np.float64))  # fmt: skip
