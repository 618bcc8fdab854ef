"""MMSB: an embedded, memory-mapped, deterministic state store.

The public names are imported on first use (PEP 562): ``import mmsb`` loads only this file
and the exception classes, so a program or command that never opens a bus does not pay for
numpy, the storage modules or the kernels; ``mmsb.open`` and the other names load what they
need the first time they are looked up. numba itself is imported only when a kernel first
runs (:mod:`mmsb.engine.jit`).
"""

from __future__ import annotations

from importlib import import_module as _import_module
from sys import modules as _modules
from types import ModuleType as _ModuleType
from typing import TYPE_CHECKING, Any

from mmsb.errors import (
    BusClosedError,
    BusLockedError,
    BusNotFoundError,
    CheckpointWriteError,
    CorruptCheckpointError,
    CorruptLogError,
    CorruptStateError,
    CycleError,
    DeviceUnavailableError,
    FormatVersionError,
    HistoryUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    LogSyncError,
    LogWriteError,
    MMSBError,
    PageNotFoundError,
    PropagationError,
    ReadOnlyError,
    ReentrantWriteError,
    SnapshotTooOldError,
    StorageFullError,
    StorageIOError,
)

if TYPE_CHECKING:
    from mmsb.api import open
    from mmsb.batch import DeltaBatch
    from mmsb.bus import Bus
    from mmsb.delta import Delta
    from mmsb.graph import Event, GraphReport, Subscription, TickReport
    from mmsb.history import Snapshot
    from mmsb.history.provenance import Provenance, ProvenanceStep
    from mmsb.monitor.invariants import InvariantResult
    from mmsb.monitor.stats import BusStats
    from mmsb.semiring import Semiring
    from mmsb.snapshot import LiveSnapshot
    from mmsb.types import (
        CheckpointInfo,
        Commit,
        CompactInfo,
        DeltaRecord,
        PageDiff,
        PageInfo,
        RecoveryInfo,
    )
    from mmsb.verify import IntegrityReport, verify

#: Where each lazily imported public name lives.
_LAZY = {
    "open": "mmsb.api",
    "DeltaBatch": "mmsb.batch",
    "Bus": "mmsb.bus",
    "Delta": "mmsb.delta",
    "Event": "mmsb.graph",
    "GraphReport": "mmsb.graph",
    "Subscription": "mmsb.graph",
    "TickReport": "mmsb.graph",
    "Snapshot": "mmsb.history",
    "Provenance": "mmsb.history.provenance",
    "ProvenanceStep": "mmsb.history.provenance",
    "InvariantResult": "mmsb.monitor.invariants",
    "BusStats": "mmsb.monitor.stats",
    "Semiring": "mmsb.semiring",
    "LiveSnapshot": "mmsb.snapshot",
    "CheckpointInfo": "mmsb.types",
    "Commit": "mmsb.types",
    "CompactInfo": "mmsb.types",
    "DeltaRecord": "mmsb.types",
    "PageDiff": "mmsb.types",
    "PageInfo": "mmsb.types",
    "RecoveryInfo": "mmsb.types",
    "IntegrityReport": "mmsb.verify",
    "verify": "mmsb.verify",
}

__version__ = "0.1.0"

__all__ = [
    "Bus",
    "BusClosedError",
    "BusLockedError",
    "BusNotFoundError",
    "BusStats",
    "CheckpointInfo",
    "CheckpointWriteError",
    "Commit",
    "CompactInfo",
    "CorruptCheckpointError",
    "CorruptLogError",
    "CorruptStateError",
    "CycleError",
    "Delta",
    "DeltaBatch",
    "DeltaRecord",
    "DeviceUnavailableError",
    "Event",
    "FormatVersionError",
    "GraphReport",
    "HistoryUnavailableError",
    "IntegrityReport",
    "InvalidArgumentError",
    "InvalidDeltaError",
    "InvariantResult",
    "LiveSnapshot",
    "LogSyncError",
    "LogWriteError",
    "MMSBError",
    "PageDiff",
    "PageInfo",
    "PageNotFoundError",
    "PropagationError",
    "Provenance",
    "ProvenanceStep",
    "ReadOnlyError",
    "RecoveryInfo",
    "ReentrantWriteError",
    "Semiring",
    "Snapshot",
    "SnapshotTooOldError",
    "StorageFullError",
    "StorageIOError",
    "Subscription",
    "TickReport",
    "__version__",
    "open",
    "verify",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use and keep it as a module attribute."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmsb' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(_ModuleType):
    """``mmsb.verify`` is the function, as it was when this file imported it eagerly: the
    import system's binding of the submodule :mod:`mmsb.verify` to the package attribute,
    made whenever the submodule is first imported, is ignored (the submodule stays in
    ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "verify" and isinstance(value, _ModuleType):
            return
        super().__setattr__(name, value)


_modules[__name__].__class__ = _Package
