"""Registry of reader processes attached to a bus directory.

Each live reader holds a shared ``flock`` on ``READERS`` for as long as it is open. The
kernel drops the lock when the reader exits or dies, so the registry is never stale. The
writer uses :func:`readers_attached` before anything that would invalidate a reader's
mapping of the arena (shrinking ``arena.bin``): with a reader attached such a step is
deferred, because touching a truncated mapping kills the reader with ``SIGBUS``.
"""

from __future__ import annotations

import fcntl
import os

READERS_FILE = "READERS"


class ReaderRegistration:
    """Held by a reader for its lifetime; :meth:`release` (or process exit) ends it."""

    def __init__(self, directory: str) -> None:
        self._fd = os.open(os.path.join(directory, READERS_FILE), os.O_RDONLY | os.O_CREAT, 0o600)
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
