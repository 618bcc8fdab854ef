"""Appending to the log: :class:`LogWriter` (one writer, preallocated segments, a frame per
``writev``); the ``normal`` sync mode's background fsync is
:class:`mmsb.storage.logsync.PeriodicSync`.

The format itself (segment and frame headers, frame types) and reading are in
:mod:`mmsb.storage.log`.

Failures. A failed append leaves the log as it was (a partial frame is cut off) and the
writer usable. A failed fsync does not: the kernel may have dropped the unwritten pages
and marked them clean, so a retry could succeed without the data ever reaching the disk
(PostgreSQL's "fsyncgate"). The writer therefore *fails*: it records the first failed
fsync (or any other failure that leaves the log in doubt, such as a partial frame it could
not cut off) and from then on every append, sync and close raises
:class:`~mmsb.errors.LogSyncError` (or :class:`~mmsb.errors.LogWriteError`) chained to
the original :class:`OSError`, without touching the file again. Its owner closes the bus
as after a crash; the next open recovers what the log holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from mmsb.errors import LogSyncError, LogWriteError
from mmsb.storage import layout
from mmsb.storage.log import (
    _ZEROS,
    FLAG_ZSTD,
    FRAME_HEADER_SIZE,
    SEG_HEADER_SIZE,
    encode_frame_header,
    encode_segment_header,
    fsync_dir,
    list_segments,
    segment_name,
    zstandard,
)

MIN_COMPRESS = 4096  # payloads smaller than this are stored as they are
ZSTD_LEVEL = 1  # the fastest standard level: the log is on the commit path
SKIP_AFTER_MISS = 15  # payloads stored as they are after one that did not compress


class LogWriter:
    """Appends frames to the newest segment; rolls to a new segment past ``segment_size``.

    Only the owning (committing) thread appends, rolls and closes. :meth:`sync` may also be
    called from a ``PeriodicSync`` thread; a lock keeps it from using a descriptor that
    a roll or close is replacing.
    """

    def __init__(
        self,
        log_dir: str,
        next_lsn: int,
        *,
        segment_size: int,
        fsync_enabled: bool,
        preallocate: bool = True,
        compression: str | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.segment_size = segment_size
        self.fsync_enabled = fsync_enabled
        self._fd = -1
        self._lock = threading.RLock()
        self.path = ""
        self.name = ""
        self.pos = 0
        self.last_frame = -1  # offset of the newest frame in the current segment (-1: unknown)
        self.appended = 0  # bytes appended by this writer, ever (only grows)
        self.synced = 0  # value of ``appended`` covered by the last completed fsync
        self.written = 0  # bytes appended since the owner last reset it (checkpoint trigger)
        self.write_ns = 0  # time spent in the write calls of appends (ns)
        self.sync_error: OSError | None = None  # the failed fsync that stopped this writer
        self.fsyncs = 0  # syncs that reached the disk, their total and longest time (ns)
        self.fsync_ns = 0
        self.fsync_max_ns = 0
        # why the writer stopped: (error class, what failed, the OSError); see failed()
        self._failure: tuple[type[LogWriteError], str, BaseException] | None = None
        # called with the error when an explicit sync (force=True: the owner's sync_now)
        # fails or finds the writer failed; the owner closes the bus there
        self.on_failure: Callable[[BaseException], None] | None = None
        # normal mode: a roll hands the full segment to the next sync() instead of
        # fsyncing it on the commit path (the mode promises durability within an interval)
        self.defer_roll_sync = False
        self._retired: list[int] = []  # descriptors of full segments awaiting their fsync
        # a background syncer's early wake-up, called once ``backlog_limit`` bytes are unsynced
        self.on_backlog: Callable[[], None] | None = None
        # called once, after the first frame this writer appends (then cleared): a syncer
        # starts its thread there, so an open that never commits starts none
        self.on_first_append: Callable[[], None] | None = None
        self.backlog_limit = 0
        self.preallocate = preallocate
        # compression="zstd": payloads of MIN_COMPRESS bytes or more are stored compressed
        # where that saves an eighth; raw_bytes/stored_bytes count what was offered/kept
        self.compressor: Any = None
        if compression == "zstd":
            self.compressor = zstandard().ZstdCompressor(level=ZSTD_LEVEL)
        self.raw_bytes = self.stored_bytes = 0
        # (frame type, size class) -> payloads left to store without trying, after a miss
        self._skip: dict[tuple[int, int], int] = {}
        self._dir_unsynced = False
        segs = list_segments(log_dir)
        if segs:
            self._open_existing(segs[-1][1])
        else:
            self.roll(next_lsn)

    def _open_existing(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self.path = path
        self.name = os.path.basename(path)
        self.pos = os.fstat(self._fd).st_size
        self._preallocate(self._fd)

    def _preallocate(self, fd: int) -> None:
        """Reserve the segment's blocks up front without changing its size (readers and
        recovery go by the size): appends then skip the filesystem's per-page block
        reservation, which makes a large ``writev`` about 1.5-6x cheaper on ext4 and keeps
        its time steady. Best effort: where the call is missing or refused, appends simply
        allocate as they go."""
        if self.preallocate:
            err = _keep_size_fallocate(fd, self.segment_size)
            if err in (-1, errno.EOPNOTSUPP, errno.ENOSYS):  # not here: stop asking
                self.preallocate = False

    def _release(self, fd: int, pos: int) -> None:
        """Give back the preallocated blocks past ``pos`` (the segment's end). Best effort:
        the file's size is ``pos`` either way, so a failure only keeps the blocks."""
        if self.preallocate:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, pos)

    # -- failure ------------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """Whether a failure has stopped this writer for good (see the module docstring)."""
        return self._failure is not None

    def _fail(self, kind: type[LogWriteError], what: str, cause: BaseException) -> LogWriteError:
        """Record the failure that stops this writer (the first one wins) and return the
        error to raise for it (``from cause``)."""
        with self._lock:
            if self._failure is None:
                self._failure = (kind, what, cause)
                if kind is LogSyncError and isinstance(cause, OSError):
                    self.sync_error = cause
        why = " (a retried fsync would prove nothing)" if kind is LogSyncError else ""
        err = kind(f"{what} failed ({cause}); the log takes no more writes{why}: reopen the bus")
        err.errno = getattr(cause, "errno", None)
        return err

    def _check_failed(self) -> None:
        """Raise the recorded failure again (a new error chained to the same cause)."""
        failure = self._failure
        if failure is not None:
            kind, what, cause = failure
            raise self._fail(kind, f"an earlier {what}", cause) from cause

    def raise_if_failed(self, on_failure: Callable[[BaseException], None]) -> None:
        """For the owner, before it stages a commit: if the writer has failed, call
        ``on_failure(error)`` (which closes the bus) and raise the error."""
        try:
            self._check_failed()
        except LogWriteError as exc:
            on_failure(exc)
            raise

    def roll(self, first_lsn: int) -> None:
        """Start a new segment whose first frame will carry ``first_lsn``.

        The new segment is complete (header written and, unless deferred, synced with its
        directory entry) before the old one is let go; when it cannot be made, it is
        removed again and the old segment stays current, so the next append still works
        (a :class:`LogWriteError`). A failed fsync fails the writer (:class:`LogSyncError`).
        """
        self._check_failed()
        with self._lock:
            defer = self.defer_roll_sync and self.fsync_enabled
            if self._fd >= 0 and not defer:
                self.sync()  # the old segment is complete on disk before the new one starts
            path = os.path.join(self.log_dir, segment_name(first_lsn))
            fd = self._new_segment(path, first_lsn)
            if not defer and self.fsync_enabled:
                try:
                    os.fsync(fd)
                    fsync_dir(self.log_dir)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    raise self._fail(LogSyncError, "fsync of a new log segment", exc) from exc
            if self._fd >= 0:
                self._release(self._fd, self.pos)
                if defer:
                    self._retired.append(self._fd)
                else:
                    with contextlib.suppress(OSError):
                        os.close(self._fd)
            if defer:
                self._dir_unsynced = True  # the next sync covers the header and the entry
            self._fd, self.path, self.name = fd, path, os.path.basename(path)
            self.last_frame = -1
            self.pos = SEG_HEADER_SIZE

    def _new_segment(self, path: str, first_lsn: int) -> int:
        """Create the segment file with its header; on failure leave no file behind."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, layout.FILE_MODE)
        except OSError as exc:
            raise LogWriteError(f"cannot create log segment {path}: {exc}") from exc
        try:
            self._preallocate(fd)
            _write_all(fd, [encode_segment_header(first_lsn)], SEG_HEADER_SIZE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            try:
                os.unlink(path)
                if self.fsync_enabled:
                    fsync_dir(self.log_dir)  # the removal is durable before later frames
            except OSError as gone:
                # a stray segment named for an LSN the current one will also hold would
                # read as damage: stop here, and let recovery drop the headerless file
                raise self._fail(LogWriteError, f"removal of half-made segment {path}",
                                 gone) from exc  # fmt: skip
            raise LogWriteError(f"cannot write the header of log segment {path}: {exc}") from exc
        return fd

    def append(
        self,
        ftype: int,
        lsn: int,
        ts: int,
        pieces: Sequence[bytes | memoryview],
        flags: int = 0,
        crc: int | None = None,
    ) -> int:
        """Write one frame; return its offset. Rolls first when the segment is full.
        ``crc`` is the pieces' CRC-32 when the caller computed it already.

        A failed write raises its :class:`OSError` with the log as it was; when the part
        already written cannot be cut off again the writer fails (:class:`LogWriteError`).
        """
        self._check_failed()
        if self.pos >= self.segment_size and self.pos > SEG_HEADER_SIZE:
            self.roll(lsn)
        if self.compressor is not None:
            pieces, flags, crc = self._compressed(ftype, pieces, flags, crc)
        head, length, pad = encode_frame_header(ftype, flags, lsn, ts, pieces, crc)
        parts = [head, *pieces]
        if pad:
            parts.append(_ZEROS[:pad])
        offset = self.pos
        size = FRAME_HEADER_SIZE + length + pad
        t0 = time.perf_counter_ns()
        try:
            _write_all(self._fd, parts, size)
        except BaseException as exc:
            # never leave a partial frame behind a later good one
            try:
                os.ftruncate(self._fd, offset)
            except OSError as cut:
                # the tail stays torn (recovery cuts it); nothing may follow it
                raise self._fail(LogWriteError, "cutting off a partly written frame",
                                 cut) from exc  # fmt: skip
            raise
        self.write_ns += time.perf_counter_ns() - t0
        self.pos += size
        self.last_frame = offset
        self.appended += size
        self.written += size
        if self.on_first_append is not None:
            first, self.on_first_append = self.on_first_append, None
            first()
        if self.on_backlog is not None and self.appended - self.synced >= self.backlog_limit:
            self.on_backlog()
        return offset

    def _compressed(
        self, ftype: int, pieces: Sequence[bytes | memoryview], flags: int, crc: int | None
    ) -> tuple[Sequence[bytes | memoryview], int, int | None]:
        """The pieces as one zstandard frame (flag ``FLAG_ZSTD``) when that saves at least
        an eighth of a payload of ``MIN_COMPRESS`` bytes or more; else as they are. After a
        payload that did not compress, the next ``SKIP_AFTER_MISS`` of the same frame type
        and size class (a power of two) are stored without trying: incompressible data,
        such as the floats of a simulation, then costs little."""
        total = sum(memoryview(p).nbytes for p in pieces)
        if total < MIN_COMPRESS:
            return pieces, flags, crc
        self.raw_bytes += total
        kind = (ftype, total.bit_length())
        if self._skip.get(kind):
            self._skip[kind] -= 1
            self.stored_bytes += total
            return pieces, flags, crc
        packed = self.compressor.compress(b"".join(pieces))
        if len(packed) > total - total // 8:
            self._skip[kind] = SKIP_AFTER_MISS
            self.stored_bytes += total
            return pieces, flags, crc
        self.stored_bytes += len(packed)
        return [packed], flags | FLAG_ZSTD, None

    def cut(self, offset: int) -> None:
        """Take back everything appended from ``offset`` of the current segment on (a frame
        whose fsync failed: it was never acknowledged). Best effort: the owner closes."""
        removed = self.pos - offset
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, offset)
        self.pos = offset
        self.last_frame = -1
        self.appended -= removed
        self.written -= removed

    @property
    def unsynced(self) -> int:
        """Bytes appended since the last completed fsync."""
        return self.appended - self.synced

    def sync(self, *, force: bool = False, background: bool = False) -> None:
        """fdatasync the current segment if anything was appended since the last sync
        (always when ``force``; otherwise only where the sync mode allows fsync at all).

        A failed fsync fails the writer: this call and every later one raise
        :class:`LogSyncError` and nothing is retried. ``force`` marks the owner's explicit
        request (``Bus.sync_now``), made outside any commit: :attr:`on_failure` is then
        called first, so the bus closes at once. ``background`` only words the error (a
        sync thread's)."""
        try:
            self._check_failed()
            if self.fsync_enabled or force:
                self._sync("background fsync of the log" if background else "fsync of the log")
        except LogWriteError as exc:
            if force and self.on_failure is not None:
                self.on_failure(exc)
            raise

    def _sync(self, what: str) -> None:
        with self._lock:  # collect what to sync; the fsyncs run without the lock
            target = self.appended
            retired, self._retired = self._retired, []
            dir_unsynced, self._dir_unsynced = self._dir_unsynced, False
            current = os.dup(self._fd) if self._fd >= 0 and (target > self.synced or
                                                           dir_unsynced) else -1  # fmt: skip
        t0 = time.perf_counter_ns()
        try:
            for fd in retired:
                os.fdatasync(fd)
            if current >= 0:
                os.fsync(current) if dir_unsynced else os.fdatasync(current)
            if dir_unsynced:
                fsync_dir(self.log_dir)
        except BaseException as exc:
            with self._lock:  # kept: for abandon() to close, or (interrupted) to sync later
                self._retired[:0] = retired
                retired = []
                if not isinstance(exc, OSError):
                    self._dir_unsynced = self._dir_unsynced or dir_unsynced
            if isinstance(exc, OSError):  # never synced again (see the module docstring)
                raise self._fail(LogSyncError, what, exc) from exc
            raise
        finally:
            for fd in retired:
                os.close(fd)
            if current >= 0:
                os.close(current)
        took = time.perf_counter_ns() - t0
        with self._lock:
            self.synced = max(self.synced, target)
            if current >= 0 or dir_unsynced or retired:
                self.fsyncs += 1
                self.fsync_ns += took
                self.fsync_max_ns = max(self.fsync_max_ns, took)

    def close(self) -> None:
        """Sync and close. On a failed writer (or a failed last sync) every descriptor is
        still closed, and the failure is raised: the owner must not record a clean
        shutdown."""
        with self._lock:
            if self._fd >= 0 or self._retired:
                try:
                    self.sync()
                finally:
                    for fd in self._retired:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    self._retired = []
                    if self._fd >= 0:
                        if not self.failed:
                            self._release(self._fd, self.pos)
                        with contextlib.suppress(OSError):
                            os.close(self._fd)
                    self._fd = -1

    def abandon(self) -> None:
        """Close every descriptor without syncing or trimming (the owner is failing)."""
        with self._lock:
            fds, self._retired = [*self._retired, self._fd], []
            self._fd = -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


_FALLOC_FL_KEEP_SIZE = 1
_fallocate: Any = None


def _keep_size_fallocate(fd: int, length: int) -> int:
    """``fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, length)``: 0, its errno, or -1 where the
    call does not exist."""
    global _fallocate
    if _fallocate is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).fallocate
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
            fn.restype = ctypes.c_int
            _fallocate = fn
        except (OSError, AttributeError):
            _fallocate = False
    if _fallocate is False or not sys.platform.startswith("linux"):
        return -1
    if _fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, length) == 0:
        return 0
    return ctypes.get_errno()


def _write_all(fd: int, parts: Sequence[bytes | memoryview], total: int) -> None:
    """Write every byte of ``parts`` (one ``writev`` in the usual case)."""
    done = os.writev(fd, parts) if len(parts) <= _IOV_MAX else 0
    if done == total:
        return
    views = [v for v in (memoryview(p).cast("B") for p in parts) if v.nbytes]
    while views:
        if done >= views[0].nbytes:
            done -= views[0].nbytes
            views.pop(0)
        elif done:
            views[0] = views[0][done:]
            done = 0
        else:
            done = os.writev(fd, views[:_IOV_MAX])


_IOV_MAX = 1024
