"""Failed OS calls on the write path, one by one, injected with monkeypatch.

Every failure surfaces as an ``MMSBError`` that is also an ``OSError`` and chains the
original ``OSError`` (or ``MemoryError``). A failed fsync of the log stops the writer for
good: the bus refuses every later write and reopening it yields exactly the commits
acknowledged before. A failed arena growth or checkpoint leaves the files as they were and
the bus usable. (``tests/reliability/test_fault_injection.py`` repeats the log, checkpoint
and mapping cases with libfiu in real writer processes.)
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
import mmsb.storage.checkpoint as checkpoint_mod
import mmsb.storage.logwriter as logwriter
import mmsb.writer.checkpointer as checkpointer_mod
from mmsb.errors import (
    CheckpointWriteError,
    LogSyncError,
    MMSBError,
    StorageFullError,
    StorageIOError,
)
from mmsb.storage import layout
from mmsb.storage.arena import MemoryArena
from mmsb.storage.log import SEG_HEADER_SIZE, LogReader

EIO = errno.EIO
ENOSPC = errno.ENOSPC


def os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def root_cause(exc: BaseException) -> BaseException:
    """The first exception down the ``__cause__`` chain that is not one of ours."""
    seen: BaseException | None = exc
    while isinstance(seen, MMSBError):
        seen = seen.__cause__
    assert seen is not None, f"{exc!r} chains no original error"
    return seen


def assert_typed(exc: BaseException, code: int) -> None:
    assert isinstance(exc, MMSBError) and isinstance(exc, OSError), repr(exc)
    assert isinstance(exc.__cause__, OSError), repr(exc.__cause__)
    cause = root_cause(exc)
    assert isinstance(cause, OSError) and cause.errno == code, repr(cause)
    assert exc.errno in (None, code)  # ours carry it; the committer's wrapper may not


class Acked:
    """A counter page written commit after commit; remembers what was acknowledged."""

    def __init__(self, bus: mmsb.Bus) -> None:
        self.page = bus.create_page(64, dtype="int64")
        self.lsn = bus.lsn
        self.value = 0

    def write(self, bus: mmsb.Bus, value: int) -> None:
        bus.write(self.page, np.full(8, value, dtype=np.int64))
        self.lsn, self.value = bus.lsn, value

    def check(self, path: Path, lsn: int | None = None) -> None:
        """Reopen: the bus holds exactly the acknowledged commits (the last one ``lsn``
        when commits other than this page's writes came after)."""
        with mmsb.open(path, sync="off") as again:
            assert again.lsn == (self.lsn if lsn is None else lsn)
            assert again.read(self.page).tolist() == [self.value] * 8
            assert again.verify().ok


def failing(real: Callable[..., Any], exc: BaseException, when: Callable[..., bool]) -> Any:
    """``real``, except that calls for which ``when(*args)`` holds raise ``exc``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            raise exc
        return real(*args, **kwargs)

    return wrapper


def always(*_: Any) -> bool:
    return True


def fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def log_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((path / layout.LOG_DIR).iterdir())}


# -- the log: fsync ------------------------------------------------------------------------------


def test_failed_fdatasync_under_always_stops_the_bus_and_keeps_the_acknowledged_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    acked = Acked(bus)
    for i in range(1, 4):
        acked.write(bus, i)
    real = os.fdatasync
    calls: list[int] = []

    def broken(fd: int) -> None:
        calls.append(fd)
        raise os_error(EIO)

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(mmsb.LogWriteError) as info:
        bus.write(acked.page, np.full(8, 99, dtype=np.int64))
    assert_typed(info.value, EIO)
    assert isinstance(info.value.__cause__, LogSyncError)  # the log writer's own error
    assert bus.closed and len(calls) == 1  # tried once, never again
    with pytest.raises(mmsb.BusClosedError):
        bus.write(acked.page, np.full(8, 100, dtype=np.int64))
    bus.close()
    assert len(calls) == 1
    monkeypatch.setattr(os, "fdatasync", real)
    assert not (path / layout.CLEAN_FILE).exists()
    acked.check(path)


def test_a_failed_background_fsync_stops_the_next_commit_and_closes_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="normal", sync_interval=3600.0, checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 1)
    syncer = bus._session.syncer  # type: ignore[union-attr]
    assert syncer is not None
    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing(os.fdatasync, os_error(EIO), always))
        syncer.run_once()
    with pytest.raises(LogSyncError, match="background fsync of the log failed") as info:
        bus.write(acked.page, np.full(8, 2, dtype=np.int64))
    assert_typed(info.value, EIO)
    assert bus.closed
    with pytest.raises(mmsb.BusClosedError, match="closed itself"):
        bus.read(acked.page)
    assert not (path / layout.CLEAN_FILE).exists()
    acked.check(path)


@pytest.mark.parametrize("then", ["sync_now", "close", "checkpoint"])
def test_after_a_failed_background_fsync_nothing_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """fsyncgate: once an fsync failed, a later one that succeeds proves nothing, so
    sync_now, close and checkpoint raise without calling fsync again (and close writes no
    clean-shutdown state)."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="normal", sync_interval=3600.0, checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 1)
    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing(os.fdatasync, os_error(EIO), always))
        bus._session.syncer.run_once()  # type: ignore[union-attr]
    calls: list[int] = []

    def counted(fd: int) -> bool:
        calls.append(fd)
        return True

    for name in ("fsync", "fdatasync"):
        monkeypatch.setattr(os, name, failing(getattr(os, name), os_error(EIO), counted))
    with pytest.raises(LogSyncError) as info:
        getattr(bus, then)()
    assert_typed(info.value, EIO)
    assert calls == []
    assert bus.closed
    monkeypatch.undo()
    assert not (path / layout.CLEAN_FILE).exists()
    acked.check(path)


def test_a_failed_sync_now_closes_the_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="normal", sync_interval=3600.0, checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 7)
    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing(os.fdatasync, os_error(EIO), always))
        with pytest.raises(LogSyncError) as info:
            bus.sync_now()
    assert_typed(info.value, EIO)
    assert bus.closed
    with pytest.raises(mmsb.BusClosedError):
        bus.write(acked.page, np.full(8, 8, dtype=np.int64))
    acked.check(path)  # the frames reached the file; only the fsync was refused


def test_a_checkpoint_whose_log_sync_fails_closes_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="normal", sync_interval=3600.0, checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 3)
    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", failing(os.fdatasync, os_error(EIO), always))
        with pytest.raises(LogSyncError) as info:
            bus.checkpoint()
    assert_typed(info.value, EIO)
    assert bus.closed
    assert list((path / layout.CKPT_DIR).iterdir()) == []
    acked.check(path)


def test_a_failed_fsync_of_a_new_segment_stops_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The segment roll inside an append: its fsync fails, so that commit raises and
    every later one too; the bus closes, and the reopen drops the header-only segment."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None, segment_size=4096)
    acked = Acked(bus)
    segments = len(list((path / layout.LOG_DIR).iterdir()))

    def new_segment(fd: int) -> bool:
        return fd_path(fd).endswith(".seg")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", failing(os.fsync, os_error(EIO), new_segment))
        value = 0
        while len(list((path / layout.LOG_DIR).iterdir())) == segments:
            value += 1
            try:
                acked.write(bus, value)
            except LogSyncError as exc:
                assert_typed(exc, EIO)
                break
        else:
            pytest.fail("the log rolled without fsyncing the new segment")
        with pytest.raises(LogSyncError):
            bus.write(acked.page, np.full(8, -1, dtype=np.int64))
    assert bus.closed
    acked.check(path)


# -- the log: write and truncate -------------------------------------------------------------------


def test_a_torn_append_that_cannot_be_cut_off_stops_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a frame reached the file and the ftruncate that would remove it fails: nothing
    may be appended behind it, so the writer stops; recovery cuts the torn tail."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 5)

    def torn(fd: int, parts: Any, total: int) -> None:
        data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        os.write(fd, data[: total // 2])
        raise os_error(ENOSPC)

    with monkeypatch.context() as m:
        m.setattr(logwriter, "_write_all", torn)
        m.setattr(os, "ftruncate", failing(os.ftruncate, os_error(EIO), always))
        with pytest.raises(mmsb.LogWriteError) as info:
            bus.write(acked.page, np.full(8, 6, dtype=np.int64))
    assert isinstance(info.value, MMSBError) and isinstance(info.value.__cause__, OSError)
    with pytest.raises(mmsb.LogWriteError, match="cutting off a partly written frame"):
        bus.write(acked.page, np.full(8, 7, dtype=np.int64))
    assert bus.closed
    acked.check(path)


def test_a_segment_whose_header_cannot_be_written_leaves_the_log_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The roll fails before the new segment is complete: the half-made file is removed
    and the old segment stays current, so the next roll succeeds (the file used to stay,
    and every later roll failed on it)."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None, segment_size=4096)
    acked = Acked(bus)
    refused: list[str] = []

    def header(fd: int, parts: Any) -> bool:
        hit = not refused and sum(len(p) for p in parts) == SEG_HEADER_SIZE
        if hit:
            refused.append(fd_path(fd))
        return hit

    with monkeypatch.context() as m:
        m.setattr(os, "writev", failing(os.writev, os_error(ENOSPC), header))
        value = 0
        while not refused:
            value += 1
            try:
                acked.write(bus, value)
            except mmsb.LogWriteError as exc:
                assert_typed(exc, ENOSPC)
    assert not bus.closed and not os.path.exists(refused[0])
    for more in range(value + 1, value + 40):  # through the roll and past it
        acked.write(bus, more)
    assert len(list((path / layout.LOG_DIR).iterdir())) > 1
    bus.close()
    acked.check(path)
    lsns = [f.lsn for f in LogReader(str(path / layout.LOG_DIR)).frames()]
    assert lsns == list(range(1, acked.lsn + 1))  # no LSN written twice, none skipped


# -- the arena ------------------------------------------------------------------------------------


def test_create_pages_whose_blocks_cannot_be_reserved_raise_storage_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    acked = Acked(bus)
    arena = path / layout.ARENA_FILE
    size, lsn, pages = arena.stat().st_size, bus.lsn, len(bus)
    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", failing(os.posix_fallocate, os_error(ENOSPC), always))
        with pytest.raises(StorageFullError) as info:
            bus.create_pages(64, 1 << 20)
    assert_typed(info.value, ENOSPC)
    assert isinstance(info.value, StorageIOError)
    assert arena.stat().st_size == size  # no oversized arena left behind
    assert (bus.lsn, len(bus)) == (lsn, pages) and not bus.closed
    acked.write(bus, 11)
    ids = bus.create_pages(64, 1 << 20)  # room again: the same request goes through
    assert arena.stat().st_size >= size + (64 << 20)
    assert arena.stat().st_blocks * 512 >= 64 << 20  # reserved, not a sparse hole
    lsn = bus.lsn
    bus.close()
    with mmsb.open(path, sync="off") as again:
        assert len(again) == pages + 64 and again.read(int(ids[-1])).sum() == 0
    acked.check(path, lsn)


def test_create_pages_beyond_the_free_disk_space_is_refused(tmp_path: Path) -> None:
    """A real full disk: more pages than the file system has free blocks for (once a
    sparse arena of that size, whose first writes past the free space meant SIGBUS)."""
    st = os.statvfs(tmp_path)
    free = st.f_bavail * st.f_frsize
    page = 1 << 20
    n = 2 * free // page + 4096  # far more than another process could free meanwhile
    if not st.f_blocks or n * page >= 2**46:
        pytest.skip("the file system reports no usable free-space figure")
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=None) as bus:
        pid = bus.create_page(16)
        arena = path / layout.ARENA_FILE
        size, lsn = arena.stat().st_size, bus.lsn
        with pytest.raises(StorageFullError) as info:
            bus.create_pages(int(n), page)
        assert_typed(info.value, ENOSPC)
        assert arena.stat().st_size == size and bus.lsn == lsn
        bus.write(pid, b"still usable")
    with mmsb.open(path, sync="off") as again:
        assert again.read(pid).tobytes() == b"still usable\0\0\0\0"


class RemapFails(mmap.mmap):
    """A shared mapping whose growth (mremap) fails with ENOMEM while ``armed``."""

    armed = False

    def resize(self, newsize: int) -> None:
        if RemapFails.armed:
            raise os_error(errno.ENOMEM)
        super().resize(newsize)


def test_a_failed_remap_leaves_the_arena_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mmap, "mmap", RemapFails)
    monkeypatch.setattr(RemapFails, "armed", False)
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 4)
    arena = path / layout.ARENA_FILE
    size = arena.stat().st_size
    RemapFails.armed = True
    with pytest.raises(StorageFullError) as info:
        bus.create_pages(8, 1 << 20)
    assert_typed(info.value, errno.ENOMEM)
    assert arena.stat().st_size == size
    assert bus.read(acked.page).tolist() == [4] * 8  # the old mapping is still there
    acked.write(bus, 5)
    RemapFails.armed = False
    bus.create_pages(8, 1 << 20)
    lsn = bus.lsn
    bus.close()
    acked.check(path, lsn)


def test_growth_without_fallocate_support_is_typed_when_the_truncate_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system cannot reserve blocks the arena grows with ftruncate; a failed
    ftruncate is a StorageIOError (not a full disk) and the size stays."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    acked = Acked(bus)
    arena = path / layout.ARENA_FILE
    size = arena.stat().st_size
    with monkeypatch.context() as m:
        m.setattr(os, "posix_fallocate", failing(os.posix_fallocate, os_error(errno.EOPNOTSUPP),
                                                 always))  # fmt: skip
        m.setattr(os, "ftruncate", failing(os.ftruncate, os_error(EIO), always))
        with pytest.raises(StorageIOError) as info:
            bus.create_pages(4, 1 << 20)
    assert_typed(info.value, EIO)
    assert not isinstance(info.value, StorageFullError)
    assert arena.stat().st_size == size and not bus.closed
    with monkeypatch.context() as m:  # and without the failure it grows (sparse) fine
        m.setattr(os, "posix_fallocate", failing(os.posix_fallocate, os_error(errno.EOPNOTSUPP),
                                                 always))  # fmt: skip
        bus.create_pages(4, 1 << 20)
    acked.write(bus, 1)
    bus.close()
    acked.check(path)  # the write came last


def test_an_in_memory_arena_out_of_memory_is_storage_full() -> None:
    arena = MemoryArena(16)
    arena.buf[:] = 7
    with pytest.raises(StorageFullError) as info:
        arena.ensure(1 << 47)  # more than a 47-bit address space holds
    assert isinstance(info.value.__cause__, MemoryError)
    assert info.value.errno == errno.ENOMEM and isinstance(info.value, MMSBError)
    assert arena.capacity == 16 and arena.buf.tolist() == [7] * 16


def test_an_arena_that_cannot_be_mapped_at_open_is_typed_and_lets_go_of_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="always") as bus:
        acked = Acked(bus)
        acked.write(bus, 9)
    real = mmap.mmap

    def refuse_arena(fd: int, *args: Any, **kwargs: Any) -> mmap.mmap:
        if fd_path(fd).endswith(layout.ARENA_FILE):
            raise os_error(errno.ENOMEM)
        return real(fd, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(mmap, "mmap", refuse_arena)
        with pytest.raises(StorageFullError) as info:
            mmsb.open(path, sync="always")
    assert_typed(info.value, errno.ENOMEM)
    acked.check(path)  # the lock was let go and nothing was changed


def test_an_unexpected_os_error_while_opening_is_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publication header cannot be mapped: the open fails with a StorageIOError."""
    path = tmp_path / "b"
    mmsb.open(path).close()
    real = mmap.mmap

    def refuse_header(fd: int, *args: Any, **kwargs: Any) -> mmap.mmap:
        if not fd_path(fd).endswith(layout.ARENA_FILE):
            raise os_error(errno.EACCES)
        return real(fd, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(mmap, "mmap", refuse_header)
        with pytest.raises(StorageIOError) as info:
            mmsb.open(path)
    assert_typed(info.value, errno.EACCES)
    mmsb.open(path).close()


# -- checkpoints and the clean-shutdown file -------------------------------------------------------


def ckpt_files(path: Path) -> list[str]:
    return sorted(p.name for p in (path / layout.CKPT_DIR).iterdir())


@pytest.mark.parametrize("call", ["fsync", "replace"])
def test_a_failed_checkpoint_is_typed_leaves_no_file_and_the_bus_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 1)
    bus.checkpoint()
    acked.write(bus, 2)
    files = ckpt_files(path)
    with monkeypatch.context() as m:
        m.setattr(os, call, failing(getattr(os, call), os_error(EIO), always))
        with pytest.raises(CheckpointWriteError) as info:
            bus.checkpoint()
    assert_typed(info.value, EIO)
    assert ckpt_files(path) == files  # no temporary file, no new checkpoint
    assert not bus.closed
    acked.write(bus, 3)
    bus.checkpoint()
    acked.write(bus, 4)
    bus.abandon()  # recover from the checkpoints and the log
    acked.check(path)


def test_a_checkpoint_whose_directory_entry_cannot_be_synced_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may vanish in a power cut, so nothing (compaction) may count on it."""
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 1)
    with monkeypatch.context() as m:
        m.setattr(checkpoint_mod, "fsync_dir", failing(checkpoint_mod.fsync_dir,
                                                       os_error(EIO), always))  # fmt: skip
        with pytest.raises(CheckpointWriteError, match="directory entry") as info:
            bus.checkpoint()
    assert_typed(info.value, EIO)
    assert ckpt_files(path) == []
    acked.write(bus, 2)
    bus.close()
    acked.check(path)


def test_a_close_that_cannot_write_the_clean_state_raises_and_the_log_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="normal", checkpoint_every=None)
    acked = Acked(bus)
    acked.write(bus, 12)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing(os.replace, os_error(ENOSPC), always))
        with pytest.raises(CheckpointWriteError) as info:
            bus.close()
    assert_typed(info.value, ENOSPC)
    assert bus.closed
    assert sorted(p.name for p in path.iterdir() if p.name.startswith("state")) == []
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay"
    acked.check(path)


def test_a_failed_automatic_checkpoint_does_not_fail_the_commit_that_called_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer_mod, "BACKGROUND_CHECKPOINT_BYTES", 0)  # write inline
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=1)
    acked = Acked(bus)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing(os.replace, os_error(EIO), always))
        acked.write(bus, 1)  # published and acknowledged: the checkpoint's failure is kept
    assert isinstance(bus.last_checkpoint_error, CheckpointWriteError)
    assert_typed(bus.last_checkpoint_error, EIO)
    acked.write(bus, 2)
    bus.close()
    acked.check(path)
