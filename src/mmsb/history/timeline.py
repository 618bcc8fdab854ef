"""Time travel: snapshots at past LSNs, the per-page history index, and diffs.

A snapshot is built from the newest usable checkpoint at or before the LSN plus the log
frames in between, replayed through the same code as recovery, into process memory.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from mmsb.delta import SHAPE_NAMES
from mmsb.engine.crc import crc32
from mmsb.errors import (
    CorruptLogError,
    HistoryUnavailableError,
    InvalidArgumentError,
    ReadOnlyError,
)
from mmsb.history.lineage import Lineage, base_edges
from mmsb.storage import codec, layout
from mmsb.storage.checkpoint import list_checkpoints
from mmsb.storage.codec import BATCH, DELETE, GRAPH, META, NAME
from mmsb.storage.log import FRAME_HEADER, FRAME_HEADER_SIZE, LogReader, list_segments, payload_of
from mmsb.storage.state import State
from mmsb.types import DeltaRecord, PageDiff
from mmsb.view import StateView

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mmsb.graph.dag import GraphView
    from mmsb.storage.log import Frame

I64 = npt.NDArray[np.int64]


class Snapshot(StateView):
    """A detached, read-only view of the whole state as of one commit."""

    def __init__(self, state: State, lsn: int, timestamp: int) -> None:
        self._state = state
        self._lsn = lsn
        self.timestamp = timestamp
        self._explain: Callable[..., Any] | None = None  # set by the bus that made it

    @property
    def graph(self) -> GraphView:
        """The dependency graph as of this snapshot's commit (read-only)."""
        from mmsb.graph.dag import GraphView

        return GraphView(self._live_state)

    def provenance(self, page_id: int, byte: int | None = None, depth: int = 32) -> Any:
        """Like :meth:`mmsb.Bus.provenance`, as of this snapshot's commit."""
        if self._explain is None:
            raise HistoryUnavailableError("this snapshot is not attached to a bus")
        return self._explain(self, page_id, byte, depth)

    def __repr__(self) -> str:
        return f"Snapshot(lsn={self._lsn}, pages={len(self)})"

    def write(self, *args: object, **kwargs: object) -> None:
        raise ReadOnlyError("snapshots are read-only")


class LogIndex:
    """Per-frame and per-delta index over the log, built on first use by one scan, then
    kept current by the bus on every commit.

    Frames: lsn, timestamp, type, segment, offset (all frames). Deltas: page id and delta id
    (batch frames), sorted lazily by (page, delta id) so a page's history is a binary search.
    Metadata changes (META frames): the frame rows per page, listed in the page's history.
    """

    def __init__(self) -> None:
        self.f_lsn: list[int] = []
        self.f_ts: list[int] = []
        self.f_seg: list[str] = []
        self.f_off: list[int] = []
        self.f_first_did: list[int] = []  # 0 for non-batch frames
        self._pages: list[I64] = []
        self._dids: list[I64] = []
        self._sorted: tuple[I64, I64] | None = None
        self._decoded: OrderedDict[int, codec.DecodedBatch] = OrderedDict()
        self._farrays: tuple[int, I64, I64] | None = None
        self._meta: dict[int, list[int]] = {}  # page id -> rows of its META and NAME frames
        self._name_rows: set[int] = set()  # the rows of NAME frames among them
        # rows of GRAPH and DELETE frames (True: GRAPH), replayed by the lineage
        self._graph_rows: list[tuple[int, bool]] = []
        self._lineage: Lineage | None = None
        self.next_delta_id = 1

    @classmethod
    def build(cls, log_dir: str, upto_lsn: int) -> LogIndex:
        idx = cls()
        for frame in LogReader(log_dir).frames():
            if frame.lsn > upto_lsn:
                break
            idx.add_frame(frame)
        return idx

    def add_frame(self, frame: Frame) -> None:
        pages = None
        first = 0
        meta_page = None
        if frame.type == BATCH:
            dec = codec.decode_batch(frame.payload)
            pages, first = dec.batch.page_ids, dec.first_delta_id
        elif frame.type == META:
            meta_page = codec.decode_meta(frame.payload).page
        elif frame.type == NAME:
            meta_page = codec.decode_name(frame.payload).page
        self.add(frame.lsn, frame.timestamp, frame.segment, frame.offset, first, pages,
                 meta_page, frame.type == NAME, frame.type)  # fmt: skip

    def add(
        self,
        lsn: int,
        ts: int,
        segment: str,
        offset: int,
        first_did: int,
        pages: I64 | None,
        meta_page: int | None = None,
        renamed: bool = False,
        ftype: int = 0,
    ) -> None:
        """Index one frame of type ``ftype``; ``meta_page``: the page whose metadata a META
        frame (or, with ``renamed``, whose name a NAME frame) set."""
        if ftype in (GRAPH, DELETE):
            self._graph_rows.append((len(self.f_lsn), ftype == GRAPH))
        if meta_page is not None:
            self._meta.setdefault(meta_page, []).append(len(self.f_lsn))
            if renamed:
                self._name_rows.add(len(self.f_lsn))
        self.f_lsn.append(lsn)
        self.f_ts.append(ts)
        self.f_seg.append(segment)
        self.f_off.append(offset)
        self.f_first_did.append(first_did)
        if pages is not None and pages.size:
            self.next_delta_id = first_did + pages.size
            self._pages.append(pages.copy())
            self._dids.append(np.arange(first_did, first_did + pages.size, dtype=np.int64))

    def parents_at(self, log_dir: str, child: int, lsn: int) -> tuple[int, ...] | None:
        """``child``'s data parents after commit ``lsn`` (see :mod:`mmsb.history.lineage`);
        the graph and delete frames indexed since the last call are replayed first."""
        lin = self._lineage
        if lin is None:
            first = self.f_lsn[0] if self.f_lsn else 1
            lin = self._lineage = Lineage(base_edges(os.path.dirname(log_dir), first))
        rows = self._graph_rows
        for j, graph in rows[lin.rows_done :]:
            raw = _read_frame(os.path.join(log_dir, self.f_seg[j]), self.f_off[j])
            if graph:
                lin.graph(self.f_lsn[j], *codec.decode_graph(raw))
            else:
                lin.delete(self.f_lsn[j], codec.decode_delete(raw))
        lin.rows_done = len(rows)
        return lin.at(child, lsn)

    def lsn_at_time(self, t: int) -> int:
        """The last LSN whose commit timestamp is <= ``t`` (0 if none)."""
        i = int(np.searchsorted(np.asarray(self.f_ts, np.int64), t, side="right"))
        return 0 if i == 0 else self.f_lsn[i - 1]

    def _merged(self) -> tuple[I64, I64]:
        """The sorted (page, delta id) columns; recent additions are merged in once they
        grow past an eighth of the sorted part, so a query after each commit does not
        re-sort the whole history."""
        main = self._sorted
        if main is None:
            main = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if self._pages:
            tail_n = sum(p.size for p in self._pages)
            if self._sorted is None or tail_n > max(65536, main[0].size // 8):
                pages = np.concatenate([main[0], *self._pages])
                dids = np.concatenate([main[1], *self._dids])
                order = np.lexsort((dids, pages))
                main = (pages[order], dids[order])
                self._pages, self._dids = [], []
        self._sorted = main
        return main

    def delta_ids(self, page_id: int) -> I64:
        """Delta ids that touched ``page_id``, ascending."""
        pages, dids = self._merged()
        lo = int(np.searchsorted(pages, page_id, side="left"))
        hi = int(np.searchsorted(pages, page_id, side="right"))
        out = dids[lo:hi]
        if self._pages:
            tp = np.concatenate(self._pages)
            td = np.concatenate(self._dids)
            extra = td[tp == page_id]
            if extra.size:
                out = np.concatenate((out, extra))
        return out

    def frame_arrays(self) -> tuple[I64, I64]:
        """(LSN, first delta id) of every batch frame, as arrays (cached)."""
        n = len(self.f_lsn)
        if self._farrays is None or self._farrays[0] != n:
            firsts = np.asarray(self.f_first_did, np.int64)
            rows = np.flatnonzero(firsts)
            self._farrays = (n, rows, firsts[rows])
        return self._farrays[1], self._farrays[2]

    def locate(self, did: int) -> int:
        """The frame row holding delta ``did``."""
        rows, firsts = self.frame_arrays()
        return int(rows[int(np.searchsorted(firsts, did, side="right")) - 1])

    def last_delta_at(self, lsn: int) -> int:
        """The largest delta id committed at or before ``lsn`` (0 if none)."""
        rows, firsts = self.frame_arrays()
        lsns = np.asarray(self.f_lsn, np.int64)[rows]
        i = int(np.searchsorted(lsns, lsn, side="right"))  # batch frames at or before lsn
        if i == 0:
            return 0
        return int(firsts[i]) - 1 if i < rows.size else self.next_delta_id - 1

    def record(self, log_dir: str, page_id: int, did: int) -> tuple[DeltaRecord, Any, int]:
        """The record of delta ``did`` (which touched ``page_id``), its decoded frame and
        its row in it."""
        j = self.locate(did)
        dec = self._frame(log_dir, j)
        row = did - dec.first_delta_id
        b = dec.batch
        mi = int(b.meta_idx[row])
        rec = DeltaRecord(
            delta_id=did,
            page_id=page_id,
            lsn=self.f_lsn[j],
            epoch=int(dec.epochs[row]),
            timestamp=self.f_ts[j],
            source=b.sources[int(b.source_idx[row])],
            metadata=None if mi < 0 else json.loads(b.metas[mi]),
            offset=int(b.offsets[row]),
            length=int(b.lengths[row]),
            shape=SHAPE_NAMES[int(b.kinds[row])],
        )
        return rec, dec, row

    def records(self, log_dir: str, page_id: int, limit: int | None) -> list[DeltaRecord]:
        """The page's deltas and metadata changes, newest first, at most ``limit``."""
        dids = self.delta_ids(page_id)[::-1]
        if limit is not None:
            dids = dids[:limit]
        out = [self.record(log_dir, page_id, did)[0] for did in dids.tolist()]
        rows = self._meta.get(page_id)
        if not rows:
            return out
        newest = rows[::-1] if limit is None else rows[::-1][:limit]
        out += [self.meta_record(log_dir, j) for j in newest]
        out.sort(key=lambda r: r.lsn, reverse=True)
        return out if limit is None else out[:limit]

    def meta_record(self, log_dir: str, j: int) -> DeltaRecord:
        """The metadata or name change of META or NAME frame row ``j``, as a history record:
        no delta id (0), no bytes; shape ``"metadata"`` with the page's new metadata (None:
        cleared), or shape ``"name"`` with ``{"name": new name or None}``."""
        raw = _read_frame(os.path.join(log_dir, self.f_seg[j]), self.f_off[j])
        meta: dict[str, Any] | None
        if j in self._name_rows:
            named = codec.decode_name(raw)
            page, epoch, kind, meta = named.page, named.epoch, "name", {"name": named.name}
        else:
            rec = codec.decode_meta(raw)
            page, epoch, kind = rec.page, rec.epoch, "metadata"
            meta = None if rec.metadata is None else json.loads(rec.metadata)
        return DeltaRecord(
            delta_id=0,
            page_id=page,
            lsn=self.f_lsn[j],
            epoch=epoch,
            timestamp=self.f_ts[j],
            source=kind,
            metadata=meta,
            offset=0,
            length=0,
            shape=kind,
        )

    def _frame(self, log_dir: str, j: int) -> codec.DecodedBatch:
        dec = self._decoded.get(j)
        if dec is not None:
            self._decoded.move_to_end(j)
            return dec
        seg = os.path.join(log_dir, self.f_seg[j])
        frame = _read_frame(seg, self.f_off[j])
        dec = codec.decode_batch(frame)
        self._decoded[j] = dec
        if len(self._decoded) > 64:
            self._decoded.popitem(last=False)
        return dec


def _read_frame(path: str, offset: int) -> memoryview:
    with open(path, "rb") as f:
        f.seek(offset)
        head = f.read(FRAME_HEADER_SIZE)
        fields = FRAME_HEADER.unpack(head)
        length, pcrc = fields[5], fields[6]
        body = f.read(length + (-length) % 8)
    if len(body) < length or crc32(body) != pcrc:
        raise CorruptLogError(
            f"log frame in {os.path.basename(path)} at offset {offset} fails its checksum",
            os.path.basename(path),
            offset,
        )
    where = f"{os.path.basename(path)} offset {offset}"
    return payload_of(fields[2], memoryview(body)[:length], where)


def touched_pages(directory: str, lo: int, hi: int) -> I64:
    """Ids of pages created, deleted or written by frames with lo < lsn <= hi."""
    found: list[I64] = []
    for frame in _frames_between(os.path.join(directory, layout.LOG_DIR), lo, hi):
        rec = codec.decode(frame.type, frame.payload)
        if isinstance(rec, codec.DecodedBatch):
            found.append(rec.batch.page_ids)
        elif isinstance(rec, codec.CreateRecord):
            found.append(np.arange(rec.first, rec.first + rec.n, dtype=np.int64))
        elif isinstance(rec, codec.DeleteRecord):
            found.append(rec.ids)
        elif isinstance(rec, (codec.MetaRecord, codec.NameRecord)):
            found.append(np.array([rec.page], np.int64))
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def _frames_between(log_dir: str, lo: int, hi: int) -> Iterator[Frame]:
    for frame in LogReader(log_dir).frames(after_lsn=lo):
        if frame.lsn > hi:
            return
        yield frame


def diff_states(a: State, b: State, candidates: I64) -> list[PageDiff]:
    """How the pages in ``candidates`` differ from ``a`` to ``b``."""
    out: list[PageDiff] = []
    for pid in candidates.tolist():
        in_a, in_b = a.is_live(pid), b.is_live(pid)
        if in_a and not in_b:
            out.append(PageDiff(pid, "removed", ((0, int(a.size[pid])),)))
        elif in_b and not in_a:
            out.append(PageDiff(pid, "added", ((0, int(b.size[pid])),)))
        elif in_a and in_b:
            ranges = byte_ranges(a.raw(pid) != b.raw(pid))
            if ranges:
                out.append(PageDiff(pid, "changed", ranges))
    return out


def byte_ranges(differs: npt.NDArray[np.bool_]) -> tuple[tuple[int, int], ...]:
    """Half-open runs of True in a boolean vector."""
    idx = np.nonzero(differs)[0]
    if idx.size == 0:
        return ()
    breaks = np.nonzero(np.diff(idx) > 1)[0]
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]])) + 1
    return tuple(zip(starts.tolist(), ends.tolist(), strict=True))


def _copy_private(src: str, dst: str) -> None:
    """Copy ``src`` to a new file ``dst`` created with mode 0600 (never readable by others,
    not even between the copy and a chmod)."""
    import shutil

    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, layout.FILE_MODE)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def export_prefix(src: str, out: str, lsn: int) -> None:
    """Write a standalone bus at ``out`` holding the history of ``src`` up to ``lsn``.

    Log frames are copied byte for byte (ids, epochs and timestamps unchanged), together
    with the checkpoints at or before ``lsn``; opening the result replays them.
    """
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise InvalidArgumentError(f"output {out} already exists and is not empty")
    log_src = os.path.join(src, layout.LOG_DIR)
    cut: tuple[str, int] | None = None
    segments = list_segments(log_src)
    first = segments[0][0] if segments else 1
    if lsn < first - 1:
        raise HistoryUnavailableError(
            f"LSN {lsn} is older than the retained history (the log starts at LSN {first})"
        )
    end = first - 1  # after compaction, the checkpoint at first - 1 holds that state
    for frame in LogReader(log_src).frames(headers_only=True):
        if frame.lsn > lsn:
            cut = (frame.segment, frame.offset)
            break
        end = frame.lsn
    if end < lsn:
        raise HistoryUnavailableError(f"LSN {lsn} is beyond the end of the log ({end})")
    os.makedirs(out, mode=layout.DIR_MODE, exist_ok=True)
    os.makedirs(os.path.join(out, layout.LOG_DIR), mode=layout.DIR_MODE)
    os.makedirs(os.path.join(out, layout.CKPT_DIR), mode=layout.DIR_MODE)
    _copy_private(os.path.join(src, layout.MANIFEST_FILE), os.path.join(out, layout.MANIFEST_FILE))
    for first, path in list_segments(log_src):
        if first > lsn:
            continue  # holds only later frames
        dst = os.path.join(out, "log", os.path.basename(path))
        _copy_private(path, dst)
        if cut is not None and os.path.basename(path) == cut[0]:
            os.truncate(dst, cut[1])
    for ck_lsn, path in list_checkpoints(os.path.join(src, layout.CKPT_DIR)):
        if ck_lsn <= lsn:
            dst = os.path.join(out, layout.CKPT_DIR, os.path.basename(path))
            _copy_private(path, dst)
