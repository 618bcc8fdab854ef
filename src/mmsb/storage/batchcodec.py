"""The ``BATCH`` frame: a delta batch's log payload, its encoder and its decoder.

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
:mod:`mmsb.storage.codec` holds the other frame types and the dispatcher every reader uses.
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

HAS_MASKS, SOURCE_COL, META_COL = 1, 2, 4
# the head of a batch payload: n, flags, first delta id, payload, mask and strings lengths
BATCH_HEAD = struct.Struct("<IIQQQII")

I64 = npt.NDArray[np.int64]


def padded(b: Any) -> list[bytes | memoryview]:
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
    pieces += padded(np.ascontiguousarray(batch.page_ids).view("<u8"))
    pieces += padded(epochs.astype("<u4"))
    pieces += padded(batch.offsets.astype("<u4"))
    pieces += padded(batch.lengths.astype("<u4"))
    if masked:
        pieces += padded(batch.kinds)
        pieces += padded(batch.plens.astype("<u4"))
    if flags & SOURCE_COL:
        pieces += padded(batch.source_idx.astype("<u2", copy=False))
    if flags & META_COL:
        pieces += padded(batch.meta_idx.astype("<i4", copy=False))
    pieces += padded(sbytes)
    pieces += padded(payload)
    if masked:
        pieces += padded(packed)
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


class Cursor:
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
    cur = Cursor(payload)
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
