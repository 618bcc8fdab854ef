"""Registry of reader processes attached to a bus directory.

Each live reader holds a shared ``flock`` on ``READERS`` for as long as it is open. The
kernel drops the lock when the reader exits or dies, so the registry is never stale. The
writer uses :func:`readers_attached` before anything that would invalidate a reader's
mapping of the arena (shrinking ``arena.bin``): with a reader attached such a step is
deferred, because touching a truncated mapping kills the reader with ``SIGBUS``.

Only readers that map the arena register (live readers, :mod:`mmsb.storage.follow`); a
read-only open with no writer running works from process memory and creates no file.
"""

from __future__ import annotations

import fcntl
import os

from mmsb.storage import layout
from mmsb.storage.arena import FileArena

READERS_FILE = layout.READERS_FILE


class ReaderRegistration:
    """Held by a reader for its lifetime; :meth:`release` (or process exit) ends it."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(
            os.path.join(directory, READERS_FILE), os.O_RDONLY | os.O_CREAT, layout.FILE_MODE
        )
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def readers_attached(directory: str) -> bool:
    """Whether any reader process currently has the bus at ``directory`` open."""
    path = os.path.join(directory, READERS_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return False


class ReaderSafeArena(FileArena):
    """The writer's arena file, which it never makes shorter under a reader's mapping.

    Recovery rebuilds the arena with :meth:`clear`. With no reader registered that truncates
    the file (the cheapest way to drop every old byte); with readers registered it zeroes the
    bytes in place instead, since touching a truncated mapping kills a reader with
    ``SIGBUS``. A reader that registers after the check maps the file only once the writer
    has published (see :mod:`mmsb.storage.follow`), so it never sees the truncation.
    """

    def clear(self, needed: int) -> None:
        if not readers_attached(os.path.dirname(self.path)):
            super().clear(needed)
            return
        self.buf[:] = 0  # old bytes cannot leak back, and the file keeps its length
        self.ensure(max(needed, 1))
