"""The batch structure rules are stated three times, on purpose: ``DeltaBatch._structure``
(numpy, names the failing rows: the slow oracle), ``kernels.structure_ok`` (compiled yes/no)
and ``commit_kernels.check_rows`` (compiled, fused with the page checks on the commit path;
sharing a per-row helper cost 40 % of the commit rate). These tests hold the three to the
same answer on random, randomly damaged batches."""

from __future__ import annotations

import numpy as np
import pytest

import mmsb
from mmsb.engine import commit_kernels as ck
from mmsb.engine.kernels import structure_ok
from mmsb.types import MAX_PAGE_SIZE

COLUMNS = ("page_ids", "offsets", "lengths", "pstarts", "plens", "mstarts")


def random_batch(rng: np.random.Generator) -> mmsb.DeltaBatch:
    deltas = []
    for _ in range(int(rng.integers(1, 12))):
        pid = int(rng.integers(1, 6))
        n = int(rng.integers(1, 24))
        off = int(rng.integers(0, 64))
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        shape = int(rng.integers(0, 3))
        if shape == 0:
            deltas.append(mmsb.Delta.range(pid, data, offset=off))
        else:
            mask = rng.integers(0, 2, n).astype(bool)
            mask[0] = True
            if shape == 1:
                deltas.append(mmsb.Delta.dense(pid, mask=mask, data=data, offset=off))
            else:
                sparse = bytes(data[i] for i in np.flatnonzero(mask))
                deltas.append(mmsb.Delta.sparse(pid, mask=mask, data=sparse, offset=off))
    return mmsb.DeltaBatch.from_deltas(deltas)


def damage(batch: mmsb.DeltaBatch, rng: np.random.Generator) -> None:
    """Change one cell of one column to a value that may or may not break a rule."""
    col = getattr(batch, COLUMNS[int(rng.integers(0, len(COLUMNS)))])
    row = int(rng.integers(0, col.size))
    col[row] = int(col[row]) + int(rng.choice([-200, -30, -1, 1, 3, 40, MAX_PAGE_SIZE]))


def verdicts(batch: mmsb.DeltaBatch) -> tuple[bool, bool, bool]:
    oracle = batch.structure_problem() is None
    fast = bool(
        structure_ok(batch.page_ids, batch.offsets, batch.lengths, batch.kinds, batch.pstarts,
                     batch.plens, batch.mstarts, batch.payload.size, batch.mask, MAX_PAGE_SIZE)
    )  # fmt: skip
    n = len(batch)
    live = np.ones(64, bool)  # every page id below 64 is live and large: only structure counts
    size = np.full(64, MAX_PAGE_SIZE, np.int64)
    status = ck.check_rows(
        0, n, batch.page_ids, batch.offsets, batch.lengths, batch.kinds, batch.pstarts,
        batch.plens, batch.mstarts, batch.source_idx, batch.meta_idx, batch.payload.size,
        batch.mask, len(batch.sources), len(batch.metas), MAX_PAGE_SIZE, 64, live, size,
    )  # fmt: skip
    fused = status != ck.BAD_STRUCTURE
    # the same loop writing the frame columns and epochs as it checks comes to the same
    # status, and gives every row with a usable page id its epoch, the damaged ones too
    epoch = np.zeros(64, np.int64)
    cols = (np.zeros(n, np.uint64), np.zeros(n, np.uint32), np.zeros(n, np.uint32),
            np.zeros(n, np.uint8), np.zeros(n, np.uint32))  # fmt: skip
    col_ep = np.zeros(n, np.uint32)
    writing, _ = ck.prepare_rows(
        0, n, 0, batch.page_ids, batch.offsets, batch.lengths, batch.kinds, batch.pstarts,
        batch.plens, batch.mstarts, batch.source_idx, batch.meta_idx, batch.payload.size,
        batch.mask, len(batch.sources), len(batch.metas), MAX_PAGE_SIZE, 64, live, size, True,
        *cols, epoch, col_ep,
    )  # fmt: skip
    assert writing == status
    usable = (batch.page_ids > 0) & (batch.page_ids < 64)
    assert np.array_equal(epoch, np.bincount(batch.page_ids[usable], minlength=64))
    assert cols[0].tolist() == batch.page_ids.astype(np.uint64).tolist()
    return oracle, fast, fused


@pytest.mark.parametrize("seed", range(4))
def test_the_three_statements_of_the_rules_agree(seed: int) -> None:
    rng = np.random.default_rng(seed)
    broken = 0
    for _ in range(400):
        batch = random_batch(rng)
        assert verdicts(batch) == (True, True, True)
        damage(batch, rng)
        oracle, fast, fused = verdicts(batch)
        assert fast == oracle and fused == oracle, batch.structure_problem()
        broken += not oracle
    assert broken > 100  # the damage does break rules often, so disagreement would show


def test_a_rule_dropped_from_a_kernel_would_be_caught() -> None:
    """The sample is strong enough: a check that forgot one rule (the sparse rows' mask bit
    count) disagrees with the oracle on some damaged batch of the same generator."""
    rng = np.random.default_rng(0)

    def forgot_bit_count(b: mmsb.DeltaBatch) -> bool:
        dense = b.kinds.copy()
        dense[dense == 2] = 1  # judge sparse rows as dense ones: no bit count
        plens_ok = np.where(b.kinds == 2, b.lengths, b.plens)
        return bool(
            structure_ok(b.page_ids, b.offsets, b.lengths, dense, b.pstarts, plens_ok,
                         b.mstarts, b.payload.size, b.mask, MAX_PAGE_SIZE)
        )  # fmt: skip

    seen = 0
    for _ in range(400):
        batch = random_batch(rng)
        damage(batch, rng)
        if batch.kinds[0] == 2:
            batch.plens[0] += 1  # a sparse row whose payload no longer counts its mask bits
        seen += forgot_bit_count(batch) != (batch.structure_problem() is None)
    assert seen > 0
