"""Reading a bus's log for display: frame summaries and per-delta rows, newest first.

Reads the segment files directly (read-only, no writer lock, so it works beside a live
writer); a torn tail is reported, not repaired.
"""

from __future__ import annotations

import json
import os
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsb.cli.output import plural
from mmsb.delta import SHAPE_NAMES
from mmsb.storage import codec, layout
from mmsb.storage.codec import BATCH, FRAME_TYPES
from mmsb.storage.log import Frame, LogReader, list_segments
from mmsb.types import DTYPE_NAMES, LOCATIONS

_ROWS = struct.Struct("<I")  # every batch payload starts with its row count (see codec)


@dataclass
class LogScan:
    """What one pass over the retained log found."""

    segments: list[tuple[int, str, int]]  # (first lsn, name, bytes)
    frames: int = 0
    deltas: int = 0
    first_lsn: int = 0
    last_lsn: int = 0
    last_timestamp: int = 0
    torn: dict[str, Any] | None = None
    newest: deque[Frame] = field(default_factory=deque)

    @property
    def log_bytes(self) -> int:
        return sum(size for _, _, size in self.segments)


def scan(path: str, keep: int = 0, *, batches_only: bool = False) -> LogScan:
    """Count frames and deltas of the retained log; keep the newest ``keep`` frames (only
    batch frames with ``batches_only``)."""
    log_dir = os.path.join(path, layout.LOG_DIR)
    segs = [(first, os.path.basename(p), os.path.getsize(p)) for first, p in list_segments(log_dir)]
    out = LogScan(segs, newest=deque(maxlen=max(keep, 0)))
    reader = LogReader(log_dir)
    for frame in reader.frames():
        out.frames += 1
        if out.first_lsn == 0:
            out.first_lsn = frame.lsn
        out.last_lsn = frame.lsn
        out.last_timestamp = frame.timestamp
        if frame.type == BATCH and frame.payload.nbytes >= _ROWS.size:
            out.deltas += _ROWS.unpack_from(frame.payload, 0)[0]
        if keep > 0 and (frame.type == BATCH or not batches_only):
            out.newest.append(frame)
    if reader.torn is not None:
        t = reader.torn
        out.torn = {"segment": t.segment, "offset": t.offset, "bytes": t.bytes, "reason": t.reason}
    return out


def frame_summary(frame: Frame) -> dict[str, Any]:
    """One frame as a JSON-able dict (batches are decoded, and so schema-checked)."""
    info: dict[str, Any] = {
        "lsn": frame.lsn,
        "timestamp": frame.timestamp,
        "type": FRAME_TYPES.get(frame.type, str(frame.type)),
        "segment": frame.segment,
        "offset": frame.offset,
        "bytes": frame.size,
    }
    rec = codec.decode(frame.type, frame.payload)
    if isinstance(rec, codec.DecodedBatch):
        dec = rec
        b = dec.batch
        kinds = np.bincount(b.kinds, minlength=len(SHAPE_NAMES))
        info.update(
            deltas=len(b),
            first_delta_id=dec.first_delta_id,
            pages=int(np.unique(b.page_ids).size),
            payload_bytes=int(b.plens.sum()),
            shapes={name: int(kinds[i]) for i, name in enumerate(SHAPE_NAMES) if kinds[i]},
            sources=sorted({b.sources[int(i)] for i in np.unique(b.source_idx)}),
        )
    elif isinstance(rec, codec.CreateRecord):
        info.update(
            deltas=0,
            created={
                "first_page": rec.first,
                "count": rec.n,
                "size": rec.size,
                "dtype": DTYPE_NAMES[rec.dtype],
                "location": LOCATIONS[rec.location],
                "metadata": None if rec.metadata is None else json.loads(rec.metadata),
                "record": None if rec.record is None else json.loads(rec.record),
                "names": None if rec.names is None else list(rec.names),
            },
        )
    elif isinstance(rec, codec.DeleteRecord):
        info.update(deltas=0, deleted=[int(p) for p in rec.ids.tolist()])
    elif isinstance(rec, codec.MetaRecord):
        meta = None if rec.metadata is None else json.loads(rec.metadata)
        info.update(deltas=0, page=rec.page, metadata=meta)
    elif isinstance(rec, codec.NameRecord):
        info.update(deltas=0, page=rec.page, name=rec.name)
    return info


def describe(summary: dict[str, Any]) -> str:
    """A short human description of a frame summary."""
    if summary["type"] == "batch":
        shapes = ", ".join(f"{n} {k}" for k, n in summary["shapes"].items())
        return (
            f"{plural(summary['deltas'], 'delta')} ({shapes}) on "
            f"{plural(summary['pages'], 'page')}, {summary['payload_bytes']:,} B payload"
        )
    if summary["type"] == "create":
        c = summary["created"]
        last = c["first_page"] + c["count"] - 1
        ids = f"page {last}" if c["count"] == 1 else f"pages {c['first_page']}-{last}"
        dtype = "record" if c.get("record") else c["dtype"]
        names = [n for n in c.get("names") or () if n is not None]
        named = f" named {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}" if names else ""
        return f"create {ids}: {c['size']:,} B {dtype} {c['location']}{named}"
    if summary["type"] == "delete":
        ids = summary["deleted"]
        shown = ", ".join(str(p) for p in ids[:8]) + (" ..." if len(ids) > 8 else "")
        return f"delete {plural(len(ids), 'page')}: {shown}"
    if summary["type"] == "metadata":
        meta = summary["metadata"]
        shown = "cleared" if meta is None else json.dumps(meta, sort_keys=True)
        return f"metadata of page {summary['page']}: {shown}"
    if summary["type"] == "name":
        name = summary["name"]
        return f"name of page {summary['page']}: {'cleared' if name is None else name}"
    return str(summary["type"])


def delta_rows(frame: Frame) -> list[dict[str, Any]]:
    """The deltas of a batch frame, newest (last row) first."""
    if frame.type != BATCH:
        return []
    dec = codec.decode_batch(frame.payload)
    b = dec.batch
    rows = []
    for i in range(len(b) - 1, -1, -1):
        mi = int(b.meta_idx[i])
        rows.append(
            {
                "delta_id": dec.first_delta_id + i,
                "lsn": frame.lsn,
                "timestamp": frame.timestamp,
                "page_id": int(b.page_ids[i]),
                "epoch": int(dec.epochs[i]),
                "shape": SHAPE_NAMES[int(b.kinds[i])],
                "offset": int(b.offsets[i]),
                "length": int(b.lengths[i]),
                "source": b.sources[int(b.source_idx[i])],
                "metadata": None if mi < 0 else json.loads(b.metas[mi]),
            }
        )
    return rows
