"""History as tables: the log's deltas, or its commits, as an Arrow table or a pandas
DataFrame, for looking at a run in a notebook (:meth:`History.history_table
<mmsb.history.component.History.history_table>`).

Needs the optional extra ``mmsb[analysis]`` (pyarrow and pandas). Neither is imported by
``import mmsb`` nor by this module: only a call that builds a table imports them, so a
missing extra shows as one clear :class:`ImportError` naming it.

The frames are found through the history index the bus already keeps (frame positions,
LSNs, timestamps and the per-page delta index), read straight from the segment files (a
run of neighbouring frames with one read) and checked against their checksums. Each batch
frame is decoded once into the codec's columns; the table's columns are those columns
concatenated frame by frame, so the work per delta is numpy's and Arrow's, never a Python
loop.
"""

from __future__ import annotations

import bisect
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mmsb.delta import RANGE, SHAPE_NAMES
from mmsb.engine import kernels
from mmsb.engine.crc import crc32
from mmsb.errors import CorruptLogError, HistoryUnavailableError, InvalidArgumentError
from mmsb.storage import codec
from mmsb.storage.codec import BATCH, FRAME_TYPES, META, NAME
from mmsb.storage.log import (
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    list_segments,
    payload_of,
)
from mmsb.types import integer_arg

if TYPE_CHECKING:
    from mmsb.history.timeline import LogIndex

EXTRA = "pip install 'mmsb[analysis]'"
LEVELS = ("delta", "commit")
FORMATS = ("arrow", "pandas")
KINDS = (*SHAPE_NAMES, "metadata", "name")  # the ``kind`` column's values
_KIND_CODE = {name: code for code, name in enumerate(KINDS)}
TYPE_NAMES = tuple(FRAME_TYPES.values())  # the ``type`` column's values
_TYPE_CODE = {ftype: i for i, ftype in enumerate(FRAME_TYPES)}

DELTA_COLUMNS = ("lsn", "time", "delta_id", "page_id", "epoch", "offset", "length", "kind",
                 "source", "metadata")  # fmt: skip
PAYLOAD_COLUMNS = ("payload", "mask")
COMMIT_COLUMNS = ("lsn", "time", "type", "deltas", "pages", "payload_bytes", "log_bytes")

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


def require(module: str) -> ModuleType:
    """Import ``module`` (pyarrow or pandas); a clear error naming the extra if it fails."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"history tables need pyarrow and pandas, and {module} is not importable here "
            f"({exc}); install the analysis extra: {EXTRA}"
        ) from exc


# -- which frames -----------------------------------------------------------------------


def lsn_range(log_dir: str, head: int, start: int | None, end: int | None) -> tuple[int, int]:
    """The inclusive LSN range ``[start, end]`` a table covers, checked.

    Without ``start`` the table starts where the retained log starts (what compaction left,
    as for ``history``); a ``start`` older than that raises, as ``at`` does for a
    compacted LSN."""
    lo = 0 if start is None else integer_arg(start, "start_lsn")
    hi = head if end is None else integer_arg(end, "end_lsn")
    for lsn in (lo, hi):
        if lsn < 0 or lsn > head:
            raise HistoryUnavailableError(f"LSN {lsn} is outside [0, {head}]")
    segs = list_segments(log_dir)  # a directory listing, not a log scan
    first = segs[0][0] if segs else 1
    if start is not None and lo < first and first > 1:
        raise HistoryUnavailableError(
            f"LSN {lo} is older than the retained history (the log starts at LSN {first})"
        )
    return lo, hi


def frame_rows(index: LogIndex, page: int | None, lo: int, hi: int) -> list[int]:
    """Index rows of the frames with ``lo <= lsn <= hi``; with ``page``, only the batch
    frames holding a delta of that page and the metadata and name frames of that page."""
    start = bisect.bisect_left(index.f_lsn, lo)
    stop = bisect.bisect_right(index.f_lsn, hi)
    if page is None:
        return list(range(start, stop))
    rows, firsts = index.frame_arrays()
    dids = index.delta_ids(page)
    held = rows[np.searchsorted(firsts, dids, side="right") - 1] if dids.size else rows[:0]
    meta = np.asarray(index._meta.get(page, ()), np.int64)
    found = np.union1d(held, meta)
    found = found[(found >= start) & (found < stop)]
    out: list[int] = found.tolist()
    return out


def read_frames(
    log_dir: str, index: LogIndex, rows: Sequence[int]
) -> Iterator[tuple[int, int, memoryview]]:
    """``(index row, frame type, payload)`` of the frames at ``rows`` (ascending), each
    checked against its checksums and its LSN. Neighbouring frames of one segment are
    read with one read."""
    i = 0
    while i < len(rows):
        seg = index.f_seg[rows[i]]
        k = i + 1
        while k < len(rows) and rows[k] == rows[k - 1] + 1 and index.f_seg[rows[k]] == seg:
            k += 1
        yield from _read_run(os.path.join(log_dir, seg), index, rows[i:k])
        i = k


def _read_run(
    path: str, index: LogIndex, run: Sequence[int]
) -> Iterator[tuple[int, int, memoryview]]:
    name = os.path.basename(path)
    first, last = index.f_off[run[0]], index.f_off[run[-1]]
    try:
        with open(path, "rb") as f:
            f.seek(last)
            head = f.read(FRAME_HEADER_SIZE)
            length = FRAME_HEADER.unpack(head)[5] if len(head) == FRAME_HEADER_SIZE else 0
            want = last - first + FRAME_HEADER_SIZE + length + (-length) % 8
            f.seek(first)  # (a damaged length must not make a huge read: the file bounds it)
            data = f.read(max(0, min(want, os.fstat(f.fileno()).st_size - first)))
    except FileNotFoundError:
        raise HistoryUnavailableError(
            f"log segment {name} was removed (the log was compacted meanwhile); ask again"
        ) from None
    view = memoryview(data)
    for j in run:
        pos = index.f_off[j] - first
        body = pos + FRAME_HEADER_SIZE
        ok = body <= len(data)
        if ok:
            magic, ftype, flags, lsn, _, length, pcrc, hcrc, _ = FRAME_HEADER.unpack_from(data, pos)
            end = body + length + (-length) % 8
            ok = (magic == FRAME_MAGIC and crc32(view[pos : pos + 32]) == hcrc
                  and lsn == index.f_lsn[j] and end <= len(data)
                  and crc32(view[body:end]) == pcrc)  # fmt: skip
        if not ok:
            raise CorruptLogError(
                f"log frame in {name} at offset {index.f_off[j]} fails its checksum "
                f"(or is not LSN {index.f_lsn[j]}, which the history index expects there)",
                name,
                index.f_off[j],
            )
        yield j, ftype, payload_of(flags, view[body : body + length], f"{name} offset {pos}")


# -- the delta table --------------------------------------------------------------------


class DeltaColumns:
    """The delta table's columns as numpy arrays, collected frame by frame."""

    def __init__(self, page: int | None, payload: bool) -> None:
        self.page = page
        self.payload = payload
        self.frame_lsn: list[int] = []
        self.frame_ts: list[int] = []
        self.counts: list[int] = []
        self.cols: dict[str, list[npt.NDArray[Any]]] = {k: [] for k in DELTA_COLUMNS[2:]}
        self.sources: dict[str, int] = {}  # interned: a dictionary column
        self.metas: list[str] = []  # a frame's metadata texts, appended whole
        self.blobs: dict[str, tuple[list[U8], list[I64], list[npt.NDArray[np.bool_]]]] = {
            k: ([], [], []) for k in PAYLOAD_COLUMNS
        }

    def _frame(self, lsn: int, ts: int, n: int, **cols: npt.NDArray[Any]) -> None:
        self.frame_lsn.append(lsn)
        self.frame_ts.append(ts)
        self.counts.append(n)
        for k, v in cols.items():
            self.cols[k].append(v)

    def _blob(self, key: str, data: U8, lens: I64, valid: npt.NDArray[np.bool_]) -> None:
        datas, lenss, valids = self.blobs[key]
        datas.append(data)
        lenss.append(lens)
        valids.append(valid)

    def add_batch(self, lsn: int, ts: int, dec: codec.DecodedBatch) -> None:
        b = dec.batch
        n = len(b)
        rows: npt.NDArray[np.intp] | None = None
        if self.page is not None:
            rows = np.flatnonzero(b.page_ids == self.page)
            n = rows.size

        def pick(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
            return a if rows is None else a[rows]

        src = np.array([self.sources.setdefault(s, len(self.sources)) for s in b.sources],
                       np.int32)  # fmt: skip
        meta = pick(b.meta_idx).astype(np.int64)
        meta = np.where(meta >= 0, meta + len(self.metas), -1)
        self.metas.extend(b.metas)
        did = np.arange(len(b), dtype=np.int64) + dec.first_delta_id
        self._frame(lsn, ts, n, delta_id=pick(did), page_id=pick(b.page_ids),
                    epoch=pick(dec.epochs), offset=pick(b.offsets), length=pick(b.lengths),
                    kind=pick(b.kinds), source=src[pick(b.source_idx)], metadata=meta)  # fmt: skip
        if not self.payload:
            return
        masked = b.kinds != RANGE
        mlens = np.where(masked, b.lengths, 0)
        if rows is None:  # the pools already hold the rows' bytes in row order
            self._blob("payload", b.payload, b.plens, np.ones(n, np.bool_))
            self._blob("mask", b.mask, mlens, masked)
            return
        self._blob("payload", _gather(b.payload, b.pstarts[rows], b.plens[rows]),
                   b.plens[rows], np.ones(n, np.bool_))  # fmt: skip
        self._blob("mask", _gather(b.mask, b.mstarts[rows], mlens[rows]), mlens[rows],
                   masked[rows])  # fmt: skip

    def add_attr(self, lsn: int, ts: int, rec: codec.MetaRecord | codec.NameRecord) -> None:
        """A metadata or name change, as ``history`` lists it: delta id 0, no bytes, kind
        and source ``"metadata"`` with the page's new metadata (null: cleared), or
        ``"name"`` with ``{"name": the new name or null}``."""
        value: str | None
        if isinstance(rec, codec.NameRecord):
            kind, value = "name", json.dumps({"name": rec.name}, separators=(",", ":"))
        else:
            kind, value = "metadata", rec.metadata
        text = -1
        if value is not None:
            text = len(self.metas)
            self.metas.append(value)
        one = np.ones(1, np.int64)
        source = self.sources.setdefault(kind, len(self.sources))
        self._frame(lsn, ts, 1, delta_id=0 * one, page_id=rec.page * one,
                    epoch=rec.epoch * one, offset=0 * one, length=0 * one,
                    kind=_KIND_CODE[kind] * one, source=source * one,
                    metadata=text * one)  # fmt: skip
        if self.payload:
            for key in PAYLOAD_COLUMNS:
                self._blob(key, np.zeros(0, np.uint8), 0 * one, np.zeros(1, np.bool_))

    def table(self, pa: ModuleType) -> Any:
        counts = np.asarray(self.counts, np.int64)
        lsn = np.repeat(np.asarray(self.frame_lsn, np.int64), counts)
        ts = np.repeat(np.asarray(self.frame_ts, np.int64), counts)

        def col(key: str, dtype: Any) -> npt.NDArray[Any]:
            parts = self.cols[key]
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        names = [s for s, _ in sorted(self.sources.items(), key=lambda kv: kv[1])]
        meta = col("metadata", np.int64)
        out = {
            "lsn": pa.array(lsn),
            "time": _time(pa, ts),
            **{k: pa.array(col(k, np.int64)) for k in DELTA_COLUMNS[2:7]},
            "kind": _categories(pa, col("kind", np.int8), KINDS),
            "source": _categories(pa, col("source", np.int32), names),
            "metadata": pa.array(self.metas, pa.string()).take(
                pa.array(np.maximum(meta, 0), mask=meta < 0)
            ),
        }
        if self.payload:
            for key in PAYLOAD_COLUMNS:
                out[key] = _binary(pa, *self.blobs[key])
        return pa.table(out)


def _categories(pa: ModuleType, codes: npt.NDArray[Any], names: Sequence[str]) -> Any:
    """A dictionary column (a pandas categorical): ``names[code]`` per row."""
    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string()))


def _gather(pool: U8, starts: I64, lens: I64) -> U8:
    out = np.empty(int(lens.sum()), np.uint8)
    if out.size:
        kernels.gather_slots(pool, starts, lens, out)
    return out


def _binary(
    pa: ModuleType, datas: list[U8], lens: list[I64], valids: list[npt.NDArray[np.bool_]]
) -> Any:
    """A ``large_binary`` column (64-bit offsets: a log's payload may pass 2 GiB) of rows
    whose bytes lie back to back in ``datas``; rows not ``valid`` are null."""
    length = np.concatenate(lens).astype(np.int64) if lens else np.zeros(0, np.int64)
    valid = np.concatenate(valids) if valids else np.zeros(0, np.bool_)
    data = np.concatenate(datas) if datas else np.zeros(0, np.uint8)
    offsets = np.zeros(length.size + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    nulls = int(valid.size - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    buffers = [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.large_binary(), length.size, buffers, null_count=nulls)


def _time(pa: ModuleType, ts: I64) -> Any:
    return pa.array(ts, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))


# -- the commit table -------------------------------------------------------------------


def _commit_row(ftype: int, payload: memoryview) -> tuple[int, int, int]:
    """(deltas, distinct pages touched, delta payload bytes) of one frame."""
    rec = codec.decode(ftype, payload)
    if isinstance(rec, codec.DecodedBatch):
        b = rec.batch
        return len(b), int(np.unique(b.page_ids).size), int(b.payload.size)
    if isinstance(rec, codec.CreateRecord):
        return 0, rec.n, 0
    if isinstance(rec, codec.DeleteRecord | codec.RelayoutRecord):
        return 0, int(rec.ids.size), 0
    if isinstance(rec, codec.GraphRecord):
        return 0, int(np.unique(np.concatenate((rec.parents, rec.children))).size), 0
    return 0, 1, 0  # a metadata or name change: one page


def commit_table(pa: ModuleType, log_dir: str, index: LogIndex, rows: Sequence[int]) -> Any:
    """The commit table of the frames at index ``rows``: a row per frame."""
    found: list[tuple[int, ...]] = []
    for j, ftype, payload in read_frames(log_dir, index, rows):
        size = FRAME_HEADER_SIZE + payload.nbytes + (-payload.nbytes) % 8
        found.append((index.f_lsn[j], index.f_ts[j], _TYPE_CODE[ftype],
                      *_commit_row(ftype, payload), size))  # fmt: skip
    cols = np.array(found, np.int64).reshape(-1, len(COMMIT_COLUMNS)).T.copy()
    return pa.table({
        "lsn": pa.array(cols[0]),
        "time": _time(pa, cols[1]),
        "type": _categories(pa, cols[2].astype(np.int8), TYPE_NAMES),
        **{k: pa.array(c) for k, c in zip(COMMIT_COLUMNS[3:], cols[3:], strict=True)},
    })  # fmt: skip


# -- the entry point --------------------------------------------------------------------


def history_table(
    log_dir: str,
    index: LogIndex,
    page: int | None,
    lo: int,
    hi: int,
    *,
    level: str,
    payload: bool,
    format: str,
) -> Any:
    """The table of the frames with ``lo <= lsn <= hi`` (of ``page`` only, if given)."""
    if level not in LEVELS:
        raise InvalidArgumentError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if format not in FORMATS:
        raise InvalidArgumentError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not isinstance(payload, bool):
        raise InvalidArgumentError(f"payload must be True or False, got {payload!r}")
    if payload and level == "commit":
        raise InvalidArgumentError("payload=True applies to level='delta' only")
    pa = require("pyarrow")
    if format == "pandas":
        require("pandas")
    rows = frame_rows(index, page, lo, hi)
    if level == "commit":
        table = commit_table(pa, log_dir, index, rows)
    else:
        cols = DeltaColumns(page, payload)
        for j, ftype, body in read_frames(log_dir, index, rows):
            if ftype == BATCH:
                cols.add_batch(index.f_lsn[j], index.f_ts[j], codec.decode_batch(body))
            elif ftype == META:
                cols.add_attr(index.f_lsn[j], index.f_ts[j], codec.decode_meta(body))
            elif ftype == NAME:
                cols.add_attr(index.f_lsn[j], index.f_ts[j], codec.decode_name(body))
        table = cols.table(pa)
    return table.to_pandas() if format == "pandas" else table
