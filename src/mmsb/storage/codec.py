"""Every log frame type, its payload encoding and decoding, and the one dispatcher.

Frame types: ``BATCH`` (deltas), ``CREATE`` (pages), ``DELETE`` (pages), ``GRAPH`` (edge
changes), ``RELAYOUT`` (page slots moved by arena compaction), ``META`` (one page's metadata
replaced). :func:`decode` maps a frame's
type to its decoder and returns one of the record types below; every reader of the log
(recovery, replay, history, verify, invariants, the CLI) dispatches on that record, never
on the type number.

Batch payload, every piece padded to 8 bytes::

    n u32 | flags u32 | first_delta_id u64 | payload_len u64 | mask_bits u64 |
    strings_len u32 | 0 u32
    page_ids u64[n] | epochs u32[n] | offsets u32[n] | lengths u32[n]
    [HAS_MASKS]   kinds u8[n] | plens u32[n]
    [SOURCE_COL]  source_idx u16[n]
    [META_COL]    meta_idx i32[n]
    strings: JSON {"s": [sources...], "m": [metadata JSON texts...]}
    payload pool (payload_len bytes, rows in order)
    [HAS_MASKS]   mask bits of the masked rows, in row order (numpy.packbits)

Decoding treats the bytes as untrusted: every length is checked before use, and a batch
that does not add up raises :class:`CorruptLogError` (the caller adds segment/offset).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.delta import RANGE, SPARSE, row_starts
from mmsb.errors import CorruptLogError
from mmsb.types import DTYPE_NAMES, LOCATIONS

# frame types (part of the format: never renumber)
BATCH = 1
CREATE = 2
DELETE = 3
GRAPH = 4  # dependency-graph edge changes
RELAYOUT = 5  # page slots moved by arena compaction
META = 6  # one page's metadata replaced or cleared
FRAME_TYPES = {BATCH: "batch", CREATE: "create", DELETE: "delete", GRAPH: "graph",
               RELAYOUT: "relayout", META: "metadata"}  # fmt: skip

HAS_MASKS, SOURCE_COL, META_COL = 1, 2, 4
# the head of a batch payload: n, flags, first delta id, payload, mask and strings lengths
BATCH_HEAD = struct.Struct("<IIQQQII")

I64 = npt.NDArray[np.int64]


def _padded(b: Any) -> list[bytes | memoryview]:
    mv = memoryview(b).cast("B")
    pad = (-mv.nbytes) % 8
    return [mv, b"\0" * pad] if pad else [mv]


def encode_batch(batch: DeltaBatch, epochs: I64, first_delta_id: int) -> list[bytes | memoryview]:
    n = len(batch)
    flags = 0
    masked = batch.has_masks
    if masked:
        flags |= HAS_MASKS
    if len(batch.sources) > 1 and (batch.source_idx != batch.source_idx[0]).any():
        flags |= SOURCE_COL
    uniform_meta = n == 0 or bool((batch.meta_idx == batch.meta_idx[0]).all())
    if not uniform_meta:
        flags |= META_COL
    src0 = int(batch.source_idx[0]) if n else 0
    meta0 = int(batch.meta_idx[0]) if n else -1
    strings = {
        "s": list(batch.sources) if flags & SOURCE_COL else [batch.sources[src0]],
        "m": list(batch.metas) if flags & META_COL else ([] if meta0 < 0 else [batch.metas[meta0]]),
    }
    sbytes = json.dumps(strings, separators=(",", ":")).encode()
    payload = _contiguous_payload(batch)
    mask_bits = 0
    packed = b""
    if masked:
        mrows = np.nonzero(batch.kinds != RANGE)[0]
        mask = _contiguous_mask(batch, mrows)
        mask_bits = int(mask.size)
        packed = np.packbits(mask).tobytes()
    head = BATCH_HEAD.pack(n, flags, first_delta_id, payload.size, mask_bits, len(sbytes), 0)
    pieces: list[bytes | memoryview] = [head]
    pieces += _padded(np.ascontiguousarray(batch.page_ids).view("<u8"))
    pieces += _padded(epochs.astype("<u4"))
    pieces += _padded(batch.offsets.astype("<u4"))
    pieces += _padded(batch.lengths.astype("<u4"))
    if masked:
        pieces += _padded(batch.kinds)
        pieces += _padded(batch.plens.astype("<u4"))
    if flags & SOURCE_COL:
        pieces += _padded(batch.source_idx.astype("<u2", copy=False))
    if flags & META_COL:
        pieces += _padded(batch.meta_idx.astype("<i4", copy=False))
    pieces += _padded(sbytes)
    pieces += _padded(payload)
    if masked:
        pieces += _padded(packed)
    return pieces


_STRINGS_CACHE: dict[tuple[str, str | None], bytes] = {}


def encode_single_range(
    page_id: int,
    epoch: int,
    offset: int,
    payload: bytes,
    first_delta_id: int,
    source: str,
    meta: str | None,
) -> list[bytes | memoryview]:
    """The same bytes as :func:`encode_batch` for a one-row range batch, built without
    numpy (the per-call ``Bus.write`` path). Tests compare the two."""
    key = (source, meta)
    sbytes = _STRINGS_CACHE.get(key)
    if sbytes is None:
        strings = {"s": [source], "m": [] if meta is None else [meta]}
        sbytes = json.dumps(strings, separators=(",", ":")).encode()
        if len(_STRINGS_CACHE) < 256:
            _STRINGS_CACHE[key] = sbytes
    n = len(payload)
    return [
        BATCH_HEAD.pack(1, 0, first_delta_id, n, 0, len(sbytes), 0)
        + _SINGLE_COLS.pack(page_id, epoch, offset, n)
        + sbytes
        + b"\0" * ((-len(sbytes)) % 8),
        payload,
        b"\0" * ((-n) % 8),
    ]


_SINGLE_COLS = struct.Struct("<QI4xI4xI4x")


def _contiguous_payload(batch: DeltaBatch) -> npt.NDArray[np.uint8]:
    n = len(batch)
    if n == 0:
        return np.zeros(0, np.uint8)
    total = int(batch.plens.sum())
    if batch.payload.size == total and int(batch.pstarts[0]) == 0:
        starts = np.zeros(n, np.int64)
        np.cumsum(batch.plens[:-1], out=starts[1:])
        if np.array_equal(starts, batch.pstarts):
            return batch.payload
    from mmsb.engine import kernels

    out = np.empty(total, np.uint8)
    kernels.gather_slots(batch.payload, batch.pstarts, batch.plens, out)
    return out


def _contiguous_mask(batch: DeltaBatch, mrows: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
    from mmsb.engine import kernels

    lengths = batch.lengths[mrows]
    out = np.empty(int(lengths.sum()), np.uint8)
    kernels.gather_slots(batch.mask, batch.mstarts[mrows], lengths, out)
    return out


@dataclass
class DecodedBatch:
    batch: DeltaBatch
    epochs: I64
    first_delta_id: int


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, nbytes: int, what: str) -> memoryview:
        end = self.pos + nbytes
        if nbytes < 0 or end > self.buf.nbytes:
            raise CorruptLogError(f"batch frame too short for its {what}")
        out = self.buf[self.pos : end]
        self.pos = end + ((-nbytes) % 8)
        return out

    def array(self, dtype: str, n: int, what: str) -> npt.NDArray[Any]:
        dt = np.dtype(dtype)
        return np.frombuffer(self.take(n * dt.itemsize, what), dtype=dt)


def decode_batch(payload: memoryview) -> DecodedBatch:
    cur = _Cursor(payload)
    n, flags, first_did, plen, mask_bits, slen, _ = BATCH_HEAD.unpack(
        cur.take(BATCH_HEAD.size, "header")
    )
    if flags & ~(HAS_MASKS | SOURCE_COL | META_COL):
        raise CorruptLogError(f"batch frame has unknown flags {flags:#x}")
    pids = cur.array("<u8", n, "page ids").astype(np.int64)
    epochs = cur.array("<u4", n, "epochs").astype(np.int64)
    offsets = cur.array("<u4", n, "offsets").astype(np.int64)
    lengths = cur.array("<u4", n, "lengths").astype(np.int64)
    if flags & HAS_MASKS:
        kinds = cur.array("u1", n, "shapes").copy()
        plens = cur.array("<u4", n, "payload lengths").astype(np.int64)
        if n and int(kinds.max()) > SPARSE:
            raise CorruptLogError("batch frame has an unknown delta shape")
    else:
        kinds = np.zeros(n, np.uint8)
        plens = lengths
    source_idx = (
        cur.array("<u2", n, "sources").astype(np.uint16)
        if flags & SOURCE_COL
        else np.zeros(n, np.uint16)
    )
    meta_idx = cur.array("<i4", n, "metadata").astype(np.int32) if flags & META_COL else None
    try:
        strings = json.loads(bytes(cur.take(slen, "strings")))
        sources = tuple(str(s) for s in strings["s"])
        metas = tuple(str(m) for m in strings["m"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CorruptLogError(f"batch frame string table is invalid: {exc}") from None
    if meta_idx is None:
        meta_idx = np.full(n, 0 if metas else -1, np.int32)
    if not sources or (n and int(source_idx.max()) >= len(sources)):
        raise CorruptLogError("batch frame source index out of range")
    if n and (int(meta_idx.max()) >= len(metas) or int(meta_idx.min()) < -1):
        raise CorruptLogError("batch frame metadata index out of range")
    pool = np.frombuffer(cur.take(plen, "payload"), np.uint8)
    if int(plens.sum()) != plen:
        raise CorruptLogError("batch frame payload lengths do not add up")
    pstarts = row_starts(plens)
    masked = kinds != RANGE
    mlens = np.where(masked, lengths, 0)
    if int(mlens.sum()) != mask_bits:
        raise CorruptLogError("batch frame mask lengths do not add up")
    mask = np.zeros(0, np.uint8)
    if flags & HAS_MASKS:
        packed = np.frombuffer(cur.take((mask_bits + 7) // 8, "masks"), np.uint8)
        mask = np.unpackbits(packed, count=mask_bits)
    mstarts = np.where(masked, row_starts(mlens), -1)
    batch = DeltaBatch(
        pids, offsets, lengths, kinds, pstarts, plens, mstarts, pool, mask,
        source_idx, sources, meta_idx, metas,
    )  # fmt: skip
    problem = batch.structure_problem()
    if problem:
        raise CorruptLogError(f"batch frame is malformed: {problem}")
    return DecodedBatch(batch, epochs, first_did)


# -- page creation and deletion ----------------------------------------------------------


@dataclass(frozen=True)
class CreateRecord:
    first: int
    n: int
    size: int
    dtype: int
    location: int
    metadata: str | None


def encode_create(rec: CreateRecord) -> list[bytes | memoryview]:
    body = {
        "first": rec.first,
        "n": rec.n,
        "size": rec.size,
        "dtype": DTYPE_NAMES[rec.dtype],
        "location": LOCATIONS[rec.location],
        "metadata": rec.metadata,
    }
    return [json.dumps(body, separators=(",", ":")).encode()]


def decode_create(payload: memoryview) -> CreateRecord:
    try:
        body = json.loads(bytes(payload))
        rec = CreateRecord(
            int(body["first"]),
            int(body["n"]),
            int(body["size"]),
            DTYPE_NAMES.index(body["dtype"]),
            LOCATIONS.index(body["location"]),
            None if body["metadata"] is None else str(body["metadata"]),
        )
        if rec.metadata is not None:
            json.loads(rec.metadata)
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise CorruptLogError(f"create frame is invalid: {exc}") from None
    return rec


def encode_delete(ids: I64) -> list[bytes | memoryview]:
    return [struct.pack("<II", ids.size, 0), *_padded(ids.astype("<u8"))]


def decode_delete(payload: memoryview) -> I64:
    cur = _Cursor(payload)
    n, _ = struct.unpack("<II", cur.take(8, "header"))
    return cur.array("<u8", n, "page ids").astype(np.int64)


# Graph frame: one or more edge changes, applied in order.
#   n u32 | 0 u32 | op u8[n] (1 add, 0 remove) | kind u8[n] | pad | parent u64[n] | child u64[n]
EDGE_REMOVE, EDGE_ADD = 0, 1


def encode_graph(ops: npt.NDArray[np.uint8], kinds: npt.NDArray[np.uint8], parents: I64,
                 children: I64) -> list[bytes | memoryview]:  # fmt: skip
    n = ops.size
    small = np.concatenate((ops.astype(np.uint8), kinds.astype(np.uint8)))
    return [
        struct.pack("<II", n, 0),
        *_padded(small),
        *_padded(parents.astype("<u8")),
        *_padded(children.astype("<u8")),
    ]


def encode_graph_pairs(
    pairs: list[tuple[int, int]], kind: int, op: int
) -> list[bytes | memoryview]:
    """Edge changes of one kind and operation; same bytes as :func:`encode_graph`."""
    n = len(pairs)
    small = bytes([op]) * n + bytes([kind]) * n
    flat = [v for pair in pairs for v in pair]
    return [
        struct.pack("<II", n, 0),
        small + b"\0" * ((-2 * n) % 8),
        struct.pack(f"<{n}Q", *flat[0::2]),
        struct.pack(f"<{n}Q", *flat[1::2]),
    ]


def decode_graph(
    payload: memoryview,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], I64, I64]:
    cur = _Cursor(payload)
    n, reserved = struct.unpack("<II", cur.take(8, "header"))
    if reserved:
        raise CorruptLogError("graph frame reserved field is not zero")
    small = cur.array("u1", 2 * n, "ops and kinds")
    parents = cur.array("<u8", n, "parents").astype(np.int64)
    children = cur.array("<u8", n, "children").astype(np.int64)
    ops, kinds = small[:n], small[n:]
    if n and (int(ops.max()) > EDGE_ADD or int(kinds.max()) > 3):
        raise CorruptLogError("graph frame holds an unknown operation or edge kind")
    return ops, kinds, parents, children


# -- RELAYOUT ---------------------------------------------------------------------------
#
# Payload (little-endian, padded to 8): n u32 | 0 u32 | page_ids u64[n] | new_slots u64[n].
# The moves are listed in the order they happen. Each must be what the compaction rule
# (``mmsb.engine.gc_kernels.plan_moves``) does at that point, so replaying the frame (or
# reading it in another process) gives the same slots as the live bus had: the arena
# layout stays a pure function of the log.

_RELAYOUT_HEAD = struct.Struct("<II")


def encode_relayout(ids: I64, new_slots: I64) -> list[bytes | memoryview]:
    n = int(ids.size)
    body = np.empty(2 * n, "<u8")
    body[:n] = ids
    body[n:] = new_slots
    return [_RELAYOUT_HEAD.pack(n, 0), body.data.cast("B")]


def decode_relayout(payload: memoryview) -> tuple[I64, I64]:
    if payload.nbytes < _RELAYOUT_HEAD.size:
        raise CorruptLogError("relayout frame too short for its header")
    n, reserved = _RELAYOUT_HEAD.unpack(payload[: _RELAYOUT_HEAD.size])
    if reserved or payload.nbytes != _RELAYOUT_HEAD.size + 16 * n:
        raise CorruptLogError("relayout frame length does not match its move count")
    body = np.frombuffer(payload[_RELAYOUT_HEAD.size :], "<u8")
    if n and int(body.max()) >= 2**62:
        raise CorruptLogError("relayout frame has an out-of-range page id or slot")
    return body[:n].astype(np.int64), body[n:].astype(np.int64)


# -- META ---------------------------------------------------------------------------------
#
# Payload (little-endian): page_id u64 | epoch u32 | flags u32 | metadata text. With
# META_SET in flags the text is the page's new metadata, a JSON object in the canonical form
# of ``mmsb.types.encode_metadata`` (UTF-8, to the end of the payload); without it the
# metadata is cleared and the text is empty. ``epoch`` is the page's epoch when the
# metadata changed (the change leaves it as it is); replay checks it.

_META_HEAD = struct.Struct("<QII")
META_SET = 1


@dataclass(frozen=True)
class MetaRecord:
    page: int
    epoch: int
    metadata: str | None  # canonical JSON text of the new metadata; None: cleared


def encode_meta(rec: MetaRecord) -> list[bytes | memoryview]:
    text = b"" if rec.metadata is None else rec.metadata.encode()
    flags = 0 if rec.metadata is None else META_SET
    return [_META_HEAD.pack(rec.page, rec.epoch, flags) + text]


def decode_meta(payload: memoryview) -> MetaRecord:
    if payload.nbytes < _META_HEAD.size:
        raise CorruptLogError("metadata frame too short for its header")
    page, epoch, flags = _META_HEAD.unpack(payload[: _META_HEAD.size])
    if flags & ~META_SET:
        raise CorruptLogError(f"metadata frame has unknown flags {flags:#x}")
    if not 0 < page < 2**62:
        raise CorruptLogError(f"metadata frame names page id {page}")
    raw = bytes(payload[_META_HEAD.size :])
    if not flags & META_SET:
        if raw:
            raise CorruptLogError("metadata frame clears the metadata but carries text")
        return MetaRecord(page, epoch, None)
    try:
        text = raw.decode()
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptLogError(f"metadata frame text is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise CorruptLogError("metadata frame text is not a non-empty JSON object")
    return MetaRecord(page, epoch, text)


# -- the dispatcher --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeleteRecord:
    ids: I64


@dataclass(frozen=True)
class GraphRecord:
    ops: npt.NDArray[np.uint8]  # EDGE_ADD or EDGE_REMOVE per row
    kinds: npt.NDArray[np.uint8]
    parents: I64
    children: I64


@dataclass(frozen=True)
class RelayoutRecord:
    ids: I64  # pages moved, in move order
    slots: I64  # their new arena offsets


Record = DecodedBatch | CreateRecord | DeleteRecord | GraphRecord | RelayoutRecord | MetaRecord


def decode(ftype: int, payload: memoryview) -> Record:
    """The record a frame of type ``ftype`` holds; :class:`CorruptLogError` if the type is
    unknown or the payload does not decode."""
    if ftype == BATCH:
        return decode_batch(payload)
    if ftype == CREATE:
        return decode_create(payload)
    if ftype == DELETE:
        return DeleteRecord(decode_delete(payload))
    if ftype == GRAPH:
        return GraphRecord(*decode_graph(payload))
    if ftype == RELAYOUT:
        return RelayoutRecord(*decode_relayout(payload))
    if ftype == META:
        return decode_meta(payload)
    raise CorruptLogError(f"unknown frame type {ftype}")
