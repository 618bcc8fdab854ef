"""Losing a node, and the sequencer: a node that holds a shard is killed hard while a
writer commits (its local disk deleted first), and the sequencer's process is killed;
afterwards every acknowledged commit is there, none is half applied, and the callers saw
at most typed errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cluster_support import fill

import mmsb
from mmsb.cluster import ClusterBus
from mmsb.storage import codec

pytestmark = pytest.mark.cluster


class Writer(threading.Thread):
    """Commits ``fill(ids, k)`` for k = 1, 2, ... and records what was acknowledged."""

    def __init__(self, cb: ClusterBus, ids: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.cb, self.ids = cb, ids
        self.acked: list[tuple[int, int]] = []  # (global LSN, k)
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        k = 0
        while not self.stop.is_set():
            k += 1
            try:
                c = self.cb.apply_batch(fill(self.ids, float(k)))
                self.acked.append((c.lsn, k))
            except Exception as exc:  # recorded: must be typed
                self.errors.append(exc)
                time.sleep(0.2)

    def wait_for(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < n:
            assert time.monotonic() < deadline, f"only {len(self.acked)} commits acknowledged"
            assert self.is_alive()
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=120)
        assert not self.is_alive()


def logged_values(cb: ClusterBus) -> dict[int, float]:
    """Global LSN -> the value its frame writes, for every batch frame of the global log."""
    seq, _ = cb.actors()
    import ray

    out = {}
    for lsn, ftype, _flags, payload in ray.get(seq.frames.remote(0, None), timeout=60):
        rec = codec.decode(ftype, memoryview(payload))
        if isinstance(rec, codec.DecodedBatch):
            vals = {float(np.frombuffer(bytes(d.payload), np.float64)[0]) for d in rec.batch}
            assert len(vals) == 1
            out[lsn] = vals.pop()
    return out


def check_after(cb: ClusterBus, w: Writer, ids: np.ndarray) -> None:
    assert all(isinstance(e, mmsb.MMSBError) for e in w.errors), w.errors
    lsns = [lsn for lsn, _ in w.acked]
    assert lsns == sorted(set(lsns))
    logged = logged_values(cb)
    lost = [(lsn, k) for lsn, k in w.acked if logged.get(lsn) != float(k)]
    assert lost == []  # 0 acknowledged commits lost
    last = max(logged)
    assert cb.lsn == last
    rows = cb.read_many(ids)  # every page of every shard: the last commit, whole
    assert set(np.unique(rows).tolist()) == {logged[last]}
    with cb.snapshot() as s:
        assert set(np.unique(s.read_many(ids)).tolist()) == {logged[last]}
    assert [st["applied"] for st in cb.status()] == [last] * 3


def test_a_node_killed_hard_mid_run_loses_no_acknowledged_commit(
    ray_cluster, tmp_path: Path
) -> None:
    path = tmp_path / "c"
    with ClusterBus.create(path, shards=3, address=ray_cluster.address, sync="always") as cb:
        ids = cb.create_pages(9, 64, dtype="float64")
        w = Writer(cb, ids)
        w.start()
        w.wait_for(10)
        cb.checkpoint()  # the export the lost shard restarts from (then the log after it)
        w.wait_for(len(w.acked) + 10)
        victim = 1
        node = cb.placement()[victim]
        before = cb.status()[victim]["pid"]
        import shutil

        shutil.rmtree(path / "local" / f"shard-{victim}")  # its disk goes with the node
        ray_cluster.kill_node_of(node)
        at_kill = len(w.acked)
        w.wait_for(at_kill + 20)
        w.finish()
        ray_cluster.workers.append(ray_cluster.add_worker())  # room for the next tests
        after = cb.status()[victim]
        assert after["pid"] != before and after["started_from"] == "checkpoint"
        assert cb.placement()[victim] != node
        check_after(cb, w, ids)
        print(f"\nnode loss: {len(w.acked)} acknowledged ({len(w.acked) - at_kill} after the "
              f"kill), 0 lost, {len(w.errors)} typed errors")  # fmt: skip


def test_the_sequencer_restarts_from_its_log(ray_cluster, tmp_path: Path) -> None:
    import ray

    with ClusterBus.create(tmp_path / "c", shards=3, address=ray_cluster.address) as cb:
        ids = cb.create_pages(9, 64, dtype="float64")
        w = Writer(cb, ids)
        w.start()
        seq, _ = cb.actors()
        pid = ray.get(seq.ping.remote(), timeout=30)
        for _ in range(2):
            w.wait_for(len(w.acked) + 15)
            ray.kill(seq, no_restart=False)  # the process dies; Ray starts it again
        w.wait_for(len(w.acked) + 15)
        w.finish()
        assert ray.get(seq.ping.remote(), timeout=30) != pid
        check_after(cb, w, ids)
