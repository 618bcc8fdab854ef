"""The compiled byte-diff used for propagation cutoff and the byte move, against numpy."""

from __future__ import annotations

import numpy as np
import pytest

from mmsb.engine import propkernels as pk


def oracle(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    d = np.flatnonzero(a != b)
    return (-1, -1) if d.size == 0 else (int(d[0]), int(d[-1]) + 1)


@pytest.mark.parametrize("seed", range(4))
def test_diff_matches_oracle(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(2000):
        n = int(rng.integers(1, 80))
        a = rng.integers(0, 256, n).astype(np.uint8)
        b = a.copy()
        for _ in range(int(rng.integers(0, 4))):
            b[rng.integers(0, n)] ^= np.uint8(rng.integers(1, 256))
        pad = (n + 7) // 8 * 8 + 8
        big_a = np.zeros(pad, np.uint8)
        big_b = np.zeros(pad, np.uint8)
        big_a[:n], big_b[:n] = a, b
        assert pk._diff(big_a, 0, big_b, 0, n) == oracle(a, b)
        # offsets that are not 8-aligned (word loads across alignment)
        c, d = np.zeros(pad + 3, np.uint8), np.zeros(pad + 5, np.uint8)
        c[3 : 3 + n], d[5 : 5 + n] = a, b
        assert pk._diff(c, 3, d, 5, n) == oracle(a, b)


def test_diff_at_offsets() -> None:
    a = np.zeros(64, np.uint8)
    b = np.zeros(64, np.uint8)
    b[16 + 9] = 1
    b[16 + 20] = 2
    assert pk._diff(a, 16, b, 16, 24) == (9, 21)
    assert pk._diff(a, 0, b, 0, 16) == (-1, -1)
    assert pk.diff_range(a, b) == (25, 37)
    # bytes just outside the compared range do not count
    assert pk._diff(a, 26, b, 26, 10) == (-1, -1)


@pytest.mark.parametrize("seed", range(3))
def test_gather_ranges_matches_numpy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src = rng.integers(0, 256, 4096).astype(np.uint8)
    n = 300
    starts = rng.integers(0, 4000, n).astype(np.int64)
    lengths = rng.integers(0, 96, n).astype(np.int64)
    lengths = np.minimum(lengths, src.size - starts)
    out = np.full(int(lengths.sum()) + 7, 0xAB, np.uint8)
    pk.gather_ranges(src, starts, lengths, out)
    want = np.concatenate([src[s : s + k] for s, k in zip(starts, lengths, strict=True)])
    assert np.array_equal(out[: want.size], want)
    assert (out[want.size :] == 0xAB).all()  # nothing written past the ranges


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("items", [(1, 2, 4, 8), (1, 3, 8, 12)])  # masks; also divisions
def test_changed_rows_matches_numpy(seed: int, items: tuple[int, ...]) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    changed = (rng.random(n) < 0.4).astype(np.uint8)
    item = rng.choice(np.array(items, np.int64), n)
    child = rng.permutation(10 * n)[:n].astype(np.int64)
    size = 64
    lo = rng.integers(0, size, n).astype(np.int64)
    hi = np.minimum(lo + rng.integers(1, size, n), size).astype(np.int64)
    stage_off = np.arange(n, dtype=np.int64) * size
    n_meta = 9
    meta_of = rng.integers(0, n_meta - 2, n).astype(np.int32)  # entries 7 and 8 unused
    rows, pages, offsets, lengths, starts, pstarts, meta_idx, names = pk.changed_rows(
        changed, child, item, lo, hi, stage_off, meta_of, n_meta
    )
    # the oracle: the same columns from numpy calls
    want = np.flatnonzero(changed)
    it = item[want]
    a = lo[want] // it * it
    b = -(-hi[want] // it) * it
    assert np.array_equal(rows, want)
    assert np.array_equal(pages, child[want])
    assert np.array_equal(offsets, a)
    assert np.array_equal(lengths, b - a)
    assert np.array_equal(starts, stage_off[want] + a)
    assert np.array_equal(pstarts, np.concatenate(([0], np.cumsum(b - a)[:-1])))
    present = np.unique(meta_of[want])
    assert np.array_equal(names, present)
    assert np.array_equal(meta_idx, np.searchsorted(present, meta_of[want]))
    none = pk.changed_rows(np.zeros(n, np.uint8), child, item, lo, hi, stage_off, meta_of, 9)
    assert all(c.size == 0 for c in none)
