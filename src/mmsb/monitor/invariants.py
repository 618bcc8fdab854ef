"""Invariant checks over a live bus: built-ins that can fail, plus user-registered ones.

Built-ins (each has a test that injects its violation and sees it, and only it, fail):

``epochs_monotone``
    no live page's epoch is below the value seen by the previous run, none is negative.
``page_table``
    live pages have valid sizes (> 0, a multiple of the dtype's itemsize), dtype and
    location codes, and arena slots inside the arena that do not overlap.
``graph``
    the dependency graph is acyclic and every edge joins two live pages.
``no_orphan_deltas``
    every logged delta targets a page that was live at its commit (the log is scanned
    incrementally: each run reads only the frames committed since the previous run).
``replay_matches``
    replaying the log from the newest checkpoint gives the live page bytes (all pages, or
    a sample of 256 when ``sample=True``); epochs, table and graph are the other checks'.
``finite_floats``
    pages created with metadata ``{"finite": true}`` hold no NaN or infinity.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsb.errors import InvalidArgumentError
from mmsb.graph.dag import GraphReport
from mmsb.storage import codec, layout
from mmsb.storage.log import LogReader, list_segments
from mmsb.storage.replay import state_at
from mmsb.storage.rowcheck import aligned
from mmsb.storage.state import State
from mmsb.types import DTYPE_ITEMSIZE, DTYPE_NAMES, LOCATIONS

Check = Callable[[Any], Any]  # fn(bus) -> bool | (bool, detail)


@dataclass(frozen=True)
class InvariantResult:
    name: str
    passed: bool
    detail: str
    ns: int


def _fmt(ids: Any, limit: int = 8) -> str:
    ids = np.asarray(ids).tolist()
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(map(str, ids[:limit])) + more


class Invariants:
    """``bus.invariants``: run the built-in and registered checks."""

    BUILTINS = (
        "epochs_monotone",
        "page_table",
        "graph",
        "no_orphan_deltas",
        "replay_matches",
        "finite_floats",
    )

    def __init__(
        self,
        path: str,
        state_of: Callable[[], State],
        lsn_of: Callable[[], int],
        validate_graph: Callable[[], GraphReport],
        owner: object,
    ) -> None:
        self._path = path
        self._state_of = state_of  # the bus's current state (raises once it is closed)
        self._lsn_of = lsn_of
        self._validate_graph = validate_graph
        self._owner = owner  # what registered checks receive: the bus
        self._user: dict[str, Check] = {}
        self._epochs = np.zeros(0, np.int64)
        self._scan_lsn = -1  # frames <= this were checked for orphans
        self._scan_live = np.zeros(0, bool)
        self.runs = 0

    def register(self, name: str, fn: Check) -> None:
        """Add a check ``fn(bus)`` returning True/False, or (passed, detail); raising
        counts as a failure whose detail is the exception."""
        if not isinstance(name, str) or not name or name in self.BUILTINS:
            raise InvalidArgumentError(f"invalid or reserved invariant name {name!r}")
        if not callable(fn):
            raise InvalidArgumentError("an invariant must be callable")
        self._user[name] = fn

    def unregister(self, name: str) -> None:
        self._user.pop(name, None)

    def names(self) -> list[str]:
        return [*self.BUILTINS, *self._user]

    def failing_sample(self) -> list[str]:
        """The names of the invariants that fail on a sampled run (what a tick checks)."""
        return [r.name for r in self.run(sample=True) if not r.passed]

    def run(self, sample: bool = False, names: list[str] | None = None) -> list[InvariantResult]:
        """Run the checks (all, or ``names``); never raises for a failing check."""
        wanted = self.names() if names is None else names
        unknown = [n for n in wanted if n not in self.names()]
        if unknown:
            raise InvalidArgumentError(f"unknown invariants: {', '.join(unknown)}")
        self._state_of()
        self.runs += 1
        out = []
        for name in wanted:
            t0 = time.perf_counter_ns()
            try:
                if name in self.BUILTINS:
                    res = getattr(self, f"_check_{name}")(sample)
                else:
                    res = self._user[name](self._owner)
                passed, detail = res if isinstance(res, tuple) else (bool(res), "")
            except Exception as exc:
                passed, detail = False, f"{type(exc).__name__}: {exc}"
            out.append(InvariantResult(name, bool(passed), str(detail),
                                       time.perf_counter_ns() - t0))  # fmt: skip
        return out

    # -- built-ins --------------------------------------------------------------------------

    def _check_epochs_monotone(self, sample: bool) -> tuple[bool, str]:
        st = self._state_of()
        n = st.next_page_id
        ep = st.epoch[:n]
        live = st.live[:n]
        neg = np.flatnonzero(live & (ep < 0))
        prev = self._epochs
        m = min(prev.size, n)
        back = np.flatnonzero(live[:m] & (ep[:m] < prev[:m]))
        self._epochs = np.maximum(ep.copy(), np.pad(prev[:m], (0, n - m)))
        if neg.size:
            return False, f"negative epochs on pages {_fmt(neg)}"
        if back.size:
            return False, (
                f"epochs went backwards on pages {_fmt(back)} (page {int(back[0])}: "
                f"{int(prev[back[0]])} -> {int(ep[back[0]])})"
            )
        return True, f"{int(live.sum())} pages"

    def _check_page_table(self, sample: bool) -> tuple[bool, str]:
        st = self._state_of()
        ids = st.live_ids()
        if ids.size == 0:
            return True, "no pages"
        size, dt, loc, slot = st.size[ids], st.dtype[ids], st.loc[ids], st.slot[ids]
        bad_dt = ids[dt >= len(DTYPE_NAMES)]
        if bad_dt.size:
            return False, f"invalid dtype codes on pages {_fmt(bad_dt)}"
        bad_size = ids[(size <= 0) | (size % DTYPE_ITEMSIZE[dt] != 0)]
        if bad_size.size:
            return False, f"invalid sizes on pages {_fmt(bad_size)}"
        bad_loc = ids[loc >= len(LOCATIONS)]
        if bad_loc.size:
            return False, f"invalid locations on pages {_fmt(bad_loc)}"
        ends = slot + aligned(size)
        outside = ids[(slot < 0) | (ends > st.end) | (slot % 8 != 0)]
        if outside.size:
            return False, f"slots outside the arena or misaligned on pages {_fmt(outside)}"
        order = np.argsort(slot, kind="stable")
        overlap = np.flatnonzero(ends[order][:-1] > slot[order][1:])
        if overlap.size:
            a, b = ids[order][overlap[0]], ids[order][overlap[0] + 1]
            return False, f"{overlap.size} overlapping slots (first: pages {int(a)} and {int(b)})"
        return True, f"{ids.size} pages, arena end {st.end}"

    def _check_graph(self, sample: bool) -> tuple[bool, str]:
        rep = self._validate_graph()
        if not rep.acyclic:
            return False, f"cycle among {rep.cyclic_nodes} pages"
        if rep.dead_endpoints:
            p, c, k = rep.dead_endpoints[0]
            return (
                False,
                f"{len(rep.dead_endpoints)} edges to missing pages (first {p} -> {c}, {k})",
            )
        return True, f"{rep.edges} edges, acyclic"

    def _check_no_orphan_deltas(self, sample: bool) -> tuple[bool, str]:
        log_dir = os.path.join(self._path, layout.LOG_DIR)
        if self._scan_lsn < 0:
            segs = list_segments(log_dir)
            first = segs[0][0] if segs else 1
            if first > 1:
                # compacted: the history before the first retained segment is gone; take the
                # state at that point from replay
                base, _ = state_at(self._path, first - 1)
                self._scan_live = base.live[: base.next_page_id].copy()
                base.arena.close()
            self._scan_lsn = first - 1
        live = self._scan_live
        frames = deltas = 0
        head = self._lsn_of()
        orphans: list[tuple[int, int]] = []
        for frame in LogReader(log_dir).frames(after_lsn=self._scan_lsn):
            if frame.lsn > head:
                break
            frames += 1
            rec = codec.decode(frame.type, frame.payload)
            if isinstance(rec, codec.CreateRecord):
                end = rec.first + rec.n
                if live.size < end:
                    live = np.pad(live, (0, max(end, 2 * live.size) - live.size))
                live[rec.first : end] = True
            elif isinstance(rec, codec.DeleteRecord):
                live[rec.ids] = False
            elif isinstance(rec, codec.DecodedBatch):
                pids = rec.batch.page_ids
                deltas += pids.size
                ok = pids < live.size
                ok[ok] = live[pids[ok]]
                if not ok.all():
                    orphans.extend((frame.lsn, int(p)) for p in pids[~ok][:8].tolist())
            self._scan_lsn = frame.lsn
        self._scan_live = live
        if orphans:
            lsn, page = orphans[0]
            return False, f"{len(orphans)} orphan deltas (first: LSN {lsn}, page {page})"
        return True, f"{frames} new frames, {deltas} deltas scanned"

    def _check_replay_matches(self, sample: bool) -> tuple[bool, str]:
        st, lsn = self._state_of(), self._lsn_of()
        replayed, _ = state_at(self._path, lsn)
        try:
            ids = st.live_ids()
            rids = replayed.live_ids()
            if not np.array_equal(ids, rids):
                extra = np.setxor1d(ids, rids)
                return False, f"live page sets differ (pages {_fmt(extra)})"
            if sample and ids.size > 256:
                rng = np.random.default_rng(self.runs)
                ids = np.sort(rng.choice(ids, 256, replace=False))
            if not np.array_equal(st.size[ids], replayed.size[ids]):
                return False, "page sizes differ from the replayed state"
            a, b = st.gather(ids), replayed.gather(ids)
            if not np.array_equal(a, b):
                sizes = st.size[ids]
                bounds = np.concatenate(([0], np.cumsum(sizes)))
                diff = np.flatnonzero(a != b)
                pages = ids[np.searchsorted(bounds, diff, side="right") - 1]
                return False, (
                    f"{np.unique(pages).size} pages differ from replay "
                    f"(first: page {int(pages[0])})"
                )
            return True, f"{ids.size} pages match replay at LSN {lsn}"
        finally:
            replayed.arena.close()

    def _check_finite_floats(self, sample: bool) -> tuple[bool, str]:
        st = self._state_of()
        bad: list[int] = []
        checked = 0
        for pid, text in st.metadata.items():
            meta = json.loads(text)
            if not (isinstance(meta, dict) and meta.get("finite") is True):
                continue
            name = DTYPE_NAMES[int(st.dtype[pid])]
            if not name.startswith(("float", "complex")):
                continue
            checked += 1
            if not np.isfinite(st.read(pid)).all():
                bad.append(pid)
        if bad:
            return False, f"NaN or infinity in pages {_fmt(sorted(bad))}"
        return True, f"{checked} declared-finite pages"
