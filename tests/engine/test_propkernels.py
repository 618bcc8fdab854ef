"""The compiled byte-diff used for propagation cutoff, against a numpy oracle."""

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
        wa, wb = big_a.view(np.uint64), big_b.view(np.uint64)
        assert pk._diff(big_a, wa, 0, big_b, wb, 0, n) == oracle(a, b)
        # the byte-wise path (offsets not 8-aligned) against the same oracle
        c, d = np.zeros(pad + 3, np.uint8), np.zeros(pad + 5, np.uint8)
        c[3 : 3 + n], d[5 : 5 + n] = a, b
        got = pk._diff_bytes(c, c[:0].view(np.uint64), 3, d, d[:0].view(np.uint64), 5, n)
        assert got == oracle(a, b)


def test_diff_at_offsets() -> None:
    a = np.zeros(64, np.uint8)
    b = np.zeros(64, np.uint8)
    b[16 + 9] = 1
    b[16 + 20] = 2
    wa, wb = a.view(np.uint64), b.view(np.uint64)
    assert pk._diff(a, wa, 16, b, wb, 16, 24) == (9, 21)
    assert pk._diff(a, wa, 0, b, wb, 0, 16) == (-1, -1)
