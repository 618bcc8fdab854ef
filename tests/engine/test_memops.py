"""The memory intrinsics (byte move, unaligned word load, prefetch) and the gather that asks
for later rows early, against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from mmsb.engine import kernels, memops
from mmsb.engine import propkernels as pk


@pytest.mark.parametrize("seed", range(3))
def test_gather_slots_matches_numpy(seed: int) -> None:
    """Slices at random places, some shorter than the prefetch distance in rows and some
    empty, concatenated as numpy would; nothing written past the total."""
    rng = np.random.default_rng(seed)
    arena = rng.integers(0, 256, 1 << 16).astype(np.uint8)
    for n in (0, 1, memops.PREFETCH_ROWS - 1, memops.PREFETCH_ROWS, 500):
        starts = rng.integers(0, arena.size - 64, n).astype(np.int64)
        lengths = rng.integers(0, 64, n).astype(np.int64)
        out = np.full(int(lengths.sum()) + 5, 0xEE, np.uint8)
        kernels.gather_slots(arena, starts, lengths, out)
        parts = [arena[s : s + k] for s, k in zip(starts, lengths, strict=True)]
        want = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
        assert np.array_equal(out[: want.size], want)
        assert (out[want.size :] == 0xEE).all()


def test_a_prefetch_past_the_array_is_harmless() -> None:
    """The last rows prefetch nothing past the end, and a slice ending at the arena's end
    is read whole (a prefetch is a hint: it never faults)."""
    arena = np.arange(4096, dtype=np.int64).astype(np.uint8)
    starts = np.array([4096 - 16, 0, 4096 - 1], np.int64)
    lengths = np.array([16, 3, 1], np.int64)
    out = np.empty(20, np.uint8)
    kernels.gather_slots(arena, starts, lengths, out)
    assert np.array_equal(out, np.concatenate([arena[-16:], arena[:3], arena[-1:]]))


def test_move_and_word_loads_at_odd_offsets() -> None:
    src = np.arange(64, dtype=np.uint8)
    dst = np.zeros(64, np.uint8)
    pk.gather_ranges(src, np.array([3, 40], np.int64), np.array([9, 0], np.int64), dst[5:])
    assert np.array_equal(dst[5:14], src[3:12]) and not dst[:5].any() and not dst[14:].any()
    a = np.zeros(40, np.uint8)
    b = a.copy()
    b[13] = 1  # inside the second 8-byte word read at offset 5
    assert pk._diff(a, 5, b, 5, 30) == (8, 9)
    assert pk._diff(a, 14, b, 14, 26) == (-1, -1)


def test_same_live_pages_against_numpy() -> None:
    """``read_many``'s one-pass check against the numpy checks it replaced (the oracle):
    ids outside ``(0, limit)`` or of dead pages first, then any size or dtype differing
    from the first page's."""
    rng = np.random.default_rng(4)
    limit = 50
    for _ in range(400):
        live = rng.random(limit + 10) < 0.9
        size = rng.choice([16, 16, 16, 32], limit + 10).astype(np.int64)
        dtype = rng.choice([0, 0, 0, 9], limit + 10).astype(np.uint8)
        ids = rng.integers(-2, limit + 3, int(rng.integers(0, 6))).astype(np.int64)
        inside = (ids > 0) & (ids < limit)
        ok = np.zeros(ids.size, bool)
        ok[inside] = live[ids[inside]]
        if not ok.all():
            want = 1
        elif ids.size and (np.unique(size[ids]).size > 1 or np.unique(dtype[ids]).size > 1):
            want = 2
        else:
            want = 0
        assert kernels.same_live_pages(ids, limit, live, size, dtype) == want
