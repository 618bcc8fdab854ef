"""Field writes on record pages, compiled to one ordinary sparse delta.

A record page holds an array of numpy records. Writing one field of some records touches
``itemsize(field)`` bytes in each of them; :func:`field_delta` turns that into a single
``SPARSE`` delta over the span from the first to the last record written, whose mask sets
exactly those bytes. Logging, replay, provenance and history see an ordinary delta.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.delta import Delta
from mmsb.errors import InvalidArgumentError, InvalidDeltaError


def record_rows(index: Any, count: int) -> npt.NDArray[np.int64]:
    """The record numbers ``index`` names among ``count`` records, in the order given:
    None (all), an int, a slice, a boolean mask of ``count`` entries or integers (negative
    ones count from the end). Out-of-range or repeated records raise."""
    if index is None:
        return np.arange(count, dtype=np.int64)
    if isinstance(index, slice):
        return np.arange(count, dtype=np.int64)[index]
    if isinstance(index, bool):
        raise InvalidArgumentError("index must be integers or a boolean mask, not a bool")
    arr = np.asarray(index)
    if arr.dtype == np.bool_:
        if arr.shape != (count,):
            raise InvalidArgumentError(f"a boolean index needs {count} entries, got {arr.shape}")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.ndim > 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise InvalidArgumentError("index must be an int, a slice, integers or a boolean mask")
    rows = arr.reshape(-1).astype(np.int64)
    if rows.size and (rows.min() < -count or rows.max() >= count):
        raise InvalidArgumentError(f"index out of range for {count} records")
    rows = np.where(rows < 0, rows + count, rows)
    if np.unique(rows).size != rows.size:
        raise InvalidArgumentError("index names a record twice")
    return rows


def field_delta(
    page: int,
    dtype: np.dtype[Any],
    size: int,
    field: Any,
    values: Any,
    index: Any,
    source: str,
    metadata: dict[str, Any] | None,
) -> DeltaBatch:
    """The one-delta batch that writes ``values`` to ``field`` of records ``index`` of a
    record page of ``size`` bytes and record dtype ``dtype`` (empty when no record is named).

    ``values`` is cast to the field's dtype where numpy's ``same_kind`` rule allows (ints
    to floats, not floats to ints) and broadcast to one value per record named.
    """
    names = dtype.names or ()
    if not isinstance(field, str) or field not in names:
        raise InvalidArgumentError(
            f"page {page} records have no field {field!r}; fields: {', '.join(names)}"
        )
    fdt, foff = dtype.fields[field][:2]  # type: ignore[index]
    base, width, rec = fdt.base, fdt.itemsize, dtype.itemsize
    rows = record_rows(index, size // rec)
    arr = np.asarray(values)
    if arr.dtype.hasobject or arr.dtype.names is not None:
        raise InvalidDeltaError(f"values for field {field!r} must be numbers")
    if not np.can_cast(arr.dtype, base, "same_kind"):
        raise InvalidDeltaError(
            f"values of dtype {arr.dtype} do not cast safely to field {field!r} of dtype {base}"
        )
    try:
        vals = np.broadcast_to(arr.astype(base, copy=False), (rows.size, *fdt.shape))
    except ValueError:
        raise InvalidDeltaError(
            f"values of shape {arr.shape} do not fit {rows.size} records of field {field!r} "
            f"(shape {fdt.shape or 'scalar'})"
        ) from None
    if rows.size == 0:
        return DeltaBatch.empty()
    order = np.argsort(rows, kind="stable")
    rows = rows[order]
    payload = np.ascontiguousarray(vals[order]).reshape(-1).view(np.uint8)
    first = int(rows[0])
    span = (int(rows[-1]) - first + 1) * rec
    where = ((rows - first) * rec + foff)[:, None] + np.arange(width, dtype=np.int64)[None, :]
    mask = np.zeros(span, np.uint8)
    mask[where.reshape(-1)] = 1
    delta = Delta.sparse(page, mask, payload, first * rec, source=source, metadata=metadata)
    return DeltaBatch.from_deltas([delta])
