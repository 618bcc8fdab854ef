"""The publication header ``SEQ``: how a writer tells reader processes what is committed.

File ``SEQ`` (64 bytes, little-endian, every field an aligned u64 word)::

    word 0  magic "MMSBSEQ1"
    word 1  version u32 | 0 u32
    word 2  seq         even while the arena matches the published LSN; odd while the
                        writer is changing it (between logging a frame and publishing it,
                        and while it recovers at open)
    word 3  lsn         the last published commit
    word 4  timestamp   that commit's timestamp
    word 5  pid         the writer's process id (0 after a clean close)
    word 6  generation  incremented by every writer open; a reader that sees it change
                        knows the arena was rebuilt under it
    word 7  0

Only the writer (holding ``LOCK``) writes this file; readers map it read-only.

Memory ordering (x86-64). Every field is one aligned 8-byte word, read and written through
a ``memoryview`` cast to native ``Q`` (unsigned 64-bit): CPython reads or writes such an
item with one fixed-size 8-byte copy, which compiles to a single aligned 64-bit load or
store, and x86-64 performs those atomically, so no reader ever sees half of a counter. The
writer's order is: store ``seq`` odd, mutate the arena, store ``lsn``/``timestamp``, store
``seq`` even. A reader's order is: load ``seq``, copy page bytes, load ``seq`` again, and
keeps the copy only if both loads returned the same even value. x86-64 is TSO: stores
become visible to other cores in program order and loads are not reordered with other
loads. So if the reader's copy saw any byte of a mutation, it also sees the odd ``seq``
stored before it (its second load is later than the copy's loads) and retries; and a
reader that saw ``seq`` even after a publish also sees that publish's ``lsn``. On the
compiler side, each access is a separate C call made by the interpreter (a memoryview
item, ``memcpy`` inside a numpy copy, a numba kernel), and no C compiler moves memory
accesses across such opaque calls. Weakly ordered CPUs (aarch64) would need explicit
barriers between these steps, which Python cannot emit; this module is written for
x86-64 (the platform the project targets).
"""

from __future__ import annotations

import mmap
import os
import struct

from mmsb.storage import layout

SEQ_FILE = layout.SEQ_FILE
MAGIC = b"MMSBSEQ1"
VERSION = 1
SIZE = 64
_PREFIX = struct.Struct("<8sII")
_SEQ, _LSN, _TS, _PID, _GEN = 2, 3, 4, 5, 6


class SeqPublisher:
    """The writer's side. Opening it starts a new generation with ``seq`` odd (the writer
    is about to recover into the arena); :meth:`publish` makes it even."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, SEQ_FILE)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
        try:
            head = os.pread(self._fd, _PREFIX.size, 0)
            if os.fstat(self._fd).st_size != SIZE or head != _PREFIX.pack(MAGIC, VERSION, 0):
                # new or unreadable: start afresh (only a writer holding LOCK gets here)
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, SIZE)
                os.pwrite(self._fd, _PREFIX.pack(MAGIC, VERSION, 0), 0)
            self._mm: mmap.mmap | None = mmap.mmap(self._fd, SIZE)
        except BaseException:
            os.close(self._fd)
            raise
        # the only view of the mapping; every access below is one aligned 64-bit word
        self._w = memoryview(self._mm).cast("Q")
        self.begin()
        self._w[_GEN] += 1
        self._w[_PID] = os.getpid()

    @property
    def seq(self) -> int:
        return int(self._w[_SEQ])

    @property
    def generation(self) -> int:
        return int(self._w[_GEN])

    def begin(self) -> None:
        """Mark the arena as changing (``seq`` odd). Idempotent while already odd."""
        s = self._w[_SEQ]
        if not s & 1:
            self._w[_SEQ] = s + 1

    def publish(self, lsn: int, timestamp: int) -> None:
        """Publish ``lsn`` as the state the arena now holds (``seq`` even)."""
        w = self._w
        w[_LSN] = lsn
        w[_TS] = timestamp
        s = w[_SEQ]
        w[_SEQ] = s + 1 if s & 1 else s + 2

    def close(self) -> None:
        """Mark the writer gone (pid 0) and unmap. ``seq`` keeps its last value."""
        if self._mm is None:
            return
        self._w[_PID] = 0
        self._w.release()
        self._mm.close()
        self._mm = None
        os.close(self._fd)


class SeqReader:
    """A reader's read-only view of ``SEQ``."""

    def __init__(self, mm: mmap.mmap, fd: int) -> None:
        self._mm: mmap.mmap | None = mm
        self._fd = fd
        self._w = memoryview(mm).cast("Q")

    @classmethod
    def open(cls, directory: str) -> SeqReader | None:
        """Map ``SEQ`` read-only; None when it is absent or not a valid header."""
        try:
            fd = os.open(os.path.join(directory, SEQ_FILE), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            if os.fstat(fd).st_size != SIZE:
                raise ValueError("wrong size")
            if os.pread(fd, _PREFIX.size, 0) != _PREFIX.pack(MAGIC, VERSION, 0):
                raise ValueError("bad magic")
            mm = mmap.mmap(fd, SIZE, access=mmap.ACCESS_READ)
        except (ValueError, OSError):
            os.close(fd)
            return None
        return cls(mm, fd)

    @property
    def seq(self) -> int:
        return int(self._w[_SEQ])

    @property
    def pid(self) -> int:
        return int(self._w[_PID])

    def snapshot(self) -> tuple[int, int, int, int] | None:
        """(seq, generation, lsn, timestamp) read consistently, or None while the writer is
        changing the arena (``seq`` odd) or published during the read."""
        w = self._w
        s1 = w[_SEQ]
        if s1 & 1:
            return None
        gen, lsn, ts = w[_GEN], w[_LSN], w[_TS]
        if w[_SEQ] != s1:
            return None
        return s1, gen, lsn, ts

    def close(self) -> None:
        if self._mm is None:
            return
        self._w.release()
        self._mm.close()
        self._mm = None
        os.close(self._fd)
