"""The page arena: one flat byte buffer holding every page's bytes.

Two implementations share one small contract (``buf``, ``capacity``, ``ensure``, ``flush``,
``close``): :class:`FileArena` memory-maps a file that grows by doubling, and
:class:`MemoryArena` keeps the bytes in process memory (snapshots, read-only replays).

Invariant for both: every byte that belongs to no live page is zero, so new pages need no
clearing (the allocator zeroes a slot when its page is deleted, and growth adds zeros).

Growth never leaves a hole in the file: :class:`FileArena` reserves the disk blocks of every
byte it adds (``posix_fallocate``) before it maps them. A sparse arena would accept pages
the disk cannot hold, and the first write to such a page past the free space would end the
process with ``SIGBUS``. Now a full disk (or quota, or memory) is a
:class:`~mmsb.errors.StorageFullError` from the growth itself, and the file is shrunk back
to its old length, so a failed growth leaves the arena as it was.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptStateError, ReadOnlyError, storage_error
from mmsb.storage import layout

MIN_CAPACITY = 1 << 20
MAX_STEP = 1 << 30  # grow by doubling, but by at most 1 GiB at a time


def grown_capacity(current: int, needed: int) -> int:
    cap = max(current, MIN_CAPACITY)
    while cap < needed:
        cap += min(cap, MAX_STEP)
    return cap


class MemoryArena:
    """Arena bytes in an in-process numpy buffer."""

    def __init__(self, capacity: int = 0) -> None:
        self.buf: npt.NDArray[np.uint8] = np.zeros(capacity, dtype=np.uint8)

    @classmethod
    def over(cls, buf: npt.NDArray[np.uint8]) -> MemoryArena:
        """An arena whose bytes are ``buf`` (not copied, not cleared: the caller fills it)."""
        arena = cls(0)
        arena.buf = buf
        return arena

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    def ensure(self, needed: int) -> None:
        if needed > self.buf.size:
            new = _zeros(grown_capacity(self.buf.size, needed))
            new[: self.buf.size] = self.buf
            self.buf = new

    def clear(self, needed: int) -> None:
        self.buf = _zeros(grown_capacity(0, max(needed, 1)))

    def shrink(self, capacity: int) -> None:
        """Keep only the first ``capacity`` bytes (callers checked the rest is free)."""
        if capacity < self.buf.size:
            self.buf = self.buf[:capacity].copy()

    def evict(self, start: int, length: int) -> int:
        """Nothing to evict in process memory; returns 0 bytes."""
        return 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.buf = np.zeros(0, dtype=np.uint8)


class FileArena:
    """Arena bytes in a shared, writable memory map of ``path``.

    The numpy view ``buf`` is the only export of the map; it is dropped before the map is
    resized (``mmap.resize`` refuses while exports exist), so callers must not keep views
    across a call that may grow the arena.

    Every byte the arena adds to the file has its blocks reserved first (see the module
    docstring). A failed growth raises :class:`~mmsb.errors.StorageFullError` (no room)
    or :class:`~mmsb.errors.StorageIOError` (any other failed call) with the file back at
    its old length and the old mapping in place.
    """

    def __init__(self, path: str, *, mode: int = layout.FILE_MODE) -> None:
        self.path = path
        self._mm: mmap.mmap | None = None
        self.buf: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
        except OSError as exc:
            raise storage_error(f"cannot open arena file {path}", exc) from exc
        try:
            size = os.fstat(self._fd).st_size
            if size < MIN_CAPACITY:
                self._grow_file(size, MIN_CAPACITY)
                size = MIN_CAPACITY
            self._map(size)
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    def identity(self) -> list[int]:
        """The arena file's size, inode, device and modification time: what a clean-shutdown
        file records so that a lazy open can tell, in O(1), that the file is the one it
        wrote."""
        st = os.fstat(self._fd)
        return [int(st.st_size), int(st.st_ino), int(st.st_dev), int(st.st_mtime_ns)]

    def _grow_file(self, old: int, new: int) -> None:
        """Make the file ``new`` bytes long with the blocks of ``[old, new)`` reserved; on
        failure shrink it back to ``old`` and raise the typed error."""
        try:
            _check_room(self._fd, new - old)
            _reserve(self._fd, old, new - old)
        except OSError as exc:
            self._shrink_file_back(old)
            raise storage_error(
                f"cannot grow arena file {self.path} from {old} to {new} bytes", exc
            ) from exc

    def _shrink_file_back(self, old: int) -> None:
        """Undo a growth that failed (best effort: the bytes past ``old`` are zeros, so a
        file left longer is only a waste of space)."""
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_size > old:
                os.ftruncate(self._fd, old)

    def _map(self, size: int) -> None:
        try:
            self._mm = mmap.mmap(self._fd, size)
        except OSError as exc:
            raise storage_error(f"cannot map {size} bytes of arena file {self.path}", exc) from exc
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    def ensure(self, needed: int) -> None:
        if needed <= self.buf.size:
            return
        assert self._mm is not None
        old = self.buf.size
        new = grown_capacity(old, needed)
        self._grow_file(old, new)
        self.buf = np.zeros(0, dtype=np.uint8)  # drop the export before resizing
        try:
            self._mm.resize(new)  # the file is long enough already: this is the mremap
        except OSError as exc:
            self.buf = np.frombuffer(self._mm, dtype=np.uint8)  # the old map is intact
            self._shrink_file_back(old)
            raise storage_error(f"cannot map arena file {self.path} at {new} bytes", exc) from exc
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    def clear(self, needed: int) -> None:
        """Make the arena all zeros with room for ``needed`` bytes (used by recovery). On
        failure the arena is left empty and unmapped: recovery fails, and the next open
        rebuilds it from the checkpoint and the log."""
        assert self._mm is not None
        self.buf = np.zeros(0, dtype=np.uint8)
        self._mm.close()
        self._mm = None
        try:
            os.ftruncate(self._fd, 0)  # discard everything, so old bytes cannot leak back
        except OSError as exc:
            raise storage_error(f"cannot empty arena file {self.path}", exc) from exc
        cap = grown_capacity(0, max(needed, 1))
        self._grow_file(0, cap)
        self._map(cap)

    def shrink(self, capacity: int) -> None:
        """Truncate the file to ``capacity`` bytes (callers checked that the bytes past it
        are free and that no reader process maps the file)."""
        if capacity >= self.buf.size:
            return
        assert self._mm is not None
        self.buf = np.zeros(0, dtype=np.uint8)  # drop the export before resizing
        try:
            self._mm.resize(max(capacity, MIN_CAPACITY))  # mremap + ftruncate
        except OSError as exc:
            raise storage_error(f"cannot shrink arena file {self.path}", exc) from exc
        finally:
            self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    def evict(self, start: int, length: int) -> int:
        """Drop this process's resident pages of ``[start, start + length)`` (whole OS
        pages). The mapping is shared and file-backed, so no byte is lost: the kernel keeps
        dirty data in the page cache and a later access faults it back in. Returns the
        bytes advised."""
        if self._mm is None or length <= 0:
            return 0
        self._mm.madvise(mmap.MADV_DONTNEED, start, length)
        return length

    def flush(self) -> None:
        if self._mm is not None:
            try:
                self._mm.flush()
            except OSError as exc:
                raise storage_error(f"cannot flush arena file {self.path}", exc) from exc

    def close(self) -> None:
        """Unmap and close. A view that outlived its call (one held by a traceback, say of
        a failed checkpoint write) keeps the mapping alive until it goes."""
        if self._fd < 0:
            return
        self.buf = np.zeros(0, dtype=np.uint8)
        mm, self._mm = self._mm, None
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()
        os.close(self._fd)
        self._fd = -1

    def abandon(self) -> None:
        """Close without waiting for views of the map to go (a failing writer's traceback
        may still hold some): the mapping then goes with the last of them."""
        if self._fd < 0:
            return
        self.buf = np.zeros(0, dtype=np.uint8)
        mm, self._mm = self._mm, None
        if mm is not None:
            with contextlib.suppress(BufferError):
                mm.close()
        os.close(self._fd)
        self._fd = -1


def _zeros(size: int) -> npt.NDArray[np.uint8]:
    """``size`` zero bytes in process memory, or :class:`StorageFullError`."""
    try:
        return np.zeros(size, dtype=np.uint8)
    except MemoryError as exc:
        raise storage_error(f"cannot allocate an in-memory arena of {size} bytes", exc) from exc


def _check_room(fd: int, grow: int) -> None:
    """Refuse at once a growth larger than the free space the file system offers (to
    unprivileged users: the blocks kept for root are not the arena's to take). Reserving
    it would only fail after filling the disk, for every process on it."""
    try:
        st = os.fstatvfs(fd)
    except (OSError, AttributeError):
        return
    free = st.f_bavail * st.f_frsize
    if st.f_blocks and grow > free:
        raise OSError(errno.ENOSPC, f"{grow} more bytes needed, {free} free on the file system")


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate the blocks of ``[offset, offset + length)``, growing the file to cover it.
    Where the file system cannot reserve blocks the file just grows (sparse)."""
    if length <= 0:
        return
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, offset, length)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
    if os.fstat(fd).st_size < offset + length:
        os.ftruncate(fd, offset + length)


class ReadOnlyArena:
    """A read-only shared mapping of another process's arena file (a live reader's view).

    The file belongs to the writer: it only grows while readers are attached, so a mapping
    stays valid; :meth:`ensure` remaps when the page table reaches past the current mapping.
    ``buf`` is a read-only numpy array; anything that tries to write through it fails.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        self._mm: mmap.mmap | None = None
        self.buf: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        try:
            self._map(os.fstat(self._fd).st_size)
        except BaseException:
            os.close(self._fd)
            raise

    def _map(self, size: int) -> None:
        old = self._mm
        self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) if size else None
        self.buf = np.zeros(0, np.uint8) if self._mm is None else np.frombuffer(self._mm, np.uint8)
        if old is not None:
            # a caller may still hold a view (``State.raw``): the map then goes with it
            with contextlib.suppress(BufferError):
                old.close()

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    def ensure(self, needed: int) -> None:
        """Map at least ``needed`` bytes (the writer grew the file before publishing)."""
        if needed <= self.buf.size:
            return
        size = os.fstat(self._fd).st_size
        if size < needed:
            raise CorruptStateError(
                f"arena file {self.path} holds {size} bytes but the published state needs "
                f"{needed} (was it rebuilt by a new writer?)"
            )
        self._map(size)

    def clear(self, needed: int) -> None:
        raise ReadOnlyError(f"arena {self.path} is mapped read-only")

    def shrink(self, capacity: int) -> None:
        raise ReadOnlyError(f"arena {self.path} is mapped read-only")

    def evict(self, start: int, length: int) -> int:
        """Nothing to evict: the writer owns the file; returns 0 bytes."""
        return 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._fd < 0:
            return
        self.buf = np.zeros(0, dtype=np.uint8)
        if self._mm is not None:
            with contextlib.suppress(BufferError):
                self._mm.close()
            self._mm = None
        os.close(self._fd)
        self._fd = -1


Arena = MemoryArena | FileArena | ReadOnlyArena
