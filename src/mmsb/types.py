"""Small value types shared across the package: records, dtype and location codes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
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


# -- record (structured) page dtypes ---------------------------------------------------------
# A record page is stored as raw bytes (dtype code 0 in the page table) with its numpy record
# dtype kept beside it as canonical JSON text, the *record spec*: field names, each field's
# base dtype name (one of DTYPE_NAMES) and shape, the byte offsets and the record size. The
# spec is what the log and checkpoints hold; never a pickled dtype.

MAX_RECORD_FIELDS = 256


def record_spec(dtype: Any) -> str | None:
    """The canonical record spec of a numpy record dtype, or None for a plain dtype.

    Fields must be native-order numbers or bools from :data:`DTYPE_NAMES`, optionally
    fixed-shape sub-arrays of them; nested records, strings and objects are refused with
    :class:`InvalidArgumentError`.
    """
    if isinstance(dtype, np.dtype):
        dt = dtype
    elif isinstance(dtype, list) or (isinstance(dtype, dict) and "names" in dtype):
        try:
            dt = np.dtype(dtype)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"invalid record dtype {dtype!r}: {exc}") from None
    else:
        return None
    if dt.names is None or dt.fields is None:
        return None
    if not 0 < len(dt.names) <= MAX_RECORD_FIELDS:
        raise InvalidArgumentError(f"a record dtype has 1 to {MAX_RECORD_FIELDS} fields")
    formats: list[list[Any]] = []
    offsets: list[int] = []
    for name in dt.names:
        fdt, off = dt.fields[name][:2]
        base = fdt.base
        if not name or not name.isprintable() or len(name) > 128:
            raise InvalidArgumentError(f"record field name {name!r} is empty or invalid")
        if base.names is not None or base.name not in _DTYPE_CODES or not base.isnative:
            raise InvalidArgumentError(
                f"record field {name!r} has dtype {fdt}; fields hold native-order "
                f"{', '.join(DTYPE_NAMES)} values or fixed-shape arrays of them"
            )
        if fdt.itemsize == 0:
            raise InvalidArgumentError(f"record field {name!r} has no bytes")
        formats.append([base.name, list(fdt.shape)])
        offsets.append(int(off))
    spec = {"names": list(dt.names), "formats": formats, "offsets": offsets,
            "itemsize": int(dt.itemsize)}  # fmt: skip
    return json.dumps(spec, separators=(",", ":"))


@lru_cache(maxsize=256)
def record_dtype(spec: str) -> np.dtype[Any]:
    """The numpy record dtype a record spec (from :func:`record_spec`) describes; raises
    ``ValueError`` (or ``TypeError``, ``KeyError``) for a malformed spec."""
    body = json.loads(spec)
    if not isinstance(body, dict) or set(body) != {"names", "formats", "offsets", "itemsize"}:
        raise ValueError("a record spec has names, formats, offsets and itemsize")
    formats: list[Any] = []
    for base, shape in body["formats"]:
        if base not in _DTYPE_CODES:
            raise ValueError(f"record field dtype {base!r} is not a page dtype")
        formats.append((base, tuple(int(s) for s in shape)) if shape else base)
    dt = np.dtype({"names": [str(n) for n in body["names"]], "formats": formats,
                   "offsets": [int(o) for o in body["offsets"]],
                   "itemsize": int(body["itemsize"])})  # fmt: skip
    if record_spec(dt) != spec:
        raise ValueError("record spec is not in canonical form")
    return dt


# -- page names ---------------------------------------------------------------------------

MAX_NAME_LENGTH = 128
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/\-]*")


def check_name(name: Any) -> str:
    """``name`` if it is a valid page name, else :class:`InvalidArgumentError`.

    A name is 1 to 128 characters: an ASCII letter or ``_``, then letters, digits and
    ``_ . : / -``. It can never be read as a number, so ``mmsb`` commands tell it from an id.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"a page name is a str, got {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"invalid page name {name!r}: 1 to {MAX_NAME_LENGTH} characters, a letter or _ "
            "first, then letters, digits and _ . : / -"
        )
    return name


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
    name: str | None = None  # the page's unique name, if it has one
    record_dtype: np.dtype[Any] | None = None  # a record page's numpy dtype (dtype "record")


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
    # "lazy": a clean open that checked O(1) evidence and left the frames since the newest
    # checkpoint to a background check; "full": everything was checked before the open
    verify: str = "full"


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
