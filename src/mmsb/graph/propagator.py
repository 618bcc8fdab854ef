"""The propagator: the bus's dependency graph, derivations, ticks and page flags.

It owns the graph-layer state (registered derivations, the compiled plan, the pages written
since the last pass, the stale / gpu-sync / invalidated flags) and commits every change
through the one write path: edge changes as GRAPH frames through the committer, derived
pages as one batch through the writer. It learns of every other commit as a committer
listener (:meth:`Propagator.committed`), so storage stays unaware of graphs.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.errors import InvalidArgumentError
from mmsb.graph import groups
from mmsb.graph.dag import Graph, apply_edges, check_edges, graph_frame
from mmsb.graph.propagate import (
    Derivation,
    Plan,
    check_page_id,
    check_parents,
    check_weights,
    describe,
    run_pass,
)
from mmsb.graph.tick import TickReport
from mmsb.semiring import Semiring
from mmsb.storage import codec
from mmsb.storage.codec import BATCH, DELETE, GRAPH
from mmsb.storage.edges import COMPILER, CONTROL, DATA, GPU, EdgeTable
from mmsb.storage.state import State
from mmsb.types import DTYPE_NAMES, PageInfo
from mmsb.writer.committer import Change
from mmsb.writer.events import EventHub
from mmsb.writer.writer import Writer

STALE, GPU_SYNC, INVALIDATED = 1, 2, 4  # page flags set through control/gpu/compiler edges


class Propagator:
    """Graph, derivations, propagation passes and ticks of one bus.

    ``state_of()`` gives the bus's current state (read-only buses follow a writer);
    ``writable()`` checks that the bus may be written now and returns its writer.
    ``maintenance()`` and ``check_invariants()`` are the tick's later phases.
    """

    def __init__(
        self,
        state_of: Callable[[], State],
        lsn_of: Callable[[], int],
        writable: Callable[[], Writer],
        events: EventHub,
        *,
        maintenance: Callable[[], Any] | None = None,
        check_invariants: Callable[[], list[str]] | None = None,
        budget_ms: float = 16.0,
        invariant_every: int = 100,
    ) -> None:
        self._state_of = state_of
        self._lsn_of = lsn_of
        self._writable = writable
        self._events = events
        self.maintenance = maintenance
        self.check_invariants = check_invariants
        self.budget_ms = budget_ms
        self.invariant_every = invariant_every
        self.graph = Graph(state_of, self._change_edges)
        self._derivations: dict[int, Derivation] = {}
        self._deriv_version = 0  # bumped when a derivation is registered or dropped
        self._maybe_groups = False  # False: no derive_many member is registered
        self._plan: Plan | None = None
        self._plan_key: tuple[int, int] = (-1, -1)  # (edges.version, _deriv_version) of _plan
        self._dirty: list[npt.NDArray[np.int64]] = []  # pages written since the last pass
        self._dirty_lo: list[npt.NDArray[np.int64]] = []  # and the byte range of each write
        self._dirty_hi: list[npt.NDArray[np.int64]] = []
        self._dirty_lsn = 0  # the last commit that added to _dirty
        self._seeds: list[npt.NDArray[np.int64]] = []  # parents of new derivations
        self._flags = np.zeros(0, np.uint8)  # per page: STALE | GPU_SYNC | INVALIDATED
        # (edge table, its version, whether it has an edge that is not DATA)
        self._flag_edges: tuple[EdgeTable, int, bool] | None = None
        self._ticks = 0
        self.after_tick: list[Callable[[TickReport], None]] = []  # e.g. the stats' histogram
        self._propagating = False  # committing a pass's derived batch: not new input

    # -- edges and derivations ----------------------------------------------------------

    def _change_edges(
        self, rows: list[tuple[int, int]], kind: int, *, add: bool, child_of: int | None = None
    ) -> int:
        """Check edge changes, then commit them as one GRAPH frame; return how many changed
        something. The graph is changed only after the frame is logged."""
        writer = self._writable()
        state = writer.state
        done = check_edges(state, rows, kind, add)
        if not done:
            return 0
        writer.committer.commit(GRAPH, graph_frame(done, kind, add),
                                lambda: apply_edges(state, done, kind, add))  # fmt: skip
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
        child, parents = self._ids(child, parents)
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
        child, parents = self._ids(child, parents)
        pids = check_parents(parents)
        w = check_weights(weights, len(pids))
        state = self._state_of()
        c = state.require(child)
        if state.records and any(p in state.records for p in (c, *pids)):
            raise InvalidArgumentError(
                "semiring derivations work on numeric pages and a page given has a record "
                "dtype; compute record fields with derive or derive_many"
            )
        semiring.check_dtype(DTYPE_NAMES[int(state.dtype[c])])
        for p in pids:
            state.require(p)
            if state.size[p] != state.size[c] or state.dtype[p] != state.dtype[c]:
                raise InvalidArgumentError(
                    f"semiring parent {p} and child {c} differ in size or dtype"
                )
        self._register(Derivation(c, pids, describe(None, semiring, name),
                                  semiring=semiring, weights=w))  # fmt: skip

    def derive_many(
        self,
        children: Sequence[int] | npt.ArrayLike,
        fn: Callable[[npt.NDArray[Any]], npt.NDArray[Any]],
        parents: npt.ArrayLike,
        name: str | None = None,
    ) -> None:
        """Compute the ``n`` pages ``children`` with one call of ``fn`` per tick: child
        ``children[i]`` from the pages ``parents[i, :]`` (a 2-D array of ``n`` rows of
        ``k`` page ids). All parents share one size and dtype, and so do all children.

        At a tick where a parent of any member changed, ``fn(stacked)`` gets the parents as
        one read-only array of shape ``(m, k, elems)`` in their dtype (``m`` members, in
        the order given; ``elems`` elements per parent page) and returns an array of shape
        ``(m, child_elems)`` in the children's dtype. Row ``i`` must depend only on row
        ``i``: the members whose parents did not change keep their bytes, as ``n`` calls of
        :meth:`derive` would. Each member is an ordinary derivation otherwise (edges,
        provenance, ``underive``, deletes); the edges are logged as one graph change.
        """
        if not callable(fn):
            raise InvalidArgumentError("derive_many function is not callable")
        children, parents = self._ids(children, parents)
        kids, rows = groups.check_many(self._writable().state, children, parents)
        g = groups.Group(fn, describe(fn, None, name))
        pairs = zip(kids.tolist(), map(tuple, rows.tolist()), strict=True)
        self._register(
            *(Derivation(c, r, g.name, group=g, row=i) for i, (c, r) in enumerate(pairs))
        )

    def _register(self, *ds: Derivation) -> None:
        """Register derivations as one logged graph change: each replaces its child's data
        parents; all are computed at the next tick."""
        state = self._writable().state
        gone: list[tuple[int, int]] = []
        fresh: list[tuple[int, int]] = []
        for d in ds:
            c = state.require(d.child)
            if not d.parents:
                raise InvalidArgumentError(f"derivation of page {c} needs at least one parent")
            if d.group is None:  # derive_many checked its own, all at once
                if len(set(d.parents)) != len(d.parents):
                    raise InvalidArgumentError(f"derivation of page {c} lists a parent twice")
                for p in d.parents:
                    state.require(p)
            old = state.edges.parents.get(c, {})
            old_data = {p for p, mask in old.items() if mask & (1 << DATA)}
            gone += [(p, c) for p in sorted(old_data.difference(d.parents))]
            fresh += [(p, c) for p in d.parents if p not in old_data]

        def check() -> None:  # with the edges checked, before anything is logged
            if ds[0].group is None and not (self._maybe_groups and any(
                groups.reaches_a_group(state, d.child, self._derivations) for d in ds
            )):  # fmt: skip
                return  # no group depends on the new derivations: no group can break
            after = dict(self._derivations)
            after.update((d.child, d) for d in ds)
            groups.schedule(after)

        self._replace_parents(state, gone, fresh, check)
        self._maybe_groups |= ds[0].group is not None
        for d in ds:
            self._derivations[d.child] = d
        self._deriv_version += 1
        # computed at the next tick; a seed, not a write: no control/gpu/compiler flags
        self._seeds.append(np.fromiter(itertools.chain.from_iterable(d.parents for d in ds),
                                       np.int64))  # fmt: skip

    def _replace_parents(
        self, state: State, gone: list[tuple[int, int]], fresh: list[tuple[int, int]],
        check: Callable[[], None],
    ) -> None:  # fmt: skip
        """Remove the data edges ``gone`` and add ``fresh`` as one GRAPH frame: a
        re-registered derivation swaps its parents in one commit, all or nothing. ``check``
        runs once the edges are found acyclic, before the frame is logged."""
        for p, ch in gone:  # the additions are checked without the edges that go
            state.edges.remove(p, ch, DATA)
        try:
            added = check_edges(state, fresh, DATA, True)
        finally:
            for p, ch in reversed(gone):
                state.edges.add(p, ch, DATA)
        check()
        if not gone and not added:
            return
        rows = gone + added
        ops = np.array([codec.EDGE_REMOVE] * len(gone) + [codec.EDGE_ADD] * len(added), np.uint8)
        pieces = codec.encode_graph(ops, np.full(len(rows), DATA, np.uint8),
                                    np.array([p for p, _ in rows], np.int64),
                                    np.array([ch for _, ch in rows], np.int64))  # fmt: skip

        def apply() -> None:
            apply_edges(state, gone, DATA, False)
            apply_edges(state, added, DATA, True)

        self._writable().committer.commit(GRAPH, pieces, apply)

    def _ids(self, child: Any, parents: Any) -> tuple[Any, Any]:
        """``child`` and ``parents`` with page names replaced by the ids they name now."""
        state = self._state_of()
        return state.ids_of(child), state.ids_of(parents)

    def underive(self, child: int) -> None:
        """Forget ``child``'s derivation (its data edges stay; remove them with the graph)."""
        child = self._state_of().ids_of(child)
        if self._derivations.pop(int(child), None) is not None:
            self._deriv_version += 1

    def derivations(self) -> dict[int, str]:
        """Registered derivations: child page -> name."""
        return {c: d.name for c, d in sorted(self._derivations.items())}

    def committed(self, change: Change) -> None:
        """Committer listener: after a delta commit, the rows' pages and byte ranges are
        pending for the next pass and their stale/invalidated flags clear; after a delete,
        the derivations of or from the deleted pages are dropped."""
        if change.ftype == BATCH:
            pages = change.pages
            assert pages is not None
            if self._state_of().edges.count and not self._propagating:
                n = pages.size
                self._dirty.append(pages.copy())
                self._dirty_lo.append(np.array(np.broadcast_to(change.lo, n), np.int64))
                self._dirty_hi.append(np.array(np.broadcast_to(change.hi, n), np.int64))
                self._dirty_lsn = change.lsn
            if self._flags.size:
                ids = pages[pages < self._flags.size]
                self._flags[ids] &= np.uint8(~(STALE | INVALIDATED) & 0xFF)
        elif change.ftype == DELETE and self._derivations:
            assert change.pages is not None
            dead = set(change.pages.tolist())
            for c, d in list(self._derivations.items()):
                # the deleted pages' own derivations, and those that read a deleted page
                if c in dead or not dead.isdisjoint(d.parents):
                    del self._derivations[c]
                    self._deriv_version += 1

    @property
    def tick_budget_ms(self) -> float:
        """The time a tick may take before its report says ``overrun`` (settable; > 0)."""
        return self.budget_ms

    @tick_budget_ms.setter
    def tick_budget_ms(self, ms: float) -> None:
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not ms > 0:
            raise InvalidArgumentError(f"tick_budget_ms must be a number > 0, got {ms!r}")
        self.budget_ms = float(ms)

    def _plan_for(self, state: State) -> Plan:
        key = (state.edges.version, self._deriv_version)
        if self._plan is None or self._plan_key != key:
            # drop derivations the graph no longer supports (a parent deleted or unlinked)
            for c, d in list(self._derivations.items()):
                if not state.is_live(c) or any(not state.edges.has(p, c, DATA) for p in d.parents):
                    del self._derivations[c]
                    self._deriv_version += 1
            self._plan = Plan(state, self._derivations)
            self._maybe_groups = groups.has_groups(self._derivations)
            self._plan_key = key
        return self._plan

    def tick(self, batch: DeltaBatch | None = None) -> TickReport:
        """Commit ``batch`` (if any) together with everything it and the changes since the
        last tick derive, as one commit (one LSN: no reader, snapshot, ``at()`` or replay
        sees the inputs without the derived pages they cause), then run the maintenance
        step and, every ``invariant_every`` ticks, the invariants.

        If a derivation raises (:class:`PropagationError`, naming it) or the log refuses the
        frame (:class:`LogWriteError`), nothing of the tick is committed, ``batch``
        included; changes committed before the tick stay pending for the next one.
        """
        writer = self._writable()
        state = writer.state
        t0 = time.perf_counter_ns()
        n_in = 0 if batch is None else len(batch)
        ins = [batch] if batch is not None and n_in else []  # the tick's own input rows
        timing = [0]
        passed: list[Any] = []

        def derive() -> DeltaBatch | None:
            t = time.perf_counter_ns()
            if not (self._dirty or self._seeds or (n_in and state.edges.count)):
                return None
            # the cause: this tick's own commit when it has inputs, else the last commit
            # that wrote a pending page (or, for a pass that only computes newly registered
            # derivations, the current LSN)
            if n_in:
                cause = self._lsn_of() + 1
            else:
                cause = self._dirty_lsn if self._dirty else self._lsn_of()
            seeds = [s[s < state.next_page_id] for s in self._seeds]
            written = _join([*self._dirty, *(b.page_ids for b in ins), *seeds])
            lo = _join([*self._dirty_lo, *(b.offsets for b in ins),
                        *(np.zeros(s.size, np.int64) for s in seeds)])  # fmt: skip
            hi = _join([*self._dirty_hi, *(b.offsets + b.lengths for b in ins),
                        *(state.size[s] for s in seeds)])  # fmt: skip
            keep = written < state.next_page_id
            if not keep.all():
                written, lo, hi = written[keep], lo[keep], hi[keep]
            result = run_pass(self._plan_for(state), state, written, lo, hi, cause)
            n_written = sum(d.size for d in self._dirty) + n_in
            passed[:] = [written[: int(keep[:n_written].sum())], result]  # seeds: not writes
            timing[0] = time.perf_counter_ns() - t
            return result.batch

        # the tick's rows are propagated within it: not pending for the next one
        self._propagating = True
        try:
            done = writer.commit_tick(batch, derive)
        finally:
            self._propagating = False
        recomputed = changed_n = derived = flagged = 0
        if passed:
            written, result = passed
            recomputed = result.recomputed
            changed_n = int(result.changed_pages.size)
            derived = 0 if done is None else done.count - n_in
            # only now: a tick that committed nothing leaves earlier changes pending
            for pending in (self._dirty, self._dirty_lo, self._dirty_hi, self._seeds):
                pending.clear()
            flagged = self._flag_children(written, result.changed_pages)
        elif n_in:
            flagged = self._flag_children(batch.page_ids) if batch is not None else 0
        t2 = time.perf_counter_ns()
        t1 = t2 - timing[0]  # the phases as before: committing, then propagating
        t2 = time.perf_counter_ns()
        gc_report = None if self.maintenance is None else self.maintenance()
        t3 = time.perf_counter_ns()
        self._ticks += 1
        checked = False
        failures: list[str] = []
        if self.invariant_every and self._ticks % self.invariant_every == 0:
            checked = True
            failures = [] if self.check_invariants is None else self.check_invariants()
        t4 = time.perf_counter_ns()
        phases = {"commit": t1 - t0, "propagate": t2 - t1, "maintenance": t3 - t2,
                  "invariants": t4 - t3}  # fmt: skip
        total = t4 - t0
        budget = int(self.budget_ms * 1e6)
        lsn = self._lsn_of()
        report = TickReport(
            self._ticks, lsn, n_in, derived, recomputed, changed_n, flagged, phases,
            total, budget, total > budget, checked, failures, gc_report,
        )  # fmt: skip
        for hook in self.after_tick:
            hook(report)
        if self._events.wants("tick_done"):
            self._events.emit("tick_done", lsn, None, report=report)
        return report

    def _flag_children(self, *written: npt.NDArray[np.int64]) -> int:
        """Set the stale / gpu-sync / invalidated flags of the control, gpu and compiler
        children of the pages in ``written``; emit one event per newly flagged page."""
        state = self._state_of()
        edges = state.edges
        if edges.count == 0 or not self._has_flag_edges(edges):
            return 0
        pages = np.concatenate(written) if len(written) > 1 else written[0]
        if pages.size == 0:
            return 0
        p, c, k = edges.columns()
        sel = k != DATA
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
                self._events.emit(event, self._lsn_of(), new)
        return total

    def _has_flag_edges(self, edges: EdgeTable) -> bool:
        """Whether ``edges`` holds an edge of a kind other than DATA (remembered for the
        table's version: a graph of data edges only, the usual case, pays for the scan
        once, not every tick)."""
        known = self._flag_edges
        if known is not None and known[0] is edges and known[1] == edges.version:
            return known[2]
        has = bool((edges.columns()[2] != DATA).any())
        self._flag_edges = (edges, edges.version, has)
        return has

    def page(self, page_id: int) -> PageInfo:
        info = self._state_of().info(page_id)  # what StateView.page gives
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
        pid = self._state_of().require(page_id)
        if pid < self._flags.size:
            self._flags[pid] &= np.uint8(~GPU_SYNC & 0xFF)


def _join(arrays: list[npt.NDArray[np.int64]]) -> npt.NDArray[np.int64]:
    """The arrays joined (the one array itself when there is one: read only)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
