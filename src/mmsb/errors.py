"""The exception hierarchy.

Every error the library raises on purpose derives from :class:`MMSBError`. Each class also
inherits the builtin a caller would naturally catch for that situation (``KeyError`` for a
missing page, ``ValueError`` for invalid input, ``OSError`` for file-level problems), so code
that does not know about MMSB still handles them sensibly.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence


class MMSBError(Exception):
    """Base of every error raised by MMSB."""


class PageNotFoundError(MMSBError, KeyError):
    """A page id that does not exist (never allocated, or deleted)."""

    def __init__(self, message: str, page_ids: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.page_ids = [int(p) for p in page_ids]

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message.
        return str(self.args[0])


class InvalidDeltaError(MMSBError, ValueError):
    """A delta or batch is malformed or does not fit its page.

    ``rows`` lists the offending batch rows (empty for a single delta).
    """

    def __init__(self, message: str, rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rows = [int(r) for r in rows]


class InvalidArgumentError(MMSBError, ValueError):
    """An argument other than a delta is invalid (page size, dtype, metadata, ...)."""


class ReadOnlyError(MMSBError, PermissionError):
    """A write was attempted on a read-only bus or snapshot."""


class BusClosedError(MMSBError, ValueError):
    """An operation was attempted on a closed bus (like I/O on a closed file)."""


class BusLockedError(MMSBError, BlockingIOError):
    """Another writer holds the bus's writer lock."""


class BusNotFoundError(MMSBError, FileNotFoundError):
    """The path holds no bus and ``create=False`` was given."""


class FormatVersionError(MMSBError, ValueError):
    """The directory is not an MMSB bus, or was written by an unsupported format version."""


class CorruptStateError(MMSBError, OSError):
    """Base for on-disk damage that recovery cannot repair by itself."""


class CorruptLogError(CorruptStateError):
    """A log frame before the tail is damaged. ``segment`` and ``offset`` locate it."""

    def __init__(self, message: str, segment: str = "", offset: int = -1) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset

    def __str__(self) -> str:
        return str(self.args[0])


class LogWriteError(MMSBError, OSError):
    """The log could not take a commit (a failed write or fsync). Nothing of that commit
    was applied; after a failed fsync the bus has also closed itself (reopen to recover)."""


class LogSyncError(LogWriteError):
    """An fsync of the log failed, so the writer has stopped for good (fail-stop).

    After a failed fsync the kernel may already have dropped the file's unwritten pages and
    marked them clean, so a second fsync that succeeds proves nothing; the bus therefore
    never retries. It closes itself as after a crash (no clean-shutdown state): this write
    and every later one raise, and reopening the bus recovers exactly the commits whose
    frames are intact in the log. ``errno`` and ``__cause__`` are the failed call's."""


class StorageIOError(MMSBError, OSError):
    """An operating-system call on the bus's files failed outside the log: growing,
    mapping, flushing or shrinking the arena (truncate, mmap, block reservation, msync),
    compaction, or any call while opening a bus for writing.

    ``errno`` is the failed call's and ``__cause__`` the original :class:`OSError`. Unless
    a subclass says otherwise, the operation that raised changed nothing a later open
    depends on and a writable bus stays open; a failed open has let go of the lock."""


class StorageFullError(StorageIOError):
    """The disk or memory has no room for what an operation needed (``ENOSPC``,
    ``EDQUOT``, ``EFBIG``, ``ENOMEM``, or a :class:`MemoryError`, which is then the
    ``__cause__``).

    The arena reserves the disk blocks of every byte it grows by before it maps them, so
    a full disk shows up here, when the pages are created, rather than as a ``SIGBUS`` on a
    later write. The files are left as they were and the bus stays usable."""


class CheckpointWriteError(StorageIOError):
    """A checkpoint or the clean-shutdown file could not be written, renamed into place or
    synced. Nothing is lost: the log still holds every commit (a failed clean-shutdown file
    only means the next open replays the log), the temporary file is removed and the bus
    stays open."""


class CorruptCheckpointError(CorruptStateError):
    """A checkpoint file fails its checks (and no usable older one exists)."""


class HistoryUnavailableError(MMSBError, LookupError):
    """The requested LSN or time lies outside the history the bus still holds."""


class DeviceUnavailableError(MMSBError, RuntimeError):
    """A ``gpu``/``unified`` page was requested but no device backend is available."""


class CycleError(MMSBError, ValueError):
    """An edge would close a cycle in the dependency graph (or is a self-loop).

    ``cycle`` lists the page ids on the cycle: ``cycle[i] -> cycle[i + 1]`` are edges (the
    rejected one first) and the last page leads back to the first.
    """

    def __init__(self, message: str, cycle: list[int]) -> None:
        super().__init__(message)
        self.cycle = cycle


class PropagationError(MMSBError, RuntimeError):
    """A derivation function raised during propagation. The tick's input commit stays
    committed; none of that tick's derived writes is applied. ``page`` is the page being
    derived, ``function`` the function's name, ``__cause__`` the original exception."""

    def __init__(self, message: str, page: int, function: str) -> None:
        super().__init__(message)
        self.page = page
        self.function = function


class ReentrantWriteError(MMSBError, RuntimeError):
    """An event handler tried to write to the bus while the bus was dispatching events."""


class SnapshotTooOldError(MMSBError, LookupError):
    """A pinned snapshot can no longer be served: the writer reopened the bus, or it
    needed the memory that kept the snapshot's old pages (``snapshot_memory``) while the
    snapshot stayed open. Close it and take a new one."""


class ClusterError(MMSBError, RuntimeError):
    """A sharded bus (:mod:`mmsb.cluster`) cannot do what was asked: Ray is missing or not
    reachable, the directory does not hold a cluster, or a shard's state does not match
    the global log. Raised instead of Ray's own exceptions."""


class ClusterUnavailableError(ClusterError):
    """A shard or the sequencer did not answer within the timeout, even after waiting for
    Ray to restart it. ``lsn`` is the global LSN of the commit in flight when it is known
    to be in the global log (it is then applied when the shard is back), else None."""

    def __init__(self, message: str, lsn: int | None = None) -> None:
        super().__init__(message)
        self.lsn = lsn


# errno values that mean "no room" rather than a broken device
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM})


def storage_error(
    message: str, cause: BaseException, kind: type[StorageIOError] | None = None
) -> StorageIOError:
    """The typed error for a failed OS call (raise it ``from cause``): ``kind``, or
    :class:`StorageFullError` when the cause means no room, else :class:`StorageIOError`.
    It carries the cause's ``errno`` (``strerror`` stays unset, so ``str()`` is the message,
    which ends with the cause's); the message should name the operation and the file."""
    code = errno.ENOMEM if isinstance(cause, MemoryError) else getattr(cause, "errno", None)
    if kind is None:
        kind = StorageFullError if code in FULL_ERRNOS else StorageIOError
    err = kind(f"{message}: {cause}" if str(cause) else message)
    err.errno = code
    return err


__all__ = [
    "BusClosedError",
    "BusLockedError",
    "BusNotFoundError",
    "CheckpointWriteError",
    "ClusterError",
    "ClusterUnavailableError",
    "CorruptCheckpointError",
    "CorruptLogError",
    "CorruptStateError",
    "CycleError",
    "DeviceUnavailableError",
    "FormatVersionError",
    "HistoryUnavailableError",
    "InvalidArgumentError",
    "InvalidDeltaError",
    "LogSyncError",
    "LogWriteError",
    "MMSBError",
    "PageNotFoundError",
    "PropagationError",
    "ReadOnlyError",
    "ReentrantWriteError",
    "SnapshotTooOldError",
    "StorageFullError",
    "StorageIOError",
]
