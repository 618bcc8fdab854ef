"""Page and delta changes of a writable bus: each one checked, then handed to the
:class:`~mmsb.writer.committer.Committer` as one frame with its apply and undo steps.

Checks happen before anything is staged; what a change stages before its frame is logged
(a batch's epochs, a grown arena) is taken back by its ``undo`` if the log refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb import device
from mmsb.batch import DeltaBatch
from mmsb.delta import Delta, as_payload, check_offset, check_source, payload_dtype_name
from mmsb.engine import checksum, kernels
from mmsb.engine.driver import check_workers
from mmsb.errors import DeviceUnavailableError, InvalidArgumentError, InvalidDeltaError
from mmsb.storage import codec, devicepages
from mmsb.storage.codec import BATCH, CREATE, DELETE, META, NAME
from mmsb.storage.rowcheck import check_page_shape
from mmsb.storage.state import State
from mmsb.types import (
    DTYPE_NAMES,
    Commit,
    check_name,
    dtype_code,
    encode_metadata,
    location_code,
    record_dtype,
    record_spec,
)
from mmsb.writer import fields, stages
from mmsb.writer.committer import Committer


def device_available() -> bool:
    """Whether a device backend for ``gpu``/``unified`` pages is present (numba-cuda with
    an NVIDIA GPU, or its simulator while ``NUMBA_ENABLE_CUDASIM=1``)."""
    return device.available()


class Writer:
    """Creates and deletes pages and commits deltas on one state through one committer.

    With a device backend, the bytes of ``gpu`` and ``unified`` pages live in device memory
    (:mod:`mmsb.storage.devicepages`): a state that holds such pages when the writer opens
    moves them there at once, and one that has none gets its device arenas with its first
    device page. Without a backend they stay in host memory (``cpu_fallback``).
    """

    def __init__(self, state: State, committer: Committer, *, cpu_fallback: bool) -> None:
        self.state = state
        self.committer = committer
        self.cpu_fallback = cpu_fallback
        if devicepages.device_pages(state).size and device_available():
            devicepages.attach(state)

    def _device(self, location: str) -> devicepages.DevicePages | None:
        """The state's device pages for a new ``location`` page (attached on first use);
        None under ``cpu_fallback`` without a device; else ``DeviceUnavailableError``."""
        dev = self.state.dev
        if dev is not None and not dev.remote:
            return dev
        try:
            device.backend()
        except DeviceUnavailableError as exc:
            if self.cpu_fallback:
                return None
            raise DeviceUnavailableError(
                f"location {location!r} needs a device backend and none is available ({exc}); "
                f"install one with {device.INSTALL}, or open the bus with cpu_fallback=True "
                "to keep such pages in host memory"
            ) from exc
        return devicepages.attach(self.state)

    # -- pages ------------------------------------------------------------------------------

    def create_page(
        self,
        size: int,
        *,
        dtype: Any = "uint8",
        location: str = "cpu",
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> int:
        """Create one zero-filled page of ``size`` bytes; return its id. ``name``: a unique
        name the page can be found by (:meth:`Bus.page_id`) and given wherever an id is."""
        names = None if name is None else [name]
        ids = self.create_pages(1, size, dtype=dtype, location=location, metadata=metadata,
                                names=names)  # fmt: skip
        return int(ids[0])

    def create_pages(
        self,
        n: int,
        size: int,
        *,
        dtype: Any = "uint8",
        location: str = "cpu",
        metadata: dict[str, Any] | None = None,
        names: Sequence[str | None] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Create ``n`` zero-filled pages of one size in one commit; return their ids.

        ``dtype`` is a page dtype or a numpy record dtype (pages of records: reads return
        record arrays; see :meth:`write_field`). ``names``: ``n`` unique names (or None for
        a page without one), none of them taken by a live page.
        """
        state = self.state
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"page count must be a positive integer, got {n!r}")
        record = record_spec(dtype)
        code = 0 if record is not None else dtype_code(dtype)
        name_list = _check_names(state, names, int(n))
        loc = location_code(location)
        dev = self._device(location) if loc != 0 else None
        meta = encode_metadata(metadata, "page")
        check_page_shape(int(n), size, code)
        n, size = int(n), int(size)
        if record is not None and size % record_dtype(record).itemsize:
            raise InvalidArgumentError(
                f"page size {size} is not a multiple of the record size "
                f"{record_dtype(record).itemsize}"
            )
        first = state.next_page_id
        rec = codec.CreateRecord(first, n, size, code, loc, meta, record, name_list)
        # make room first: growing the arena can fail (disk full, a pinned mapping), and it
        # must fail before the frame is logged, never after
        state.arena.ensure(state.end + n * ((size + 7) // 8 * 8))
        if dev is not None:
            dev.reserve(loc, n, size)
        ids = np.arange(first, first + n, dtype=np.int64)
        self.committer.commit(
            CREATE,
            codec.encode_create(rec),
            lambda: state.create(n, size, code, loc, meta, record, name_list),
            pages=ids,
        )
        return ids

    def delete_page(self, page_id: int) -> None:
        """Delete a page; its id is never reused and its space is reused."""
        self.delete_pages([page_id])

    def delete_pages(self, page_ids: Iterable[int]) -> None:
        """Delete several pages in one commit (all or none)."""
        state = self.state
        if isinstance(page_ids, (int, np.integer, str, bytes)) or not isinstance(
            page_ids, (Iterable, np.ndarray)
        ):
            raise InvalidArgumentError(
                f"delete_pages takes an iterable of page ids, got {type(page_ids).__name__}"
            )
        ids = [state.require(p) for p in page_ids]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError("delete_pages got the same page id twice")
        if not ids:
            return
        arr = np.asarray(ids, np.int64)
        # deleting drops the pages' edges too (listeners drop their derivations)
        self.committer.commit(DELETE, codec.encode_delete(arr), lambda: state.delete(arr),
                              pages=arr)  # fmt: skip

    def set_metadata(self, page_id: int, metadata: dict[str, Any] | None) -> int:
        """Replace a page's metadata as one commit (``None`` or ``{}`` clears it); return
        the commit's LSN. The page's bytes and epoch stay as they are."""
        state = self.state
        pid = state.require(page_id)
        meta = encode_metadata(metadata, "page")
        if meta == "{}":
            meta = None
        rec = codec.MetaRecord(pid, int(state.epoch[pid]), meta)

        lsn, _, _ = self.committer.commit(META, codec.encode_meta(rec),
                                          lambda: state.set_metadata(pid, meta),
                                          pages=np.array([pid], np.int64))  # fmt: skip
        return lsn

    def rename_page(self, page: int | str, name: str | None) -> int:
        """Give a page a new name (``None``: take its name away) as one commit; return the
        commit's LSN. The name must be valid and not held by another live page."""
        state = self.state
        pid = state.require(page)
        if name is not None:
            check_name(name)
            holder = state.by_name.get(name)
            if holder is not None and holder != pid:
                raise InvalidArgumentError(f"page name {name!r} is taken by page {holder}")
        rec = codec.NameRecord(pid, int(state.epoch[pid]), name)
        lsn, _, _ = self.committer.commit(NAME, codec.encode_name(rec),
                                          lambda: state.set_name(pid, name),
                                          pages=np.array([pid], np.int64))  # fmt: skip
        return lsn

    # -- deltas -------------------------------------------------------------------------------

    def write(
        self,
        page_id: int,
        data: Any,
        *,
        offset: int = 0,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Write ``data`` at byte ``offset`` of a page (one range delta); return its id.

        A typed numpy array (any dtype but ``uint8``) must have the page's dtype and start
        at a multiple of its itemsize; bytes-like data and uint8 arrays are raw bytes,
        written as they are. ``apply`` and ``apply_batch`` hold deltas to the same rule.
        """
        state = self.state
        pid = state.require(page_id)
        payload = as_payload(data)
        n = payload.size
        if n == 0:
            raise InvalidDeltaError(f"empty payload for page {pid}")
        off = check_offset(offset)
        if isinstance(data, np.ndarray) and data.dtype != np.uint8:
            self.check_dtype(pid, payload_dtype_name(data.dtype), off, data.dtype)
        size = int(state.size[pid])
        if off + n > size:
            raise InvalidDeltaError(
                f"write to page {pid} reaches past the end of the page (offset {off} + "
                f"length {n} > page size {size})"
            )
        check_source(source)
        meta = encode_metadata(metadata, "delta")
        # one range delta: the batch path's effect and log bytes, without building columns
        epoch = int(state.epoch[pid]) + 1
        first = state.next_delta_id
        pieces = codec.encode_single_range(pid, epoch, off, payload.tobytes(), first, source, meta)

        def apply() -> None:
            state.epoch[pid] = epoch
            if state.dev is not None and state.loc[pid]:
                state.dev.write(pid, off, payload)
            else:
                start = int(state.slot[pid]) + off
                state.arena.buf[start : start + n] = payload
            state.next_delta_id = first + 1

        self.committer.commit(BATCH, pieces, apply, pages=np.array([pid], np.int64),
                              first_delta_id=first, count=1, lo=off, hi=off + n)  # fmt: skip
        return first

    def write_field(
        self,
        page_id: int | str,
        field: str,
        values: Any,
        *,
        index: Any = None,
        source: str = "api",
        metadata: dict[str, Any] | None = None,
    ) -> Commit:
        """Write ``values`` to field ``field`` of some records of a record page, as one
        sparse delta in one commit; return the :class:`Commit`.

        ``index`` picks the records: None (all), an int, a slice, integers (negative ones
        count from the end; no repeats) or a boolean mask; ``values`` broadcasts to one
        value per record picked (numpy's ``same_kind`` casting). Every other byte of the
        page, other fields included, stays as it is.
        """
        state = self.state
        pid = state.require(page_id)
        spec = state.records.get(pid)
        if spec is None:
            raise InvalidArgumentError(
                f"page {pid} is not a record page (dtype {DTYPE_NAMES[int(state.dtype[pid])]});"
                " write_field needs a page created with a numpy record dtype"
            )
        check_source(source)
        batch = fields.field_delta(pid, record_dtype(spec), int(state.size[pid]), field,
                                   values, index, source, metadata)  # fmt: skip
        return self.apply_batch(batch)

    def apply(self, delta: Delta) -> int:
        """Commit one delta; return its delta id. A delta of a typed payload is checked as
        :meth:`write` checks typed data (by :meth:`check_dtype`, then as a batch row)."""
        if not isinstance(delta, Delta):
            raise InvalidDeltaError(f"expected a Delta, got {type(delta).__name__}")
        if delta.dtype is not None and delta.dtype != "uint8":
            self.check_dtype(self.state.require(delta.page_id), delta.dtype, delta.offset)
        return self.apply_batch(DeltaBatch.from_deltas([delta])).first_delta_id

    def check_dtype(
        self, pid: int, dtype: str, offset: int, array_dtype: np.dtype[Any] | None = None
    ) -> None:
        """Raise unless a typed payload of ``dtype`` may be written at ``offset`` of page
        ``pid``: the page has that dtype and ``offset`` is a multiple of its itemsize (the
        rule :meth:`State.validate` and the commit kernels apply to typed batch rows). A
        record payload (``array_dtype``) must have the record page's exact record dtype."""
        spec = self.state.records.get(pid)
        page_dtype = "record" if spec else DTYPE_NAMES[int(self.state.dtype[pid])]
        if dtype != page_dtype or (spec and array_dtype != record_dtype(spec)):
            shown = array_dtype if dtype == "record" else dtype
            want = record_dtype(spec) if spec else page_dtype
            raise InvalidDeltaError(f"payload dtype {shown} does not match page {pid} dtype {want}")
        item = record_dtype(spec).itemsize if spec else np.dtype(page_dtype).itemsize
        if offset % item:
            raise InvalidDeltaError(
                f"offset {offset} is not a multiple of page {pid}'s {page_dtype} itemsize {item}"
            )

    def apply_batch(self, batch: DeltaBatch, *, workers: int = 1) -> Commit:
        """Commit a batch atomically: all rows are logged and applied, or none is.

        Every row must name a live page and lie inside it; a typed row (``batch.dtypes``:
        built from an array of any dtype but ``uint8``) must also have its page's dtype and
        an offset and length that are multiples of the itemsize, as in :meth:`write`. Raw
        rows (bytes-like data, uint8 arrays) may go anywhere in any page. A bad row raises
        ``InvalidDeltaError`` or ``PageNotFoundError`` naming it, and nothing is logged.

        Order: validate -> append one log frame (fsync when ``sync="always"``) -> apply to
        the arena -> publish the new LSN. ``workers`` > 1 splits checking, encoding and
        applying across that many threads, by page (see :mod:`mmsb.writer.stages`); the
        bytes, epochs and log frame are the same for every worker count.
        """
        state, c = self.state, self.committer
        workers = check_workers(workers)
        if not isinstance(batch, DeltaBatch):
            raise InvalidDeltaError(f"expected a DeltaBatch, got {type(batch).__name__}")
        n = len(batch)
        if n == 0:
            return Commit(c.lsn, 0, -1, 0, c.timestamp)
        # a batch built from raw columns skipped the constructors' checks; the kernels
        # trust offsets and pool slices, so prepare() checks the structure first (and
        # stages the epochs, which undo takes back)
        first = state.next_delta_id
        prepared = stages.prepare(state, batch, workers, first)
        try:
            crc = checksum.crc32(prepared.pieces, prepared.shares)
        except BaseException:
            stages.undo(state, batch)
            raise

        def apply() -> None:
            stages.apply(state, batch, prepared)
            state.next_delta_id = first + n

        lsn, ts, _ = c.commit(
            BATCH, prepared.pieces, apply, undo=lambda: stages.undo(state, batch), crc=crc,
            pages=batch.page_ids, first_delta_id=first, count=n, lo=batch.offsets,
            hi=batch.offsets + batch.lengths,
        )  # fmt: skip
        return Commit(lsn, first, first + n - 1, n, ts)

    def commit_tick(
        self, batch: DeltaBatch | None, derive: Callable[[], DeltaBatch | None]
    ) -> Commit | None:
        """Commit ``batch`` and the rows ``derive()`` computes from the state with ``batch``
        applied as one commit: one frame, one LSN. None when there was nothing to commit.

        ``batch`` is checked, then applied to the arena ahead of its frame (staged: readers
        wait, pinned snapshots keep the pages, and the rows' old bytes are kept), because the
        derivations read it. If ``derive()`` raises, or the log refuses the frame, the old
        bytes and epochs are put back and nothing is logged: the tick never happened.
        """
        state, c = self.state, self.committer
        if batch is not None and not isinstance(batch, DeltaBatch):
            raise InvalidDeltaError(f"expected a DeltaBatch, got {type(batch).__name__}")
        n_in = 0 if batch is None else len(batch)
        if batch is None or n_in == 0:
            only = derive()
            return None if only is None or not len(only) else self.apply_batch(only)
        first = state.next_delta_id
        stages.check(state, batch)  # checks only: the frame is prepared once derive() ran
        lengths = batch.lengths
        old = np.empty(int(lengths.sum()), np.uint8)
        dev = state.dev  # device pages: gathers and applies go where each page's bytes are
        if dev is None:
            kernels.gather_slots(state.arena.buf, state.slot[batch.page_ids] + batch.offsets,
                                 lengths, old)  # fmt: skip
        else:
            dev.gather(batch.page_ids, batch.offsets, lengths, old)

        def restore() -> None:  # every row's old bytes were taken before any row applied
            zeros = np.zeros(n_in, np.int64)
            rows = (batch.page_ids, batch.offsets, lengths, np.zeros(n_in, np.uint8),
                    _starts(lengths), zeros, old, np.zeros(0, np.uint8))  # fmt: skip
            if dev is not None:
                dev.apply(rows, 0, n_in)
                return
            kernels.apply_rows_in(np.zeros(0, np.int64), 0, n_in, False, state.arena.buf,
                                  state.slot, *rows)  # fmt: skip

        c.stage(batch.page_ids)
        staged: list[DeltaBatch] = []  # the batches whose epochs are assigned
        try:
            stages.apply(state, batch)
            derived = derive()
            if derived is not None and not len(derived):
                derived = None
            parts = [batch] if derived is None else [batch, derived]
            # one frame for both: their concatenation's, built without joining them
            prepared = stages.prepare(state, parts, 1, first, checked=n_in)
            staged = parts
            crc = checksum.crc32(prepared.pieces, prepared.shares)
        except BaseException:
            stages.undo(state, staged)
            restore()
            c.unstage()
            raise
        n = n_in if derived is None else n_in + len(derived)

        def apply() -> None:  # the input rows are in the arena already
            if derived is not None:  # (one share: its rows in row order)
                stages.apply(state, derived, prepared)
            state.next_delta_id = first + n

        if derived is None:
            pages, lo, hi = batch.page_ids, batch.offsets, batch.offsets + lengths
        else:  # (the committer's listeners and snapshots take the rows' pages and ranges)
            pages = np.concatenate([batch.page_ids, derived.page_ids])
            lo = np.concatenate([batch.offsets, derived.offsets])
            hi = lo + np.concatenate([lengths, derived.lengths])
        lsn, ts, _ = c.commit(
            BATCH, prepared.pieces, apply, undo=lambda: stages.undo(state, staged),
            restore=restore, crc=crc, pages=pages, first_delta_id=first, count=n, lo=lo,
            hi=hi,
        )  # fmt: skip
        return Commit(lsn, first, first + n - 1, n, ts)

    def sync_now(self) -> None:
        """Force the log to stable storage now (whatever the sync mode)."""
        self.committer.log.sync(force=True)


def _check_names(
    state: State, names: Sequence[str | None] | None, n: int
) -> tuple[str | None, ...] | None:
    """``names`` checked for :meth:`Writer.create_pages`: ``n`` of them, valid, unique,
    none held by a live page; None when no page gets a name."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise InvalidArgumentError("names must be a sequence of str or None, one per page")
    if len(names) != n:
        raise InvalidArgumentError(f"{len(names)} names for {n} pages")
    given = [check_name(x) for x in names if x is not None]
    if len(set(given)) != len(given):
        raise InvalidArgumentError("names holds the same name twice")
    taken = [x for x in given if x in state.by_name]
    if taken:
        raise InvalidArgumentError(
            f"page name {taken[0]!r} is taken by page {state.by_name[taken[0]]}"
        )
    return tuple(names) if given else None


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    out = np.zeros(lengths.size, np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out
