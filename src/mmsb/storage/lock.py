"""The writer lock: one writer per bus, enforced with ``flock`` on ``LOCK``.

``flock`` locks belong to the open file description, so the kernel drops them when the
holding process dies: a lock left by a killed writer is never stale. The holder's pid is
written into the file for diagnostics only.
"""

from __future__ import annotations

import fcntl
import os

from mmsb.errors import BusLockedError


class WriterLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            self._fd = -1
            raise BusLockedError(
                f"bus at {os.path.dirname(path)} is already open for writing"
                + (f" (by pid {holder})" if holder else "")
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def writer_active(path: str) -> bool:
    """Whether some process currently holds the writer lock at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
