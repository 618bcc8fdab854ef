"""What each sync mode actually does: count the real fsync calls it makes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import mmsb


class Clock:
    """Stands in for time.monotonic so the 'normal' interval is deterministic."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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


def test_normal_syncs_on_interval_checkpoint_and_close(
    tmp_path: Path, fsyncs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(mmsb.bus.time, "monotonic", clock)
    bus = mmsb.open(tmp_path / "b", sync="normal", sync_interval=1.0, checkpoint_every=None)
    pid = bus.create_page(64)
    fsyncs.clear()
    for i in range(5):
        bus.write(pid, bytes([i]) * 4)
    assert fsyncs == []  # inside the interval: no fsync at all
    clock.now += 1.5
    bus.write(pid, b"x")
    assert fsyncs.count("fdatasync") == 1  # the first commit past the interval syncs
    bus.write(pid, b"y")
    assert fsyncs.count("fdatasync") == 1
    fsyncs.clear()
    bus.checkpoint()
    assert "fdatasync" in fsyncs and "fsync" in fsyncs  # log synced, checkpoint file synced
    bus.write(pid, b"z")
    fsyncs.clear()
    bus.close()
    assert "fdatasync" in fsyncs and "fsync" in fsyncs


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
