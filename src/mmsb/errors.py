"""The exception hierarchy.

Every error the library raises on purpose derives from :class:`MMSBError`. Each class also
inherits the builtin a caller would naturally catch for that situation (``KeyError`` for a
missing page, ``ValueError`` for invalid input, ``OSError`` for file-level problems), so code
that does not know about MMSB still handles them sensibly.
"""

from __future__ import annotations

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


__all__ = [
    "BusClosedError",
    "BusLockedError",
    "BusNotFoundError",
    "CorruptCheckpointError",
    "CorruptLogError",
    "CorruptStateError",
    "CycleError",
    "DeviceUnavailableError",
    "FormatVersionError",
    "HistoryUnavailableError",
    "InvalidArgumentError",
    "InvalidDeltaError",
    "MMSBError",
    "PageNotFoundError",
    "PropagationError",
    "ReadOnlyError",
    "ReentrantWriteError",
]
