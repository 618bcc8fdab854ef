"""RELAYOUT log frames: page slots moved by arena compaction.

Payload (little-endian, padded to 8)::

    n u32 | 0 u32 | page_ids u64[n] | new_slots u64[n]

The moves are listed in the order they happen. Each must be what the compaction rule
(``mmsb.engine.gc_kernels.plan_moves``) does at that point, so replaying the frame (or
reading it in another process) gives the same slots as the live bus had: the arena layout
stays a pure function of the log.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptLogError

I64 = npt.NDArray[np.int64]
_HEAD = struct.Struct("<II")


def encode_relayout(ids: I64, new_slots: I64) -> list[bytes | memoryview]:
    n = int(ids.size)
    body = np.empty(2 * n, "<u8")
    body[:n] = ids
    body[n:] = new_slots
    return [_HEAD.pack(n, 0), body.data.cast("B")]


def decode_relayout(payload: memoryview) -> tuple[I64, I64]:
    if payload.nbytes < _HEAD.size:
        raise CorruptLogError("relayout frame too short for its header")
    n, reserved = _HEAD.unpack(payload[: _HEAD.size])
    if reserved or payload.nbytes != _HEAD.size + 16 * n:
        raise CorruptLogError("relayout frame length does not match its move count")
    body = np.frombuffer(payload[_HEAD.size :], "<u8")
    if n and int(body.max()) >= 2**62:
        raise CorruptLogError("relayout frame has an out-of-range page id or slot")
    return body[:n].astype(np.int64), body[n:].astype(np.int64)
