"""The unlinker: files leave the bus's listings at once and are unlinked off the caller's
thread; readers keep what they opened; close waits (or not); failures leave a ``.drop``
file that a later sweep takes again."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.monitor.gc import Collector
from mmsb.storage import unlinker as unlinker_mod
from mmsb.storage.checkpoint import list_checkpoints
from mmsb.storage.log import list_segments
from mmsb.storage.unlinker import Unlinker


class Gate:
    """Holds every unlink in the unlinker module until :meth:`open`; records the threads
    that unlinked."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.threads: list[int] = []
        real = os.unlink

        def unlink(path: str) -> None:
            self.threads.append(threading.get_ident())
            assert self.gate.wait(10)
            real(path)

        monkeypatch.setattr(unlinker_mod.os, "unlink", unlink)

    def open(self) -> None:
        self.gate.set()


def test_a_dropped_file_leaves_its_name_at_once_and_is_unlinked_on_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.seg"
    f.write_bytes(b"x" * 4096)
    gate = Gate(monkeypatch)
    u = Unlinker()
    u.drop(str(f))
    assert not f.exists() and (tmp_path / "a.seg.drop").exists()
    assert u.busy and not u.wait(0.05)  # the unlink is held by the gate
    gate.open()
    assert u.wait(10) and not u.busy
    assert not (tmp_path / "a.seg.drop").exists()
    assert u.removed == 1 and gate.threads and threading.get_ident() not in gate.threads
    u.close()


def test_a_reader_keeps_the_bytes_of_a_file_dropped_under_it(tmp_path: Path) -> None:
    f = tmp_path / "c.ckpt"
    f.write_bytes(bytes(range(256)) * 64)
    u = Unlinker()
    with open(f, "rb") as reader:
        u.drop(str(f))
        assert u.wait(10)
        assert not list(tmp_path.iterdir())
        assert reader.read() == bytes(range(256)) * 64  # unlinked, never truncated
    u.close()


def test_a_missing_file_raises_and_queues_nothing(tmp_path: Path) -> None:
    u = Unlinker()
    with pytest.raises(FileNotFoundError):
        u.drop(str(tmp_path / "nothing"))
    assert not u.busy
    u.close()


def test_close_waits_for_the_queue_or_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [tmp_path / f"{i}.seg" for i in range(3)]
    for f in files:
        f.write_bytes(b"y")
    gate = Gate(monkeypatch)
    u = Unlinker()
    for f in files:
        u.drop(str(f))
    u.close(wait=False)  # returns with the removals still held
    assert u.busy
    gate.open()
    assert u.wait(10)
    assert not list(tmp_path.iterdir())  # the thread finished the queue on its own
    later = tmp_path / "later.seg"
    later.write_bytes(b"z")
    u.drop(str(later))  # after close: unlinked on this thread, before drop returns
    assert not list(tmp_path.iterdir()) and not u.busy

    u2 = Unlinker()
    more = tmp_path / "m.seg"
    more.write_bytes(b"m")
    u2.drop(str(more))
    u2.close(wait=True)
    assert not list(tmp_path.iterdir()) and not u2.busy


def test_a_failed_unlink_leaves_a_drop_file_that_a_sweep_takes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "s.seg"
    f.write_bytes(b"s")
    real = os.unlink

    def refuse(path: str) -> None:
        raise PermissionError(13, "refused", path)

    monkeypatch.setattr(unlinker_mod.os, "unlink", refuse)
    u = Unlinker()
    u.drop(str(f))
    assert u.wait(10) and not u.busy
    assert isinstance(u.last_error, PermissionError) and u.removed == 0
    assert (tmp_path / "s.seg.drop").exists()
    monkeypatch.setattr(unlinker_mod.os, "unlink", real)
    (tmp_path / "other.seg").write_bytes(b"kept")  # not a .drop file: left alone
    assert u.sweep(str(tmp_path)) == 1
    assert u.wait(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.seg"]
    assert u.sweep(str(tmp_path / "missing")) == 0
    u.close()


def test_without_a_thread_the_unlink_runs_on_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(fn: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(unlinker_mod, "Helper", no_thread)
    f = tmp_path / "t.seg"
    f.write_bytes(b"t")
    u = Unlinker()
    u.drop(str(f))
    assert not list(tmp_path.iterdir()) and not u.busy and u.removed == 1


def _segments_and_checkpoints(path: Path) -> tuple[int, int]:
    return len(list_segments(str(path / "log"))), len(list_checkpoints(str(path / "ckpt")))


def test_compaction_renames_on_the_writer_and_close_waits_for_the_unlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compact() (explicit or automatic) returns with the files gone from the listings
    while their unlinks are still held; a clean close waits for them."""
    path = tmp_path / "b"
    gate = Gate(monkeypatch)
    with mmsb.open(path, sync="off", segment_size=4096, checkpoint_every=None,
                   keep_checkpoints=1) as bus:  # fmt: skip
        ids = bus.create_pages(16, 256)
        for i in range(3):
            for j in range(8):
                bus.write(int(ids[j]), np.full(256, i * 8 + j, np.uint8))
            bus.checkpoint()
        segs, ckpts = _segments_and_checkpoints(path)
        assert segs > 1 and ckpts == 3
        info = bus.compact()
        assert info.checkpoints_removed == 2 and info.segments_removed >= 1
        assert _segments_and_checkpoints(path) == (segs - info.segments_removed, 1)
        drops = list(path.rglob("*.drop"))
        assert len(drops) == 2 + info.segments_removed  # renamed, held by the gate
        digest = bus.state_hash()
        closing = threading.Thread(target=bus.close)
        closing.start()
        closing.join(0.2)
        assert closing.is_alive()  # close waits for the held unlinks
        gate.open()
        closing.join(10)
        assert not closing.is_alive()
    assert not list(path.rglob("*.drop"))
    assert threading.get_ident() not in gate.threads
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == digest and again.verify().ok


def test_a_crash_like_close_leaves_drop_files_that_the_next_writer_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    gate = Gate(monkeypatch)
    bus = mmsb.open(path, sync="off", segment_size=4096, checkpoint_every=None,
                    keep_checkpoints=1)  # fmt: skip
    ids = bus.create_pages(16, 256)
    for i in range(2):
        for j in range(8):
            bus.write(int(ids[j]), np.full(256, i + j, np.uint8))
        bus.checkpoint()
    bus.compact()
    bus.abandon()  # returns at once, unlinks still held
    assert list(path.rglob("*.drop"))
    monkeypatch.undo()
    gate.open()
    with mmsb.open(path, sync="off") as again:
        again.gc(budget_ms=1.0)
        col = again._collector
        assert isinstance(col, Collector)
        assert col.unlinker.wait(10)
        assert not list(path.rglob("*.drop"))
        assert again.verify().ok


@pytest.mark.parametrize("sync", [True, False])
def test_the_directory_is_fsynced_after_the_unlink_on_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    synced: list[tuple[str, int]] = []
    monkeypatch.setattr(unlinker_mod, "fsync_dir",
                        lambda d: synced.append((d, threading.get_ident())))  # fmt: skip
    f = tmp_path / "d.seg"
    f.write_bytes(b"d")
    u = Unlinker(sync=sync)
    u.drop(str(f))
    assert u.wait(10)
    if sync:
        assert synced == [(str(tmp_path), synced[0][1])]
        assert synced[0][1] != threading.get_ident()
    else:
        assert synced == []
    u.close()


def test_compaction_alone_removes_what_an_earlier_writer_left(tmp_path: Path) -> None:
    """A bus that never runs a GC step still loses a crash's leftovers: its compaction
    sweeps the log and checkpoint directories first (once per writer)."""
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=None) as bus:
        bus.create_pages(4, 64)
        leftovers = [path / "log" / ("0" * 19 + "1.seg.drop"),
                     path / "ckpt" / ("0" * 19 + "1.ckpt.drop")]  # fmt: skip
        for f in leftovers:
            f.write_bytes(b"left")
        bus.compact()
        assert bus._checkpointer is not None
        assert bus._checkpointer.unlinker.wait(10)
        assert not any(f.exists() for f in leftovers)
