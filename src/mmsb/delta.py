"""Deltas and columnar delta batches.

A :class:`Delta` is one change to one page. A :class:`DeltaBatch` holds many deltas as
columns (page ids, offsets, lengths, shapes, pool offsets) over two byte pools (payload and
mask); it is the unit of commit and what the kernels consume. Constructing a batch checks its
*structure* (mask and payload lengths agree, offsets are non-negative); whether each row fits
its page is checked by the bus at commit, against the page table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import InvalidDeltaError
from mmsb.types import MAX_PAGE_SIZE, encode_metadata

RANGE, DENSE, SPARSE = 0, 1, 2
SHAPE_NAMES = ("range", "dense", "sparse")

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def as_payload(data: Any, what: str = "payload") -> U8:
    """View ``data`` as a 1-D uint8 array of its raw bytes (no copy where possible).

    Accepts bytes-like objects and numpy arrays of at most one dimension. Typed arrays are
    taken as their raw (native-order) bytes; the bus checks a typed payload's dtype against
    the page's dtype where it knows the page (``Bus.write``, ``Bus.apply``).
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
    try:
        off = int(offset)
    except (TypeError, ValueError):
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


@dataclass(frozen=True, eq=False)
class Delta:
    """One change to one page: a byte range, or a masked write (dense or sparse).

    Build with :meth:`range`, :meth:`dense` or :meth:`sparse`. ``dtype`` records the dtype of
    a typed numpy payload (``None`` for raw bytes) so the bus can reject a mismatch.
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
        dtype = original.dtype.name if isinstance(original, np.ndarray) else None
        return cls(pid, off, shape, payload, mask, source, metadata, dtype)

    def merge(self, later: Delta) -> Delta:
        """Combine with a later delta on the same page: mask OR, the later bytes win."""
        if later.page_id != self.page_id:
            raise InvalidDeltaError(
                f"cannot merge deltas on different pages ({self.page_id} and {later.page_id})"
            )
        merged = DeltaBatch.from_deltas([self, later]).coalesce()
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
            None,
        )


def check_source(source: Any) -> None:
    if not isinstance(source, str):
        raise InvalidDeltaError(f"source must be a str, got {type(source).__name__}")
    if len(source.encode()) > 255:
        raise InvalidDeltaError("source must be at most 255 bytes of UTF-8")


class DeltaBatch:
    """Many deltas as columns. Rows apply in order; where rows overlap, later bytes win.

    Columns (all of length ``n``):

    * ``page_ids``, ``offsets``, ``lengths`` (bytes spanned in the page), ``kinds`` (shape),
    * ``pstarts``/``plens``: each row's slice of the payload pool,
    * ``mstarts``: each row's start in the mask pool (``-1`` for range rows),
    * ``source_idx``/``meta_idx``: indices into the ``sources`` and ``metas`` tables
      (``meta_idx`` is ``-1`` where a row has no metadata).
    """

    __slots__ = (
        "kinds",
        "lengths",
        "mask",
        "meta_idx",
        "metas",
        "mstarts",
        "offsets",
        "page_ids",
        "payload",
        "plens",
        "pstarts",
        "source_idx",
        "sources",
    )

    def __init__(
        self,
        page_ids: I64,
        offsets: I64,
        lengths: I64,
        kinds: U8,
        pstarts: I64,
        plens: I64,
        mstarts: I64,
        payload: U8,
        mask: U8,
        source_idx: npt.NDArray[np.uint16],
        sources: tuple[str, ...],
        meta_idx: npt.NDArray[np.int32],
        metas: tuple[str, ...],
    ) -> None:
        self.page_ids = page_ids
        self.offsets = offsets
        self.lengths = lengths
        self.kinds = kinds
        self.pstarts = pstarts
        self.plens = plens
        self.mstarts = mstarts
        self.payload = payload
        self.mask = mask
        self.source_idx = source_idx
        self.sources = sources
        self.meta_idx = meta_idx
        self.metas = metas

    # -- construction -------------------------------------------------------------------

    @classmethod
    def empty(cls) -> DeltaBatch:
        z = np.zeros(0, dtype=np.int64)
        return cls(
            z, z, z, np.zeros(0, np.uint8), z, z, z, np.zeros(0, np.uint8),
            np.zeros(0, np.uint8), np.zeros(0, np.uint16), ("api",),
            np.zeros(0, np.int32), (),
        )  # fmt: skip

    @classmethod
    def from_ranges(
        cls,
        page_ids: Any,
        offsets: Any,
        payloads: Any,
        *,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> DeltaBatch:
        """Range deltas from columns. ``payloads`` is a 2-D array (one row per delta, its
        bytes are the payload) or a sequence of bytes-like objects of any lengths."""
        check_source(source)
        meta_json = encode_metadata(metadata, "delta")
        pids = _int_column(page_ids, "page_ids")
        offs = _int_column(offsets, "offsets")
        n = pids.size
        if offs.size != n:
            raise InvalidDeltaError(f"{n} page ids but {offs.size} offsets")
        if isinstance(payloads, np.ndarray):
            if payloads.ndim != 2:
                raise InvalidDeltaError(
                    f"payloads must be a 2-D array (rows x bytes), got shape {payloads.shape}"
                )
            if payloads.shape[0] != n:
                raise InvalidDeltaError(f"{n} page ids but {payloads.shape[0]} payload rows")
            if payloads.dtype.hasobject:
                raise InvalidDeltaError("payloads has object dtype")
            rows = np.ascontiguousarray(payloads)
            width = rows.shape[1] * rows.dtype.itemsize
            pool = rows.reshape(-1).view(np.uint8)
            lengths = np.full(n, width, dtype=np.int64)
            pstarts = np.arange(n, dtype=np.int64) * width
        else:
            parts = [as_payload(p, f"payload {i}") for i, p in enumerate(payloads)]
            if len(parts) != n:
                raise InvalidDeltaError(f"{n} page ids but {len(parts)} payloads")
            lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=n)
            pool = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
            pstarts = _starts(lengths)
        batch = cls(
            pids, offs, lengths, np.zeros(n, np.uint8), pstarts, lengths,
            np.full(n, -1, np.int64), pool, np.zeros(0, np.uint8),
            np.zeros(n, np.uint16), (source,),
            np.full(n, -1 if meta_json is None else 0, np.int32),
            () if meta_json is None else (meta_json,),
        )  # fmt: skip
        batch._check_structure()
        return batch

    @classmethod
    def from_deltas(cls, deltas: Iterable[Delta]) -> DeltaBatch:
        """Stack individual deltas into one batch (a Python loop: for convenience, not speed)."""
        items = list(deltas)
        n = len(items)
        if n == 0:
            return cls.empty()
        for i, d in enumerate(items):
            if not isinstance(d, Delta):
                raise InvalidDeltaError(f"row {i} is a {type(d).__name__}, not a Delta", [i])
        src_table: dict[str, int] = {}
        meta_table: dict[str, int] = {}
        source_idx = np.empty(n, np.uint16)
        meta_idx = np.empty(n, np.int32)
        for i, d in enumerate(items):
            source_idx[i] = src_table.setdefault(d.source, len(src_table))
            mj = encode_metadata(d.metadata, "delta")
            meta_idx[i] = -1 if mj is None else meta_table.setdefault(mj, len(meta_table))
        kinds = np.fromiter((d.shape for d in items), np.uint8, n)
        plens = np.fromiter((d.payload.size for d in items), np.int64, n)
        lengths = np.fromiter((d.length for d in items), np.int64, n)
        masks = [d.mask for d in items if d.mask is not None]
        mlens = np.where(kinds == RANGE, 0, lengths)
        mstarts = np.where(kinds == RANGE, -1, _starts(mlens))
        return cls(
            np.fromiter((d.page_id for d in items), np.int64, n),
            np.fromiter((d.offset for d in items), np.int64, n),
            lengths, kinds, _starts(plens), plens, mstarts,
            np.concatenate([d.payload for d in items]),
            np.concatenate(masks) if masks else np.zeros(0, np.uint8),
            source_idx, tuple(src_table) or ("api",), meta_idx, tuple(meta_table),
        )  # fmt: skip

    @staticmethod
    def concat(batches: Sequence[DeltaBatch]) -> DeltaBatch:
        """One batch holding the rows of ``batches`` in order."""
        if not batches:
            return DeltaBatch.empty()
        if len(batches) == 1:
            return batches[0]
        src_table: dict[str, int] = {}
        meta_table: dict[str, int] = {}
        cols: dict[str, list[Any]] = {k: [] for k in DeltaBatch.__slots__}
        pbase = mbase = 0
        for b in batches:
            src_map = np.array(
                [src_table.setdefault(s, len(src_table)) for s in b.sources], np.uint16
            )
            meta_map = np.array(
                [meta_table.setdefault(m, len(meta_table)) for m in b.metas] + [-1], np.int32
            )
            cols["page_ids"].append(b.page_ids)
            cols["offsets"].append(b.offsets)
            cols["lengths"].append(b.lengths)
            cols["kinds"].append(b.kinds)
            cols["pstarts"].append(b.pstarts + pbase)
            cols["plens"].append(b.plens)
            cols["mstarts"].append(np.where(b.mstarts < 0, -1, b.mstarts + mbase))
            cols["payload"].append(b.payload)
            cols["mask"].append(b.mask)
            cols["source_idx"].append(src_map[b.source_idx])
            cols["meta_idx"].append(meta_map[b.meta_idx])  # -1 maps to the trailing -1
            pbase += b.payload.size
            mbase += b.mask.size
        cat = {k: np.concatenate(v) for k, v in cols.items() if v}
        return DeltaBatch(
            cat["page_ids"], cat["offsets"], cat["lengths"], cat["kinds"], cat["pstarts"],
            cat["plens"], cat["mstarts"], cat["payload"], cat["mask"], cat["source_idx"],
            tuple(src_table) or ("api",), cat["meta_idx"], tuple(meta_table),
        )  # fmt: skip

    def _check_structure(self) -> None:
        """Raise :class:`InvalidDeltaError` naming the rows unless the columns are sane."""
        from mmsb.engine.kernels import structure_ok

        n = len(self)
        if (
            all(c.size == n for c in self._row_columns())
            and structure_ok(
                self.page_ids,
                self.offsets,
                self.lengths,
                self.kinds,
                self.pstarts,
                self.plens,
                self.mstarts,
                self.payload.size,
                self.mask,
                MAX_PAGE_SIZE,
            )
            and (n == 0 or int(self.source_idx.max()) < len(self.sources))
            and (
                n == 0
                or -1 <= int(self.meta_idx.min()) <= int(self.meta_idx.max()) < len(self.metas)
            )
        ):
            return
        problem, rows = self._structure()
        raise InvalidDeltaError(problem or "batch columns are inconsistent", rows.tolist())

    def _row_columns(self) -> tuple[npt.NDArray[Any], ...]:
        return (
            self.offsets, self.lengths, self.kinds, self.pstarts, self.plens, self.mstarts,
            self.source_idx, self.meta_idx,
        )  # fmt: skip

    def structure_problem(self) -> str | None:
        """Why the columns are inconsistent with each other or the pools, or ``None``."""
        return self._structure()[0]

    def _structure(self) -> tuple[str | None, npt.NDArray[np.intp]]:
        none = np.zeros(0, np.intp)
        n = len(self)
        if not (
            self.offsets.size == n
            and self.lengths.size == n
            and self.kinds.size == n
            and self.pstarts.size == n
            and self.plens.size == n
            and self.mstarts.size == n
            and self.source_idx.size == n
            and self.meta_idx.size == n
        ):
            return "batch columns have different lengths", none
        checks: list[tuple[npt.NDArray[np.bool_], str]] = [
            (self.page_ids <= 0, "invalid page id"),
            (self.kinds > SPARSE, "unknown delta shape"),
            (self.offsets < 0, "negative offset"),
            (self.lengths <= 0, "empty payload"),
            (self.offsets + self.lengths > MAX_PAGE_SIZE, "ends past the largest page size"),
            (self.pstarts < 0, "negative payload start"),
            (self.pstarts + self.plens > self.payload.size, "payload slice outside the pool"),
        ]
        for bad_mask, what in checks:
            bad = np.nonzero(bad_mask)[0]
            if bad.size:
                return f"{what} in rows {format_rows(bad)}", bad[:20]
        bad = np.nonzero((self.kinds != SPARSE) & (self.plens != self.lengths))[0]
        if bad.size:
            return f"payload length differs from the span in rows {format_rows(bad)}", bad[:20]
        masked = np.nonzero(self.kinds != RANGE)[0]
        if masked.size:
            ms = self.mstarts[masked]
            ml = self.lengths[masked]
            bad = masked[(ms < 0) | (ms + ml > self.mask.size)]
            if bad.size:
                return f"mask slice outside the pool in rows {format_rows(bad)}", bad[:20]
            sparse = masked[self.kinds[masked] == SPARSE]
            if sparse.size:
                csum = np.concatenate(([0], np.cumsum(self.mask != 0, dtype=np.int64)))
                ms = self.mstarts[sparse]
                bits = csum[ms + self.lengths[sparse]] - csum[ms]
                bad = sparse[bits != self.plens[sparse]]
                if bad.size:
                    r = int(bad[0])
                    return (
                        f"sparse payload length differs from the set mask bits in rows "
                        f"{format_rows(bad)} (row {r}: {int(self.plens[r])} bytes, "
                        f"{int(bits[np.searchsorted(sparse, r)])} bits)",
                        bad[:20],
                    )
        bad = np.nonzero(self.source_idx >= len(self.sources))[0]
        if bad.size:
            return f"source index out of range in rows {format_rows(bad)}", bad[:20]
        bad = np.nonzero((self.meta_idx < -1) | (self.meta_idx >= len(self.metas)))[0]
        if bad.size:
            return f"metadata index out of range in rows {format_rows(bad)}", bad[:20]
        return None, none

    # -- access -------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.page_ids.size)

    def __getitem__(self, i: int) -> Delta:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range for a batch of {n}")
        i %= n
        ps, pl = int(self.pstarts[i]), int(self.plens[i])
        kind = int(self.kinds[i])
        mask = None
        if kind != RANGE:
            ms = int(self.mstarts[i])
            mask = self.mask[ms : ms + int(self.lengths[i])]
        mi = int(self.meta_idx[i])
        import json

        return Delta(
            int(self.page_ids[i]), int(self.offsets[i]), kind, self.payload[ps : ps + pl], mask,
            self.sources[int(self.source_idx[i])],
            None if mi < 0 else json.loads(self.metas[mi]), None,
        )  # fmt: skip

    def __iter__(self) -> Iterator[Delta]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"DeltaBatch({len(self)} deltas, {self.payload.size} payload bytes)"

    @property
    def has_masks(self) -> bool:
        return bool(self.kinds.any())

    @property
    def nbytes(self) -> int:
        return int(self.payload.size + self.mask.size + 40 * len(self))

    # -- transformation -----------------------------------------------------------------

    def expand(self) -> tuple[I64, I64, U8]:
        """Every byte the batch writes, in application order: (page ids, positions, values).

        Vectorised; memory is proportional to the bytes spanned. Used by :meth:`coalesce`
        and by tests as a second, independent route to a batch's effect.
        """
        n = len(self)
        total = int(self.lengths.sum())
        if total == 0:
            z = np.zeros(0, np.int64)
            return z, z, np.zeros(0, np.uint8)
        row = np.repeat(np.arange(n, dtype=np.int64), self.lengths)
        row_start = _starts(self.lengths)
        within = np.arange(total, dtype=np.int64) - row_start[row]
        kinds = self.kinds[row]
        written = np.ones(total, dtype=bool)
        masked = kinds != RANGE
        if masked.any():
            written[masked] = self.mask[self.mstarts[row[masked]] + within[masked]] != 0
        src = self.pstarts[row] + within
        sparse = kinds == SPARSE
        if sparse.any():
            # the k-th set bit of a sparse row takes payload byte k
            c = np.cumsum(written, dtype=np.int64)
            before = c[row_start] - written[row_start]
            rank = c - 1 - before[row]
            src[sparse] = self.pstarts[row[sparse]] + rank[sparse]
        pages = self.page_ids[row][written]
        pos = (self.offsets[row] + within)[written]
        vals = self.payload[src[written]]
        return pages, pos, vals

    def coalesce(self) -> DeltaBatch:
        """One delta per page with the same final effect (later bytes win).

        A page whose written bytes form one contiguous run becomes a range delta; otherwise
        a dense masked delta spanning the first to the last written byte. Source and
        metadata are those of the page's last row.
        """
        n = len(self)
        if n == 0:
            return self
        pages, pos, vals = self.expand()
        if pages.size == 0:  # every row is masked out entirely: nothing to write
            return DeltaBatch.empty()
        order = np.arange(pages.size)
        # sort by (page, pos, order) and keep the last entry of each (page, pos) group
        idx = np.lexsort((order, pos, pages))
        pages, pos, vals = pages[idx], pos[idx], vals[idx]
        last = np.ones(pages.size, dtype=bool)
        if pages.size > 1:
            last[:-1] = (pages[1:] != pages[:-1]) | (pos[1:] != pos[:-1])
        pages, pos, vals = pages[last], pos[last], vals[last]
        upages, first = np.unique(pages, return_index=True)
        ends = np.append(first[1:], pages.size)
        lo = pos[first]
        hi = pos[ends - 1] + 1
        span = hi - lo
        count = ends - first
        contiguous = span == count
        # the last row touching each page supplies source and metadata
        row_last = np.full(int(self.page_ids.max()) + 1, -1, dtype=np.int64)
        row_last[self.page_ids] = np.arange(n)  # later rows overwrite earlier ones
        src_rows = row_last[upages]
        m = upages.size
        lengths = span.astype(np.int64)
        kinds = np.where(contiguous, RANGE, DENSE).astype(np.uint8)
        plens = lengths.copy()
        pstarts = _starts(plens)
        payload = np.zeros(int(plens.sum()), np.uint8)
        page_of = np.repeat(np.arange(m), count)
        payload[pstarts[page_of] + (pos - lo[page_of])] = vals
        mlens = np.where(contiguous, 0, lengths)
        mstarts = np.where(contiguous, -1, _starts(mlens))
        mask = np.zeros(int(mlens.sum()), np.uint8)
        dense_entry = ~contiguous[page_of]
        mask[mstarts[page_of[dense_entry]] + (pos[dense_entry] - lo[page_of[dense_entry]])] = 1
        return DeltaBatch(
            upages.astype(np.int64), lo.astype(np.int64), lengths, kinds, pstarts, plens,
            mstarts.astype(np.int64), payload, mask, self.source_idx[src_rows], self.sources,
            self.meta_idx[src_rows], self.metas,
        )  # fmt: skip


def _starts(lengths: I64) -> I64:
    out = np.zeros(lengths.size, dtype=np.int64)
    if lengths.size > 1:
        np.cumsum(lengths[:-1], out=out[1:])
    return out


def _int_column(values: Any, name: str) -> I64:
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


__all__ = ["DENSE", "RANGE", "SPARSE", "Delta", "DeltaBatch"]
