"""The bus: the write path (validate -> log -> apply -> publish) and the read API.

A bus is a directory::

    MANIFEST.json      format version and configuration
    LOCK               writer lock (flock)
    arena.bin          page bytes, memory-mapped, grows by doubling
    log/*.seg          transaction log segments
    ckpt/*.ckpt        checkpoints
    state.clean        page table at a clean shutdown (present only while closed cleanly)
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.delta import Delta, as_payload, check_offset, check_source
from mmsb.engine import checksum
from mmsb.engine import commit as engine
from mmsb.engine.driver import check_workers
from mmsb.errors import (
    BusClosedError,
    BusNotFoundError,
    DeviceUnavailableError,
    FormatVersionError,
    InvalidArgumentError,
    InvalidDeltaError,
    ReadOnlyError,
    ReentrantWriteError,
)
from mmsb.graph.busops import GraphOps
from mmsb.graph.dag import Graph
from mmsb.graph.events import EventHub
from mmsb.graph.propagate import (
    Derivation,
    Plan,
)
from mmsb.history import (
    LogIndex,
)
from mmsb.historyops import HistoryOps, integer_arg
from mmsb.monitor.gc import Collector, GCReport
from mmsb.monitor.invariants import Invariants
from mmsb.monitor.memory import MemorySnapshot
from mmsb.monitor.memory import snapshot as memory_snapshot
from mmsb.monitor.provenance import ProvenanceIndex
from mmsb.storage import codec
from mmsb.storage.arena import FileArena
from mmsb.storage.checkpoint import write_state
from mmsb.storage.follow import Follower
from mmsb.storage.lock import WriterLock, writer_active
from mmsb.storage.log import (
    BATCH,
    CREATE,
    DELETE,
    Frame,
    LogWriter,
    PeriodicSync,
)
from mmsb.storage.manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest
from mmsb.storage.readers import ReaderSafeArena
from mmsb.storage.recovery import CLEAN_FILE, Recovered, recover
from mmsb.storage.seqlock import SeqPublisher
from mmsb.storage.state import State, check_page_shape
from mmsb.types import (
    DTYPE_NAMES,
    SYNC_MODES,
    Commit,
    RecoveryInfo,
    dtype_code,
    encode_metadata,
    location_code,
)
from mmsb.view import StateView

Clock = Callable[[], int]
DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_CHECKPOINT_EVERY = 128 << 20


def device_available() -> bool:
    """Whether a device backend for ``gpu``/``unified`` pages is present (none is built in)."""
    return False


class Bus(GraphOps, HistoryOps, StateView):
    """An open bus. Create with :func:`mmsb.open`; use as a context manager.

    Only one process may hold a bus open for writing. A ``readonly=True`` open follows a
    running writer live (its reads see each commit once published, never half of one); with
    no writer running it builds the state in process memory and writes no file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        create: bool = True,
        readonly: bool = False,
        sync: str | None = None,
        clock: Clock | None = None,
        cpu_fallback: bool = False,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
        keep_checkpoints: int = 2,
        auto_compact: bool = False,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        sync_interval: float = 1.0,
        tick_budget_ms: float = 16.0,
        tick_gc_budget_ms: float = 1.0,
        invariant_every: int = 100,
    ) -> None:
        self._state = None
        self._ephemeral = path is None
        if sync is None:
            sync = "off" if path is None else "normal"
        if sync not in SYNC_MODES:
            raise InvalidArgumentError(
                f"unknown sync mode {sync!r}; expected one of {', '.join(SYNC_MODES)}"
            )
        if keep_checkpoints < 1:
            raise InvalidArgumentError("keep_checkpoints must be at least 1")
        if (
            isinstance(sync_interval, bool)
            or not isinstance(sync_interval, (int, float))
            or not (sync_interval > 0)
        ):
            raise InvalidArgumentError(f"sync_interval must be > 0 seconds, got {sync_interval!r}")
        if checkpoint_every is not None and integer_arg(checkpoint_every, "checkpoint_every") < 1:
            raise InvalidArgumentError("checkpoint_every must be None or a positive byte count")
        if integer_arg(segment_size, "segment_size") < 4096:
            raise InvalidArgumentError("segment_size must be at least 4096 bytes")
        if path is None:
            if readonly:
                raise InvalidArgumentError("an ephemeral bus cannot be read-only")
            path = tempfile.mkdtemp(prefix="mmsb-")
        self.path = os.fspath(path)
        self.sync = sync
        self.readonly = readonly
        self.cpu_fallback = cpu_fallback
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.auto_compact = auto_compact
        self.sync_interval = sync_interval
        self._clock: Clock = clock or time.time_ns
        self._lock: WriterLock | None = None
        self._log: LogWriter | None = None
        self._index: LogIndex | None = None
        self._syncer: PeriodicSync | None = None
        self._failure: str | None = None  # why the bus closed itself (see _fail_stop)
        self._background: threading.Thread | None = None  # an automatic checkpoint
        self._background_error: BaseException | None = None
        # why the last automatic checkpoint written in the background failed (None: it did
        # not); the log still holds every commit, so nothing is lost
        self.last_checkpoint_error: BaseException | None = None
        self.tick_budget_ms = tick_budget_ms
        self.tick_gc_budget_ms = tick_gc_budget_ms
        self.invariant_every = invariant_every
        self._graph: Graph | None = None
        self._derivations: dict[int, Derivation] = {}
        self._plan: Plan | None = None
        self._plan_key: tuple[int, int] = (-1, -1)
        self._deriv_version = 0  # bumped when a derivation is registered or dropped
        self._dirty: list[npt.NDArray[np.int64]] = []  # pages written since the last pass
        self._dirty_lo: list[npt.NDArray[np.int64]] = []  # and the byte range of each write
        self._dirty_hi: list[npt.NDArray[np.int64]] = []
        self._dirty_lsn = 0  # the last commit that added to _dirty
        self._seeds: list[npt.NDArray[np.int64]] = []  # parents of new derivations
        self._flags = np.zeros(0, np.uint8)
        self._events = EventHub()
        self._ticks = 0
        self._propagating = False
        self._prov: ProvenanceIndex | None = None
        self.invariants = Invariants(self)
        self._seq: SeqPublisher | None = None  # writer: publishes commits to readers
        self._follower: Follower | None = None  # read-only: follows the writer, if any
        try:
            self._open(create, segment_size)
        except BaseException:
            self._release()
            raise

    # -- opening and closing ------------------------------------------------------------

    def _open(self, create: bool, segment_size: int) -> None:
        d = self.path
        exists = os.path.isdir(d) and os.path.exists(os.path.join(d, "MANIFEST.json"))
        if not exists:
            if self.readonly or not create:
                if os.path.isdir(d) and os.listdir(d):
                    raise FormatVersionError(f"{d} is not an MMSB bus (no MANIFEST.json)")
                raise BusNotFoundError(f"no bus at {d}")
            if os.path.exists(d) and not os.path.isdir(d):
                raise FormatVersionError(f"{d} exists and is not a directory")
            if os.path.isdir(d) and os.listdir(d):
                raise FormatVersionError(
                    f"{d} is a non-empty directory without an MMSB manifest; refusing to "
                    "create a bus over it"
                )
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(d, "log"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(d, "ckpt"), mode=0o700, exist_ok=True)
            write_manifest(d, Manifest(FORMAT_VERSION, time.time_ns(), segment_size))
        self.manifest = read_manifest(d)
        if self.readonly:
            f = self._follower = Follower(d, on_frame=self._index_frame, on_reset=self._drop_index)
            rec = Recovered(f.state, f.lsn, f.timestamp, f.info)
        else:
            self._lock = WriterLock(os.path.join(d, "LOCK"))
            self._seq = SeqPublisher(d)  # seq odd: recovery may rewrite the arena
            os.makedirs(os.path.join(d, "log"), mode=0o700, exist_ok=True)
            os.makedirs(os.path.join(d, "ckpt"), mode=0o700, exist_ok=True)
            rec = recover(d, ReaderSafeArena(os.path.join(d, "arena.bin")), readonly=False)
            self._log = LogWriter(
                os.path.join(d, "log"),
                rec.lsn + 1,
                segment_size=self.manifest.segment_size,
                fsync_enabled=self.sync != "off",
            )
            if self.sync == "normal":
                self._log.defer_roll_sync = True  # full segments are synced by the thread
                self._syncer = PeriodicSync(self._log, self.sync_interval)
        self._state = rec.state
        self._lsn = rec.lsn
        self._last_ts = rec.timestamp
        self.recovery: RecoveryInfo = rec.info
        if self._seq is not None:
            self._seq.publish(rec.lsn, rec.timestamp)

    def close(self) -> None:
        """Flush, write the clean-shutdown state, release the lock. Idempotent."""
        if self._state is None:
            return
        try:
            self._join_checkpoint()
            if self._log is not None and not self.readonly:
                if self._syncer is not None:
                    self._syncer.stop()
                    self._syncer = None
                self._log.close()
                self._state.arena.flush()
                write_state(
                    os.path.join(self.path, CLEAN_FILE), self._state, self._lsn, self._last_ts,
                    with_arena=False, sync=self.sync != "off",
                )  # fmt: skip
        finally:
            self._release()
            if self._ephemeral:
                shutil.rmtree(self.path, ignore_errors=True)

    def _release(self) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.arena.close()
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        if self._seq is not None:
            self._seq.close()
            self._seq = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._state is None:
            return f"Bus({self.path!r}, closed)"
        mode = "readonly" if self.readonly else f"sync={self.sync}"
        return f"Bus({self.path!r}, {mode}, lsn={self._lsn}, pages={len(self)})"

    @property
    def closed(self) -> bool:
        return self._state is None

    def _writable(self) -> tuple[State, LogWriter]:
        state = self._live_state()
        if self._events.dispatching:
            raise ReentrantWriteError(
                "an event handler cannot write to the bus; queue the write and make it after "
                "the call that raised the event returns"
            )
        if self.readonly or self._log is None:
            raise ReadOnlyError(f"bus at {self.path} is open read-only")
        return state, self._log

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page's contents as a 1-D array of the page's dtype.

        A copy, not a view: it never changes under the caller and never pins the arena.
        """
        state = self._state
        if state is None or self._follower is not None:  # closed, or a live reader
            state = self._live_state()
        return state.read(page_id)

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Copies of several pages of one size and dtype as a 2-D array, a row per id in
        the order given: one call and one compiled gather instead of a ``read`` each.

        Raises ``PageNotFoundError`` (listing the ids) if any names no live page and
        ``InvalidArgumentError`` if the pages differ in size or dtype.
        """
        return self._live_state().read_many(page_ids)

    # -- live readers -------------------------------------------------------------------

    def _live_state(self) -> State:
        # a read-only bus first catches up with the writer's last published commit
        if self._follower is not None and self._state is not None:
            self._follow(force=False)
        if self._state is None and self._failure is not None:
            raise BusClosedError(
                f"the bus closed itself after a failed commit ({self._failure}); "
                "reopen it to recover"
            )
        return super()._live_state()

    def _follow(self, *, force: bool) -> None:
        f = self._follower
        assert f is not None
        if force:
            f.poll(force=True)
        else:
            f.poll()
        self._state, self._lsn, self._last_ts = f.state, f.lsn, f.timestamp

    def _index_frame(self, frame: Frame) -> None:
        if self._index is not None:
            self._index.add_frame(frame)

    def _drop_index(self) -> None:
        self._index = None

    @property
    def lsn(self) -> int:
        """The LSN of the last commit this bus reflects (a read-only bus catches up first)."""
        if self._follower is not None and self._state is not None:
            self._follow(force=False)
        return self._lsn

    def refresh(self) -> int:
        """Bring a read-only bus to the writer's last published commit now; return its LSN.

        Every read already does this when the writer published since (one look at the
        shared ``SEQ`` header), so this is for callers that only want the LSN, or that
        wait for a writer that was not running when the bus was opened. On a writable bus
        it just returns the LSN.
        """
        self._live_state()
        if self._follower is not None:
            self._follow(force=True)
        return self._lsn

    def wait_for(self, lsn: int, timeout: float | None = None) -> bool:
        """Block until this bus reflects commit ``lsn`` (or a later one); False when
        ``timeout`` seconds pass first (None: wait as long as it takes)."""
        if isinstance(lsn, bool) or not isinstance(lsn, (int, np.integer)) or lsn < 0:
            raise InvalidArgumentError(f"lsn must be a non-negative integer, got {lsn!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise InvalidArgumentError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 20e-6
        while self.refresh() < lsn:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, 1e-3)
        return True

    @property
    def writer_alive(self) -> bool:
        """Whether a writer process holds this bus open now (always True for an open
        writable bus). A read-only bus whose writer is gone keeps its last view."""
        self._live_state()
        if not self.readonly:
            return True
        return writer_active(os.path.join(self.path, "LOCK"))

    # -- pages --------------------------------------------------------------------------

    def create_page(
        self,
        size: int,
        *,
        dtype: Any = "uint8",
        location: str = "cpu",
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Create one zero-filled page of ``size`` bytes; return its id."""
        return int(self.create_pages(1, size, dtype=dtype, location=location, metadata=metadata)[0])

    def create_pages(
        self,
        n: int,
        size: int,
        *,
        dtype: Any = "uint8",
        location: str = "cpu",
        metadata: dict[str, Any] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Create ``n`` zero-filled pages of one size in one commit; return their ids."""
        state, log = self._writable()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidArgumentError(f"page count must be a positive integer, got {n!r}")
        code = dtype_code(dtype)
        loc = location_code(location)
        if loc != 0 and not device_available() and not self.cpu_fallback:
            raise DeviceUnavailableError(
                f"location {location!r} needs a device backend and none is available; open "
                "the bus with cpu_fallback=True to keep such pages in host memory"
            )
        meta = encode_metadata(metadata, "page")
        check_page_shape(int(n), size, code)
        rec = codec.CreateRecord(state.next_page_id, int(n), int(size), code, loc, meta)
        # make room first: growing the arena can fail (disk full, a pinned mapping), and it
        # must fail before the frame is logged, never after
        state.arena.ensure(state.end + int(n) * ((int(size) + 7) // 8 * 8))
        lsn, ts, seg, off = self._log_frame(log, CREATE, codec.encode_create(rec))
        first = state.create(int(n), int(size), code, loc, meta)
        self._publish(lsn, ts, seg, off, 0, None)
        ids = np.arange(first, first + int(n), dtype=np.int64)
        if self._events.wants("page_created"):
            self._events.emit("page_created", lsn, ids)
        return ids

    def delete_page(self, page_id: int) -> None:
        """Delete a page; its id is never reused and its space is reused."""
        self.delete_pages([page_id])

    def delete_pages(self, page_ids: Iterable[int]) -> None:
        state, log = self._writable()
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
        lsn, ts, seg, off = self._log_frame(log, DELETE, codec.encode_delete(arr))
        state.delete(arr)  # drops the pages' edges too
        dead = set(ids)
        for c, d in list(self._derivations.items()):
            # the deleted pages' own derivations, and those that read a deleted page
            if c in dead or not dead.isdisjoint(d.parents):
                del self._derivations[c]
                self._deriv_version += 1
        self._publish(lsn, ts, seg, off, 0, None)
        if self._prov is not None:
            self._prov.invalidate(arr)
        if self._events.wants("page_deleted"):
            self._events.emit("page_deleted", lsn, arr)

    # -- deltas -------------------------------------------------------------------------

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

        A typed numpy array must have the page's dtype and start at a multiple of its
        itemsize; bytes-like data is written as is.
        """
        state, log = self._writable()
        pid = state.require(page_id)
        payload = as_payload(data)
        n = payload.size
        if n == 0:
            raise InvalidDeltaError(f"empty payload for page {pid}")
        off = check_offset(offset)
        if isinstance(data, np.ndarray):
            self._check_dtype(pid, data.dtype.name, off)
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
        lsn, ts, seg, foff = self._log_frame(log, BATCH, pieces)
        state.epoch[pid] = epoch
        start = int(state.slot[pid]) + off
        state.arena.buf[start : start + n] = payload
        state.next_delta_id = first + 1
        pages = None if self._index is None else np.array([pid], np.int64)
        self._publish(lsn, ts, seg, foff, first, pages)
        self._after_commit(
            np.array([pid], np.int64) if pages is None else pages, lsn, first, 1, off, off + n
        )
        return first

    def apply(self, delta: Delta) -> int:
        """Commit one delta; return its delta id."""
        if not isinstance(delta, Delta):
            raise InvalidDeltaError(f"expected a Delta, got {type(delta).__name__}")
        if delta.dtype is not None:
            self._check_dtype(self._live_state().require(delta.page_id), delta.dtype, delta.offset)
        return self.apply_batch(DeltaBatch.from_deltas([delta])).first_delta_id

    def _check_dtype(self, pid: int, dtype: str, offset: int) -> None:
        state = self._live_state()
        page_dtype = DTYPE_NAMES[int(state.dtype[pid])]
        if dtype != page_dtype:
            raise InvalidDeltaError(
                f"payload dtype {dtype} does not match page {pid} dtype {page_dtype}"
            )
        item = np.dtype(page_dtype).itemsize
        if offset % item:
            raise InvalidDeltaError(
                f"offset {offset} is not a multiple of page {pid}'s {page_dtype} itemsize {item}"
            )

    def apply_batch(self, batch: DeltaBatch, *, workers: int = 1) -> Commit:
        """Commit a batch atomically: all rows are logged and applied, or none is.

        Order: validate -> append one log frame (fsync when ``sync="always"``) -> apply to
        the arena -> publish the new LSN. ``workers`` > 1 splits checking, encoding and
        applying across that many threads, by page (see :mod:`mmsb.engine.commit`); the
        bytes, epochs and log frame are the same for every worker count.
        """
        state, log = self._writable()
        workers = check_workers(workers)
        if not isinstance(batch, DeltaBatch):
            raise InvalidDeltaError(f"expected a DeltaBatch, got {type(batch).__name__}")
        n = len(batch)
        if n == 0:
            return Commit(self._lsn, 0, -1, 0, self._last_ts)
        # a batch built from raw columns skipped the constructors' checks; the kernels
        # trust offsets and pool slices, so prepare() checks the structure first
        first = state.next_delta_id
        prepared = engine.prepare(state, batch, workers, first)
        try:
            crc = checksum.crc32(prepared.pieces, prepared.shares)
            lsn, ts, seg, off = self._log_frame(log, BATCH, prepared.pieces, crc)
        except BaseException:
            engine.undo(state, batch)
            raise
        try:
            engine.apply(state, batch, prepared)
        except BaseException as exc:  # say, KeyboardInterrupt between kernel calls
            # the frame is logged but the arena holds part of it: recover from disk
            self._fail_stop(exc)
            raise
        state.next_delta_id = first + n
        self._publish(lsn, ts, seg, off, first, batch.page_ids)
        self._after_commit(
            batch.page_ids, lsn, first, n, batch.offsets, batch.offsets + batch.lengths
        )
        return Commit(lsn, first, first + n - 1, n, ts)

    # -- the log ------------------------------------------------------------------------

    def _log_frame(
        self, log: LogWriter, ftype: int, pieces: list[bytes | memoryview], crc: int | None = None
    ) -> tuple[int, int, str, int]:
        lsn, ts = self._commit_stamp()
        off = self._append(log, ftype, lsn, ts, pieces, crc)
        assert self._seq is not None
        self._seq.begin()  # readers: the arena changes from here until _publish
        return lsn, ts, log.name, off

    def _commit_stamp(self) -> tuple[int, int]:
        """The next commit's LSN and time (commit times never go backwards)."""
        return self._lsn + 1, max(int(self._clock()), self._last_ts)

    def _append(
        self,
        log: LogWriter,
        ftype: int,
        lsn: int,
        ts: int,
        pieces: list[bytes | memoryview],
        crc: int | None,
    ) -> int:
        off = log.append(ftype, lsn, ts, pieces, crc=crc)
        if self.sync == "always":
            log.sync()
        return off

    def _fail_stop(self, cause: BaseException) -> None:
        """Close as a crash would: the arena and the log disagree (bytes the log lacks, or
        a logged commit half applied), so no clean-shutdown state is written and the next
        open recovers from the checkpoint and the log."""
        self._failure = f"{type(cause).__name__}: {cause}"
        self._join_checkpoint()
        log, self._log = self._log, None
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        if log is not None:
            log.abandon()
        arena = self._state.arena if self._state is not None else None
        if isinstance(arena, FileArena):
            arena.abandon()
        self._release()
        if self._ephemeral:
            shutil.rmtree(self.path, ignore_errors=True)

    def _publish(self, lsn: int, ts: int, seg: str, off: int, first_did: int, pages: Any) -> None:
        self._lsn = lsn
        self._last_ts = ts
        assert self._seq is not None
        self._seq.publish(lsn, ts)
        if self._index is not None:
            self._index.add(lsn, ts, seg, off, first_did, pages)
        log = self._log
        assert log is not None
        bg = self._background
        if bg is not None and not bg.is_alive():
            self._join_checkpoint()
            if self.auto_compact:
                self.compact()
        if self.checkpoint_every is not None and log.written >= self.checkpoint_every:
            self._auto_checkpoint(log)

    def sync_now(self) -> None:
        """Force the log to stable storage now (whatever the sync mode)."""
        _, log = self._writable()
        log.sync(force=True)

    # -- memory and garbage collection ----------------------------------------------------

    def memory(self) -> MemorySnapshot:
        """Where this bus's memory goes: pages, bookkeeping, log, arena, free lists, and the
        measured resident memory (see :mod:`mmsb.monitor.memory`)."""
        state = self._live_state()
        arena = getattr(state.arena, "path", None)
        return memory_snapshot(state, self.path, arena if isinstance(arena, str) else None)

    def gc(self, budget_ms: float = 1.0, *, cold_after_s: float | None = None) -> GCReport:
        """One incremental GC step of about ``budget_ms``: drop covered log segments,
        compact and shrink the arena, evict cold pages (see :mod:`mmsb.monitor.gc`).

        Never frees or changes live data; returns what it did and its pause.
        """
        self._writable()
        if (
            isinstance(budget_ms, bool)
            or not isinstance(budget_ms, (int, float))
            or not (budget_ms > 0)
        ):
            raise InvalidArgumentError(f"budget_ms must be a positive number, got {budget_ms!r}")
        if cold_after_s is not None and not cold_after_s >= 0:
            raise InvalidArgumentError(f"cold_after_s must be >= 0, got {cold_after_s!r}")
        collector = self.__dict__.get("_collector")
        if collector is None:
            collector = self.__dict__["_collector"] = Collector(self)
        report: GCReport = collector.step(float(budget_ms), cold_after_s)
        return report


def open(
    path: str | os.PathLike[str] | None,
    *,
    create: bool = True,
    readonly: bool = False,
    sync: str | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> Bus:
    """Open (or create) the bus at ``path``; ``None`` gives an ephemeral bus in a temporary
    directory that is removed on close.

    Parameters
    ----------
    create
        Create the bus if ``path`` holds none (else :class:`BusNotFoundError`).
    readonly
        Open without the writer lock; writes raise :class:`ReadOnlyError`. While a writer
        has the bus open, reads follow its commits live (:meth:`Bus.refresh`,
        :meth:`Bus.wait_for`, :attr:`Bus.writer_alive`; docs/design.md, "Live readers");
        otherwise the state is built in process memory and no file is written.
    sync
        ``"always"`` (fsync every commit), ``"normal"`` (fsync on checkpoint and close,
        and from a background thread every ``sync_interval`` seconds; the default on
        disk) or ``"off"`` (never; the default for ephemeral buses). docs/design.md
        states what each survives.
    clock
        Callable returning nanoseconds, for commit timestamps (deterministic in tests).
    options
        ``cpu_fallback`` (keep ``gpu``/``unified`` pages in host memory when no device
        backend exists; default False), ``checkpoint_every`` (log bytes between automatic
        checkpoints, None to disable; default 128 MiB), ``keep_checkpoints`` (kept by
        :meth:`Bus.compact`; default 2), ``auto_compact`` (compact after each automatic
        checkpoint, bounding the log; default False, which keeps all history),
        ``segment_size`` (log segment bytes for a new bus; default 64 MiB),
        ``sync_interval`` (seconds, for ``sync="normal"``; default 1.0).
    """
    return Bus(path, create=create, readonly=readonly, sync=sync, clock=clock, **options)
