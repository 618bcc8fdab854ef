"""Checkpoints and compaction of a writable bus.

A checkpoint is a full image of the state at the current LSN, written beside the log (see
:mod:`mmsb.storage.checkpoint`); the log then starts a new segment. The :class:`Checkpointer`
also takes the automatic checkpoint the log's growth calls for: it runs after each
published commit (a hook of the :class:`~mmsb.writer.committer.Committer`), and a state
whose arena is at most ``BACKGROUND_CHECKPOINT_BYTES`` is copied (a memcpy) and written by a
helper thread, which first syncs the log up to that LSN, so the commit that crossed the
threshold does not wait for the disk. The copy goes into memory that is already faulted in:
the previous image's, or for the first image memory a second helper prepared half way to
the threshold (fresh memory would cost the commit a page fault per page, and possibly the
kernel's huge-page compaction); the bus keeps that one image-sized buffer until it closes.

Failures never lose a commit, because the log is the record: a checkpoint that cannot be
written raises :class:`~mmsb.errors.CheckpointWriteError` (explicit) or is kept in
``last_error`` (automatic: the commit that called for it is already published, so it does
not raise), and the next threshold tries again. Only a failed fsync of the log is worse: it
closes the bus (see :mod:`mmsb.storage.logwriter`).
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from mmsb.errors import LogWriteError, StorageIOError, storage_error
from mmsb.storage import layout
from mmsb.storage.bgthread import Helper
from mmsb.storage.checkpoint import checkpoint_name, list_checkpoints, write_state
from mmsb.storage.log import SEG_HEADER_SIZE, list_segments
from mmsb.storage.replay import copy_state
from mmsb.storage.retention import Retention
from mmsb.storage.state import State
from mmsb.storage.unlinker import Unlinker
from mmsb.types import CheckpointInfo, CompactInfo
from mmsb.writer.committer import Committer

# automatic checkpoints of arenas up to this size are copied and written in the background
BACKGROUND_CHECKPOINT_BYTES = 64 << 20


WARM_CHUNK = 2 << 20  # bytes faulted in per step by the warming helper


def image_size(end: int) -> int:
    """Bytes to set aside for a background image of an arena used up to ``end``: a quarter
    more and 1 MiB (the state may grow before the next image), within the background cap."""
    return max(end, min(BACKGROUND_CHECKPOINT_BYTES, end + end // 4 + (1 << 20)))


def prefaulted(size: int, pause: float = 0.0005) -> npt.NDArray[np.uint8]:
    """``size`` bytes of private anonymous memory, faulted in a chunk at a time (a byte
    written per OS page) with a pause between chunks, so the thread doing it never holds
    the GIL or the address-space lock for long. Ordinary pages (no ``MADV_HUGEPAGE``): no
    huge-page compaction when first written."""
    arr = np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS),
                        np.uint8)  # fmt: skip
    for off in range(0, size, WARM_CHUNK):
        arr[off : off + WARM_CHUNK : mmap.PAGESIZE] = 0
        time.sleep(pause)
    return arr


class Checkpointer:
    """Owns the background checkpoint thread and the checkpoint/compaction policy."""

    def __init__(
        self,
        path: str,
        state: State,
        committer: Committer,
        *,
        sync: bool,
        every: int | None,
        retention: Retention,
        auto_compact: bool,
        on_compacted: Callable[[], None],
        unlinker: Unlinker | None = None,
    ) -> None:
        self.path = path
        self.state = state
        self.committer = committer
        self.sync = sync  # fsync the image (False only for sync="off")
        self.every = every  # log bytes between automatic checkpoints (None: never)
        self.retention = retention  # which checkpoints compact() keeps
        self.auto_compact = auto_compact
        self.on_compacted = on_compacted  # segments were removed: history indexes are stale
        # removes what compaction drops off the caller's thread (the writer's, shared
        # with the collector)
        self.unlinker = Unlinker() if unlinker is None else unlinker
        # why the last automatic checkpoint written in the background failed (None: it did
        # not); the log still holds every commit, so nothing is lost
        self.last_error: BaseException | None = None
        # checkpoints written or removed so far (the collector lists the directories again
        # only when this moves)
        self.changes = 0
        self._thread: threading.Thread | None = None  # the background checkpoint, if any
        self.requested = False  # set from another thread: checkpoint at the next commit
        self._thread_error: BaseException | None = None
        # the last background image's arena memory, reused by the next one (already
        # faulted in, so copying the arena on the commit path is a memcpy and no more)
        self._spare: npt.NDArray[np.uint8] | None = None
        self._image: State | None = None  # the image the background thread is writing
        self._image_mem: npt.NDArray[np.uint8] | None = None  # all the memory it was given
        # half way to the first automatic checkpoint, a helper maps and faults in the
        # memory its image will need (so that image's copy is a memcpy as well)
        self._warming: Helper | None = None
        self._warmed: npt.NDArray[np.uint8] | None = None

    # -- after each commit ------------------------------------------------------------------

    def after_commit(self) -> None:
        """The committer's after-publish hook: reap a finished background checkpoint and
        start the next one when the log has grown by ``every`` bytes. It never raises for
        a failure of its own: the commit that ran it is published (and in the log), so the
        failure goes to ``last_error`` and the next threshold tries again."""
        try:
            self._reap_warm()
            bg = self._thread
            if bg is not None and not bg.is_alive():
                self.join()
                if self.auto_compact:
                    self.compact()
            if self.requested or (
                self.every is not None and self.committer.log.written >= self.every
            ):
                self.requested = False
                self._automatic()
            elif (
                self.every is not None
                and self._spare is None
                and self._warming is None
                and self._thread is None
                and self.committer.log.written >= self.every // 2
                and self.state.end <= BACKGROUND_CHECKPOINT_BYTES
            ):
                self._warm(self.state.end)
        except (OSError, RuntimeError) as exc:  # typed I/O errors, or no thread to run
            self.last_error = exc

    def _warm(self, end: int) -> None:
        """Map and fault in memory for the next image off the commit path: the arena's used
        bytes and a quarter more (the state may grow before the checkpoint)."""
        size = image_size(end)

        def run() -> None:
            try:
                self._warmed = prefaulted(size)
            except (OSError, MemoryError, ValueError):  # the image then allocates its own
                self._warmed = None

        self._warmed = None
        self._warming = Helper(run)  # (off the commit path: the commit does not wait for it)

    def _reap_warm(self, wait: bool = False) -> None:
        """Take the warmed memory as the spare once its helper is done (or drop it, if a
        spare came meanwhile); ``wait``: wait for the helper first."""
        warming = self._warming
        if warming is None or not (wait or warming.done()):
            return
        warming.stop()  # (a helper that had not begun never will: nothing warmed)
        if self._spare is None:
            self._spare = self._warmed
        self._warmed = self._warming = None

    def _take_spare(self, end: int) -> npt.NDArray[np.uint8]:
        """Memory for the next image: the spare (the last image's, or the warmed memory
        :meth:`after_commit` reaped), or else new memory."""
        spare, self._spare = self._spare, None
        if spare is None or spare.size < end:  # fresh memory, with room for some growth
            spare = prefaulted(image_size(end), pause=0.0)
        return spare

    def _automatic(self) -> None:
        if self._thread is not None:
            return  # one at a time: the next commit asks again
        state, log = self.state, self.committer.log
        if state.end > BACKGROUND_CHECKPOINT_BYTES:
            self.checkpoint()
            if self.auto_compact:
                self.compact()
            return
        spare = self._take_spare(state.end)
        image, lsn, ts = copy_state(state, spare), self.committer.lsn, self.committer.timestamp
        if log.pos > SEG_HEADER_SIZE:
            log.roll(lsn + 1)
        log.written = 0
        path = os.path.join(self.path, layout.CKPT_DIR, checkpoint_name(lsn))
        sync = self.sync

        def write() -> None:
            try:
                log.sync(background=True)  # the log up to ``lsn`` is durable before its image
                write_state(path, image, lsn, ts, with_arena=True, sync=sync)
                self.changes += 1
            except BaseException as exc:  # kept for the owner: see join()
                self._thread_error = exc

        self._thread_error = None
        self._image, self._image_mem = image, spare
        self._thread = threading.Thread(target=write, name="mmsb-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """At close: wait for both helpers and let the memory kept for images go."""
        self.join()
        self._reap_warm(wait=True)
        self._spare = None

    def join(self) -> None:
        """Wait for a background checkpoint; a failure leaves the log as the record (the
        next threshold tries again) and is kept in ``last_error``."""
        bg, self._thread = self._thread, None
        if bg is not None:
            bg.join()
            self.last_error = self._thread_error
            self._image = None  # the thread is done with its memory: keep it for the next
            self._spare, self._image_mem = self._image_mem, None

    # -- explicit -----------------------------------------------------------------------------

    def checkpoint(self) -> CheckpointInfo:
        """Write a full image at the current LSN and start a new log segment. Raises
        :class:`~mmsb.errors.CheckpointWriteError` when the image cannot be written (the bus
        stays open) and :class:`~mmsb.errors.LogSyncError` when the log cannot be synced
        first (the bus closes itself)."""
        self.join()
        state, log, c = self.state, self.committer.log, self.committer
        t0 = time.perf_counter()
        try:
            log.sync()
        except LogWriteError as exc:
            c.fail_stop(exc)
            raise
        path = os.path.join(self.path, layout.CKPT_DIR, checkpoint_name(c.lsn))
        size = write_state(path, state, c.lsn, c.timestamp, with_arena=True, sync=self.sync)
        self.changes += 1
        if log.pos > SEG_HEADER_SIZE:
            try:
                log.roll(c.lsn + 1)
            except LogWriteError as exc:
                if log.failed:
                    c.fail_stop(exc)
                raise
        log.written = 0
        return CheckpointInfo(c.lsn, path, size, state.live_count, time.perf_counter() - t0)

    def compact(self) -> CompactInfo:
        """Drop checkpoints beyond the newest ``keep`` and the log segments wholly covered
        by the oldest kept one. History before it becomes unavailable. Each file is renamed
        out of the bus's listings here and unlinked on the unlinker's thread (its blocks
        are freed soon after, at the latest by a clean close). A failed rename raises
        :class:`~mmsb.errors.StorageIOError`; what was removed was covered."""
        self.join()  # its temporary file must not be taken for debris
        try:
            return self._compact()
        except OSError as exc:
            if isinstance(exc, StorageIOError):
                raise
            raise storage_error(f"cannot compact {self.path}", exc) from exc
        finally:
            self.changes += 1  # (checkpoints or segments may be gone, even after a failure)

    def _compact(self) -> CompactInfo:
        ckpt_dir = os.path.join(self.path, layout.CKPT_DIR)
        log_dir = os.path.join(self.path, layout.LOG_DIR)
        self.unlinker.sweep_leftovers(self.path)  # what an earlier writer left renamed
        drop = self.unlinker.drop
        ckpts = list_checkpoints(ckpt_dir)
        kept = self.retention.kept(self.path, self.committer.timestamp)
        removed_ck = 0
        for _, path in ckpts[len(kept) :]:
            drop(path)
            removed_ck += 1
        for name in os.listdir(ckpt_dir):
            if name.endswith((layout.CORRUPT_SUFFIX, layout.TMP_SUFFIX)):
                drop(os.path.join(ckpt_dir, name))
        oldest = kept[-1][0] if kept else 0
        removed = nbytes = 0
        for (_, path), (next_first, _) in itertools.pairwise(list_segments(log_dir)):
            if next_first - 1 <= oldest:  # every frame in this segment is <= oldest
                nbytes += os.path.getsize(path)
                drop(path)
                removed += 1
        if removed or removed_ck:  # (the unlinker fsyncs the directories after its unlinks)
            self.on_compacted()
        return CompactInfo(removed, nbytes, removed_ck, oldest)
