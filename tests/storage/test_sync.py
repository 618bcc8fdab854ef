"""What each sync mode actually does: count the real fsync calls it makes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import mmsb


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def counting(name: str, real: Callable[[int], None]) -> Callable[[int], None]:
        def wrapper(fd: int) -> None:
            calls.append(name)
            real(fd)

        return wrapper

    monkeypatch.setattr(os, "fdatasync", counting("fdatasync", os.fdatasync))
    monkeypatch.setattr(os, "fsync", counting("fsync", os.fsync))
    return calls


def test_always_syncs_the_log_on_every_commit(tmp_path: Path, fsyncs: list[str]) -> None:
    with mmsb.open(tmp_path / "b", sync="always", checkpoint_every=None) as bus:
        pid = bus.create_page(64)
        fsyncs.clear()
        for i in range(5):
            bus.write(pid, bytes([i]) * 4)
        assert fsyncs.count("fdatasync") == 5
        bus.apply_batch(mmsb.DeltaBatch.from_ranges([pid, pid], [0, 8], [b"a", b"b"]))
        assert fsyncs.count("fdatasync") == 6


def test_normal_leaves_fsync_to_the_background_step(tmp_path: Path, fsyncs: list[str]) -> None:
    # an interval the test never reaches: the thread only runs when the test steps it
    bus = mmsb.open(tmp_path / "b", sync="normal", sync_interval=3600.0, checkpoint_every=None)
    syncer = bus._session.syncer
    assert syncer is not None
    pid = bus.create_page(64)
    fsyncs.clear()
    for i in range(5):
        bus.write(pid, bytes([i]) * 4)
    assert fsyncs == []  # commits never wait for the disk
    syncer.run_once()
    assert fsyncs == ["fdatasync"]  # one step covers everything appended so far
    syncer.run_once()
    assert fsyncs == ["fdatasync"]  # nothing new: no fsync
    bus.write(pid, b"x")
    fsyncs.clear()
    bus.checkpoint()
    assert "fdatasync" in fsyncs and "fsync" in fsyncs  # log synced, checkpoint file synced
    bus.write(pid, b"z")
    fsyncs.clear()
    bus.close()
    assert "fdatasync" in fsyncs and "fsync" in fsyncs


def test_normal_syncs_an_idle_writer_within_the_interval(tmp_path: Path, fsyncs: list[str]) -> None:
    with mmsb.open(tmp_path / "b", sync="normal", sync_interval=0.01) as bus:
        pid = bus.create_page(64)
        bus.write(pid, b"last words")
        log = bus._committer.log
        assert log is not None
        deadline = time.monotonic() + 30.0
        while log.unsynced and time.monotonic() < deadline:
            time.sleep(0.005)  # the writer is idle; only the background thread can sync
        assert log.unsynced == 0
        assert "fdatasync" in fsyncs


def test_the_sync_thread_starts_with_the_first_commit(tmp_path: Path) -> None:
    """An open that only reads starts no sync thread (nothing to sync); the first frame
    appended starts it, once, and it then syncs within the interval on its own."""
    with mmsb.open(tmp_path / "b", sync="normal") as bus:
        pid = bus.create_page(64)
    with mmsb.open(tmp_path / "b", sync="normal", sync_interval=0.01) as bus:
        syncer = bus._session.syncer
        assert syncer is not None and not syncer.started
        bus.read(pid)
        assert not syncer.started
        bus.write(pid, b"first")
        assert syncer.started
        thread = syncer._thread
        bus.write(pid, b"second")
        assert syncer._thread is thread
        log = bus._committer.log
        assert log is not None
        deadline = time.monotonic() + 30.0
        while log.unsynced and time.monotonic() < deadline:
            time.sleep(0.005)
        assert log.unsynced == 0


def test_failed_background_fsync_stops_further_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = mmsb.open(tmp_path / "b", sync="normal", sync_interval=3600.0)
    pid = bus.create_page(64)
    bus.write(pid, b"a")

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    assert bus._session.syncer is not None
    bus._session.syncer.run_once()
    lsn = bus.lsn
    with pytest.raises(OSError, match="background fsync of the log failed"):
        bus.write(pid, b"b")
    assert bus.lsn == lsn
    monkeypatch.undo()
    bus.abandon()


def test_off_never_syncs(tmp_path: Path, fsyncs: list[str]) -> None:
    bus = mmsb.open(tmp_path / "b", sync="off", checkpoint_every=None)
    fsyncs.clear()  # creating the bus syncs its manifest once
    pid = bus.create_page(64)
    for i in range(5):
        bus.write(pid, bytes([i]) * 4)
    bus.checkpoint()
    bus.close()
    assert fsyncs == []
    with mmsb.open(tmp_path / "b", sync="off") as again:
        assert again.read(pid)[:4].tobytes() == bytes([4]) * 4


def test_unknown_sync_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(mmsb.InvalidArgumentError, match="unknown sync mode 'sometimes'"):
        mmsb.open(tmp_path / "b", sync="sometimes")
    assert not (tmp_path / "b").exists()
