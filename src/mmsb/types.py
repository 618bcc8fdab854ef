"""Small value types shared across the package: records, dtype and location codes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mmsb.errors import InvalidArgumentError

Location = Literal["cpu", "gpu", "unified"]
SyncMode = Literal["always", "normal", "off"]

LOCATIONS: tuple[str, ...] = ("cpu", "gpu", "unified")
SYNC_MODES: tuple[str, ...] = ("always", "normal", "off")

# Page dtypes are stored as a one-byte code in the page table and by name in the log.
# The order is part of the on-disk format: append only.
DTYPE_NAMES: tuple[str, ...] = (
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "bool",
)
_DTYPE_CODES = {name: i for i, name in enumerate(DTYPE_NAMES)}
DTYPE_ITEMSIZE = np.array([np.dtype(n).itemsize for n in DTYPE_NAMES], dtype=np.int64)

MAX_PAGE_SIZE = 2**32 - 1  # offsets and lengths are stored as uint32 in log frames


def dtype_code(dtype: Any) -> int:
    """Return the page-table code of a dtype, raising a typed error for unsupported ones."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise InvalidArgumentError(f"unknown dtype {dtype!r}") from exc
    if not dt.isnative:
        # pages hold native-order values; storing ">f8" as "float64" would read back wrong
        raise InvalidArgumentError(
            f"dtype {dtype!r} has non-native byte order; pages store native-order values "
            f"(use {dt.newbyteorder('=').name!r} and convert with .astype)"
        )
    name = dt.name
    code = _DTYPE_CODES.get(name)
    if code is None:
        raise InvalidArgumentError(
            f"unsupported page dtype {name!r}; supported: {', '.join(DTYPE_NAMES)}"
        )
    return code


def location_code(location: str) -> int:
    try:
        return LOCATIONS.index(location)
    except ValueError:
        raise InvalidArgumentError(
            f"unknown location {location!r}; expected one of {', '.join(LOCATIONS)}"
        ) from None


def encode_metadata(metadata: dict[str, Any] | None, what: str) -> str | None:
    """Serialise metadata to canonical JSON, or raise if it is not JSON-able.

    Canonical (sorted keys, no spaces) so that equal metadata gives equal log bytes.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgumentError(f"{what} metadata must be a dict with str keys")
    try:
        return json.dumps(metadata, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{what} metadata is not JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class PageInfo:
    """What the page table knows about one page."""

    id: int
    size: int
    dtype: str
    location: str
    epoch: int
    metadata: dict[str, Any] = field(default_factory=dict)
    stale: bool = False  # a control-edge parent changed since the page was last written
    gpu_sync_needed: bool = False  # a gpu-edge parent changed (see Bus.mark_gpu_synced)
    invalidated: bool = False  # a compiler-edge parent changed since the last write


@dataclass(frozen=True)
class Commit:
    """The result of a committed batch: its LSN and the range of delta ids it received."""

    lsn: int
    first_delta_id: int
    last_delta_id: int
    count: int
    timestamp: int


@dataclass(frozen=True)
class DeltaRecord:
    """One applied delta as found through the history index."""

    delta_id: int
    page_id: int
    lsn: int
    epoch: int
    timestamp: int
    source: str
    metadata: dict[str, Any] | None
    offset: int
    length: int
    shape: str


@dataclass(frozen=True)
class CheckpointInfo:
    lsn: int
    path: str
    bytes: int
    pages: int
    seconds: float


@dataclass(frozen=True)
class CompactInfo:
    segments_removed: int
    bytes_removed: int
    checkpoints_removed: int
    oldest_lsn: int


@dataclass(frozen=True)
class RecoveryInfo:
    """How the last open found the bus: fast (clean shutdown) or by replay."""

    mode: Literal["new", "clean", "replay"]
    checkpoint_lsn: int
    frames_replayed: int
    deltas_replayed: int
    torn_tail_bytes: int
    torn_tail_segment: str | None
    skipped_checkpoints: tuple[str, ...]
    seconds: float
    dropped_lsns: tuple[int, ...] = ()  # recovery="truncate": damaged final frames dropped


@dataclass(frozen=True)
class PageDiff:
    """How one page differs between two LSNs. ``ranges`` are half-open byte ranges."""

    page_id: int
    status: Literal["added", "removed", "changed"]
    ranges: tuple[tuple[int, int], ...]


def integer_arg(value: Any, what: str) -> int:
    """``value`` as an int, or :class:`InvalidArgumentError` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{what} must be an integer, got {value!r}")
    return int(value)
