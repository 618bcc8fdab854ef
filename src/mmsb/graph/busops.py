"""The bus's graph-layer methods: edges, derivations, ticks, flags, events, provenance.

:class:`GraphOps` is mixed into :class:`mmsb.bus.Bus`; it holds no state of its own (the
attributes it uses are set up in ``Bus.__init__``) and goes through the bus's write path for
every change, so storage stays unaware of graphs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.errors import InvalidArgumentError
from mmsb.graph.dag import Graph, check_and_apply, graph_frame, undo
from mmsb.graph.events import Event, EventHub, Subscription
from mmsb.graph.propagate import (
    Derivation,
    Plan,
    check_page_id,
    check_parents,
    describe,
    run_pass,
)
from mmsb.graph.tick import TickReport
from mmsb.history import Snapshot
from mmsb.monitor.provenance import Provenance, ProvenanceIndex
from mmsb.semiring import Semiring
from mmsb.storage.edges import COMPILER, CONTROL, DATA, GPU
from mmsb.storage.log import GRAPH
from mmsb.storage.state import State
from mmsb.types import DTYPE_NAMES, PageInfo

if TYPE_CHECKING:
    from mmsb.bus import Bus
    from mmsb.history import LogIndex
    from mmsb.monitor.invariants import Invariants
    from mmsb.storage.log import LogWriter
    from mmsb.types import Commit

STALE, GPU_SYNC, INVALIDATED = 1, 2, 4  # page flags set through control/gpu/compiler edges


class GraphOps:
    """Graph, propagation, tick, event and provenance methods of :class:`mmsb.bus.Bus`."""

    # state, set up by ``Bus.__init__``
    path: str
    readonly: bool
    tick_budget_ms: float
    tick_gc_budget_ms: float
    invariant_every: int
    invariants: Invariants
    _state: State | None
    _lsn: int
    _graph: Graph | None
    _derivations: dict[int, Derivation]
    _deriv_version: int
    _plan: Plan | None
    _plan_key: tuple[int, int]
    _dirty: list[npt.NDArray[np.int64]]
    _dirty_lo: list[npt.NDArray[np.int64]]
    _dirty_hi: list[npt.NDArray[np.int64]]
    _dirty_lsn: int
    _seeds: list[npt.NDArray[np.int64]]
    _flags: npt.NDArray[np.uint8]
    _events: EventHub
    _ticks: int
    _propagating: bool
    _prov: ProvenanceIndex | None

    if TYPE_CHECKING:  # the bus methods these use

        def _live_state(self) -> State: ...
        def _writable(self) -> tuple[State, LogWriter]: ...
        def _log_index(self) -> LogIndex: ...
        def apply_batch(self, batch: DeltaBatch, *, workers: int = 1) -> Commit: ...
        def _log_frame(
            self, log: LogWriter, ftype: int, pieces: list[bytes | memoryview]
        ) -> tuple[int, int, str, int]: ...
        def _publish(
            self, lsn: int, ts: int, seg: str, off: int, first_did: int, pages: Any
        ) -> None: ...

    # -- dependency graph, propagation, ticks, events -------------------------------------

    @property
    def graph(self) -> Graph:
        """The live dependency graph (see :class:`mmsb.graph.Graph`)."""
        self._live_state()
        if self._graph is None:
            self._graph = Graph(cast("Bus", self))
        return self._graph

    def _change_edges(
        self, rows: list[tuple[int, int]], kind: int, *, add: bool, child_of: int | None = None
    ) -> int:
        state, log = self._writable()
        done = check_and_apply(state, rows, kind, add)
        if not done:
            return 0
        try:
            lsn, ts, seg, off = self._log_frame(log, GRAPH, graph_frame(done, kind, add))
        except BaseException:
            undo(state, done, kind, add)
            raise
        self._publish(lsn, ts, seg, off, 0, None)
        if kind == DATA and self._derivations:
            # a derivation whose data parents changed by hand no longer describes the graph
            for _, c in done:
                if c != child_of and self._derivations.pop(c, None) is not None:
                    self._deriv_version += 1
        return len(done)

    def derive(
        self,
        child: int,
        fn: Callable[..., Any],
        parents: Sequence[int],
        name: str | None = None,
    ) -> None:
        """Compute ``child`` from ``parents`` with ``fn`` at each tick where a parent changed.

        ``fn(*views)`` gets the parents as read-only numpy arrays (in the given order, each
        with its page's dtype; private copies, so ``fn`` may keep them) and returns the
        child's new contents: an array of the child's dtype or bytes, exactly the page size.
        Registering replaces the child's data parents with ``parents`` (a logged graph
        change) and the child is computed at the next tick. Functions are not persisted:
        after reopening, register them again.
        """
        if not callable(fn):
            raise InvalidArgumentError(f"derivation for page {child} is not callable")
        self._register(Derivation(check_page_id(child, "child"), check_parents(parents),
                                  describe(fn, None, name), fn=fn))  # fmt: skip

    def derive_semiring(
        self,
        child: int,
        parents: Sequence[int],
        semiring: Semiring,
        weights: Sequence[float] | npt.ArrayLike | None = None,
        name: str | None = None,
    ) -> None:
        """Compute ``child = ⊕_p (weights[p] ⊗ parents[p])`` element-wise (weights default
        to the semiring's one). The parents and the child must share size and dtype."""
        if not isinstance(semiring, Semiring):
            raise InvalidArgumentError(f"expected a Semiring, got {type(semiring).__name__}")
        pids = check_parents(parents)
        w: tuple[float, ...] | None = None
        if weights is not None:
            arr = np.asarray(weights, dtype=np.float64).reshape(-1)
            if arr.size != len(pids):
                raise InvalidArgumentError(f"{len(pids)} parents but {arr.size} weights")
            w = tuple(float(x) for x in arr.tolist())
        state = self._live_state()
        c = state.require(child)
        semiring.check_dtype(DTYPE_NAMES[int(state.dtype[c])])
        for p in pids:
            state.require(p)
            if state.size[p] != state.size[c] or state.dtype[p] != state.dtype[c]:
                raise InvalidArgumentError(
                    f"semiring parent {p} and child {c} differ in size or dtype"
                )
        self._register(Derivation(c, pids, describe(None, semiring, name),
                                  semiring=semiring, weights=w))  # fmt: skip

    def _register(self, d: Derivation) -> None:
        state, _ = self._writable()
        c = state.require(d.child)
        if not d.parents:
            raise InvalidArgumentError(f"derivation of page {c} needs at least one parent")
        if len(set(d.parents)) != len(d.parents):
            raise InvalidArgumentError(f"derivation of page {c} lists a parent twice")
        for p in d.parents:
            state.require(p)
        old = set(self.graph.parents(c, "data").tolist())
        new = set(d.parents)
        gone = [(p, c) for p in sorted(old - new)]
        fresh = [(p, c) for p in d.parents if p not in old]
        if gone:
            self._change_edges(gone, DATA, add=False, child_of=c)
        try:
            self._change_edges(fresh, DATA, add=True, child_of=c)
        except BaseException:
            if gone:
                self._change_edges(gone, DATA, add=True, child_of=c)
            raise
        self._derivations[c] = d
        self._deriv_version += 1
        # computed at the next tick; a seed, not a write: no control/gpu/compiler flags
        self._seeds.append(np.array(d.parents, np.int64))

    def underive(self, child: int) -> None:
        """Forget ``child``'s derivation (its data edges stay; remove them with the graph)."""
        if self._derivations.pop(int(child), None) is not None:
            self._deriv_version += 1

    def derivations(self) -> dict[int, str]:
        """Registered derivations: child page -> name."""
        return {c: d.name for c, d in sorted(self._derivations.items())}

    def _mark_dirty(self, pages: Any, lo: Any, hi: Any) -> None:
        """Pages written (within bytes [lo, hi) per row), pending for the next pass."""
        pages = np.asarray(pages, np.int64)
        if pages.size:
            self._dirty.append(pages.copy())
            self._dirty_lo.append(np.array(lo, np.int64, copy=True))
            self._dirty_hi.append(np.array(hi, np.int64, copy=True))
            self._dirty_lsn = self._lsn

    def _after_commit(self, pages: Any, lsn: int, first: int, count: int, lo: Any, hi: Any) -> None:
        """Bookkeeping after a published delta commit: pending propagation (each row's
        page and byte range), flags, the provenance cache, events."""
        state = self._state
        assert state is not None
        if state.edges.count and not self._propagating:
            n = np.asarray(pages).size
            self._mark_dirty(pages, np.broadcast_to(lo, n), np.broadcast_to(hi, n))
        if self._flags.size:
            ids = np.asarray(pages)
            ids = ids[ids < self._flags.size]
            self._flags[ids] &= np.uint8(~(STALE | INVALIDATED) & 0xFF)
        if self._prov is not None:
            self._prov.invalidate(np.asarray(pages))
        hub = self._events
        if hub.wants("delta_applied"):
            hub.emit("delta_applied", lsn, None, first_delta_id=first, count=count)
        if hub.wants("page_changed"):
            hub.emit("page_changed", lsn, np.unique(np.asarray(pages)))

    def _plan_for(self, state: State) -> Plan:
        key = (state.edges.version, self._deriv_version)
        if self._plan is None or self._plan_key != key:
            # drop derivations the graph no longer supports (a parent deleted or unlinked)
            for c, d in list(self._derivations.items()):
                if not state.is_live(c) or any(not state.edges.has(p, c, DATA) for p in d.parents):
                    del self._derivations[c]
                    self._deriv_version += 1
            self._plan = Plan(state, self._derivations)
            self._plan_key = key
        return self._plan

    def tick(self, batch: DeltaBatch | None = None) -> TickReport:
        """Commit ``batch`` (if any), propagate every change since the last tick, run the
        maintenance step and, every ``invariant_every`` ticks, the invariants.

        If a derivation raises, :class:`PropagationError` propagates: the input batch
        stays committed, no derived write of this tick is applied, and the changes stay
        pending for the next tick.
        """
        state, _ = self._writable()
        t0 = time.perf_counter_ns()
        n_in = 0
        if batch is not None:
            n_in = self.apply_batch(batch).count
        t1 = time.perf_counter_ns()
        recomputed = changed_n = derived = flagged = 0
        if self._dirty or self._seeds:
            # the cause: the last commit that wrote a pending page (or, for a pass that only
            # computes newly registered derivations, the current LSN)
            cause = self._dirty_lsn if self._dirty else self._lsn
            seeds = [s[s < state.next_page_id] for s in self._seeds]
            written = np.concatenate([*self._dirty, *seeds])  # rows may repeat a page
            lo = np.concatenate([*self._dirty_lo, *(np.zeros(s.size, np.int64) for s in seeds)])
            hi = np.concatenate([*self._dirty_hi, *(state.size[s] for s in seeds)])
            keep = written < state.next_page_id
            if not keep.all():
                written, lo, hi = written[keep], lo[keep], hi[keep]
            plan = self._plan_for(state)
            result = run_pass(plan, state, written, lo, hi, cause)
            n_written = sum(d.size for d in self._dirty)
            written = written[: int(keep[:n_written].sum())]  # the seeds are not writes
            for pending in (self._dirty, self._dirty_lo, self._dirty_hi, self._seeds):
                pending.clear()
            recomputed = result.recomputed
            if result.batch is not None:
                # already propagated within this pass: not pending for the next one
                self._propagating = True
                try:
                    derived = self.apply_batch(result.batch).count
                finally:
                    self._propagating = False
                changed_n = int(result.changed_pages.size)
            flagged = self._flag_children(np.concatenate((written, result.changed_pages)))
        t2 = time.perf_counter_ns()
        gc_report = None
        gc_step = getattr(self, "gc", None)
        if gc_step is not None and self.tick_gc_budget_ms > 0:
            gc_report = gc_step(budget_ms=self.tick_gc_budget_ms)
        t3 = time.perf_counter_ns()
        self._ticks += 1
        checked = False
        failures: list[str] = []
        if self.invariant_every and self._ticks % self.invariant_every == 0:
            checked = True
            failures = [r.name for r in self.invariants.run(sample=True) if not r.passed]
        t4 = time.perf_counter_ns()
        phases = {"commit": t1 - t0, "propagate": t2 - t1, "maintenance": t3 - t2,
                  "invariants": t4 - t3}  # fmt: skip
        total = t4 - t0
        budget = int(self.tick_budget_ms * 1e6)
        report = TickReport(
            self._ticks, self._lsn, n_in, derived, recomputed, changed_n, flagged, phases,
            total, budget, total > budget, checked, failures, gc_report,
        )  # fmt: skip
        if self._events.wants("tick_done"):
            self._events.emit("tick_done", self._lsn, None, report=report)
        return report

    def _flag_children(self, pages: npt.NDArray[np.int64]) -> int:
        """Set the stale / gpu-sync / invalidated flags of the control, gpu and compiler
        children of ``pages``; emit one event per newly flagged page."""
        state = self._live_state()
        edges = state.edges
        if edges.count == 0 or pages.size == 0:
            return 0
        p, c, k = edges.columns()
        sel = k != DATA
        if not sel.any():
            return 0
        hit = np.zeros(state.next_page_id, bool)
        hit[pages] = True
        sel &= hit[p]
        if not sel.any():
            return 0
        if self._flags.size < state.next_page_id:
            grown = np.zeros(max(state.next_page_id, 2 * self._flags.size), np.uint8)
            grown[: self._flags.size] = self._flags
            self._flags = grown
        total = 0
        for kind, bit, event in ((CONTROL, STALE, "page_stale"), (GPU, GPU_SYNC, "gpu_sync_needed"),
                                 (COMPILER, INVALIDATED, "page_invalidated")):  # fmt: skip
            kids = np.unique(c[sel & (k == kind)])
            if kids.size == 0:
                continue
            new = kids[(self._flags[kids] & bit) == 0]
            self._flags[kids] |= np.uint8(bit)
            total += int(new.size)
            if new.size and self._events.wants(event):
                self._events.emit(event, self._lsn, new)
        return total

    def page(self, page_id: int) -> PageInfo:
        info = self._live_state().info(page_id)  # what StateView.page gives
        f = int(self._flags[info.id]) if info.id < self._flags.size else 0
        if not f:
            return info
        return dataclasses.replace(
            info,
            stale=bool(f & STALE),
            gpu_sync_needed=bool(f & GPU_SYNC),
            invalidated=bool(f & INVALIDATED),
        )

    def mark_gpu_synced(self, page_id: int) -> None:
        """Clear a page's gpu-sync-needed flag (its device mirror was brought up to date)."""
        pid = self._live_state().require(page_id)
        if pid < self._flags.size:
            self._flags[pid] &= np.uint8(~GPU_SYNC & 0xFF)

    def subscribe(
        self, event: str, handler: Callable[[Event], object], filter: Any = None
    ) -> Subscription:
        """Call ``handler(event)`` for each event of type ``event`` (see
        :data:`mmsb.graph.EVENTS`); ``filter`` is a predicate on the event or a set of page
        ids. Handlers must not write to the bus (see :mod:`mmsb.graph.events`)."""
        self._live_state()
        return self._events.subscribe(event, handler, filter)

    def unsubscribe(self, subscription: Subscription) -> bool:
        """Stop a subscription; False if it was not active."""
        return self._events.unsubscribe(subscription)

    def event_stats(self) -> dict[str, Any]:
        """Handlers called, handlers that raised, and the last failure."""
        return self._events.stats()

    # -- provenance -----------------------------------------------------------------------

    def _snapshot(self, state: State, lsn: int, timestamp: int) -> Snapshot:
        snap = Snapshot(state, lsn, timestamp)
        snap._explain = self._snapshot_provenance
        return snap

    def _snapshot_provenance(
        self, snap: Snapshot, page_id: int, byte: int | None, depth: int
    ) -> Provenance:
        self._live_state()
        if self._prov is None:
            self._prov = ProvenanceIndex(os.path.join(self.path, "log"), self._log_index)
        upto = self._log_index().last_delta_at(snap.lsn)
        return self._prov.resolve(
            snap._live_state(), page_id, byte, depth, snap.lsn, upto_did=upto, cache=False
        )

    def provenance(self, page_id: int, byte: int | None = None, depth: int = 32) -> Provenance:
        """Explain a page (or one byte of it): the delta that last wrote it and, for a
        derived page, the parents' last writes that fed it, recursively to ``depth``."""
        state = self._live_state()
        if self._prov is None:
            self._prov = ProvenanceIndex(os.path.join(self.path, "log"), self._log_index)
        # the cache is invalidated by this bus's own writes; a read-only bus sees another
        # process's writes, so it resolves every time
        return self._prov.resolve(state, page_id, byte, depth, self._lsn, cache=not self.readonly)
