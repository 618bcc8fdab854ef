"""``Bus.stats()``: every figure moves when the bus does the work it counts, a read-only
bus fills what it can know, and the folder listings behind the size figures are redrawn only
when a folder changed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mmsb
import mmsb.monitor.stats as stats_mod
from mmsb.monitor.stats import TICK_LE_MS, BusStats, pinned_snapshots, reader_count
from mmsb.storage.checkpoint import list_checkpoints
from mmsb.storage.log import list_segments

READER = """
import sys, mmsb
bus = mmsb.open(sys.argv[1], readonly=True)
print("ready", flush=True)
sys.stdin.readline()
bus.close()
"""


def on_disk(path: Path) -> tuple[int, int]:
    """(bytes, count) of the log segment files in the bus at ``path``."""
    segs = list_segments(str(path / "log"))
    return sum(os.path.getsize(p) for _, p in segs), len(segs)


def test_a_new_bus_reports_zeros(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="normal") as bus:
        s = bus.stats()
        assert isinstance(s, BusStats)
        assert (s.path, s.readonly, s.sync, s.lsn) == (bus.path, False, "normal", 0)
        assert (s.commits, s.deltas, s.log_appended_bytes, s.ticks, s.gc_steps) == (0,) * 5
        assert s.log_write_ms == 0.0
        assert (s.checkpoints, s.checkpoint_lsn, s.checkpoint_bytes) == (0, None, 0)
        assert s.checkpoint_age_s is None and s.last_tick_ms is None
        assert s.tick_le_ms == TICK_LE_MS and s.tick_buckets == (0,) * (len(TICK_LE_MS) + 1)
        assert (s.snapshots, s.readers, s.fsyncs) == (0, 0, 0)
        assert s.fsync_mean_ms is None and s.fsync_max_ms is None
        assert (s.log_bytes, s.log_segments) == on_disk(tmp_path / "b")
    for mode in ("off", "always"):
        with mmsb.open(tmp_path / mode, sync=mode) as bus:
            assert bus.stats().sync == mode


def test_commits_deltas_and_log_bytes_move_with_each_commit(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        pages = bus.create_pages(10, 64)
        s1 = bus.stats()
        assert (s1.commits, s1.deltas, s1.lsn) == (1, 0, bus.lsn)  # a creation: no delta
        bus.write(pages[0], b"x" * 16)
        s2 = bus.stats()
        assert (s2.commits, s2.deltas) == (2, 1)
        assert s2.log_appended_bytes > s1.log_appended_bytes > 0
        assert s2.log_write_ms > s1.log_write_ms > 0  # every append's write call is timed
        batch = mmsb.DeltaBatch.from_ranges(pages, np.zeros(10, np.int64),
                                            np.ones((10, 16), np.uint8))  # fmt: skip
        bus.apply_batch(batch)
        s3 = bus.stats()
        assert (s3.commits, s3.deltas, s3.lsn) == (3, 11, 3)
        assert s3.log_appended_bytes > s2.log_appended_bytes
        assert s3.log_write_ms > s2.log_write_ms
        assert (s3.log_bytes, s3.log_segments) == on_disk(tmp_path / "b")
    # counted since open: a reopened bus starts again at 0
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        s = bus.stats()
        assert (s.lsn, s.commits, s.deltas, s.log_appended_bytes) == (3, 0, 0, 0)
        assert s.log_write_ms == 0.0


def test_ticks_fill_the_latency_histogram(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        a, b = bus.create_page(64), bus.create_page(64)
        bus.derive(b, lambda x: x + 1, [a])
        for i in range(5):
            bus.write(a, bytes([i]) * 8)
            bus.tick()
        s = bus.stats()
        assert s.ticks == 5 == s.tick_buckets[-1]
        assert list(s.tick_buckets) == sorted(s.tick_buckets)  # cumulative
        assert s.last_tick_ms is not None and s.last_tick_ms > 0
        assert s.tick_total_ms >= s.last_tick_ms
        assert s.deltas == 5 + 5  # the writes, then one derived page per tick
        # each latency lands in the first bucket whose bound holds it
        monitor = bus._monitor
        report = bus.tick()
        before = bus.stats()
        for ms in (0.2, 0.5, 3.0, 100.0):
            monitor._ticked(dataclasses.replace(report, total_ns=int(ms * 1e6)))
        after = bus.stats()
        added = np.diff([0, *after.tick_buckets]) - np.diff([0, *before.tick_buckets])
        assert added.tolist() == [2, 0, 0, 1, 0, 0, 0, 0, 1]
        assert after.last_tick_ms == pytest.approx(100.0)
        assert after.tick_total_ms == pytest.approx(before.tick_total_ms + 103.7)


def test_checkpoints_count_size_and_age(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        p = bus.create_page(4096)
        bus.write(p, b"y" * 100)
        info = bus.checkpoint()
        s1 = bus.stats()
        assert (s1.checkpoints, s1.checkpoint_lsn) == (1, info.lsn)
        assert s1.checkpoint_bytes == os.path.getsize(info.path) > 0
        assert s1.checkpoint_age_s is not None and 0 <= s1.checkpoint_age_s < 60
        time.sleep(0.02)
        assert bus.stats().checkpoint_age_s > s1.checkpoint_age_s  # type: ignore[operator]
        bus.write(p, b"z" * 100)
        info2 = bus.checkpoint()
        s2 = bus.stats()
        assert (s2.checkpoints, s2.checkpoint_lsn) == (2, info2.lsn)
        assert s2.checkpoint_bytes == os.path.getsize(info2.path)
        assert s2.checkpoint_age_s is not None and s2.checkpoint_age_s < s1.checkpoint_age_s + 1
        assert len(list_checkpoints(str(path / "ckpt"))) == 2
        # a checkpoint starts a new log segment
        assert s2.log_segments > s1.log_segments
        assert (s2.log_bytes, s2.log_segments) == on_disk(path)


def test_gc_steps_and_their_pause_are_counted(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        bus.create_page(64)
        bus.gc()
        s1 = bus.stats()
        assert s1.gc_steps == 1 and s1.gc_pause_ms > 0
        bus.tick()  # a tick runs a GC step too (tick_gc_budget_ms > 0)
        s2 = bus.stats()
        assert s2.gc_steps == 2 and s2.gc_pause_ms > s1.gc_pause_ms
        bus.tick_gc_budget_ms = 0
        bus.tick()
        assert bus.stats().gc_steps == 2


def test_snapshots_and_readers_are_counted_while_open(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        bus.create_page(64)
        assert (bus.stats().snapshots, bus.stats().readers) == (0, 0)
        s1, s2 = bus.snapshot(), bus.snapshot()
        assert bus.stats().snapshots == 2 == pinned_snapshots(str(path))
        s1.close()
        assert bus.stats().snapshots == 1
        s2.close()
        assert bus.stats().snapshots == 0
        r1 = mmsb.open(path, readonly=True)
        r2 = mmsb.open(path, readonly=True)
        try:
            assert bus.stats().readers == 2 == reader_count(str(path))
            with r1.snapshot():  # a reader's snapshot pins in the shared table
                assert bus.stats().snapshots == 1
                assert r2.stats().snapshots == 1
        finally:
            r1.close()
        assert bus.stats().readers == 1
        r2.close()
        assert bus.stats().readers == 0
        # a reader in another process
        proc = subprocess.Popen([sys.executable, "-c", READER, str(path)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "ready"
            assert bus.stats().readers == 1
            proc.stdin.write("done\n")
            proc.stdin.flush()
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    f.close()
        assert bus.stats().readers == 0


def test_reader_count_falls_back_to_whether_any_is_attached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus, mmsb.open(path, readonly=True):
        assert reader_count(str(path)) == 1
        real_open = open

        def no_proc_locks(file: object, *args: object, **kwargs: object) -> object:
            if file == "/proc/locks":
                raise FileNotFoundError(file)
            return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr("builtins.open", no_proc_locks)
        with mmsb.open(path, readonly=True):
            assert reader_count(str(path)) == 1  # two readers, but only "some" is known
        assert bus.stats().readers == 1


def test_fsyncs_are_timed(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "n", sync="normal") as bus:
        p = bus.create_page(64)
        bus.write(p, b"a")
        bus.sync_now()
        s = bus.stats()
        assert s.fsyncs >= 1
        assert s.fsync_mean_ms is not None and s.fsync_max_ms is not None
        assert 0 < s.fsync_mean_ms <= s.fsync_max_ms
        bus.sync_now()  # nothing new to sync: no fsync
        assert bus.stats().fsyncs == s.fsyncs
    with mmsb.open(tmp_path / "a", sync="always") as bus:
        p = bus.create_page(64)
        before = bus.stats().fsyncs
        for _ in range(3):
            bus.write(p, b"b")
        assert bus.stats().fsyncs == before + 3  # one per commit
    with mmsb.open(tmp_path / "o", sync="off") as bus:
        bus.write(bus.create_page(64), b"c")
        assert bus.stats().fsyncs == 0


def test_a_read_only_bus_fills_what_it_knows(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        p = bus.create_page(64)
        bus.write(p, b"q" * 8)
        bus.checkpoint()
        bus.write(p, b"r" * 8)
        with mmsb.open(path, readonly=True) as ro:
            w, r = bus.stats(), ro.stats()
            assert (r.readonly, r.sync, r.lsn) == (True, None, w.lsn)
            for f in ("log_bytes", "log_segments", "checkpoints", "checkpoint_lsn",
                      "checkpoint_bytes", "snapshots", "readers"):  # fmt: skip
                assert getattr(r, f) == getattr(w, f), f
            assert r.readers == 1
            assert (r.commits, r.deltas, r.log_appended_bytes, r.ticks, r.gc_steps) == (0,) * 5
            assert (r.fsyncs, r.fsync_mean_ms, r.last_tick_ms) == (0, None, None)
            assert r.log_write_ms == 0.0
            bus.write(p, b"s" * 8)
            # stats() never catches up by itself (it may run in another thread) ...
            assert ro.stats().lsn == w.lsn
            ro.refresh()  # ... any read or refresh does
            again = ro.stats()
            assert again.lsn == bus.lsn and again.log_bytes == bus.stats().log_bytes
    # no writer: the state rebuilt in memory, the files as they are
    with mmsb.open(path, readonly=True) as ro:
        s = ro.stats()
        assert s.lsn == 4 and s.checkpoints == 1 and s.readers == 0
        assert (s.log_bytes, s.log_segments) == on_disk(path)


def test_stats_work_on_a_closed_bus(tmp_path: Path) -> None:
    bus = mmsb.open(tmp_path / "b", sync="off")
    bus.write(bus.create_page(64), b"x")
    bus.close()
    s = bus.stats()
    assert (s.lsn, s.commits, s.deltas) == (2, 2, 1)
    with pytest.raises(mmsb.BusClosedError):
        bus.memory()
    eph = mmsb.open(None)
    eph.create_page(8)
    eph.close()  # the temporary directory is gone
    s = eph.stats()
    assert (s.lsn, s.log_bytes, s.log_segments, s.checkpoints, s.readers) == (1, 0, 0, 0, 0)


def test_to_json_is_plain_data(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        bus.create_page(64)
        bus.tick()
        s = bus.stats()
        data = json.loads(json.dumps(s.to_json(), allow_nan=False))
        assert list(data) == [f.name for f in dataclasses.fields(BusStats)]
        assert data["lsn"] == s.lsn and data["tick_buckets"] == list(s.tick_buckets)
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.lsn = 0  # type: ignore[misc]


def test_the_folders_are_listed_again_only_when_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    scans: list[str] = []
    real = stats_mod.list_segments

    def counting(log_dir: str) -> list[tuple[int, str]]:
        scans.append(log_dir)
        return real(log_dir)

    monkeypatch.setattr(stats_mod, "list_segments", counting)
    with mmsb.open(path, sync="off") as bus:
        p = bus.create_page(64)
        old = time.time() - 10  # out of the timestamp-granularity window
        os.utime(path / "log", (old, old))
        bus.stats()
        n = len(scans)
        for i in range(5):
            bus.write(p, bytes([i]) * 32)
            s = bus.stats()
            assert (s.log_bytes, s.log_segments) == on_disk(path)  # the newest from the writer
        assert len(scans) == n  # no new segment: the listing was kept
        bus.checkpoint()  # a new segment
        s = bus.stats()
        assert len(scans) == n + 1
        assert (s.log_bytes, s.log_segments) == on_disk(path)
        # a folder changed within the last moments is listed again until it is settled
        bus.checkpoint()
        bus.stats()
        bus.stats()
        assert len(scans) == n + 3


def test_stats_is_cheap(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b", sync="off") as bus:
        p = bus.create_page(64)
        for _ in range(200):
            bus.write(p, b"w" * 16)
        bus.checkpoint()
        old = time.time() - 10
        os.utime(tmp_path / "b" / "log", (old, old))
        os.utime(tmp_path / "b" / "ckpt", (old, old))
        bus.stats()
        t0 = time.perf_counter()
        for _ in range(200):
            bus.stats()
        per_call_ms = (time.perf_counter() - t0) / 200 * 1e3
        assert per_call_ms < 5  # about 0.05 ms on the development machine
