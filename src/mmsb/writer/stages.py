"""The throughput engine's commit stages, split across workers.

:func:`prepare` checks a batch, assigns its epochs and builds its log frame payload;
:func:`apply` writes it into the arena. Between the two the bus appends the frame, so the
write path keeps its order (validate -> log -> apply -> publish). Work is cut into shares:

* rows ``[lo, hi)`` for checking and encoding (read-only on shared state); the first
  share also gives every row its epoch (one thread writes the epoch column);
* page-id ranges for arena bytes, so no two workers write the same page and each page sees
  its rows in row order.

Whatever the worker count, the bytes, epochs and frame payload are the same: each row's
epoch depends only on earlier rows of its own page, and every column is a function of its
row. The frame payload is byte-for-byte what :func:`mmsb.storage.codec.encode_batch`
produces (tests compare the two).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.delta import row_starts
from mmsb.engine import commit_kernels as ck
from mmsb.engine import kernels
from mmsb.engine.driver import effective_workers, row_splits, run_shares
from mmsb.errors import InvalidDeltaError
from mmsb.storage import codec
from mmsb.storage.state import State
from mmsb.types import DTYPE_ITEMSIZE, MAX_PAGE_SIZE

LITTLE = sys.byteorder == "little"
_NO_ORDER = np.zeros(0, np.int64)  # one share: rows in row order


@dataclass
class Prepared:
    """A checked batch with its epochs assigned (in the page table) and its frame built."""

    pieces: list[bytes | memoryview]
    epoch_col: npt.NDArray[np.uint32]  # view of the frame's epoch column
    shares: int  # how many threads apply it (each a range of page ids)


def _pad8(n: int) -> int:
    return n + (-n) % 8


def _fail(state: State, parts: Sequence[DeltaBatch]) -> None:
    """Raise the single-thread path's error for the first of ``parts`` holding a row a
    kernel rejected (its row numbers count within that batch)."""
    for batch in parts:
        batch._check_structure()
        state.validate(batch)
    raise InvalidDeltaError("batch failed validation")  # the kernels and the checks disagree


def _check_columns(state: State, batch: DeltaBatch) -> None:
    """Every row column as long as the batch (the kernels trust it), on a little-endian
    machine (the frame's byte order)."""
    b = batch
    if not (LITTLE and b.page_ids.size == b.offsets.size == b.lengths.size == b.kinds.size
            == b.pstarts.size == b.plens.size == b.mstarts.size == b.source_idx.size
            == b.meta_idx.size == b.dtypes.size):  # fmt: skip
        _fail(state, [batch])


def _typed(state: State, b: DeltaBatch) -> tuple[Any, Any, Any]:
    """The type-check arguments of the check kernels: None for a batch of raw bytes only
    (the usual case), for which the type checks are compiled out."""
    typed = np.count_nonzero(b.dtypes)  # (cheaper than .any() on a small column)
    return (b.dtypes, state.dtype, DTYPE_ITEMSIZE) if typed else (None,) * 3


def _check_rows(state: State, b: DeltaBatch, lo: int, hi: int) -> int:
    """The check kernel over rows ``[lo, hi)`` of ``b``: ``ck.OK`` or the first problem."""
    return int(ck.check_rows(
        lo, hi, b.page_ids, b.offsets, b.lengths, b.kinds, b.pstarts, b.plens, b.mstarts,
        b.source_idx, b.meta_idx, b.payload.size, b.mask, len(b.sources), len(b.metas),
        MAX_PAGE_SIZE, state.next_page_id, state.live, state.size, *_typed(state, b),
    ))  # fmt: skip


def _prepare_rows(
    state: State, b: DeltaBatch, lo: int, hi: int, chk: int, epochs: bool, col_ep: Any,
    col_pid: Any, col_off: Any, col_len: Any, col_kind: Any, col_plen: Any, masked: bool,
) -> tuple[int, bool]:  # fmt: skip
    """:func:`~mmsb.engine.commit_kernels.prepare_rows` over rows ``[lo, hi)`` of ``b``
    (checked from ``chk``; with their epochs when ``epochs``): (status, contiguous)."""
    status, contiguous = ck.prepare_rows(
        lo, hi, chk, b.page_ids, b.offsets, b.lengths, b.kinds, b.pstarts, b.plens,
        b.mstarts, b.source_idx, b.meta_idx, b.payload.size, b.mask, len(b.sources),
        len(b.metas), MAX_PAGE_SIZE, state.next_page_id, state.live, state.size, masked,
        col_pid, col_off, col_len, col_kind, col_plen, state.epoch if epochs else None, col_ep,
        *_typed(state, b),
    )  # fmt: skip
    return int(status), bool(contiguous)


def check(state: State, batch: DeltaBatch) -> None:
    """Check ``batch`` against ``state`` as :func:`prepare` does, changing nothing: a
    tick's input rows, applied to the arena before the frame that holds them and the rows
    their derivations compute is prepared (with ``checked=len(batch)``)."""
    _check_columns(state, batch)
    if _check_rows(state, batch, 0, len(batch)) != ck.OK:
        _fail(state, [batch])


def prepare(
    state: State,
    batch: DeltaBatch | Sequence[DeltaBatch],
    workers: int,
    first_delta_id: int,
    checked: int = 0,
) -> Prepared:
    """Check ``batch`` against ``state``, assign epochs, encode the frame payload.

    The checks: the structure, live pages, rows inside their pages, and for typed rows
    (``batch.dtypes``) the page's dtype at whole items. On any error nothing is changed
    (epochs assigned by a share are taken back) and :func:`_fail` raises the error
    :meth:`State.validate` words. The first ``checked`` rows are taken as checked already
    (a tick's input rows, checked by :func:`check` before its derivations ran).

    ``batch`` may be a sequence of batches: the frame is then that of their
    :meth:`~mmsb.batch.DeltaBatch.concat`, built without joining them (their payloads go
    to the log as they are, one after the other). Batches with masks, or several workers,
    join them first.
    """
    parts = [batch] if isinstance(batch, DeltaBatch) else list(batch)
    if len(parts) > 1 and (workers > 1 or any(np.count_nonzero(b.kinds) for b in parts)):
        parts = [DeltaBatch.concat(parts)]
    bases = [0, *itertools.accumulate(len(b) for b in parts)]
    n = bases[-1]
    for b in parts:
        _check_columns(state, b)
    strings = _Strings(parts)
    masked = bool(np.count_nonzero(parts[0].kinds))  # (several batches: none has masks)
    flags = codec.HAS_MASKS if masked else 0
    if strings.source_col:
        flags |= codec.SOURCE_COL
    if strings.meta_col:
        flags |= codec.META_COL
    # frame payload layout, every section padded to 8 bytes
    o_pid = codec.BATCH_HEAD.size
    o_ep = o_pid + 8 * n
    o_off = o_ep + _pad8(4 * n)
    o_len = o_off + _pad8(4 * n)
    o_kind = o_len + _pad8(4 * n)
    o_plen = o_kind + (_pad8(n) if masked else 0)
    o_src = o_plen + (_pad8(4 * n) if masked else 0)
    o_meta = o_src + (_pad8(2 * n) if flags & codec.SOURCE_COL else 0)
    end = o_meta + (_pad8(4 * n) if flags & codec.META_COL else 0)
    buf = np.empty(end, np.uint8)
    for o, width in ((o_ep, 4 * n), (o_off, 4 * n), (o_len, 4 * n)):
        buf[o + width : _pad8(o + width)] = 0
    col_pid = buf[o_pid:o_ep].view(np.uint64)
    col_ep = buf[o_ep : o_ep + 4 * n].view(np.uint32)
    col_off = buf[o_off : o_off + 4 * n].view(np.uint32)
    col_len = buf[o_len : o_len + 4 * n].view(np.uint32)
    if masked:
        buf[o_kind + n : o_plen] = 0
        buf[o_plen + 4 * n : o_src] = 0
        col_kind = buf[o_kind : o_kind + n]
        col_plen = buf[o_plen : o_plen + 4 * n].view(np.uint32)
    else:
        col_kind = buf[:0]
        col_plen = buf[:0].view(np.uint32)

    shares = effective_workers(workers, n) if len(parts) == 1 else 1
    rows = _weighted_rows(n, shares)

    def share(w: int) -> tuple[int, bool]:
        lo, hi = rows[w]
        status, contiguous = int(ck.OK), True
        for j, (b, r0) in enumerate(zip(parts, bases, strict=False)):  # in row order
            a, z = max(lo, r0) - r0, min(hi, r0 + len(b)) - r0
            if a >= z:
                continue
            st, c = _prepare_rows(state, b, a, z, max(a, checked - r0), w == 0, col_ep[r0:],
                                  col_pid[r0:], col_off[r0:], col_len[r0:],
                                  col_kind[r0:] if masked else col_kind,
                                  col_plen[r0:] if masked else col_plen, masked)  # fmt: skip
            if w == 0:  # that call gave the batch's rows their epochs (a rejected batch
                assigned[0] = j + 1  # has them taken back below)
            if status == ck.OK:
                status = st
            contiguous = c and contiguous
        if w == 0 and shares > 1:
            # (one batch) the epochs of the other shares' rows, after this share's own, so
            # in row order; the same arrays as the call above, so it cannot refuse them
            ck.epochs_rows(hi, n, state.next_page_id, state.epoch, parts[0].page_ids,
                           col_ep)  # fmt: skip
            assigned[0] = 1  # (also when this share had no rows of its own)
        return status, contiguous

    assigned = [0]  # how many of parts may have epochs assigned
    try:
        results = run_shares(share, [(w,) for w in range(shares)])
    except BaseException:
        # a share that raised (say, columns of a type the kernels cannot take) after the
        # epochs were assigned: take them back
        _undo_parts(state, parts[: assigned[0]])
        raise
    if any(s != ck.OK for s, _ in results):
        _undo_parts(state, parts)
        _fail(state, parts)
    try:
        pieces = _finish(parts, strings, buf, flags, masked, n, first_delta_id, rows,
                         all(c for _, c in results), o_src, o_meta)  # fmt: skip
    except BaseException:
        _undo_parts(state, parts)
        raise
    return Prepared(pieces, col_ep, shares)


# the epoch pass over a row (run by the first share for the other shares' rows) costs about
# this fraction of checking and encoding it (0.08 against 0.71 ms per 100,000 rows of 16 B)
_EPOCH_COST = 0.12


def _weighted_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """Row ranges for ``parts`` shares, the first one shorter by the epoch pass it also runs
    over the others' rows: with ``f0 + e (1 - f0)`` for the first and ``(1 - f0) / (p - 1)``
    for each other equal, ``f0 = (1 - (p - 1) e) / ((p - 1)(1 - e) + 1)``."""
    if parts == 1:
        return [(0, n)]
    e = _EPOCH_COST
    f0 = max(0.0, (1.0 - (parts - 1) * e) / ((parts - 1) * (1.0 - e) + 1.0))
    first = int(n * f0)
    rest = row_splits(n - first, parts - 1)
    return [(0, first)] + [(first + lo, first + hi) for lo, hi in rest]


class _Strings:
    """The frame's source and metadata tables for ``parts`` (joined as
    :meth:`~mmsb.batch.DeltaBatch.concat` joins them), whether either needs a column (rows
    that do not all share one entry), and the columns themselves, written by :meth:`fill`
    straight into the frame, part by part (no joined copy of the index columns)."""

    def __init__(self, parts: Sequence[DeltaBatch]) -> None:
        src: dict[str, int] = {}
        meta: dict[str, int] = {}
        # per part: its rows' range, its index column, the map from its own table to the
        # joined one (None: the same), and the one joined index all its rows have (None:
        # they differ); a one-entry table (or none) leaves one valid index, the check kernel
        # refuses any other before the frame is used
        self._src: list[tuple[int, int, Any, Any, int | None]] = []
        self._meta: list[tuple[int, int, Any, Any, int | None]] = []
        r0 = 0
        for b in parts:
            m = len(b)
            smap = [src.setdefault(x, len(src)) for x in b.sources]
            mmap = [meta.setdefault(x, len(meta)) for x in b.metas]
            if m:
                si, mi = b.source_idx, b.meta_idx
                one = smap[0] if len(smap) == 1 else _uniform(si, smap, 0)
                self._src.append((r0, r0 + m, si, _map(smap, np.uint16), one))
                one = -1 if not mmap else _uniform(mi, mmap, -1)
                self._meta.append((r0, r0 + m, mi, _map(mmap, np.int32, -1), one))
            r0 += m
        self.sources, self.metas = tuple(src) or ("api",), tuple(meta)
        self.source_col = len(self.sources) > 1 and _needs_column(self._src)
        self.meta_col = _needs_column(self._meta)
        self.source0 = _first(self._src, 0)
        self.meta0 = _first(self._meta, -1)

    def fill(self, out: npt.NDArray[Any], metas: bool) -> None:
        """Write the source (``metas`` False; ``out`` uint16) or metadata (int32) index
        column of every row into ``out``."""
        for r0, r1, idx, table, one in self._meta if metas else self._src:
            if one is not None:
                out[r0:r1] = one
            elif table is None:
                out[r0:r1] = idx
            else:
                np.take(table, idx, out=out[r0:r1])


def _uniform(idx: npt.NDArray[Any], table: list[int], lowest: int) -> int | None:
    """The joined index of every row of ``idx`` (indices into ``table``; -1, where
    ``lowest`` allows it, stays -1) if they are all one, else None (the map is one-to-one:
    equal before, equal after). None too for an index out of range: the check kernel
    refuses the batch before its frame is used."""
    first = int(idx[0])
    if not lowest <= first < len(table) or bool((idx != first).any()):
        return None
    return table[first] if first >= 0 else -1


def _map(table: list[int], dtype: Any, tail: int | None = None) -> Any:
    """``table`` as an array (with ``tail`` appended: where index -1 lands), or None when it
    maps every index to itself."""
    if table == list(range(len(table))):
        return None
    return np.array(table if tail is None else [*table, tail], dtype)


def _needs_column(cols: list[tuple[int, int, Any, Any, int | None]]) -> bool:
    ones = {one for *_, one in cols}
    return None in ones or len(ones) > 1


def _first(cols: list[tuple[int, int, Any, Any, int | None]], empty: int) -> int:
    """The joined index of the first row (``empty`` when there is none)."""
    if not cols:
        return empty
    _, _, idx, table, one = cols[0]
    if one is not None:
        return one
    first = int(idx[0])
    if table is None or not 0 <= first < table.size:  # (out of range: refused later)
        return first
    return int(table[first])


def _undo_parts(state: State, parts: Sequence[DeltaBatch]) -> None:
    for b in parts:
        ck.undo_epochs_rows(state.next_page_id, state.epoch, b.page_ids)


def _payload(b: DeltaBatch, contiguous: bool) -> npt.NDArray[np.uint8]:
    """The payload of ``b``'s rows in row order: its pool as it is when the rows lie in it
    back to back from its start (``contiguous``: the encode kernel saw them so)."""
    if len(b) == 0:
        return b.payload[:0]
    if contiguous and int(b.pstarts[0]) == 0 and b.payload.size == int(b.pstarts[-1] + b.plens[-1]):
        return b.payload
    out = np.empty(int(b.plens.sum()), np.uint8)
    kernels.gather_slots(b.payload, b.pstarts, b.plens, out)
    return out


def _finish(
    parts: Sequence[DeltaBatch],
    strings: _Strings,
    buf: npt.NDArray[np.uint8],
    flags: int,
    masked: bool,
    n: int,
    first_delta_id: int,
    rows: list[tuple[int, int]],
    contiguous: bool,
    o_src: int,
    o_meta: int,
) -> list[bytes | memoryview]:
    if flags & codec.SOURCE_COL:
        strings.fill(buf[o_src : o_src + 2 * n].view(np.uint16), metas=False)
        buf[o_src + 2 * n : _pad8(o_src + 2 * n)] = 0
    if flags & codec.META_COL:
        strings.fill(buf[o_meta : o_meta + 4 * n].view(np.int32), metas=True)
        buf[o_meta + 4 * n : _pad8(o_meta + 4 * n)] = 0
    src0, meta0 = strings.source0, strings.meta0
    sources = strings.sources if flags & codec.SOURCE_COL else (strings.sources[src0],)
    if flags & codec.META_COL:
        metas = strings.metas
    else:
        metas = (strings.metas[meta0],) if meta0 >= 0 else ()
    sbytes = _table(sources, metas)
    payloads = [p for p in (_payload(b, contiguous) for b in parts) if p.size]
    size = sum(p.size for p in payloads)
    mask_bits = 0
    packed = np.zeros(0, np.uint8)
    if masked:  # one batch (several with masks were joined first)
        batch = parts[0]
        mlens = np.where(batch.kinds != 0, batch.lengths, 0)
        bit_starts = row_starts(mlens)
        mask_bits = int(mlens.sum())
        mrows = np.flatnonzero(batch.kinds)
        ms, ml = batch.mstarts[mrows], batch.lengths[mrows]
        if (
            int(ms[0]) == 0
            and mask_bits == batch.mask.size
            and np.array_equal(ms[1:], ms[:-1] + ml[:-1])
        ):
            # the pool is the masks of the masked rows back to back: pack it as it is
            packed = np.packbits(batch.mask)
        else:
            packed = _pack_rows(batch, rows, bit_starts, mask_bits)
    buf[: codec.BATCH_HEAD.size] = np.frombuffer(
        codec.BATCH_HEAD.pack(n, flags, first_delta_id, size, mask_bits, len(sbytes), 0),
        np.uint8,
    )
    pieces: list[bytes | memoryview] = [buf.data, memoryview(sbytes)]
    if len(sbytes) % 8:
        pieces.append(bytes((-len(sbytes)) % 8))
    pieces += [p.data for p in payloads]  # back to back: one section
    if size % 8:
        pieces.append(bytes((-size) % 8))
    if masked:
        pieces.append(packed.data)
        if packed.nbytes % 8:
            pieces.append(bytes((-packed.nbytes) % 8))
    return pieces


def _table(sources: Sequence[str], metas: Sequence[str]) -> bytes:
    """The frame's string table: the bytes of ``json.dumps({"s": sources, "m": metas},
    separators=(",", ":"))`` (what :func:`mmsb.storage.codec.encode_batch` writes), joined
    from each string's JSON form without the encoder's general machinery."""
    s = ",".join(map(encode_basestring_ascii, sources))
    m = ",".join(map(encode_basestring_ascii, metas))
    return f'{{"s":[{s}],"m":[{m}]}}'.encode()


def _pack_rows(
    batch: DeltaBatch, rows: list[tuple[int, int]], bit_starts: npt.NDArray[np.int64], bits: int
) -> npt.NDArray[np.uint8]:
    """The masked rows' mask bits packed (MSB first), one row range per worker; shares are
    cut only where a row starts on a byte boundary, so no two write the same byte."""
    packed = np.zeros((bits + 7) // 8, np.uint8)
    cuts = [lo for lo, _ in rows[1:] if int(bit_starts[lo]) % 8 == 0]
    edges = [0, *cuts, len(batch)]
    run_shares(
        ck.pack_mask_rows,
        [(edges[i], edges[i + 1], batch.mstarts, batch.lengths, batch.kinds, bit_starts,
          batch.mask, packed) for i in range(len(edges) - 1)],
    )  # fmt: skip
    return packed


def undo(state: State, batch: DeltaBatch | Sequence[DeltaBatch]) -> None:
    """Take back the epochs :func:`prepare` assigned (the log append failed)."""
    _undo_parts(state, [batch] if isinstance(batch, DeltaBatch) else batch)


def _apply_page_ranges(state: State, batch: DeltaBatch, shares: int) -> None:
    """Write a prepared batch into the arena on ``shares`` threads, each the rows of one
    range of page ids (found by the thread itself), in row order."""
    limit = state.next_page_id
    edges = [1 + (limit - 1) * w // shares for w in range(shares)] + [limit]
    args: tuple[Any, ...] = (
        state.arena.buf, state.slot, batch.page_ids, batch.offsets, batch.lengths,
        batch.kinds, batch.pstarts, batch.mstarts, batch.payload, batch.mask,
    )  # fmt: skip
    run_shares(kernels.apply_in_pages, [(edges[w], edges[w + 1], *args) for w in range(shares)])


def apply(state: State, batch: DeltaBatch, prepared: Prepared | None = None) -> None:
    """Write a prepared batch into the arena (one thread, or one chunk of pages at a time
    per thread; no ``prepared``: a checked batch, on one thread). A batch with rows on
    device pages goes to :meth:`mmsb.storage.devicepages.DevicePages.apply` (host rows by
    the host kernel, device rows by the device kernels, on one thread)."""
    if state.dev is not None and state.dev.device_rows(batch.page_ids):
        state.dev.apply_batch(batch)
        return
    if prepared is not None and prepared.shares > 1:
        _apply_page_ranges(state, batch, prepared.shares)
        return
    kernels.apply_rows_in(
        _NO_ORDER, 0, len(batch), False, state.arena.buf, state.slot, batch.page_ids,
        batch.offsets, batch.lengths, batch.kinds, batch.pstarts, batch.mstarts,
        batch.payload, batch.mask,
    )  # fmt: skip
