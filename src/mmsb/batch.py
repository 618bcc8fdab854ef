"""Columnar delta batches: the unit of commit and what the kernels consume.

A :class:`DeltaBatch` holds many deltas as columns (page ids, offsets, lengths, shapes, pool
offsets, payload dtypes) over two byte pools (payload and mask). Constructing one checks its
*structure* (mask and payload lengths agree, offsets are non-negative); whether each row fits
its page (live, inside it, and for a typed payload the page's dtype at whole items) is
checked by the bus at commit, against the page table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb.delta as _delta_module
from mmsb.delta import (
    DENSE,
    I64,
    RANGE,
    RAW,
    SPARSE,
    U8,
    Delta,
    array_dtype_code,
    as_payload,
    check_source,
    format_rows,
    int_column,
    page_dtype_codes,
    payload_dtype_code,
    row_starts,
    rows_fit,
)
from mmsb.errors import InvalidDeltaError
from mmsb.types import DTYPE_ITEMSIZE, DTYPE_NAMES, MAX_PAGE_SIZE, encode_metadata


class DeltaBatch:
    """Many deltas as columns. Rows apply in order; where rows overlap, later bytes win.

    Columns (all of length ``n``):

    * ``page_ids``, ``offsets``, ``lengths`` (bytes spanned in the page), ``kinds`` (shape),
    * ``pstarts``/``plens``: each row's slice of the payload pool,
    * ``mstarts``: each row's start in the mask pool (``-1`` for range rows),
    * ``source_idx``/``meta_idx``: indices into the ``sources`` and ``metas`` tables
      (``meta_idx`` is ``-1`` where a row has no metadata),
    * ``dtypes``: each row's payload dtype as a page-dtype code (``mmsb.types.DTYPE_NAMES``);
      0 (``uint8``) is raw bytes, which fit a page of any dtype. A row of any other code is
      typed: at commit its page must have that dtype and its offset and length must be
      multiples of the itemsize. The constructors that take numpy arrays fill it in;
      ``None`` (the default) makes every row raw.
    """

    __slots__ = (
        "dtypes",
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
        dtypes: U8 | None = None,
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
        self.dtypes = np.zeros(page_ids.size, np.uint8) if dtypes is None else dtypes

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
        bytes are the payload) or a sequence of bytes-like objects or 1-D arrays of any
        lengths. The dtype of array payloads is recorded per row (``dtypes``): a typed one
        (not ``uint8``) must match its page's dtype at commit."""
        check_source(source)
        meta_json = encode_metadata(metadata, "delta")
        pids = int_column(page_ids, "page_ids")
        offs = int_column(offsets, "offsets")
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
            code = array_dtype_code(payloads, "payloads")
            rows = np.ascontiguousarray(payloads)
            width = rows.shape[1] * rows.dtype.itemsize
            pool = rows.reshape(-1).view(np.uint8)
            lengths = np.full(n, width, dtype=np.int64)
            pstarts = np.arange(n, dtype=np.int64) * width
            dtypes = np.full(n, code, np.uint8)
            fits = rows_fit(pids, offs, width)
        else:
            if not isinstance(payloads, Iterable):
                raise InvalidDeltaError(
                    "payloads must be a 2-D array or a sequence of bytes-like objects, got "
                    f"{type(payloads).__name__}"
                )
            items = list(payloads)
            parts = [as_payload(p, f"payload {i}") for i, p in enumerate(items)]
            if len(parts) != n:
                raise InvalidDeltaError(f"{n} page ids but {len(parts)} payloads")
            lengths = np.fromiter((p.size for p in parts), dtype=np.int64, count=n)
            pool = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
            pstarts = row_starts(lengths)
            codes = [array_dtype_code(p, f"payload {i}") for i, p in enumerate(items)]
            dtypes = np.array(codes, np.uint8)
            fits = False
        batch = cls(
            pids, offs, lengths, np.zeros(n, np.uint8), pstarts, lengths,
            np.full(n, -1, np.int64), pool, np.zeros(0, np.uint8),
            np.zeros(n, np.uint16), (source,),
            np.full(n, -1 if meta_json is None else 0, np.int32),
            () if meta_json is None else (meta_json,), dtypes,
        )  # fmt: skip
        if not fits:
            batch._check_structure()  # the general check, which names the failing rows
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
        dtypes = np.empty(n, np.uint8)
        for i, d in enumerate(items):
            source_idx[i] = src_table.setdefault(d.source, len(src_table))
            mj = encode_metadata(d.metadata, "delta")
            meta_idx[i] = -1 if mj is None else meta_table.setdefault(mj, len(meta_table))
            dtypes[i] = payload_dtype_code(d.dtype, f"row {i}")
        kinds = np.fromiter((d.shape for d in items), np.uint8, n)
        plens = np.fromiter((d.payload.size for d in items), np.int64, n)
        lengths = np.fromiter((d.length for d in items), np.int64, n)
        masks = [d.mask for d in items if d.mask is not None]
        mlens = np.where(kinds == RANGE, 0, lengths)
        mstarts = np.where(kinds == RANGE, -1, row_starts(mlens))
        return cls(
            np.fromiter((d.page_id for d in items), np.int64, n),
            np.fromiter((d.offset for d in items), np.int64, n),
            lengths, kinds, row_starts(plens), plens, mstarts,
            np.concatenate([d.payload for d in items]),
            np.concatenate(masks) if masks else np.zeros(0, np.uint8),
            source_idx, tuple(src_table) or ("api",), meta_idx, tuple(meta_table), dtypes,
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
            cols["dtypes"].append(b.dtypes)
            pbase += b.payload.size
            mbase += b.mask.size
        cat = {k: np.concatenate(v) for k, v in cols.items() if v}
        return DeltaBatch(
            cat["page_ids"], cat["offsets"], cat["lengths"], cat["kinds"], cat["pstarts"],
            cat["plens"], cat["mstarts"], cat["payload"], cat["mask"], cat["source_idx"],
            tuple(src_table) or ("api",), cat["meta_idx"], tuple(meta_table), cat["dtypes"],
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
            and (n == 0 or 0 <= int(self.dtypes.min()) <= int(self.dtypes.max()) < len(DTYPE_NAMES))
        ):
            return
        problem, rows = self._structure()
        raise InvalidDeltaError(problem or "batch columns are inconsistent", rows.tolist())

    def _row_columns(self) -> tuple[npt.NDArray[Any], ...]:
        return (
            self.offsets, self.lengths, self.kinds, self.pstarts, self.plens, self.mstarts,
            self.source_idx, self.meta_idx, self.dtypes,
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
            and self.dtypes.size == n
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
        bad = np.nonzero((self.dtypes < 0) | (self.dtypes >= len(DTYPE_NAMES)))[0]
        if bad.size:
            return f"unknown payload dtype code in rows {format_rows(bad)}", bad[:20]
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
        code = int(self.dtypes[i])
        return Delta(
            int(self.page_ids[i]), int(self.offsets[i]), kind, self.payload[ps : ps + pl], mask,
            self.sources[int(self.source_idx[i])],
            None if mi < 0 else json.loads(self.metas[mi]),
            None if code == RAW else DTYPE_NAMES[code],
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
        return int(self.payload.size + self.mask.size + 41 * len(self))

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
        row_start = row_starts(self.lengths)
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
        metadata are those of the page's last row. A page written by typed rows keeps their
        dtype, and its span is widened to whole items (the added bytes masked out), so the
        result passes the same dtype and alignment checks; typed rows of two different
        dtypes on one page raise :class:`InvalidDeltaError` (no page can take both).
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
        codes = page_dtype_codes(upages, self.page_ids, self.dtypes)
        item = DTYPE_ITEMSIZE[codes]
        lo = pos[first] // item * item
        hi = -(-(pos[ends - 1] + 1) // item) * item
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
        pstarts = row_starts(plens)
        payload = np.zeros(int(plens.sum()), np.uint8)
        page_of = np.repeat(np.arange(m), count)
        payload[pstarts[page_of] + (pos - lo[page_of])] = vals
        mlens = np.where(contiguous, 0, lengths)
        mstarts = np.where(contiguous, -1, row_starts(mlens))
        mask = np.zeros(int(mlens.sum()), np.uint8)
        dense_entry = ~contiguous[page_of]
        mask[mstarts[page_of[dense_entry]] + (pos[dense_entry] - lo[page_of[dense_entry]])] = 1
        return DeltaBatch(
            upages.astype(np.int64), lo.astype(np.int64), lengths, kinds, pstarts, plens,
            mstarts.astype(np.int64), payload, mask, self.source_idx[src_rows], self.sources,
            self.meta_idx[src_rows], self.metas, codes.astype(np.uint8),
        )  # fmt: skip


def _coalesce_deltas(*deltas: Delta) -> DeltaBatch:
    return DeltaBatch.from_deltas(list(deltas)).coalesce()


_delta_module._COALESCE = _coalesce_deltas  # Delta.merge coalesces through this

__all__ = ["DeltaBatch"]
