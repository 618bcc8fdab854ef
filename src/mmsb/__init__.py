"""MMSB: an embedded, memory-mapped, deterministic state store."""

from mmsb.batch import DeltaBatch
from mmsb.bus import Bus, open
from mmsb.delta import Delta
from mmsb.errors import (
    BusClosedError,
    BusLockedError,
    BusNotFoundError,
    CorruptCheckpointError,
    CorruptLogError,
    CorruptStateError,
    DeviceUnavailableError,
    FormatVersionError,
    HistoryUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    MMSBError,
    PageNotFoundError,
    ReadOnlyError,
)
from mmsb.history import Snapshot
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
    "Delta",
    "DeltaBatch",
    "DeltaRecord",
    "DeviceUnavailableError",
    "FormatVersionError",
    "HistoryUnavailableError",
    "IntegrityReport",
    "InvalidArgumentError",
    "InvalidDeltaError",
    "MMSBError",
    "PageDiff",
    "PageInfo",
    "PageNotFoundError",
    "ReadOnlyError",
    "RecoveryInfo",
    "Snapshot",
    "__version__",
    "open",
    "verify",
]
