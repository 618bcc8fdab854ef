"""The multi-worker commit engine against the single-thread codec and the dict model."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb.delta import Delta
from mmsb.engine import driver
from mmsb.errors import InvalidArgumentError, InvalidDeltaError, PageNotFoundError
from mmsb.storage import codec
from mmsb.storage.log import list_segments
from mmsb.writer import stages as commit
from naive import Model, assert_matches


class Clock:
    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 7
        return self.now


@pytest.fixture(autouse=True)
def small_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let small test batches be cut into several shares."""
    monkeypatch.setattr(driver, "MIN_ROWS_PER_WORKER", 4)


class _DirtyNumpy:
    """numpy as :mod:`mmsb.writer.stages` sees it, with ``empty`` returning memory full of
    0xFF: a padding byte the frame builder forgets to zero then shows in every run."""

    def __getattr__(self, name: str) -> object:
        return getattr(np, name)

    @staticmethod
    def empty(shape: object, dtype: object = float) -> np.ndarray:
        out = np.empty(shape, dtype)  # type: ignore[call-overload]
        out.view(np.uint8)[...] = 0xFF
        return out


@pytest.fixture
def dirty_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "np", _DirtyNumpy())


def random_batch(rng: np.random.Generator, ids: list[int], size: int, n: int) -> mmsb.DeltaBatch:
    """Mixed shapes, sources and metadata; pages repeat so row order matters."""
    deltas = []
    for _ in range(n):
        pid = int(rng.choice(ids))
        length = int(rng.integers(1, 24))
        off = int(rng.integers(0, size - length + 1))
        data = rng.integers(0, 256, length, dtype=np.uint8)
        mask = rng.random(length) < 0.5
        kind = int(rng.integers(0, 3))
        source = str(rng.choice(["api", "sim", "net"]))
        meta = None if rng.random() < 0.7 else {"k": int(rng.integers(0, 3))}
        if kind == 0:
            deltas.append(Delta.range(pid, data, off, source=source, metadata=meta))
        elif kind == 1:
            deltas.append(Delta.dense(pid, mask, data, off, source=source, metadata=meta))
        else:
            deltas.append(Delta.sparse(pid, mask, data[mask], off, source=source, metadata=meta))
    return mmsb.DeltaBatch.from_deltas(deltas)


def _join(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in pieces)


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
@pytest.mark.parametrize("kind", ["mixed", "range", "uniform-range", "one-meta"])
@pytest.mark.usefixtures("dirty_memory")
def test_frame_payload_equals_codec(workers: int, kind: str) -> None:
    rng = np.random.default_rng(workers)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(40, 64).tolist()
        state = bus._state
        assert state is not None
        for _ in range(5):
            if kind == "mixed":
                batch = random_batch(rng, ids, 64, 200)
            else:
                pids = rng.choice(ids, 300)
                offs = rng.integers(0, 48, 300)
                if kind == "range":
                    rows = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in
                            rng.integers(1, 16, 300)]  # fmt: skip
                    batch = mmsb.DeltaBatch.from_ranges(pids, offs, rows)
                elif kind == "one-meta":  # one metadata entry; some rows have none
                    data = rng.integers(0, 256, (300, 16), dtype=np.uint8)
                    batch = mmsb.DeltaBatch.concat([
                        mmsb.DeltaBatch.from_ranges(pids[:120], offs[:120], data[:120]),
                        mmsb.DeltaBatch.from_ranges(pids[120:], offs[120:], data[120:],
                                                    metadata={"k": 1}),
                    ])  # fmt: skip
                else:
                    data = rng.integers(0, 256, (300, 16), dtype=np.uint8)
                    batch = mmsb.DeltaBatch.from_ranges(pids, offs, data)
            before = state.epoch.copy()
            prepared = commit.prepare(state, batch, workers, 17)
            after = state.epoch.copy()
            state.epoch[:] = before
            epochs = state.assign_epochs(batch.page_ids)
            assert np.array_equal(state.epoch, after)
            expected = _join(codec.encode_batch(batch, epochs, 17))
            assert _join(prepared.pieces) == expected
            assert prepared.epoch_col.tolist() == epochs.tolist()


def test_non_contiguous_payload_pool_is_gathered() -> None:
    with mmsb.open(None) as bus:
        ids = bus.create_pages(8, 32)
        base = mmsb.DeltaBatch.from_ranges(ids, np.zeros(8, np.int64), [b"abcd"] * 8)
        # same rows, payload slices reversed inside the pool
        batch = mmsb.DeltaBatch(
            base.page_ids, base.offsets, base.lengths, base.kinds, base.pstarts[::-1].copy(),
            base.plens, base.mstarts, np.frombuffer(b"ABCDabcdEFGHefgh" * 2, np.uint8).copy(),
            base.mask, base.source_idx, base.sources, base.meta_idx, base.metas,
        )  # fmt: skip
        state = bus._state
        assert state is not None
        prepared = commit.prepare(state, batch, 2, 1)
        commit.undo(state, batch)
        epochs = state.assign_epochs(batch.page_ids)
        state.undo_epochs(batch.page_ids, epochs)
        assert _join(prepared.pieces) == _join(codec.encode_batch(batch, epochs, 1))


def _ranges(rng: np.random.Generator, ids: list[int], n: int, **kw: object) -> mmsb.DeltaBatch:
    """``n`` range rows of 1-15 bytes (payload sizes rarely a multiple of 8)."""
    rows = [bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(1, 16, n)]
    return mmsb.DeltaBatch.from_ranges(rng.choice(ids, n), rng.integers(0, 48, n), rows, **kw)


@pytest.mark.parametrize(
    "case",
    ["ranges", "one-source", "masks", "scattered", "empty", "first-empty", "one-meta", "workers"],
)
@pytest.mark.usefixtures("dirty_memory")
def test_a_frame_of_several_batches_equals_their_concatenation(case: str) -> None:
    """``prepare`` of a sequence of batches (a tick's input rows and derived rows) builds,
    without joining them, the frame of their :meth:`DeltaBatch.concat` (the oracle):
    same bytes, same epochs. Batches with masks, and several workers, join them first."""
    rng = np.random.default_rng(len(case))
    with mmsb.open(None) as bus:
        ids = bus.create_pages(40, 64).tolist()
        state = bus._state
        assert state is not None
        a = _ranges(rng, ids, 37)
        b = mmsb.DeltaBatch.concat(
            [_ranges(rng, ids, 25, source="propagation", metadata={"n": k}) for k in (1, 2)]
        )
        c = _ranges(rng, ids, 11, metadata={"n": 3})
        workers = 1
        if case == "ranges":  # a batch with two sources of its own
            c = mmsb.DeltaBatch.concat([c, _ranges(rng, ids, 5, source="other")])
        elif case == "one-source":  # no source column; a metadata column
            b = _ranges(rng, ids, 50, metadata={"n": 1})
        elif case == "masks":
            a = random_batch(rng, ids, 64, 60)
        elif case == "scattered":  # a pool whose rows are not back to back
            pool = np.concatenate([b.payload, b.payload])
            b = mmsb.DeltaBatch(
                b.page_ids, b.offsets, b.lengths, b.kinds, b.pstarts + b.payload.size,
                b.plens, b.mstarts, pool, b.mask, b.source_idx, b.sources, b.meta_idx,
                b.metas,
            )  # fmt: skip
        elif case == "empty":
            c = mmsb.DeltaBatch.empty()
        elif case == "first-empty":  # the frame's first row, and all, are the second's:
            # no source or metadata column, and the tables name the second batch's entries
            none = np.zeros(0, np.int64)
            a = mmsb.DeltaBatch.from_ranges(none, none, np.zeros((0, 4), np.uint8),
                                            metadata={"z": 0})  # fmt: skip
            b = _ranges(rng, ids, 25, source="propagation", metadata={"n": 1})
            c = _ranges(rng, ids, 11, source="propagation", metadata={"n": 1})
        elif case == "one-meta":  # one metadata entry, which some rows of the batch lack
            c = mmsb.DeltaBatch.concat([_ranges(rng, ids, 6, source="propagation"), c])
            b = _ranges(rng, ids, 9, source="propagation")
        elif case == "workers":
            workers = 3
        parts = [a, b, c]
        before = state.epoch.copy()
        prepared = commit.prepare(state, parts, workers, 17, checked=len(a))
        after = state.epoch.copy()
        commit.undo(state, parts)
        assert np.array_equal(state.epoch, before)
        whole = mmsb.DeltaBatch.concat(parts)
        epochs = state.assign_epochs(whole.page_ids)
        assert np.array_equal(state.epoch, after)
        assert _join(prepared.pieces) == _join(codec.encode_batch(whole, epochs, 17))
        assert prepared.epoch_col.tolist() == epochs.tolist()
        state.epoch[:] = before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=4), st.lists(st.text(), max_size=4))
def test_the_frame_string_table_is_the_json_encoders(sources: list[str], metas: list[str]) -> None:
    """The frame builder joins the string table from each string's JSON form; the oracle is
    ``json.dumps`` as the codec's encoder calls it (quotes, controls, non-ASCII, lone
    surrogates included)."""
    want = json.dumps({"s": sources, "m": metas}, separators=(",", ":")).encode()
    assert commit._table(sources, metas) == want


def test_a_bad_row_in_a_later_batch_is_refused_and_changes_nothing() -> None:
    """Rows past ``checked`` are checked in every batch of the sequence; the error counts
    rows within the batch that holds the bad one, and no epoch stays assigned."""
    rng = np.random.default_rng(5)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(40, 64).tolist()
        state = bus._state
        assert state is not None
        a, b = _ranges(rng, ids, 20), _ranges(rng, ids, 20)
        bad = mmsb.DeltaBatch.from_ranges([ids[0]], [62], [b"xyz"])  # past the page's end
        before = state.epoch.copy()
        for later, row in ((mmsb.DeltaBatch.concat([b, bad]), 20),
                           (mmsb.DeltaBatch.concat([bad, b]), 0)):  # fmt: skip
            with pytest.raises(InvalidDeltaError, match="reach past the end") as err:
                commit.prepare(state, [a, later], 1, 1, checked=20)
            assert err.value.rows == [row]
        assert np.array_equal(state.epoch, before)
        prepared = commit.prepare(state, [mmsb.DeltaBatch.concat([a, bad]), b], 1, 1,
                                  checked=21)  # fmt: skip
        assert len(prepared.pieces) > 0  # the bad row was among those checked before


def _run(path: Path, workers: int, seed: int) -> tuple[str, list[bytes], Model]:
    rng = np.random.default_rng(seed)
    model = Model()
    with mmsb.open(path, sync="off", clock=Clock()) as bus:
        ids = bus.create_pages(30, 48).tolist()
        for _ in range(30):
            model.create(48)
        for _ in range(12):
            batch = random_batch(rng, ids, 48, 150)
            bus.apply_batch(batch, workers=workers)
            model.apply_batch(batch)
        assert_matches(bus, model)
        digest = bus.state_hash()
    logs = [Path(p).read_bytes() for _, p in list_segments(os.path.join(path, "log"))]
    return digest, logs, model


def test_same_state_and_log_for_every_worker_count(tmp_path: Path) -> None:
    one = _run(tmp_path / "w1", 1, 3)
    for workers in (2, 4):
        other = _run(tmp_path / f"w{workers}", workers, 3)
        assert other[0] == one[0]
        assert other[1] == one[1]  # byte-identical log segments


def test_multi_worker_log_replays_to_the_same_state(tmp_path: Path) -> None:
    digest, _, model = _run(tmp_path / "b", 3, 9)
    with mmsb.open(tmp_path / "b", readonly=True) as again:
        assert again.state_hash() == digest
        assert_matches(again, model)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_rejected_batch_changes_nothing(tmp_path: Path, workers: int) -> None:
    rng = np.random.default_rng(0)
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(10, 32).tolist()
        bus.apply_batch(random_batch(rng, ids, 32, 50), workers=workers)
        state = bus._state
        assert state is not None
        epochs, lsn, h = state.epoch.copy(), bus.lsn, bus.state_hash()
        good = random_batch(rng, ids, 32, 60)
        bad_page = mmsb.DeltaBatch.concat(
            [good, mmsb.DeltaBatch.from_ranges([999], [0], [b"x"]), good]
        )
        with pytest.raises(PageNotFoundError, match=r"target unknown or deleted pages \[999\]"):
            bus.apply_batch(bad_page, workers=workers)
        past_end = mmsb.DeltaBatch.concat(
            [good, mmsb.DeltaBatch.from_ranges([ids[0]], [30], [b"xyz"])]
        )
        with pytest.raises(InvalidDeltaError, match="reach past the end of their page"):
            bus.apply_batch(past_end, workers=workers)
        broken = mmsb.DeltaBatch(
            good.page_ids, good.offsets, good.lengths, good.kinds, good.pstarts + 10**6,
            good.plens, good.mstarts, good.payload, good.mask, good.source_idx,
            good.sources, good.meta_idx, good.metas,
        )  # fmt: skip
        with pytest.raises(InvalidDeltaError, match="payload slice outside the pool"):
            bus.apply_batch(broken, workers=workers)
        assert np.array_equal(state.epoch, epochs)
        assert bus.lsn == lsn and bus.state_hash() == h


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_skips_only_the_rows_checked_before(tmp_path: Path, workers: int) -> None:
    """``checked=k``: the first k rows (a tick's input rows, checked when the tick began)
    are not checked again; every later row still is."""
    rng = np.random.default_rng(3)
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        ids = bus.create_pages(10, 32).tolist()
        state = bus._state
        assert state is not None
        epochs = state.epoch.copy()
        good = random_batch(rng, ids, 32, 20_000)  # enough rows for two shares
        bad = mmsb.DeltaBatch.from_ranges([ids[0]], [30], [b"xyz"])  # past the page's end
        first = mmsb.DeltaBatch.concat([bad, good])
        prepared = commit.prepare(state, first, workers, 1, checked=1)
        assert len(prepared.pieces) > 0
        commit.undo(state, first)
        with pytest.raises(InvalidDeltaError, match="reach past the end of their page"):
            commit.prepare(state, first, workers, 1)
        last = mmsb.DeltaBatch.concat([good, bad])
        with pytest.raises(InvalidDeltaError, match="reach past the end of their page"):
            commit.prepare(state, last, workers, 1, checked=len(good))
        assert np.array_equal(state.epoch, epochs)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_changes_nothing(monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """Out of space when the frame is appended, before the arena changes: the bus stays
    usable and nothing changed."""
    rng = np.random.default_rng(1)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(10, 32).tolist()
        state, log = bus._state, bus._committer.log
        assert state is not None and log is not None
        epochs, h, lsn = state.epoch.copy(), bus.state_hash(), bus.lsn

        def full(*args: object, **kwargs: object) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(log, "append", full)
        batch = random_batch(rng, ids, 32, 2000)
        with pytest.raises(OSError, match="No space"):
            bus.apply_batch(batch, workers=workers)
        assert np.array_equal(state.epoch, epochs)
        assert bus.state_hash() == h and bus.lsn == lsn
        monkeypatch.undo()
        bus.apply_batch(batch, workers=workers)  # space again: the same batch goes through
        assert bus.lsn == lsn + 1


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", 65])
def test_workers_must_be_a_sensible_integer(bad: object) -> None:
    with mmsb.open(None) as bus:
        pid = bus.create_page(8)
        with pytest.raises(InvalidArgumentError, match="workers must be"):
            bus.apply_batch(mmsb.DeltaBatch.from_ranges([pid], [0], [b"x"]), workers=bad)  # type: ignore[arg-type]


def test_effective_workers_and_splits() -> None:
    assert driver.effective_workers(4, 3) == 1
    assert driver.effective_workers(4, 100) == 4
    rows = driver.row_splits(10, 3)
    assert rows[0][0] == 0 and rows[-1][1] == 10
    assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
    for n, parts in ((100_000, 2), (100_000, 4), (20, 3), (7, 7)):
        shares = commit._weighted_rows(n, parts)
        assert shares[0][0] == 0 and shares[-1][1] == n and len(shares) == parts
        assert all(a[1] == b[0] for a, b in itertools.pairwise(shares))
    first, second = commit._weighted_rows(100_000, 2)
    assert first[1] - first[0] < second[1] - second[0]  # the epoch pass's share is shorter
    e = commit._EPOCH_COST  # the first share's rows and epochs cost what the second's rows do
    assert first[1] + e * (100_000 - first[1]) == pytest.approx(second[1] - second[0], rel=1e-3)


def test_epochs_rows_against_a_python_oracle() -> None:
    from mmsb.engine import commit_kernels as ck

    rng = np.random.default_rng(5)
    limit = 300
    page_ids = rng.integers(-2, limit + 3, 5000).astype(np.int64)  # some outside [1, limit)
    epoch = rng.integers(0, 50, limit).astype(np.int64)
    for lo, hi in ((0, 5000), (1234, 4321), (700, 700)):
        want_epoch, want_col = epoch.copy(), np.zeros(page_ids.size, np.uint32)
        for i in range(lo, hi):
            p = int(page_ids[i])
            if 0 < p < limit:
                want_epoch[p] += 1
                want_col[i] = want_epoch[p]
        got_epoch, col = epoch.copy(), np.zeros(page_ids.size, np.uint32)
        ck.epochs_rows(lo, hi, limit, got_epoch, page_ids, col)
        assert np.array_equal(got_epoch, want_epoch) and np.array_equal(col, want_col)
        ck.undo_epochs_rows(limit, got_epoch, page_ids[lo:hi])
        assert np.array_equal(got_epoch, epoch)


@pytest.mark.parametrize("seed", range(4))
def test_apply_in_pages_is_the_apply_of_its_page_range(seed: int) -> None:
    """Each worker's share (a page-id range, rows in row order) against the one-thread
    apply of just those rows; the shares together against the whole batch's apply."""
    from mmsb.engine import kernels

    rng = np.random.default_rng(seed)
    limit, size = 64, 32
    n = int(rng.integers(1, 3 * kernels.APPLY_BLOCK))  # one block or several
    pages = rng.integers(1, limit, n).astype(np.int64)
    offs = rng.integers(0, size - 4, n).astype(np.int64)
    lens = rng.integers(1, 5, n).astype(np.int64)
    kinds = rng.integers(0, 3, n).astype(np.uint8)
    mask = (rng.random(int(lens.sum())) < 0.5).astype(np.uint8)
    mstarts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    bits = [int(mask[m : m + k].sum()) for m, k in zip(mstarts, lens, strict=True)]
    plens = np.where(kinds == 2, bits, lens)
    pstarts = np.concatenate([[0], np.cumsum(plens)[:-1]]).astype(np.int64)
    payload = rng.integers(0, 256, int(plens.sum())).astype(np.uint8)
    slots = np.arange(limit, dtype=np.int64) * size
    base = rng.integers(0, 256, limit * size).astype(np.uint8)
    cols = (pages, offs, lens, kinds, pstarts, mstarts, payload, mask)
    edges = [0, 1, 17, 18, 40, limit]  # an empty range, one page, the rest
    whole = base.copy()
    kernels.apply_rows(whole, slots, *cols)
    together = base.copy()
    for plo, phi in itertools.pairwise(edges):
        kernels.apply_in_pages(plo, phi, together, slots, *cols)
        one = base.copy()
        kernels.apply_in_pages(plo, phi, one, slots, *cols)
        keep = np.flatnonzero((pages >= plo) & (pages < phi))
        want = base.copy()
        kernels.apply_rows_in(keep, 0, keep.size, True, want, slots, *cols)
        assert np.array_equal(one, want), (plo, phi)
        outside = np.ones(limit, bool)
        outside[plo:phi] = False
        assert np.array_equal(one.reshape(limit, size)[outside],
                              base.reshape(limit, size)[outside])  # fmt: skip
    assert np.array_equal(together, whole)


def test_a_failing_share_still_waits_for_the_others() -> None:
    done: list[int] = []

    def share(i: int) -> int:
        if i == 0:
            raise ValueError("boom")
        done.append(i)
        return i

    with pytest.raises(ValueError, match="boom"):
        driver.run_shares(share, [(0,), (1,), (2,)])
    assert sorted(done) == [1, 2]


@pytest.mark.parametrize("workers", [1, 3])
def test_scattered_mask_pool_packs_like_the_codec(workers: int) -> None:
    """Masks not back to back in the pool take the kernel route (rows of odd lengths, so
    bit starts are not byte-aligned); the frame must still equal the codec's."""
    rng = np.random.default_rng(5)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(20, 64).tolist()
        base = random_batch(rng, ids, 64, 120)
        n = len(base)
        masked = np.flatnonzero(base.kinds)
        order = masked[::-1]  # store the masks in reverse row order, with gaps between
        pool = np.zeros(int(base.lengths[masked].sum()) + 3 * masked.size, np.uint8)
        mstarts = np.full(n, -1, np.int64)
        pos = 1
        for r in order.tolist():
            ln = int(base.lengths[r])
            pool[pos : pos + ln] = base.mask[base.mstarts[r] : base.mstarts[r] + ln]
            mstarts[r] = pos
            pos += ln + 2
        batch = mmsb.DeltaBatch(
            base.page_ids, base.offsets, base.lengths, base.kinds, base.pstarts, base.plens,
            mstarts, base.payload, pool, base.source_idx, base.sources, base.meta_idx,
            base.metas,
        )  # fmt: skip
        batch._check_structure()
        state = bus._state
        assert state is not None
        prepared = commit.prepare(state, batch, workers, 3)
        commit.undo(state, batch)
        epochs = state.assign_epochs(batch.page_ids)
        state.undo_epochs(batch.page_ids, epochs)
        assert _join(prepared.pieces) == _join(codec.encode_batch(batch, epochs, 3))
        model = Model()
        for _ in range(20):
            model.create(64)
        bus.apply_batch(batch, workers=workers)
        model.apply_batch(batch)
        assert_matches(bus, model)


def test_throughput_target_runner_measures_and_checks(tmp_path: Path) -> None:
    from mmsb.validation import throughput
    from mmsb.validation.runner import Context

    ctx = Context(str(tmp_path), seed=1, size="quick", progress=None)
    params = {"deltas": 200_000, "dense_deltas": 200_000, "batch": 50_000,
              "check_batches": 2, "seed": 1}  # fmt: skip
    out = throughput.run(ctx, params)
    f = out.figures
    assert f["same_state_and_log_1_vs_2_workers"] is True
    for key in ("single_deltas_per_s", "two_workers_deltas_per_s", "dense64_deltas_per_s",
                "floor_deltas_per_s", "seed_workload_deltas_per_s"):  # fmt: skip
        assert f[key] > 0
    # the speed-up is the median of the paired runs, read against the machine's ceiling
    assert f["speedup_2_workers"] == pytest.approx(float(np.median(f["speedup_ratios"])), 1e-2)
    assert len(f["speedup_ratios"]) == len(f["ceiling_ratios"]) == 5
    # each round's speed-up is read against the ceiling measured in the same round
    rounds = zip(f["speedup_ratios"], f["ceiling_ratios"], f["fractions_of_ceiling"], strict=True)
    for speedup, ceiling, fraction in rounds:
        assert fraction == pytest.approx(speedup / ceiling, rel=2e-2)
    assert f["fraction_of_ceiling"] == pytest.approx(
        float(np.median(f["fractions_of_ceiling"])), rel=1e-2
    )
    assert len(f["log_mb_per_s_1_worker"]) == 5 and min(f["log_mb_per_s_1_worker"]) > 0
    # the dense run's log write: its share, and the rates read from it
    share, cap = f["dense64_log_write_share"], f["dense64_log_write_cap"]
    assert 0 < share < 1 and cap > f["dense64_deltas_per_s"]
    assert f["dense64_deltas_per_s"] == pytest.approx(cap * share, rel=2e-2)
    assert "the log write alone caps it at" in out.summary
    assert isinstance(f["speedup_reliable"], bool)
    # the log write's share of the 1-worker legs caps the speed-up (Amdahl's law)
    s = f["log_write_share_1_worker"]
    assert 0 < s < 1
    assert f["bound_log_write"] == pytest.approx(1 / (s + (1 - s) / 2), rel=2e-2)
    assert 1 < f["bound_log_write"] <= 2
    assert f["fraction_of_bound"] == pytest.approx(
        f["speedup_2_workers"] / f["bound_log_write"], rel=2e-2
    )
    assert "caps it at" in out.summary
    assert f["speedup_2_workers_one_pair"] == pytest.approx(
        f["two_workers_deltas_per_s"] / f["single_deltas_per_s"], rel=1e-2
    )
    assert {r["conditions"]["workers"] for r in f["runs"] if "workers" in r["conditions"]} == {
        1, 2
    }  # fmt: skip
    assert "2 workers" in out.summary and "sync=normal" in out.notes[0]
    assert out.correct is True


def test_bench_command_writes_a_table_and_json(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from mmsb.cli import cli

    out = tmp_path / "bench.json"
    res = CliRunner().invoke(cli, ["bench", "--suite", "engine", "--scale", "0.01",
                                   "--json", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "2 worker(s)" in res.output and "floor" in res.output
    doc = json.loads(out.read_text())
    assert doc["machine"]["cpus"] >= 1
    assert len(doc["results"]) == 8 and "speedup_2_workers" in doc["summary"]
    assert "fraction_of_ceiling" in doc["summary"] and "fraction_of_bound" in doc["summary"]
    assert all(r["conditions"] and r["value"] > 0 for r in doc["results"])
    bad = CliRunner().invoke(cli, ["bench", "--scale", "0"])
    assert bad.exit_code == 2


def test_a_share_that_raises_leaves_no_epoch_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsb.engine import commit_kernels as ck
    from mmsb.engine.jit import load

    load(ck.__name__)  # compiled first: loading replaces the module's kernels
    real = ck.prepare_rows

    def flaky(lo: int, hi: int, *rest: object) -> tuple[int, bool]:
        if lo > 0:
            raise RuntimeError("share failed")
        return real(lo, hi, *rest)  # type: ignore[no-any-return]

    rng = np.random.default_rng(2)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(30, 32).tolist()
        state = bus._state
        assert state is not None
        before, h = state.epoch.copy(), bus.state_hash()
        monkeypatch.setattr(ck, "prepare_rows", flaky)
        with pytest.raises(RuntimeError, match="share failed"):
            bus.apply_batch(random_batch(rng, ids, 32, 100), workers=3)
        assert np.array_equal(state.epoch, before)
        assert bus.state_hash() == h


def test_a_later_batch_whose_kernel_raises_leaves_no_epoch_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One share over several batches: each batch's call gives its rows their epochs.
    When the second call raises before it ran, the first batch's epochs are taken back
    and the second batch's pages keep theirs (nothing was assigned to take back)."""
    from mmsb.engine import commit_kernels as ck
    from mmsb.engine.jit import load

    load(ck.__name__)  # compiled first: loading replaces the module's kernels
    real = ck.prepare_rows
    calls = [0]

    def flaky(*args: object) -> tuple[int, bool]:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("second batch failed")
        return real(*args)  # type: ignore[no-any-return]

    rng = np.random.default_rng(3)
    with mmsb.open(None) as bus:
        ids = bus.create_pages(30, 64).tolist()
        state = bus._state
        assert state is not None
        bus.apply_batch(_ranges(rng, ids, 50))  # epochs above zero on most pages
        before = state.epoch.copy()
        a, b = _ranges(rng, ids, 20), _ranges(rng, ids, 20)
        monkeypatch.setattr(ck, "prepare_rows", flaky)
        with pytest.raises(RuntimeError, match="second batch failed"):
            commit.prepare(state, [a, b], 1, state.next_delta_id)
        assert calls[0] == 2
        assert np.array_equal(state.epoch, before)


def test_an_interrupted_apply_closes_the_bus_and_reopening_finishes_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame is logged, then the apply is interrupted: the bus stops as after a crash
    and recovery replays the logged commit in full."""
    rng = np.random.default_rng(4)
    path = tmp_path / "b"
    batch = None
    with mmsb.open(path) as bus:
        ids = bus.create_pages(16, 64).tolist()
        batch = random_batch(rng, ids, 64, 500)
        with mmsb.open(None) as twin:  # the same commits, uninterrupted
            twin.create_pages(16, 64)
            twin.apply_batch(batch)
            want = twin.state_hash()

        def interrupted(*args: object) -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(commit, "apply", interrupted)
        with pytest.raises(KeyboardInterrupt):
            bus.apply_batch(batch)
        assert bus.closed
        with pytest.raises(mmsb.BusClosedError, match="KeyboardInterrupt"):
            bus.read(ids[0])
    monkeypatch.undo()
    with mmsb.open(path) as again:
        assert again.lsn == 2 and again.state_hash() == want
