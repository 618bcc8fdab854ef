"""A writer's hold on a bus directory, from recovery to close: the lock, the publication
header, the log and its sync thread, and the components built on them (committer, writer,
checkpointer).

Three ways to end it: :meth:`WriterSession.close` (clean: the log synced, the clean-shutdown
state written), :meth:`WriterSession.abandon` (as a crash: nothing flushed, so the next open
recovers) and :meth:`WriterSession.release` (just let go of every resource; what both end
with, and what a failed open does).

A failed OS call while opening raises a typed :class:`~mmsb.errors.StorageIOError` (or
:class:`~mmsb.errors.StorageFullError`) with every resource let go. :meth:`close` writes the
clean-shutdown state only when the log closed cleanly and the arena flushed: after a failed
fsync of the log it closes the bus as after a crash instead and raises
:class:`~mmsb.errors.LogSyncError`.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import threading
from collections.abc import Callable

from mmsb.errors import CorruptLogError, LogWriteError, MMSBError, storage_error
from mmsb.options import Options
from mmsb.storage import layout
from mmsb.storage.arena import FileArena
from mmsb.storage.checkpoint import log_bytes_since_checkpoint, write_state
from mmsb.storage.lock import WriterLock
from mmsb.storage.log import LogReader
from mmsb.storage.logsync import PeriodicSync
from mmsb.storage.logwriter import LogWriter
from mmsb.storage.manifest import Manifest
from mmsb.storage.readers import ReaderSafeArena
from mmsb.storage.recovery import recover
from mmsb.storage.seqlock import SeqPublisher
from mmsb.storage.snapstore import SnapWriter
from mmsb.storage.unlinker import Unlinker
from mmsb.types import RecoveryInfo
from mmsb.writer.checkpointer import Checkpointer
from mmsb.writer.committer import Committer
from mmsb.writer.writer import Writer

logger = logging.getLogger("mmsb")


class WriterSession:
    """Everything a writable bus holds open. Build with :meth:`open`."""

    def __init__(self, path: str, lock: WriterLock) -> None:
        self.path = path
        self.lock: WriterLock | None = lock
        self.seq: SeqPublisher | None = None
        self.syncer: PeriodicSync | None = None  # sync="normal": the background fsync
        self.after_open: AfterOpen | None = None  # a lazy open's background log check
        # unlinks what GC and compaction drop, off the writer's thread
        self.unlinker = Unlinker()  # (open() sets its sync mode)
        self.stale: str | None = None  # the clean-shutdown file set aside by the open
        # set by open() once recovery has run
        self.committer: Committer
        self.writer: Writer
        self.checkpointer: Checkpointer
        self.recovery: RecoveryInfo

    @classmethod
    def open(
        cls,
        path: str,
        manifest: Manifest,
        opts: Options,
        clock: Callable[[], int],
        *,
        on_fail_stop: Callable[[BaseException], None],
        on_compacted: Callable[[], None],
    ) -> WriterSession:
        """Take the writer lock, recover the state, open the log for appending."""
        try:
            lock = WriterLock(os.path.join(path, layout.LOCK_FILE))
        except OSError as exc:
            if isinstance(exc, MMSBError):  # BusLockedError
                raise
            raise storage_error(f"cannot take the writer lock of {path}", exc) from exc
        s = cls(path, lock)
        arena: FileArena | None = None
        log: LogWriter | None = None
        try:
            s.seq = SeqPublisher(path)  # seq odd: recovery may rewrite the arena
            layout.make_dirs(path)
            arena = ReaderSafeArena(os.path.join(path, layout.ARENA_FILE))
            rec = recover(path, arena, readonly=False,
                          drop_damaged_tail=opts.recovery == "truncate",
                          lazy=opts.verify_on_open == "lazy")  # fmt: skip
            log = LogWriter(os.path.join(path, layout.LOG_DIR), rec.lsn + 1,
                            segment_size=manifest.segment_size,
                            fsync_enabled=opts.sync != "off",
                            compression=opts.compression)  # fmt: skip
            if rec.last_frame is not None and rec.last_frame[0] == log.name:
                log.last_frame = rec.last_frame[1]  # what the next clean file records
            # the checkpoint trigger counts from the newest checkpoint on disk, not from open
            log.written = log_bytes_since_checkpoint(path)
            s.committer = Committer(log, s.seq, lsn=rec.lsn, timestamp=rec.timestamp,
                                    clock=clock, sync_always=opts.sync == "always",
                                    on_fail_stop=on_fail_stop)  # fmt: skip
            log.on_failure = s.committer.fail_stop  # a failed sync_now closes the bus
            if opts.sync == "normal":
                log.defer_roll_sync = True  # full segments are synced by the thread
                s.syncer = PeriodicSync(log, opts.sync_interval)
            s.writer = Writer(rec.state, s.committer, cpu_fallback=opts.cpu_fallback)
            s.unlinker.sync = opts.sync != "off"
            s.checkpointer = Checkpointer(
                path, rec.state, s.committer, sync=opts.sync != "off",
                every=opts.checkpoint_every, retention=opts.retention,
                auto_compact=opts.auto_compact, on_compacted=on_compacted,
                unlinker=s.unlinker,
            )  # fmt: skip
            s.committer.after_publish.append(s.checkpointer.after_commit)
            s.recovery = rec.info
            # before the first publish: no reader can pin a snapshot before it exists
            s.committer.snapshots = SnapWriter(path, rec.state, opts.snapshot_memory)
            s.seq.publish(rec.lsn, rec.timestamp)
            s.stale = rec.stale
            if rec.unverified is not None:
                # (no frame appended yet: the current segment ends where the check may read)
                s.after_open = AfterOpen(path, rec.unverified, s.checkpointer,
                                         {log.name: log.pos})  # fmt: skip
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the open's own error is the one to report
                s.release()
            if log is not None and not hasattr(s, "committer"):
                log.abandon()  # what release() does not know of yet
            if arena is not None:
                with contextlib.suppress(OSError):
                    arena.close()
            if isinstance(exc, OSError) and not isinstance(exc, MMSBError):
                raise storage_error(f"cannot open the bus at {path} for writing", exc) from exc
            raise
        return s

    def _stop_background(self) -> None:
        self.unlinker.close(wait=False)  # (after close()'s own wait: nothing left)
        if self.after_open is not None:
            self.after_open.stop()
        if hasattr(self, "checkpointer"):
            self.checkpointer.stop()
        if self.syncer is not None:
            self.syncer.stop()
            self.syncer = None

    def close(self) -> None:
        """Clean shutdown: the log synced and closed, the arena flushed, the clean-shutdown
        state written (the next open skips recovery), the files dropped by GC or compaction
        unlinked, every resource released. Where the log cannot be closed cleanly (a failed
        fsync, now or before) the bus closes as after a crash and the error is raised; where
        the arena cannot be flushed or the state written, the typed error is raised and the
        next open replays the log."""
        try:
            self.unlinker.close(wait=True)
            self._stop_background()
            c, state = self.committer, self.writer.state
            try:
                c.log.close()
            except LogWriteError as exc:
                c.fail_stop(exc)  # no clean-shutdown state: the next open recovers
                raise
            state.arena.flush()
            log = c.log
            end = (log.name, log.pos, log.last_frame) if log.last_frame >= 0 else None
            write_state(os.path.join(self.path, layout.CLEAN_FILE), state, c.lsn, c.timestamp,
                        with_arena=False, sync=log.fsync_enabled, log_end=end)  # fmt: skip
            if self.stale is not None:  # (after a crash the next writer's lock removes it)
                with contextlib.suppress(OSError):
                    os.unlink(self.stale)
        finally:
            self.release()

    def abandon(self) -> None:
        """End as a crash would: nothing synced or flushed, no clean-shutdown state."""
        self._stop_background()
        if hasattr(self, "committer"):
            self.committer.log.abandon()
        if hasattr(self, "writer"):
            arena = self.writer.state.arena
            if isinstance(arena, FileArena):
                arena.abandon()
        self.release()

    def release(self) -> None:
        """Let go of every resource (idempotent); each one is let go even when letting go of
        an earlier one raised (that error is raised at the end)."""
        try:
            self._stop_background()
            if hasattr(self, "committer"):
                c = self.committer
                try:
                    c.log.close() if c.failure is None else c.log.abandon()
                finally:
                    if c.snapshots is not None:
                        c.snapshots.close()
                        c.snapshots = None
                    if hasattr(self, "writer"):
                        self.writer.state.arena.close()
                        self.writer.state.release_table()
        finally:
            if self.seq is not None:
                self.seq.close()
                self.seq = None
            if self.lock is not None:
                self.lock.release()
                self.lock = None


class AfterOpen:
    """What a lazy clean open leaves to a background thread, off the open's path: reading
    the log frames it did not (LSNs ``after + 1`` to ``upto - 1``, which a crash recovery
    would replay), checksums and all. Damage is logged and kept in ``error``, and the
    checkpointer is asked for a checkpoint at the next commit, after which recovery no
    longer needs those frames."""

    def __init__(
        self, path: str, unverified: tuple[int, int], checkpointer: Checkpointer,
        ends: dict[str, int] | None = None,
    ) -> None:  # fmt: skip
        self.path, self.unverified = path, unverified
        # the segments it maps read-only rather than reads whole (a transient buffer the
        # size of a segment, copied in while the open's caller goes on: 0.6-0.7 ms of a
        # 100,000-page open measured with it beside the open), each up to its size at open
        # where the writer may append (and cut a failed append off) meanwhile
        self.ends = ends
        self.checkpointer = checkpointer
        self.error: CorruptLogError | None = None
        self.done = threading.Event()
        self._stopping = False
        # a bare thread: threading.Thread.start() waits for the new thread to say it began,
        # forever if its start-up cannot allocate (seen under injected mmap failures); this
        # check is best effort, so the open never waits on it
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._check(*self.unverified)
        finally:
            self.done.set()

    def _check(self, after: int, upto: int) -> None:
        try:
            reader = LogReader(os.path.join(self.path, layout.LOG_DIR), mapped=True,
                               ends=self.ends)  # fmt: skip
            for frame in reader.frames(after_lsn=after):
                if frame.lsn >= upto or self._stopping:
                    break
        except CorruptLogError as exc:
            self.error = exc
            self.checkpointer.requested = True
            logger.warning("the log is damaged before the clean-shutdown point (%s); a "
                           "checkpoint at the next commit takes its place", exc)  # fmt: skip
        except OSError:  # a segment compacted away meanwhile: nothing left to check there
            pass

    def stop(self) -> None:
        """Ask the check to stop after the segment it is reading, without waiting for it
        (it only reads; a file removed under it ends it quietly)."""
        self._stopping = True
