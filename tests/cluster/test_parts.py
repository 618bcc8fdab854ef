"""The parts of a cluster without Ray: the global log and a shard fed from it directly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from cluster_support import Oracle, random_batch

import mmsb
from mmsb.cluster import ClusterError
from mmsb.cluster import partition as part
from mmsb.cluster.globallog import GlobalLog
from mmsb.cluster.shard import Shard
from mmsb.types import dtype_code

pytestmark = pytest.mark.cluster


def test_mapping_is_a_bijection() -> None:
    g = np.arange(1, 1000, dtype=np.int64)
    for n in (1, 2, 3, 7):
        s, local = part.shard_of(g, n), part.to_local(g, n)
        assert (part.to_global(local, s, n) == g).all()
        assert (local >= 2).all()  # local page 1 is the control page


def test_global_log_recovers_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    log = GlobalLog(str(tmp_path), sync="always")
    log.append_create(6, 64, dtype_code("uint8"))
    batch = mmsb.DeltaBatch.from_ranges([1, 5], [0, 8], [b"ab", b"cd"])
    a = log.append_batch(batch)
    log.close()
    seg = sorted((tmp_path / "log").iterdir())[-1]
    with open(seg, "ab") as f:  # an append that never completed
        f.write(b"MMSF" + bytes(20))
    log = GlobalLog(str(tmp_path), sync="normal")
    assert (log.lsn, log.next_delta_id, log.torn_bytes) == (2, 3, 24)
    assert log.last == a and log.table()[0].tolist() == [0] + [64] * 6
    assert log.append_batch(batch).lsn == 3
    assert [f[0] for f in log.frames(1, 3)] == [2, 3]
    log.close()


def test_a_shard_rebuilds_from_the_global_log_alone(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    log = GlobalLog(str(tmp_path / "seq"), sync="off")
    n = 3
    log.append_create(9, 128, 0)
    ids = np.arange(1, 10, dtype=np.int64)
    oracle = Oracle()
    oracle.create(ids, 128)
    for _ in range(12):
        b = random_batch(rng, ids, 128, 10)
        log.append_batch(b)
        oracle.apply(b)

    def fetch(after: int, upto: int | None) -> list:
        return log.frames(after, log.lsn if upto is None else upto)

    shards = [Shard(i, n, str(tmp_path / "local"), str(tmp_path / "ck"), fetch=fetch)
              for i in range(n)]  # fmt: skip
    for i, sh in enumerate(shards):
        assert sh.started_from == "empty" and sh.catch_up() == log.lsn
        mine = ids[part.shard_of(ids, n) == i]
        got = sh.read_many(part.to_local(mine, n))
        np.testing.assert_array_equal(got, oracle.rows(mine, "uint8"))
        assert sh.checkpoint() == log.lsn
        sh.close()
    os.rename(tmp_path / "local", tmp_path / "gone")
    again = Shard(1, n, str(tmp_path / "local"), str(tmp_path / "ck"), fetch=fetch)
    assert again.started_from == "checkpoint" and again.applied == log.lsn
    with pytest.raises(ClusterError):
        Shard(1, 2, str(tmp_path / "local2"), str(tmp_path / "ck"), fetch=fetch)
    again.close()
    log.close()
