"""The page arena: one flat byte buffer holding every page's bytes.

Two implementations share one small contract (``buf``, ``capacity``, ``ensure``, ``flush``,
``close``): :class:`FileArena` memory-maps a file that grows by doubling, and
:class:`MemoryArena` keeps the bytes in process memory (snapshots, read-only replays).

Invariant for both: every byte that belongs to no live page is zero, so new pages need no
clearing (the allocator zeroes a slot when its page is deleted, and growth adds zeros).
"""

from __future__ import annotations

import contextlib
import mmap
import os

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptStateError, ReadOnlyError
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

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    def ensure(self, needed: int) -> None:
        if needed > self.buf.size:
            new = np.zeros(grown_capacity(self.buf.size, needed), dtype=np.uint8)
            new[: self.buf.size] = self.buf
            self.buf = new

    def clear(self, needed: int) -> None:
        self.buf = np.zeros(grown_capacity(0, max(needed, 1)), dtype=np.uint8)

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
    """

    def __init__(self, path: str, *, mode: int = layout.FILE_MODE) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
        size = os.fstat(self._fd).st_size
        if size < MIN_CAPACITY:
            os.ftruncate(self._fd, MIN_CAPACITY)
            size = MIN_CAPACITY
        self._mm: mmap.mmap | None = mmap.mmap(self._fd, size)
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    def ensure(self, needed: int) -> None:
        if needed <= self.buf.size:
            return
        assert self._mm is not None
        new = grown_capacity(self.buf.size, needed)
        self.buf = np.zeros(0, dtype=np.uint8)  # drop the export before resizing
        self._mm.resize(new)  # ftruncate + mremap; new bytes read as zero
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    def clear(self, needed: int) -> None:
        """Make the arena all zeros with room for ``needed`` bytes (used by recovery)."""
        assert self._mm is not None
        self.buf = np.zeros(0, dtype=np.uint8)
        self._mm.close()
        os.ftruncate(self._fd, 0)  # discard everything, so old bytes cannot leak back
        cap = grown_capacity(0, max(needed, 1))
        os.ftruncate(self._fd, cap)
        self._mm = mmap.mmap(self._fd, cap)
        self.buf = np.frombuffer(self._mm, dtype=np.uint8)

    def shrink(self, capacity: int) -> None:
        """Truncate the file to ``capacity`` bytes (callers checked that the bytes past it
        are free and that no reader process maps the file)."""
        if capacity >= self.buf.size:
            return
        assert self._mm is not None
        self.buf = np.zeros(0, dtype=np.uint8)  # drop the export before resizing
        self._mm.resize(max(capacity, MIN_CAPACITY))  # mremap + ftruncate
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
            self._mm.flush()

    def close(self) -> None:
        if self._mm is None:
            return
        self.buf = np.zeros(0, dtype=np.uint8)
        self._mm.close()
        self._mm = None
        os.close(self._fd)

    def abandon(self) -> None:
        """Close without waiting for views of the map to go (a failing writer's traceback
        may still hold some): the mapping then goes with the last of them."""
        if self._mm is None:
            return
        self.buf = np.zeros(0, dtype=np.uint8)
        mm, self._mm = self._mm, None
        with contextlib.suppress(BufferError):
            mm.close()
        os.close(self._fd)


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
