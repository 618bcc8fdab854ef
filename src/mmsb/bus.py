"""The bus: a facade over the components that each own one part of an open bus, built in
:meth:`Bus._open` (docs/design.md draws how they fit). A bus is a directory;
:mod:`mmsb.storage.layout` names what is in it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

import numpy.typing as npt

from mmsb.errors import BusClosedError, ReadOnlyError, ReentrantWriteError
from mmsb.facade import component, forward, forward_property
from mmsb.graph.dag import Graph
from mmsb.graph.propagator import Propagator
from mmsb.history.component import History
from mmsb.monitor.gc import Collector, GCReport
from mmsb.monitor.invariants import Invariants
from mmsb.monitor.stats import Monitor
from mmsb.options import Options
from mmsb.snapshot import LiveSnapshot, open_snapshot
from mmsb.storage import layout
from mmsb.storage.directory import bus_path, open_directory
from mmsb.storage.follow import Follower, wait_until
from mmsb.storage.lock import writer_active
from mmsb.storage.snapstore import SnapTable
from mmsb.storage.state import State
from mmsb.types import RecoveryInfo
from mmsb.view import StateView
from mmsb.writer.checkpointer import Checkpointer
from mmsb.writer.committer import Committer
from mmsb.writer.events import EventHub
from mmsb.writer.session import WriterSession
from mmsb.writer.writer import Writer

Clock = Callable[[], int]
__all__ = ["Bus", "Clock"]

_writing = component(None, "_writer")
_checkpoints = component("_checkpointer", "_writer")
_gc = component("_collector", "_writer")
_history = component("_history", "_live_state")
_graph = component("_propagator", "_live_state")
_events = component("_events", "_live_state")
_monitor = attrgetter("_monitor")  # its methods check what they need: stats() works closed


class Bus(StateView):
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
        **options: Any,
    ) -> None:
        self._state: State | None = None
        self._ephemeral = path is None
        opts = self.options = Options.check(path is None, sync, **options)
        self.path: str = bus_path(path, readonly)
        self.sync: str = opts.sync
        self.readonly: bool = readonly
        self.cpu_fallback = opts.cpu_fallback
        self.tick_gc_budget_ms = opts.tick_gc_budget_ms
        self._follower: Follower | None = None  # read-only: follows the writer, if any
        self._session: WriterSession | None = None  # writable: lock, log, committer, ...
        self._committer: Committer | None = None  # writable: the one write path
        self._events = EventHub()
        self._snaps: SnapTable | None = None  # this process's map of the reader table
        try:
            self._open(create, clock or time.time_ns)
        except BaseException:
            self._release()
            raise

    def _open(self, create: bool, clock: Clock) -> None:
        opts, d = self.options, self.path
        self.manifest = open_directory(d, create=create, readonly=self.readonly,
                                       segment_size=opts.segment_size)  # fmt: skip
        h = self._history = History(d, self._head, readonly=self.readonly)
        if self.readonly:
            f = h.follower = self._follower = Follower(d, on_frame=self._events.follow(h.followed),
                                                       on_reset=h.forget_index)  # fmt: skip
            state, lsn, ts, info = f.state, f.lsn, f.timestamp, f.info
        else:
            w = self._session = WriterSession.open(d, self.manifest, opts, clock,
                                                   on_fail_stop=lambda _: self.abandon(),
                                                   on_compacted=h.forget_index)  # fmt: skip
            c = self._committer = w.committer
            self._checkpointer = w.checkpointer
            state, lsn, ts, info = w.writer.state, c.lsn, c.timestamp, w.recovery
            self._collector = Collector(d, state, c, retention=opts.retention,
                                        auto_compact=opts.auto_compact, unlinker=w.unlinker,
                                        on_segments_dropped=h.forget_index,
                                        checkpoints=lambda: w.checkpointer.changes)  # fmt: skip
            h.before_export = c.log.sync
        self._state, self._lsn, self._last_ts = state, lsn, ts
        self.recovery: RecoveryInfo = info
        self.invariants = Invariants(d, self._live_state, lambda: self.lsn,
                                     lambda: self.graph.validate(), self)  # fmt: skip
        self._propagator = Propagator(
            self._live_state, lambda: self.lsn, self._writer, self._events,
            maintenance=self._tick_gc, check_invariants=self.invariants.failing_sample,
            budget_ms=opts.tick_budget_ms, invariant_every=opts.invariant_every,
        )  # fmt: skip
        if self._committer is not None:
            self._committer.listeners += [h.committed, self._propagator.committed,
                                          self._events.committed]  # fmt: skip
        self._monitor = Monitor(d, self._live_state, self._propagator, self._committer,
                                self._follower, getattr(self, "_collector", None))  # fmt: skip

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """Flush, write the clean-shutdown state, release the lock. Idempotent."""
        if self._state is not None:
            self._end(WriterSession.close)

    def abandon(self) -> None:
        """Drop the bus as if its process had died (for crash tests): nothing is flushed,
        synced or marked clean, so the next open recovers as after a crash."""
        if self._state is not None:
            self._end(WriterSession.abandon)

    def _end(self, how: Callable[[WriterSession], None]) -> None:
        try:
            if self._session is not None:
                how(self._session)
        finally:
            self._release()

    def _release(self) -> None:
        self._state = None
        if self._session is not None:
            self._session.release()
        if self._follower is not None:
            self._follower.close()
        if self._snaps is not None:
            self._snaps.close()
        self._session = self._follower = self._snaps = None
        if self._ephemeral:
            shutil.rmtree(self.path, ignore_errors=True)

    def __repr__(self) -> str:
        if self._state is None:
            return f"Bus({self.path!r}, closed)"
        mode = "readonly" if self.readonly else f"sync={self.sync}"
        return f"Bus({self.path!r}, {mode}, lsn={self.lsn}, pages={len(self)})"

    # -- state access -----------------------------------------------------------------------

    def _live_state(self) -> State:
        f = self._follower  # a read-only bus first catches up with the writer's last commit
        if f is not None and self._state is not None:
            f.poll()
            self._state, self._lsn, self._last_ts = f.state, f.lsn, f.timestamp
        if self._state is None:
            c = self._committer
            if c is not None and c.failure is not None:
                raise BusClosedError(f"the bus closed itself after a failed commit "
                                     f"({c.failure}); reopen it to recover")  # fmt: skip
            raise BusClosedError("Bus is closed")
        return self._state

    def _head(self) -> tuple[State, int, int]:
        state = self._live_state()
        c = self._committer
        return (state, c.lsn, c.timestamp) if c is not None else (state, self._lsn, self._last_ts)

    def _writer(self) -> Writer:
        self._live_state()
        session = self._session
        if self._events.dispatching:  # queue the write; make it after the call returns
            raise ReentrantWriteError("an event handler cannot write to the bus")
        if session is None:
            raise ReadOnlyError(f"bus at {self.path} is open read-only")
        return session.writer

    @property
    def lsn(self) -> int:
        """The LSN of the last commit this bus reflects (a read-only bus catches up first)."""
        c = self._committer  # after close: the last commit this bus made or saw
        return self._head()[1] if self._state is not None else c.lsn if c else self._lsn

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page's contents as a 1-D array of the page's dtype (never a view:
        it never changes under the caller and never pins the arena)."""
        state = self._state
        if state is None or self._follower is not None:  # closed, or a live reader
            state = self._live_state()
        return state.read(page_id)

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Copies of several pages of one size and dtype as a 2-D array, a row per id in
        the order given, from one compiled gather. ``PageNotFoundError`` lists ids that
        name no live page; ``InvalidArgumentError`` if sizes or dtypes differ."""
        return self._live_state().read_many(page_ids)

    def snapshot(self) -> LiveSnapshot:
        """Pin the last commit this bus reflects (see :class:`~mmsb.snapshot.LiveSnapshot`);
        microseconds, no copy. Close it soon: the writer keeps old bytes for it."""
        self._live_state()
        if self._snaps is None and (self._follower is None or self._follower.live):
            self._snaps = SnapTable(self.path)
        return open_snapshot(self._live_state, lambda: self.lsn, self._follower, self._snaps)

    def refresh(self) -> int:
        """Bring a read-only bus to the writer's last published commit now; return its
        LSN (every read already does this; on a writable bus this returns the LSN)."""
        self._live_state()
        if self._follower is not None:
            self._follower.poll(force=True)
        return self.lsn

    def wait_for(self, lsn: int, timeout: float | None = None) -> bool:
        """Block until this bus reflects commit ``lsn`` (or a later one); False when
        ``timeout`` seconds pass first (None: wait as long as it takes)."""
        return wait_until(self.refresh, lsn, timeout)

    @property
    def writer_alive(self) -> bool:
        """Whether a writer process holds this bus open now (always True for an open
        writable bus). A read-only bus whose writer is gone keeps its last view."""
        self._live_state()
        return not self.readonly or writer_active(os.path.join(self.path, layout.LOCK_FILE))

    # -- changes, health (components: Writer, Checkpointer, Collector, Monitor) -------------

    create_page = forward(_writing, Writer.create_page)
    create_pages = forward(_writing, Writer.create_pages)
    delete_page = forward(_writing, Writer.delete_page)
    delete_pages = forward(_writing, Writer.delete_pages)
    set_metadata = forward(_writing, Writer.set_metadata)
    rename_page = forward(_writing, Writer.rename_page)
    write = forward(_writing, Writer.write)
    write_field = forward(_writing, Writer.write_field)
    apply = forward(_writing, Writer.apply)
    apply_batch = forward(_writing, Writer.apply_batch)
    sync_now = forward(_writing, Writer.sync_now)
    checkpoint = forward(_checkpoints, Checkpointer.checkpoint)
    compact = forward(_checkpoints, Checkpointer.compact)
    gc = forward(_gc, Collector.gc)
    memory = forward(_monitor, Monitor.memory)
    stats = forward(_monitor, Monitor.stats)

    @property
    def last_checkpoint_error(self) -> BaseException | None:
        """Why the last automatic checkpoint written in the background failed (None: it
        did not); the log still holds every commit, so nothing was lost."""
        return None if self._committer is None else self._checkpointer.last_error

    # -- history (component: History) ------------------------------------------------------

    at = forward(_history, History.at)
    history = forward(_history, History.history)
    diff = forward(_history, History.diff)
    export = forward(_history, History.export)
    verify = forward(_history, History.verify)
    provenance = forward(_history, History.provenance)
    history_table = forward(_history, History.history_table)

    # -- graph, propagation, ticks, events (components: Propagator, EventHub) -----------------

    @property
    def graph(self) -> Graph:
        """The live dependency graph (see :class:`mmsb.graph.Graph`)."""
        propagator: Propagator = _graph(self)
        return propagator.graph

    derive = forward(_graph, Propagator.derive)
    derive_semiring = forward(_graph, Propagator.derive_semiring)
    derive_many = forward(_graph, Propagator.derive_many)
    underive = forward(_graph, Propagator.underive)
    derivations = forward(_graph, Propagator.derivations)
    tick = forward(_graph, Propagator.tick)
    page = forward(_graph, Propagator.page)
    mark_gpu_synced = forward(_graph, Propagator.mark_gpu_synced)
    subscribe = forward(_events, EventHub.subscribe)
    unsubscribe = forward(_events, EventHub.unsubscribe)
    event_stats = forward(_events, EventHub.stats, "event_stats")

    tick_budget_ms = forward_property(_graph, Propagator.tick_budget_ms)

    def _tick_gc(self) -> GCReport | None:
        budget = self.tick_gc_budget_ms
        return self._collector.tick(budget) if budget > 0 and self._committer else None
