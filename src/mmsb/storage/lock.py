"""The writer lock: one writer per bus, enforced with ``flock`` on ``LOCK``.

``flock`` locks belong to the open file description, so the kernel drops them when the
holding process dies: the flock itself is never stale, and it alone decides who may write.
The holder's pid is written into the file while it holds the lock and cleared when it
releases it cleanly, so a pid found in ``LOCK`` by the next writer means the previous holder
did not release: if that pid is no longer running, the previous writer was killed and this
open is a takeover (reported in :attr:`WriterLock.stale_pid` and on the ``mmsb.storage.lock``
logger). A lock whose flock is held is never taken, whatever pid the file names.

Taking the lock also removes temporary files that only a lock holder creates
(``ckpt/*.ckpt.tmp`` and ``state.clean.tmp``: written under a temporary name, then renamed): with
the flock held no other writer can be writing one, so any that exist were left by a writer
that died mid-write.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os

from mmsb.errors import BusLockedError
from mmsb.storage import layout

logger = logging.getLogger(__name__)

# where a writer makes temporary files (relative to the bus directory), and their suffix
_TEMP_FILES = (("", "state.clean.tmp"), ("", "state.clean.old"), ("ckpt", ".ckpt.tmp"))


class WriterLock:
    """Holds the writer lock of the bus whose ``LOCK`` file is ``path``.

    Attributes
    ----------
    previous_pid
        The pid the file named when the lock was taken (``None`` if the previous holder
        released cleanly, or the bus is new).
    stale_pid
        ``previous_pid`` when that process is no longer running: the lock was taken over
        from a killed writer. ``None`` otherwise.
    removed_temporaries
        Names of the leftover temporary files removed when the lock was taken.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.previous_pid: int | None = None
        self.stale_pid: int | None = None
        self.removed_temporaries: list[str] = []
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _parse_pid(_read_holder(self._fd))
            os.close(self._fd)
            self._fd = -1
            raise BusLockedError(
                f"bus at {os.path.dirname(path)} is already open for writing"
                + (f" (by pid {holder})" if holder else "")
                + ("" if holder is None or pid_alive(holder) else
                   "; that pid has exited, so a process it started still holds the lock")
            ) from None  # fmt: skip
        try:
            prev = _parse_pid(_read_holder(self._fd))
            if prev is not None and prev != os.getpid():
                self.previous_pid = prev
                if not pid_alive(prev):
                    self.stale_pid = prev
                    logger.warning(
                        "bus at %s: taking over the writer lock of pid %d, which exited "
                        "without releasing it",
                        os.path.dirname(path),
                        prev,
                    )
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
            self.removed_temporaries = _remove_temporaries(os.path.dirname(path))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Clear the recorded pid (a clean release) and drop the lock. Idempotent."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _parse_pid(text: str) -> int | None:
    return int(text) if text.isdigit() and 0 < int(text) < 2**31 else None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed, unreaped child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no procfs: trust kill(0)
    # the state letter follows the parenthesised command name, which may contain spaces
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def _remove_temporaries(directory: str) -> list[str]:
    removed = []
    for sub, suffix in _TEMP_FILES:
        d = os.path.join(directory, sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(suffix):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(d, name))
                    removed.append(os.path.join(sub, name) if sub else name)
    return sorted(removed)


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
