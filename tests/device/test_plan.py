"""The host-side plan: the disjointness proof against a pairwise oracle (CPU only)."""

from __future__ import annotations

import numpy as np
import pytest
from devcases import disjoint_batch, overlapping_batch, random_pages, rows_overlap

from mmsb.device.plan import grouped, plan_rows


@pytest.mark.parametrize("seed", range(10))
def test_disjoint_exactly_when_no_two_rows_overlap(seed: int) -> None:
    rng = np.random.default_rng(seed)
    slots, sizes, _ = random_pages(rng, 8, 90)
    for _ in range(20):
        if rng.random() < 0.5:
            b = overlapping_batch(rng, sizes, int(rng.integers(1, 12)), max_len=20)
        else:
            b = disjoint_batch(rng, sizes, 3, shuffle=bool(rng.random() < 0.5))
        plan = plan_rows(slots, b.page_ids, b.offsets, b.lengths)
        assert plan.disjoint == (not rows_overlap(b))
        assert np.array_equal(plan.bases, slots[b.page_ids] + b.offsets)
        assert plan.end == int((plan.bases + b.lengths).max())
        g = grouped(plan, b.page_ids, b.offsets, b.lengths)
        # groups: each one page, rows in batch order, every row once
        assert sorted(g.order.tolist()) == list(range(len(b)))
        for lo, hi in zip(g.gstarts[:-1], g.gstarts[1:], strict=True):
            rows = g.order[lo:hi]
            assert hi > lo and len(set(b.page_ids[rows].tolist())) == 1
            assert np.all(np.diff(rows) > 0)
        assert len(set(b.page_ids.tolist())) == g.gstarts.size - 1


def test_touching_rows_are_disjoint_and_one_shared_byte_is_not() -> None:
    slots = np.array([0, 0, 64], np.int64)
    pids = np.array([1, 1, 2], np.int64)
    lengths = np.array([4, 4, 4], np.int64)
    assert plan_rows(slots, pids, np.array([4, 0, 0], np.int64), lengths).disjoint
    assert not plan_rows(slots, pids, np.array([3, 0, 0], np.int64), lengths).disjoint
    # different pages at the same offsets never overlap
    assert plan_rows(slots, np.array([2, 1], np.int64), np.zeros(2, np.int64),
                     np.array([8, 8], np.int64)).disjoint  # fmt: skip
