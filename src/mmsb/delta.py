"""Single deltas and the helpers that turn user data into payload and mask bytes.

A :class:`Delta` is one change to one page: a byte range, or a masked write (dense or
sparse). :mod:`mmsb.batch` stacks many deltas into a columnar ``DeltaBatch``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidDeltaError
from mmsb.types import DTYPE_NAMES, MAX_PAGE_SIZE, encode_metadata

RANGE, DENSE, SPARSE = 0, 1, 2
SHAPE_NAMES = ("range", "dense", "sparse")

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

# A payload's dtype as a batch records it (``DeltaBatch.dtypes``): the page-table code of
# that dtype (see ``mmsb.types.DTYPE_NAMES``), where code 0, ``uint8``, stands for raw bytes:
# bytes-like data and uint8 arrays carry no element type and may be written to a page of
# any dtype. Every other code is a *typed* payload: it must have its page's dtype, and its
# offset and length must be multiples of that dtype's itemsize.
RAW = 0
_PAYLOAD_CODES = {name: code for code, name in enumerate(DTYPE_NAMES)}


def payload_dtype_name(dtype: np.dtype[Any]) -> str:
    """The name a typed payload's dtype is checked by: the numpy name for native-order
    dtypes, the type string (``'>f8'``) otherwise, so that a byte-swapped array never
    passes for a page's native dtype. (Remembered per dtype: numpy computes ``name`` in
    Python, a few microseconds a call.)"""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        native = dtype.name if dtype.isnative else dtype.str
        name = "record" if dtype.names is not None else native
        if len(_DTYPE_NAMES) < 256:  # record dtypes are made at will: keep a bound
            _DTYPE_NAMES[dtype] = name
    return name


_DTYPE_NAMES: dict[np.dtype[Any], str] = {}


def payload_dtype_code(name: str | None, what: str = "payload") -> int:
    """The batch code of a payload dtype name (``None``: raw bytes, code :data:`RAW`).
    Raises :class:`InvalidDeltaError` for a dtype no page can have."""
    if name is None:
        return RAW
    code = _PAYLOAD_CODES.get(name)
    if name == "record":
        raise InvalidDeltaError(
            f"{what} is a record array; write records with Bus.write or Bus.write_field "
            "(they check the page's record dtype), or as raw bytes (array.view(np.uint8))"
        )
    if code is None:
        raise InvalidDeltaError(
            f"{what} has dtype {name}, which no page can have (page dtypes: "
            f"{', '.join(DTYPE_NAMES)}, in native byte order)"
        )
    return code


def array_dtype_code(data: Any, what: str) -> int:
    """The batch code of ``data``'s payload dtype: :data:`RAW` unless it is a numpy array."""
    if not isinstance(data, np.ndarray):
        return RAW
    return payload_dtype_code(payload_dtype_name(data.dtype), what)


def page_dtype_codes(upages: I64, page_ids: I64, dtypes: U8) -> npt.NDArray[np.intp]:
    """For ``DeltaBatch.coalesce``: the payload dtype code of each page in ``upages``
    (sorted) from the batch rows (``page_ids``, ``dtypes``) that write it: that of its
    typed rows, or raw where it has none. Raises where one page has typed rows of two."""
    codes = np.zeros(upages.size, np.intp)
    typed = np.flatnonzero(dtypes)
    if typed.size == 0 or upages.size == 0:
        return codes
    where = np.searchsorted(upages, page_ids[typed])
    keep = (where < upages.size) & (upages[np.minimum(where, upages.size - 1)]
                                    == page_ids[typed])  # fmt: skip
    typed, where = typed[keep], where[keep]
    row_codes = dtypes[typed].astype(np.intp)
    low = np.full(upages.size, len(DTYPE_NAMES), np.intp)
    np.minimum.at(low, where, row_codes)
    np.maximum.at(codes, where, row_codes)
    mixed = np.flatnonzero((codes != 0) & (low != codes))
    if mixed.size:
        p = int(mixed[0])
        rows = typed[where == p]
        names = sorted({DTYPE_NAMES[int(c)] for c in dtypes[rows]})
        raise InvalidDeltaError(
            f"rows {format_rows(rows)} write page {int(upages[p])} with payloads of "
            f"dtypes {', '.join(names)}; one page has one dtype",
            rows[:20].tolist(),
        )
    return codes


def as_payload(data: Any, what: str = "payload") -> U8:
    """View ``data`` as a 1-D uint8 array of its raw bytes (no copy where possible).

    Accepts bytes-like objects and numpy arrays of at most one dimension. Typed arrays are
    taken as their raw bytes; the bus checks a typed payload's dtype and alignment against
    its page when it commits it (``Bus.write``, ``Bus.apply``, ``Bus.apply_batch``).
    """
    if isinstance(data, np.ndarray):
        if data.ndim > 1:
            raise InvalidDeltaError(f"{what} must be 1-D, got an array of shape {data.shape}")
        if data.dtype.hasobject:
            raise InvalidDeltaError(f"{what} has object dtype; expected numbers or bytes")
        arr = np.ascontiguousarray(data).reshape(-1)
        out: U8 = arr.view(np.uint8)
        return out
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    raise InvalidDeltaError(
        f"{what} must be bytes-like or a numpy array, got {type(data).__name__}"
    )


def as_mask(mask: Any) -> U8:
    """A mask as a 1-D uint8 array of 0/1 (from bool/int arrays, lists or bytes)."""
    if isinstance(mask, (bytes, bytearray, memoryview)):
        arr = np.frombuffer(mask, dtype=np.uint8)
    else:
        arr = np.asarray(mask)
        if arr.ndim != 1:
            raise InvalidDeltaError(f"mask must be 1-D, got shape {arr.shape}")
        if arr.dtype.hasobject or arr.dtype.kind not in "biu":
            raise InvalidDeltaError(f"mask must be boolean or integer, got dtype {arr.dtype}")
    out: U8 = (arr != 0).astype(np.uint8)
    return out


def check_offset(offset: int) -> int:
    if isinstance(offset, (bool, np.bool_)):
        raise InvalidDeltaError(f"offset must be an integer, got {offset!r}")
    try:
        off = operator.index(offset)  # ints only: not 2.5, inf, nan or "3"
    except TypeError:
        raise InvalidDeltaError(f"offset must be an integer, got {offset!r}") from None
    if off < 0 or off > MAX_PAGE_SIZE:
        raise InvalidDeltaError(f"offset {off} is out of range [0, {MAX_PAGE_SIZE}]")
    return off


def _check_page_id(page_id: Any) -> int:
    if isinstance(page_id, (bool, np.bool_)) or not isinstance(page_id, (int, np.integer)):
        raise InvalidDeltaError(f"page id must be an integer, got {page_id!r}")
    pid = int(page_id)
    if pid <= 0 or pid >= 2**63:
        raise InvalidDeltaError(f"page id {pid} is out of range (ids are positive)")
    return pid


def _no_batches(*deltas: Delta) -> Any:  # pragma: no cover - mmsb.batch replaces it on import
    raise RuntimeError("import mmsb.batch to merge deltas")


# coalesces deltas into a batch: set by mmsb.batch, which imports this module (a direct
# import here would make the two modules import each other)
_COALESCE: Callable[..., Any] = _no_batches


@dataclass(frozen=True, eq=False)
class Delta:
    """One change to one page: a byte range, or a masked write (dense or sparse).

    Build with :meth:`range`, :meth:`dense` or :meth:`sparse`. ``dtype`` records the dtype of
    a numpy payload (``None`` for bytes-like data) so the bus can reject a mismatch: a typed
    payload (any dtype but ``uint8``, which is raw bytes) must have its page's dtype and
    start and end at multiples of the itemsize.
    """

    page_id: int
    offset: int
    shape: int  # RANGE, DENSE or SPARSE
    payload: U8
    mask: U8 | None
    source: str = "api"
    metadata: dict[str, Any] | None = None
    dtype: str | None = None

    @property
    def length(self) -> int:
        """Bytes of the page spanned by this delta."""
        return int(self.payload.size if self.mask is None else self.mask.size)

    @property
    def shape_name(self) -> str:
        return SHAPE_NAMES[self.shape]

    @classmethod
    def range(
        cls,
        page_id: int,
        data: Any,
        offset: int = 0,
        *,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> Delta:
        """Write ``data`` at byte ``offset`` of the page."""
        payload = as_payload(data)
        if payload.size == 0:
            raise InvalidDeltaError(f"empty payload for page {page_id}")
        return cls._make(page_id, offset, RANGE, payload, None, source, metadata, data)

    @classmethod
    def dense(
        cls,
        page_id: int,
        mask: Any,
        data: Any,
        offset: int = 0,
        *,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> Delta:
        """Write byte ``i`` of ``data`` at ``offset + i`` wherever ``mask[i]`` is set."""
        m = as_mask(mask)
        payload = as_payload(data)
        if m.size != payload.size:
            raise InvalidDeltaError(
                f"dense delta for page {page_id}: mask has {m.size} entries but payload "
                f"has {payload.size} bytes"
            )
        if m.size == 0:
            raise InvalidDeltaError(f"empty mask for page {page_id}")
        return cls._make(page_id, offset, DENSE, payload, m, source, metadata, data)

    @classmethod
    def sparse(
        cls,
        page_id: int,
        mask: Any,
        data: Any,
        offset: int = 0,
        *,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> Delta:
        """Write the bytes of ``data``, in order, at the set positions of ``mask``."""
        m = as_mask(mask)
        payload = as_payload(data)
        bits = int(np.count_nonzero(m))
        if bits != payload.size:
            raise InvalidDeltaError(
                f"sparse delta for page {page_id}: mask has {bits} set bits but payload "
                f"has {payload.size} bytes"
            )
        if m.size == 0:
            raise InvalidDeltaError(f"empty mask for page {page_id}")
        return cls._make(page_id, offset, SPARSE, payload, m, source, metadata, data)

    @classmethod
    def _make(
        cls,
        page_id: int,
        offset: int,
        shape: int,
        payload: U8,
        mask: U8 | None,
        source: str,
        metadata: dict[str, Any] | None,
        original: Any,
    ) -> Delta:
        pid = _check_page_id(page_id)
        off = check_offset(offset)
        check_source(source)
        encode_metadata(metadata, "delta")
        span = payload.size if mask is None else mask.size
        if off + span > MAX_PAGE_SIZE:
            raise InvalidDeltaError(f"delta for page {pid} ends past the largest page size")
        dtype = payload_dtype_name(original.dtype) if isinstance(original, np.ndarray) else None
        return cls(pid, off, shape, payload, mask, source, metadata, dtype)

    def merge(self, later: Delta) -> Delta:
        """Combine with a later delta on the same page: mask OR, the later bytes win."""
        if later.page_id != self.page_id:
            raise InvalidDeltaError(
                f"cannot merge deltas on different pages ({self.page_id} and {later.page_id})"
            )
        # the batch module builds on this one and lends it its coalescing (see _COALESCE)
        merged = _COALESCE(self, later)
        if len(merged) == 0:  # neither writes a byte; ``later`` is such a no-op delta
            return later
        out = merged[0]
        return Delta(
            out.page_id,
            out.offset,
            out.shape,
            out.payload,
            out.mask,
            later.source,
            later.metadata,
            out.dtype,
        )


def check_source(source: Any) -> None:
    if not isinstance(source, str):
        raise InvalidDeltaError(f"source must be a str, got {type(source).__name__}")
    if len(source.encode()) > 255:
        raise InvalidDeltaError("source must be at most 255 bytes of UTF-8")


def row_starts(lengths: I64) -> I64:
    out = np.zeros(lengths.size, dtype=np.int64)
    if lengths.size > 1:
        np.cumsum(lengths[:-1], out=out[1:])
    return out


def rows_fit(page_ids: I64, offsets: I64, width: int) -> bool:
    """For rows of one ``width`` built from a 2-D array (every other column is right by
    construction): whether all have a valid page id and lie inside the largest page, the
    only structure rules their caller's columns can break. Three reductions, where the
    general check takes ten."""
    if page_ids.size == 0:
        return True
    return bool(
        width > 0
        and page_ids.min() > 0
        and offsets.min() >= 0
        and offsets.max() <= MAX_PAGE_SIZE - width
    )


def int_column(values: Any, name: str) -> I64:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidDeltaError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidDeltaError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) >= 2**63:
        raise InvalidDeltaError(f"{name} holds values too large for a page id/offset")
    return arr.astype(np.int64, copy=False)


def format_rows(rows: npt.NDArray[np.intp]) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:10])
    more = f" and {rows.size - 10} more" if rows.size > 10 else ""
    return f"[{shown}{more}]"


__all__ = ["DENSE", "RANGE", "SPARSE", "Delta", "as_mask", "as_payload"]
