"""MMSB: an embedded, memory-mapped, deterministic state store."""

from mmsb.api import open
from mmsb.batch import DeltaBatch
from mmsb.bus import Bus
from mmsb.delta import Delta
from mmsb.errors import (
    BusClosedError,
    BusLockedError,
    BusNotFoundError,
    CorruptCheckpointError,
    CorruptLogError,
    CorruptStateError,
    CycleError,
    DeviceUnavailableError,
    FormatVersionError,
    HistoryUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    LogWriteError,
    MMSBError,
    PageNotFoundError,
    PropagationError,
    ReadOnlyError,
    ReentrantWriteError,
)
from mmsb.graph import Event, GraphReport, Subscription, TickReport
from mmsb.history import Snapshot
from mmsb.history.provenance import Provenance, ProvenanceStep
from mmsb.monitor.invariants import InvariantResult
from mmsb.semiring import Semiring
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
    "CheckpointInfo",
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
    "Subscription",
    "TickReport",
    "__version__",
    "open",
    "verify",
]
