"""The incremental garbage collector: one bounded step at a time.

A step (:meth:`Collector.step`, called by ``Bus.gc`` and the tick's maintenance phase)
does what fits in its budget, in this order:

1. **Log segments** wholly covered by the oldest kept checkpoint are dropped (one per
   step: renamed, then unlinked by the writer's :class:`~mmsb.storage.unlinker.Unlinker`
   on its thread, so a large unlink never stalls the writer) when the bus was opened
   with ``auto_compact=True``; otherwise history is kept and the step says so.
2. **Compaction** of the arena once free gaps hold at least ``min_free_fraction`` of it:
   pages at the top move down into the lowest gaps that fit (the rule in
   :mod:`mmsb.engine.gc_kernels`). Each step's moves are logged first as one RELAYOUT
   frame, then made, so the layout stays a pure function of the log. Choosing the pages
   is itself incremental: a chunk of the page table per step finds the pages above the
   packed size, then one step orders them by slot (a direct-address table, no sort, when
   page sizes are similar); a plan is dropped if the layout changes meanwhile.
3. **Shrinking** ``arena.bin`` to the capacity the packed end needs, a piece sized to the
   budget left (1-8 MiB, from the measured cost of earlier pieces) per step. Deferred
   while a reader process maps it (truncating under a reader's mapping would kill it
   with SIGBUS) and while a removed file is being unlinked (on a file system with online
   discard the truncate would wait behind that file's discards).
4. **Eviction** of cold pages: runs of live pages not accessed for ``cold_after_s``
   seconds are dropped from this process's resident memory with ``madvise``. The mapping
   is shared and file-backed, so their bytes stay in the file and page cache and fault
   back on the next access; eviction never changes data.

Live data is never freed: free space is only what the page table says is free, and moved
pages are copied before their old slot is cleared.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine import gc_kernels
from mmsb.errors import InvalidArgumentError
from mmsb.storage import layout, relayout
from mmsb.storage.arena import grown_capacity
from mmsb.storage.codec import RELAYOUT, encode_relayout
from mmsb.storage.log import list_segments
from mmsb.storage.readers import readers_attached
from mmsb.storage.retention import Retention
from mmsb.storage.state import State
from mmsb.storage.unlinker import Unlinker
from mmsb.writer.committer import Committer

I64 = npt.NDArray[np.int64]
OS_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MAX_SCAN = 16_384  # page-table rows looked at per step, whatever the speed estimate says
MAX_SWEEP = 1_024  # OS pages advised out per step (4 MiB of 4 KiB pages)
MAX_SHRINK = 8 << 20  # bytes cut from the arena file per step, at most ...
MIN_SHRINK = 1 << 20  # ... and at least, when a step has budget left for it


@dataclass(frozen=True)
class GCReport:
    """What one GC step did and how long it held the bus."""

    pause_ns: int  # wall time of the step (what the caller waited)
    bytes_reclaimed: int  # disk returned: arena file truncated + log segments dropped
    arena_bytes_compacted: int  # decrease of the arena end by this step's moves
    arena_bytes_shrunk: int
    segments_dropped: int
    log_bytes_dropped: int
    pages_moved: int
    pages_evicted: int  # cold pages in the runs advised out of resident memory
    bytes_evicted: int
    pages_examined: int = 0  # page-table rows the eviction scan looked at
    cpu_ns: int = 0  # CPU time this thread spent in the step (wall minus waiting)
    deferred: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "deferred": list(self.deferred)}


@dataclass
class _Plan:
    order: I64  # live pages that must move, by slot, highest first
    version: int  # state.layout_version the plan is valid for
    cursor: int = 0


@dataclass
class _Scan:
    """A compaction plan being built, a chunk of page ids per step."""

    version: int
    limit: int  # pages ending above this must move
    ids: I64  # candidates found so far, in ids[:found]
    found: int = 0
    next_id: int = 1
    # lowest slot and smallest aligned size among the candidates
    stats: I64 = field(default_factory=lambda: np.array([2**62, 2**62], np.int64))


@dataclass
class _Tally:
    compacted: int = 0
    shrunk: int = 0
    segments: int = 0
    log_bytes: int = 0
    moved: int = 0
    evicted_pages: int = 0
    evicted_bytes: int = 0
    examined: int = 0
    deferred: list[str] = field(default_factory=list)


class Collector:
    """Per-bus GC state between steps (cursors, the compaction plan, tuning)."""

    def __init__(
        self,
        path: str,
        state: State,
        committer: Committer,
        *,
        retention: Retention,
        auto_compact: bool,
        on_segments_dropped: Callable[[], None],
        checkpoints: Callable[[], int],
        unlinker: Unlinker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.state = state
        self.committer = committer  # relayouts are commits like any other
        self.retention = retention
        self.auto_compact = auto_compact
        self.on_segments_dropped = on_segments_dropped  # history indexes point into them
        self.checkpoints = checkpoints  # a count of checkpoints written or removed
        self._settled: int | None = None  # that count when a step last found nothing to drop
        self.clock = clock
        self._t0 = clock()
        self.cold_after_s = 30.0
        self.min_free_fraction = 0.125
        self.min_free_bytes = 1 << 20
        self._plan: _Plan | None = None
        self._scan: _Scan | None = None
        self._settled_version = -1  # layout already as packed as the rule gets it
        self._free_cache = (-1, 0)  # (layout_version, free bytes)
        # removes dropped segments off the step (the writer's, shared with compaction)
        self.unlinker = Unlinker() if unlinker is None else unlinker
        self._history_noted = -1  # oldest checkpoint LSN whose kept segments were reported
        self._evict_cursor = 1
        self._sweep_cursor = -1  # -1: marking; else the next OS page to sweep
        self._hot: npt.NDArray[np.uint8] | None = None
        self._next_pass_at = 0  # the access clock's value a paced marking pass waits for
        self._hot_cutoff = -1
        self._hot_cold_after = -1.0
        self._moves_per_ms = 1000.0
        self._last_moves = 128
        self._scan_per_ms = 200_000.0
        self._shrink_per_ms = float(4 << 20)  # arena bytes a truncate frees per ms
        self.last_phases: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.steps = 0  # steps run and their summed pauses (for Bus.stats)
        self.pause_ns = 0

    # -- the step -------------------------------------------------------------------------

    def gc(self, budget_ms: float = 1.0, *, cold_after_s: float | None = None) -> GCReport:
        """One incremental GC step of about ``budget_ms``: drop covered log segments,
        compact and shrink the arena, evict cold pages (see :mod:`mmsb.monitor.gc`).

        Never frees or changes live data; returns what it did and its pause.
        """
        if (
            isinstance(budget_ms, bool)
            or not isinstance(budget_ms, (int, float))
            or not (budget_ms > 0)
        ):
            raise InvalidArgumentError(f"budget_ms must be a positive number, got {budget_ms!r}")
        if cold_after_s is not None and not cold_after_s >= 0:
            raise InvalidArgumentError(f"cold_after_s must be >= 0, got {cold_after_s!r}")
        return self.step(float(budget_ms), cold_after_s)

    def tick(self, budget_ms: float) -> GCReport:
        """The step a tick runs (``budget_ms`` checked by the options): as :meth:`gc`, but
        a pass of the eviction scan starts at most once per second of the access clock.
        A pass records every page's accesses up to the second it runs in, so a second
        pass in the same second learns nothing; ticks run far more often than that, and
        each would otherwise spend part of its budget marking the same pages again. (An
        explicit :meth:`gc` is not paced: a caller may loop on it to evict now.)"""
        return self.step(float(budget_ms), None, paced=True)

    def step(
        self, budget_ms: float, cold_after_s: float | None = None, *, paced: bool = False
    ) -> GCReport:
        t0 = time.perf_counter_ns()
        c0 = time.thread_time_ns()
        deadline = t0 + int(budget_ms * 1e6)
        state = self.state
        state.flush_access()  # reads so far happened under the clock as it is now
        state.access_now = 1 + int(self.clock() - self._t0)
        tally = _Tally()
        self._drop_segments(tally)
        t1 = time.perf_counter_ns()
        if t1 < deadline:
            self._compact(state, deadline, tally)
        elif self._plan is not None:
            tally.deferred.append("compaction: budget spent before its turn")
        t2 = time.perf_counter_ns()
        self._shrink(state, deadline, tally)
        t3 = time.perf_counter_ns()
        if t3 < deadline:
            cold = self.cold_after_s if cold_after_s is None else cold_after_s
            self._evict(state, deadline, cold, tally, paced)
        t4 = time.perf_counter_ns()
        # where the last step's time went (segments, compaction, shrink, eviction), in ns
        self.last_phases = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
        pause = time.perf_counter_ns() - t0
        self.steps += 1
        self.pause_ns += pause
        return GCReport(
            pause_ns=pause,
            bytes_reclaimed=tally.shrunk + tally.log_bytes,
            arena_bytes_compacted=tally.compacted,
            arena_bytes_shrunk=tally.shrunk,
            segments_dropped=tally.segments,
            log_bytes_dropped=tally.log_bytes,
            pages_moved=tally.moved,
            pages_evicted=tally.evicted_pages,
            bytes_evicted=tally.evicted_bytes,
            pages_examined=tally.examined,
            cpu_ns=time.thread_time_ns() - c0,
            deferred=tuple(tally.deferred),
        )

    # -- 1. log segments ------------------------------------------------------------------

    def _drop_segments(self, tally: _Tally) -> None:
        unlinker = self.unlinker
        unlinker.sweep_leftovers(self.path)  # files renamed for unlinking before a crash
        if unlinker.busy:
            return  # the last dropped file is still being unlinked
        log_dir = os.path.join(self.path, layout.LOG_DIR)
        r = self.retention
        # the checkpoints written or removed so far: where the rules look at nothing else
        # and the last step found nothing to drop, the directories need no listing
        gen = self.checkpoints() if r.retain_bytes is None and r.retain_seconds is None else None
        if gen is not None and gen == self._settled:
            return
        found = self._droppable(log_dir, tally)
        if found is None:
            self._settled = gen
            return
        path, size = found
        self.on_segments_dropped()
        # renamed here (cheap, atomic: the segment is gone from the log at once), unlinked
        # on the unlinker's thread (freeing its blocks may take milliseconds)
        unlinker.drop(path)
        tally.segments += 1
        tally.log_bytes += size

    def _droppable(self, log_dir: str, tally: _Tally) -> tuple[str, int] | None:
        """The oldest log segment wholly covered by the oldest kept checkpoint, and its
        size, where ``auto_compact`` lets it go."""
        kept = self.retention.kept(self.path, self.committer.timestamp)
        if not kept:
            return None
        oldest = kept[-1][0]
        for (_, path), (next_first, _) in itertools.pairwise(list_segments(log_dir)):
            if next_first - 1 > oldest:
                return None
            if not self.auto_compact:
                if self._history_noted != oldest:  # said once per checkpoint, not every step
                    self._history_noted = oldest
                    tally.deferred.append("log segments covered by a checkpoint kept as "
                                          "history (auto_compact is off)")  # fmt: skip
                return None
            try:
                return path, os.path.getsize(path)
            except FileNotFoundError:
                continue
        return None

    # -- 2. compaction --------------------------------------------------------------------

    def _free_bytes(self, state: State) -> int:
        version, free = self._free_cache
        if version != state.layout_version:
            free = int(state.gap_len.sum())
            self._free_cache = (state.layout_version, free)
        return free

    def _compact(self, state: State, deadline: int, tally: _Tally) -> None:
        plan = self._current_plan(state, deadline, tally)
        if plan is None:
            return
        left_ms = (deadline - time.perf_counter_ns()) / 1e6
        # at most double the last step's moves: a speed estimate taken while the machine
        # was idle must not turn into one long step when it is busy
        k = max(16, min(int(self._moves_per_ms * left_ms * 0.4), 2 * self._last_moves))
        t0 = time.perf_counter_ns()
        end0 = state.end
        moves = relayout.plan(state, plan.order[plan.cursor :], k)
        n = int(moves.shape[1])
        if n == 0:
            self._plan = None
            self._settled_version = state.layout_version
            return

        # relayout.plan staged the new slots in the page table; the bytes move once the
        # frame is logged
        def undo() -> None:
            relayout.undo(state, moves)
            self._plan = None

        self.committer.commit(RELAYOUT, encode_relayout(moves[0], moves[2]),
                              lambda: relayout.move_bytes(state, moves), undo=undo)  # fmt: skip
        plan.cursor += n
        plan.version = state.layout_version
        if plan.cursor >= plan.order.size:
            self._plan = None
            self._settled_version = state.layout_version
        tally.moved += n
        self._last_moves = n
        tally.compacted += end0 - state.end
        took = max(time.perf_counter_ns() - t0, 1) / 1e6
        if n >= 16:
            self._moves_per_ms = 0.7 * self._moves_per_ms + 0.3 * (n / took)

    def _current_plan(self, state: State, deadline: int, tally: _Tally) -> _Plan | None:
        if self._plan is not None and self._plan.version == state.layout_version:
            return self._plan
        self._plan = None
        if state.layout_version == self._settled_version:
            return None
        free = self._free_bytes(state)
        if free < self.min_free_bytes or free < self.min_free_fraction * max(state.end, 1):
            return None
        scan = self._scan
        if scan is None or scan.version != state.layout_version:
            limit = state.end - free
            scan = self._scan = _Scan(state.layout_version, limit,
                                      np.empty(state.next_page_id, np.int64))  # fmt: skip
        n = state.next_page_id
        if scan.next_id < n:  # collect candidates, a budget's worth of ids per step
            left_ms = (deadline - time.perf_counter_ns()) / 1e6
            chunk = min(MAX_SCAN * 4, max(4096, int(self._scan_per_ms * left_ms * 0.5)))
            hi = min(n, scan.next_id + chunk)
            scan.found += gc_kernels.top_candidates(
                state.slot, state.size, state.live, scan.next_id, hi, scan.limit,
                scan.ids[scan.found :], scan.stats,
            )  # fmt: skip
            scan.next_id = hi
            tally.deferred.append("compaction: finding the pages to move")
            return None  # ordering them is the next step's work
        self._scan = None
        self._plan = order_plan(state, scan)
        return self._plan

    # -- 3. shrinking the arena file -------------------------------------------------------

    def _shrink(self, state: State, deadline: int, tally: _Tally) -> None:
        arena = state.arena
        target = grown_capacity(0, max(state.end, 1))
        if target >= arena.capacity or not hasattr(arena, "shrink"):
            return
        if self.unlinker.busy:
            # the truncate would free blocks behind the removal's (a file system with
            # online discard waits for the device on each): a later step does it
            tally.deferred.append("arena shrink: a removed file's blocks are being freed")
            return
        left_ms = (deadline - time.perf_counter_ns()) / 1e6
        if left_ms <= 0:
            tally.deferred.append("arena shrink: budget spent before its turn")
            return
        # a piece sized to the budget left: truncating frees page cache and disk blocks,
        # which takes time in proportion to the bytes cut
        piece = int(self._shrink_per_ms * left_ms * 0.5) // MIN_SHRINK * MIN_SHRINK
        target = max(target, arena.capacity - min(MAX_SHRINK, max(MIN_SHRINK, piece)))
        if readers_attached(self.path):
            tally.deferred.append(
                f"arena shrink of {arena.capacity - target} bytes (reader processes attached)"
            )
            return
        before = arena.capacity
        t0 = time.perf_counter_ns()
        arena.shrink(target)
        took_ms = max((time.perf_counter_ns() - t0) / 1e6, 1e-3)
        cut = before - arena.capacity
        tally.shrunk += cut
        if cut:
            self._shrink_per_ms = 0.7 * self._shrink_per_ms + 0.3 * (cut / took_ms)

    # -- 4. evicting cold pages -------------------------------------------------------------

    def _evict(
        self, state: State, deadline: int, cold_after_s: float, tally: _Tally, paced: bool
    ) -> None:
        """Two alternating passes: *mark* walks the page table in chunks, noting writes
        (changed epochs) as accesses and marking the OS pages of recently used pages hot;
        *sweep* then walks the arena's OS pages in windows, advising out every run of
        unmarked ones. Pages used after their chunk was marked may be evicted too: that
        costs a page fault later, never data."""
        n = state.next_page_id
        if n <= 1:
            return
        starting = self._sweep_cursor < 0 and self._evict_cursor == 1  # a marking pass
        if starting and paced and state.access_now < self._next_pass_at:
            return  # a pass already ran in this second of the access clock
        left_ms = (deadline - time.perf_counter_ns()) / 1e6
        chunk = min(MAX_SCAN, max(1024, int(self._scan_per_ms * left_ms * 0.4)))
        pages = (state.arena.capacity + OS_PAGE - 1) // OS_PAGE
        hot = self._hot
        if hot is None or hot.size != pages or self._hot_cold_after != cold_after_s:
            # a pass keeps the cutoff it started with, so it can finish under a moving clock
            hot = self._hot = np.zeros(pages, np.uint8)
            self._hot_cutoff = state.access_now - int(np.ceil(cold_after_s))
            self._hot_cold_after = cold_after_s
            self._evict_cursor = 1
            self._sweep_cursor = -1
        cutoff = self._hot_cutoff
        t0 = time.perf_counter_ns()
        if self._sweep_cursor < 0:  # marking
            lo = self._evict_cursor
            if lo == 1:
                self._next_pass_at = state.access_now + 1
            hi = min(n, lo + chunk)
            gc_kernels.refresh_access(lo, hi, state.epoch, state.seen_epoch,
                                      state.last_access, state.access_now)  # fmt: skip
            if cutoff >= 0:
                tally.evicted_pages += int(gc_kernels.mark_hot(
                    lo, hi, state.slot, state.size, state.live, state.last_access, cutoff,
                    OS_PAGE, hot,
                ))  # fmt: skip
            tally.examined += hi - lo
            self._evict_cursor = hi
            if hi >= n:
                self._evict_cursor = 1
                if cutoff >= 0:
                    self._sweep_cursor = 0
                else:  # too early for anything to be cold: the next pass takes a new cutoff
                    self._hot = None
            took = max(time.perf_counter_ns() - t0, 1) / 1e6
            self._scan_per_ms = 0.7 * self._scan_per_ms + 0.3 * ((hi - lo) / took)
            return
        end_page = min(hot.size, (state.end + OS_PAGE - 1) // OS_PAGE)
        lo = self._sweep_cursor
        hi = min(end_page, lo + MAX_SWEEP)
        starts = np.empty(max(hi - lo, 1), np.int64)
        lens = np.empty(max(hi - lo, 1), np.int64)
        runs = gc_kernels.cold_spans(hot, lo, hi, starts, lens)
        done = 0
        for i in range(runs):
            if i % 16 == 15 and time.perf_counter_ns() >= deadline:
                hi = int(starts[i])  # continue from this run next step
                tally.deferred.append("eviction: budget spent")
                break
            done += state.arena.evict(int(starts[i]) * OS_PAGE, int(lens[i]) * OS_PAGE)
        tally.evicted_bytes += done
        self._sweep_cursor = hi
        if hi >= end_page:  # pass complete: mark again from scratch
            self._hot = None


def order_plan(state: State, scan: _Scan) -> _Plan:
    """The candidates by slot, highest first: through a direct-address table when it is
    small (pages of similar sizes: O(pages), no sort), else by sorting."""
    ids = scan.ids[: scan.found]
    if ids.size == 0:
        return _Plan(ids.copy(), scan.version)
    base, width = int(scan.stats[0]), int(scan.stats[1])
    span = (state.end - base) // width + 1
    order = np.empty(ids.size, np.int64)
    if span <= 4 * ids.size:
        buckets = np.full(span, -1, np.int64)
        gc_kernels.order_by_bucket(ids, state.slot, base, width, buckets, order)
    else:
        idx = np.argsort(-state.slot[ids], kind="stable")
        gc_kernels.take(ids, idx.astype(np.int64, copy=False), order)
    return _Plan(order, scan.version)
