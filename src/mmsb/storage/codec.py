"""Every log frame type, its payload encoding and decoding, and the one dispatcher.

Frame types: ``BATCH`` (deltas), ``CREATE`` (pages), ``DELETE`` (pages), ``GRAPH`` (edge
changes), ``RELAYOUT`` (page slots moved by arena compaction), ``META`` (one page's metadata
replaced), ``NAME`` (one page renamed). :func:`decode` maps a frame's type to its decoder
and returns one of the record types below; every reader of the log (recovery, replay,
history, verify, invariants, the CLI) dispatches on that record, never on the type number.
The ``BATCH`` payload has its own module, :mod:`mmsb.storage.batchcodec`.

"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptLogError, InvalidArgumentError

# the BATCH frame lives in batchcodec; its names are re-exported here, so that every reader
# and writer of frames imports one module
from mmsb.storage.batchcodec import BATCH_HEAD as BATCH_HEAD
from mmsb.storage.batchcodec import HAS_MASKS as HAS_MASKS
from mmsb.storage.batchcodec import META_COL as META_COL
from mmsb.storage.batchcodec import SOURCE_COL as SOURCE_COL
from mmsb.storage.batchcodec import Cursor, padded
from mmsb.storage.batchcodec import DecodedBatch as DecodedBatch
from mmsb.storage.batchcodec import decode_batch as decode_batch
from mmsb.storage.batchcodec import encode_batch as encode_batch
from mmsb.storage.batchcodec import encode_single_range as encode_single_range
from mmsb.types import DTYPE_NAMES, LOCATIONS, check_name, record_dtype

# frame types (part of the format: never renumber)
BATCH = 1
CREATE = 2
DELETE = 3
GRAPH = 4  # dependency-graph edge changes
RELAYOUT = 5  # page slots moved by arena compaction
META = 6  # one page's metadata replaced or cleared
NAME = 7  # one page's name set or cleared
FRAME_TYPES = {BATCH: "batch", CREATE: "create", DELETE: "delete", GRAPH: "graph",
               RELAYOUT: "relayout", META: "metadata", NAME: "name"}  # fmt: skip

I64 = npt.NDArray[np.int64]


# -- page creation and deletion ----------------------------------------------------------


# The payload is one JSON object: first, n, size, dtype (a DTYPE_NAMES name), location,
# metadata (canonical JSON text or null), and only where used: "record" (the record spec of
# a record page, ``mmsb.types.record_spec``; dtype is then "uint8") and "names" (one name
# or null per page created).


@dataclass(frozen=True)
class CreateRecord:
    first: int
    n: int
    size: int
    dtype: int
    location: int
    metadata: str | None
    record: str | None = None  # the record spec of record pages
    names: tuple[str | None, ...] | None = None  # a name or None per page


def encode_create(rec: CreateRecord) -> list[bytes | memoryview]:
    body: dict[str, Any] = {
        "first": rec.first,
        "n": rec.n,
        "size": rec.size,
        "dtype": DTYPE_NAMES[rec.dtype],
        "location": LOCATIONS[rec.location],
        "metadata": rec.metadata,
    }
    if rec.record is not None:
        body["record"] = rec.record
    if rec.names is not None:
        body["names"] = list(rec.names)
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
            None if body.get("record") is None else str(body["record"]),
            None if body.get("names") is None else tuple(body["names"]),
        )
        if rec.metadata is not None:
            json.loads(rec.metadata)
        if rec.record is not None:
            record_dtype(rec.record)
        if rec.names is not None:
            if len(rec.names) != rec.n:
                raise ValueError(f"{len(rec.names)} names for {rec.n} pages")
            given = [check_name(x) for x in rec.names if x is not None]
            if len(set(given)) != len(given):
                raise ValueError("the same name twice")
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError,
            InvalidArgumentError) as exc:  # fmt: skip
        raise CorruptLogError(f"create frame is invalid: {exc}") from None
    return rec


def encode_delete(ids: I64) -> list[bytes | memoryview]:
    return [struct.pack("<II", ids.size, 0), *padded(ids.astype("<u8"))]


def decode_delete(payload: memoryview) -> I64:
    cur = Cursor(payload)
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
        *padded(small),
        *padded(parents.astype("<u8")),
        *padded(children.astype("<u8")),
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
    cur = Cursor(payload)
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


# -- META and NAME -------------------------------------------------------------------------
#
# Payload (little-endian): page_id u64 | epoch u32 | flags u32 | text (UTF-8, to the end of
# the payload). With SET in flags the text is the page's new value: for META its metadata, a
# JSON object in the canonical form of ``mmsb.types.encode_metadata``; for NAME its name
# (``mmsb.types.check_name``). Without it the value is cleared and the text is empty.
# ``epoch`` is the page's epoch when the value changed (the change leaves it as it is);
# replay checks it.

_ATTR_HEAD = struct.Struct("<QII")
META_SET = NAME_SET = 1


@dataclass(frozen=True)
class MetaRecord:
    page: int
    epoch: int
    metadata: str | None  # canonical JSON text of the new metadata; None: cleared


@dataclass(frozen=True)
class NameRecord:
    page: int
    epoch: int
    name: str | None  # the page's new name; None: cleared


def _encode_attr(page: int, epoch: int, text: str | None) -> list[bytes | memoryview]:
    raw = b"" if text is None else text.encode()
    return [_ATTR_HEAD.pack(page, epoch, 0 if text is None else META_SET) + raw]


def _decode_attr(payload: memoryview, what: str) -> tuple[int, int, str | None]:
    if payload.nbytes < _ATTR_HEAD.size:
        raise CorruptLogError(f"{what} frame too short for its header")
    page, epoch, flags = _ATTR_HEAD.unpack(payload[: _ATTR_HEAD.size])
    if flags & ~META_SET:
        raise CorruptLogError(f"{what} frame has unknown flags {flags:#x}")
    if not 0 < page < 2**62:
        raise CorruptLogError(f"{what} frame names page id {page}")
    raw = bytes(payload[_ATTR_HEAD.size :])
    if not flags & META_SET:
        if raw:
            raise CorruptLogError(f"{what} frame clears the {what} but carries text")
        return page, epoch, None
    try:
        return page, epoch, raw.decode()
    except ValueError as exc:
        raise CorruptLogError(f"{what} frame text is not UTF-8: {exc}") from None


def encode_meta(rec: MetaRecord) -> list[bytes | memoryview]:
    return _encode_attr(rec.page, rec.epoch, rec.metadata)


def decode_meta(payload: memoryview) -> MetaRecord:
    page, epoch, text = _decode_attr(payload, "metadata")
    if text is None:
        return MetaRecord(page, epoch, None)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptLogError(f"metadata frame text is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise CorruptLogError("metadata frame text is not a non-empty JSON object")
    return MetaRecord(page, epoch, text)


def encode_name(rec: NameRecord) -> list[bytes | memoryview]:
    return _encode_attr(rec.page, rec.epoch, rec.name)


def decode_name(payload: memoryview) -> NameRecord:
    page, epoch, text = _decode_attr(payload, "name")
    if text is not None:
        try:
            check_name(text)
        except InvalidArgumentError as exc:
            raise CorruptLogError(f"name frame holds an {exc}") from None
    return NameRecord(page, epoch, text)


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


Record = (
    DecodedBatch
    | CreateRecord
    | DeleteRecord
    | GraphRecord
    | RelayoutRecord
    | MetaRecord
    | NameRecord
)


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
    if ftype == NAME:
        return decode_name(payload)
    raise CorruptLogError(f"unknown frame type {ftype}")
