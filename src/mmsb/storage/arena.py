"""The page arena: one flat byte buffer holding every page's bytes.

Two implementations share one small contract (``buf``, ``capacity``, ``ensure``, ``flush``,
``close``): :class:`FileArena` memory-maps a file that grows by doubling, and
:class:`MemoryArena` keeps the bytes in process memory (snapshots, read-only replays).

Invariant for both: every byte that belongs to no live page is zero, so new pages need no
clearing (the allocator zeroes a slot when its page is deleted, and growth adds zeros).
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import numpy.typing as npt

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

    def __init__(self, path: str, *, mode: int = 0o600) -> None:
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


Arena = MemoryArena | FileArena
