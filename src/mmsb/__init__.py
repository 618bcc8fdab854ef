"""MMSB: an embedded, memory-mapped, deterministic state store."""

from mmsb.api import open
from mmsb.batch import DeltaBatch
from mmsb.bus import Bus
from mmsb.delta import Delta
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
