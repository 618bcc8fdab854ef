"""The sharded bus against oracles: random batches against numpy, snapshots taken while a
writer commits, cross-shard ticks against a single bus, reopening."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from cluster_support import Oracle, fill, random_batch

import mmsb
from mmsb import semiring
from mmsb.cluster import ClusterBus, ClusterError, shard_of

pytestmark = pytest.mark.cluster


def test_random_batches_match_a_numpy_oracle(ray_cluster, tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    oracle = Oracle()
    with ClusterBus.create(tmp_path / "c", shards=3, address=ray_cluster.address) as cb:
        a = cb.create_pages(10, 256)
        b = cb.create_pages(5, 64, dtype="float64")
        oracle.create(a, 256)
        oracle.create(b, 64)
        assert sorted({cb.shard_of(int(p)) for p in a}) == [0, 1, 2]
        assert all(cb.shard_of(int(p)) == shard_of(int(p), 3) == (p - 1) % 3 for p in a)
        lsn, did = cb.lsn, 1
        for i in range(40):
            batch = random_batch(rng, a, 256, int(rng.integers(1, 30)))
            if i % 5 == 0:  # typed rows on the float64 pages
                vals = rng.normal(size=(b.size, 8))
                batch = mmsb.DeltaBatch.concat([batch, mmsb.DeltaBatch.from_ranges(
                    b, np.zeros(b.size, np.int64), vals)])  # fmt: skip
            c = cb.apply_batch(batch)
            oracle.apply(batch)
            assert (c.lsn, c.first_delta_id, c.count) == (lsn + 1, did, len(batch))
            lsn, did = c.lsn, did + len(batch)
            if i % 8 == 0:
                np.testing.assert_array_equal(cb.read_many(a), oracle.rows(a, "uint8"))
        np.testing.assert_array_equal(cb.read_many(a[::-1]), oracle.rows(a[::-1], "uint8"))
        np.testing.assert_array_equal(cb.read_many(b), oracle.rows(b, "float64"))
        for p in a[:4]:
            np.testing.assert_array_equal(cb.read(int(p)), oracle.pages[int(p)])
        assert cb.lsn == lsn and len(cb) == 15
        # bad input: typed errors, nothing logged
        with pytest.raises(mmsb.PageNotFoundError):
            cb.apply_batch(mmsb.DeltaBatch.from_ranges([99], [0], [b"x"]))
        with pytest.raises(mmsb.InvalidDeltaError):
            cb.apply_batch(mmsb.DeltaBatch.from_ranges([int(a[0])], [250], [b"0123456789"]))
        with pytest.raises(mmsb.InvalidDeltaError):
            cb.apply_batch(mmsb.DeltaBatch.from_ranges([int(b[0])], [0], [np.ones(2, np.int32)]))
        with pytest.raises(mmsb.InvalidArgumentError):
            cb.read_many([int(a[0]), int(b[0])])
        with pytest.raises(mmsb.PageNotFoundError):
            cb.read(0)
        assert cb.apply_batch(mmsb.DeltaBatch.empty()).count == 0
        assert cb.lsn == lsn
        st = cb.status()
        assert [s["applied"] for s in st] == [lsn] * 3  # every shard took part in the last


def test_snapshots_during_writes_see_one_global_lsn(ray_cluster, tmp_path: Path) -> None:
    with ClusterBus.create(tmp_path / "c", shards=3, address=ray_cluster.address) as cb:
        ids = cb.create_pages(9, 64, dtype="float64")
        base = cb.lsn
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                k = 0
                while not stop.is_set() and k < 400:
                    k += 1
                    cb.apply_batch(fill(ids, float(k)))  # one commit over all three shards
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        t = threading.Thread(target=writer)
        t.start()
        seen, mixed = [], 0
        try:
            for _ in range(25):
                with cb.snapshot() as s:
                    first = s.read_many(ids)
                    cb_now = cb.read_many(ids)  # a plain gather is one commit too
                    again = s.read_many(ids)  # the writer went on meanwhile
                    single = s.read(int(ids[4]))
                values = set(np.unique(first)) | set(np.unique(again)) | set(np.unique(single))
                mixed += len(values) != 1 or len(set(np.unique(cb_now))) != 1
                expect = float(s.lsn - base)
                assert values == {expect}, (values, s.lsn)
                seen.append(s.lsn)
        finally:
            stop.set()
            t.join(timeout=120)
        assert not errors, errors
        assert mixed == 0
        assert len(set(seen)) > 3  # the snapshots did fall between different commits


def _dag(rng: np.random.Generator, bus, ids: np.ndarray) -> None:
    """The same random derivations (semirings and Python functions, parents on any shard)
    on ``bus`` (a single bus or a cluster): inputs ids[:8], derived ids[8:]."""
    for i, child in enumerate(ids[8:].tolist()):
        pool = ids[: 8 + i]
        parents = [int(p) for p in rng.choice(pool, size=int(rng.integers(1, 4)), replace=False)]
        if i % 3 == 2:
            bus.derive(child, lambda *xs: np.tanh(sum(xs)) * 2.0, parents, name=f"fn{i}")
        else:
            ring = (semiring.SUM_PRODUCT, semiring.MIN_PLUS, semiring.MAX_MIN)[i % 3]
            weights = rng.uniform(0.5, 2.0, len(parents)).tolist()
            bus.derive_semiring(child, parents, ring, weights=weights)


def test_cross_shard_ticks_equal_the_single_bus(ray_cluster, tmp_path: Path) -> None:
    rng_c, rng_s, rng = (np.random.default_rng(3) for _ in range(3))
    with ClusterBus.create(tmp_path / "c", shards=3, address=ray_cluster.address) as cb, \
            mmsb.open(tmp_path / "single", sync="off") as single:  # fmt: skip
        ids = cb.create_pages(20, 64, dtype="float64")
        np.testing.assert_array_equal(single.create_pages(20, 64, dtype="float64"), ids)
        _dag(rng_c, cb, ids)
        _dag(rng_s, single, ids)
        cross = sum(any(cb.shard_of(p) != cb.shard_of(c) for p in single.graph.parents(c))
                    for c in ids[8:].tolist())  # fmt: skip
        assert cross >= 5
        for step in range(12):
            rows = rng.choice(ids[:8], size=int(rng.integers(1, 5)), replace=False)
            batch = mmsb.DeltaBatch.from_ranges(rows, np.zeros(rows.size, np.int64),
                                                rng.normal(size=(rows.size, 8)))  # fmt: skip
            if step % 4 == 3:  # a plain commit, propagated by the next tick
                cb.apply_batch(batch)
                single.apply_batch(batch)
                batch = None
            before = cb.lsn
            rep = cb.tick(batch)
            srep = single.tick(batch)
            np.testing.assert_array_equal(cb.read_many(ids), single.read_many(ids))
            assert rep.derived_deltas == srep.derived_deltas
            if rep.input_deltas or rep.derived_deltas:
                assert rep.lsn == before + 1  # inputs and derived pages: one global commit
            else:
                assert rep.lsn == before
        assert cb.tick().lsn == cb.lsn  # nothing pending: nothing committed
        expected = single.read_many(ids)
    # rebuilt from the global log alone (ticks included): no derivation runs
    shutil.rmtree(tmp_path / "c" / "local")
    with ClusterBus.open(tmp_path / "c", address=ray_cluster.address) as cb:
        assert {s["started_from"] for s in cb.status()} == {"empty"}
        np.testing.assert_array_equal(cb.read_many(ids), expected)


def test_a_failing_derivation_commits_nothing(ray_cluster, tmp_path: Path) -> None:
    with ClusterBus.create(tmp_path / "c", shards=2, address=ray_cluster.address) as cb:
        a, b, c = (int(p) for p in cb.create_pages(3, 64, dtype="float64"))
        cb.derive_semiring(c, [a, b], semiring.SUM_PRODUCT)
        cb.tick()
        with pytest.raises(mmsb.CycleError):
            cb.derive(a, lambda x: x, [c])

        def boom(x):
            raise RuntimeError("no")

        cb.derive(b, boom, [a], name="boom")
        lsn = cb.lsn
        with pytest.raises(mmsb.PropagationError) as info:
            cb.tick(fill(np.array([a]), 1.0))
        assert info.value.page == b and info.value.function == "boom"
        assert cb.lsn == lsn and cb.read(a).tolist() == [0.0] * 8
        cb.derive(b, lambda x: x * 3.0, [a], name="triple")
        cb.tick(fill(np.array([a]), 1.0))
        assert cb.read(c).tolist() == [4.0] * 8 and cb.lsn == lsn + 1


def test_reopen_after_shutdown_recovers_every_shard(ray_cluster, tmp_path: Path) -> None:
    path = tmp_path / "c"
    rng = np.random.default_rng(11)
    oracle = Oracle()
    with ClusterBus.create(path, shards=3, address=ray_cluster.address, sync="always") as cb:
        ids = cb.create_pages(12, 128)
        oracle.create(ids, 128)
        for i in range(10):
            batch = random_batch(rng, ids, 128, 12)
            cb.apply_batch(batch)
            oracle.apply(batch)
            if i == 4:
                cb.checkpoint()
        lsn = cb.lsn
    with ClusterBus.open(path, address=ray_cluster.address) as cb:
        assert cb.lsn == lsn and len(cb) == 12
        assert {s["started_from"] for s in cb.status()} == {"local"}
        np.testing.assert_array_equal(cb.read_many(ids), oracle.rows(ids, "uint8"))
        batch = random_batch(rng, ids, 128, 12)
        assert cb.apply_batch(batch).lsn == lsn + 1
        oracle.apply(batch)
    # every shard's local disk lost: each restores its checkpoint and replays the log
    shutil.rmtree(path / "local")
    with ClusterBus.open(path, address=ray_cluster.address) as cb:
        assert {s["started_from"] for s in cb.status()} == {"checkpoint"}
        np.testing.assert_array_equal(cb.read_many(ids), oracle.rows(ids, "uint8"))
    shutil.rmtree(path / "local")
    shutil.rmtree(path / "checkpoints")  # and the checkpoints: the whole global log replays
    with ClusterBus.open(path, address=ray_cluster.address) as cb:
        assert {s["started_from"] for s in cb.status()} == {"empty"}
        np.testing.assert_array_equal(cb.read_many(ids), oracle.rows(ids, "uint8"))
        assert cb.lsn == lsn + 1
    with pytest.raises(mmsb.BusNotFoundError):
        ClusterBus.open(tmp_path / "nothing", address=ray_cluster.address)
    with pytest.raises(ClusterError):
        ClusterBus.create(path, shards=3, address=ray_cluster.address)
