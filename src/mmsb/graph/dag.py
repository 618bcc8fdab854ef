"""The dependency graph's API: queries over a state's edges, and logged changes on a bus.

:class:`GraphView` reads the edges of any state (a live bus or an ``at(lsn)`` snapshot);
:class:`Graph` (``bus.graph``) adds the changes, each logged as a GRAPH frame before it is
applied, so checkpoints, recovery and replay restore the graph like any other state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine.graphkernels import topo_order
from mmsb.errors import CycleError, InvalidArgumentError
from mmsb.storage import codec
from mmsb.storage.edges import DATA, KINDS, kind_code
from mmsb.storage.state import State

I64 = npt.NDArray[np.int64]
EDGE_DTYPE = np.dtype([("parent", "<i8"), ("child", "<i8"), ("kind", "u1")])


@dataclass(frozen=True)
class GraphReport:
    """What :meth:`GraphView.validate` found, and how long each check took."""

    ok: bool
    nodes: int
    edges: int
    acyclic: bool
    dead_endpoints: list[tuple[int, int, str]]  # edges naming a page that is not live
    cyclic_nodes: int  # pages on or behind a cycle (0 when acyclic)
    timings_ns: dict[str, int] = field(default_factory=dict)

    def explain(self) -> str:
        lines = [
            f"graph: {self.nodes} pages, {self.edges} edges: " + ("OK" if self.ok else "INVALID"),
            f"  acyclic: {'yes' if self.acyclic else f'no ({self.cyclic_nodes} pages involved)'}",
            f"  edges to missing pages: {len(self.dead_endpoints)}",
        ]
        lines += [f"    {p} -> {c} ({k})" for p, c, k in self.dead_endpoints[:10]]
        total = sum(self.timings_ns.values())
        lines.append(f"  checked in {total / 1e6:.3f} ms")
        return "\n".join(lines)


def _kinds(kind: str | None) -> int:
    """Bitmask of the kinds a query follows (None: all)."""
    return (1 << len(KINDS)) - 1 if kind is None else 1 << kind_code(kind)


class GraphView:
    """Read-only queries over the edges of a state."""

    def __init__(self, state_of: Callable[[], State]) -> None:
        self._state_of = state_of

    @property
    def _edges(self) -> Any:
        return self._state_of().edges

    def __len__(self) -> int:
        return int(self._edges.count)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {len(self)} edges>"

    def edges(self) -> npt.NDArray[np.void]:
        """Every edge as a structured array (``parent``, ``child``, ``kind`` code indexing
        :data:`KINDS`), sorted by parent, child, kind."""
        p, c, k = self._edges.sorted_rows()
        out = np.empty(p.size, EDGE_DTYPE)
        out["parent"], out["child"], out["kind"] = p, c, k
        return out

    def has_edge(self, parent: int, child: int, kind: str = "data") -> bool:
        p, c = _pair(parent, child)
        return bool(self._edges.has(p, c, kind_code(kind)))

    def _neighbours(self, table: dict[int, dict[int, int]], page: int, kind: str | None) -> I64:
        mask = _kinds(kind)
        pid = _pair(page, page)[0]
        return np.array(sorted(n for n, m in table.get(pid, {}).items() if m & mask), np.int64)

    def parents(self, page: int, kind: str | None = None) -> I64:
        """Direct parents of ``page`` (ascending), over edges of ``kind`` (None: any)."""
        return self._neighbours(self._edges.parents, page, kind)

    def children(self, page: int, kind: str | None = None) -> I64:
        """Direct children of ``page`` (ascending), over edges of ``kind`` (None: any)."""
        return self._neighbours(self._edges.children, page, kind)

    def _reach(self, table: dict[int, dict[int, int]], page: int, kind: str | None) -> I64:
        mask = _kinds(kind)
        seen: set[int] = set()
        stack = [_pair(page, page)[0]]
        while stack:
            v = stack.pop()
            for w, m in table.get(v, {}).items():
                if m & mask and w not in seen:
                    seen.add(w)
                    stack.append(w)
        return np.array(sorted(seen), dtype=np.int64)

    def ancestors(self, page: int, kind: str | None = None) -> I64:
        """Every page ``page`` depends on, directly or not (ascending)."""
        return self._reach(self._edges.parents, page, kind)

    def descendants(self, page: int, kind: str | None = None) -> I64:
        """Every page that depends on ``page``, directly or not (ascending)."""
        return self._reach(self._edges.children, page, kind)

    def topo_order(self) -> I64:
        """Every page that has an edge, parents before children; ties broken by the smaller
        page id first (Kahn's algorithm with a min-heap), so the order is deterministic."""
        p, c, _ = self._edges.columns()
        order, acyclic = topo_order(p, c)
        if not acyclic:
            raise CycleError("the graph holds a cycle; run validate() for details", [])
        return order

    def validate(self) -> GraphReport:
        """Check acyclicity and that every edge joins two live pages; time each check."""
        state = self._state_of()
        p, c, k = state.edges.columns()
        t0 = time.perf_counter_ns()
        order, acyclic = topo_order(p, c)
        nodes = int(np.unique(np.concatenate((p, c))).size) if not acyclic else order.size
        t1 = time.perf_counter_ns()
        n = state.next_page_id
        bad = (p >= n) | (c >= n)
        ok_ids = ~bad
        bad[ok_ids] = ~(state.live[p[ok_ids]] & state.live[c[ok_ids]])
        dead = [
            (int(a), int(b), KINDS[int(x)]) for a, b, x in zip(p[bad], c[bad], k[bad], strict=True)
        ]
        t2 = time.perf_counter_ns()
        return GraphReport(
            ok=acyclic and not dead,
            nodes=int(nodes),
            edges=int(p.size),
            acyclic=acyclic,
            dead_endpoints=dead,
            cyclic_nodes=int(nodes - order.size),
            timings_ns={"cycle_check": t1 - t0, "endpoints": t2 - t1},
        )


class Graph(GraphView):
    """``bus.graph``: the live graph. Every change is logged before it is applied.

    Deleting a page drops every edge that touches it (and its derivation); this is part of
    the delete's effect, so replay reproduces it.
    """

    def __init__(self, state_of: Callable[[], State], change: Callable[..., int]) -> None:
        super().__init__(state_of)
        self._change = change  # Propagator._change_edges: checks, logs, then applies

    def add_edge(self, parent: int, child: int, kind: str = "data") -> bool:
        """Add ``parent -> child``; False if that edge already exists.

        Raises :class:`CycleError` (with the cycle) for a self-loop or an edge that would
        close a cycle, :class:`PageNotFoundError` for a page that is not live; the graph
        is unchanged in both cases. A ``data`` edge into a derived page drops its
        derivation (see :meth:`mmsb.Bus.derive`): the page keeps its bytes until it is
        derived again.
        """
        return self._change([_pair(parent, child)], kind_code(kind), add=True) == 1

    def add_edges(
        self, edges: Iterable[tuple[int, int]] | npt.ArrayLike, kind: str = "data"
    ) -> int:
        """Add many edges of one kind in one logged change, all or none; return how many
        were new. Duplicates of existing edges are skipped."""
        return self._change(_rows(edges), kind_code(kind), add=True)

    def remove_edge(self, parent: int, child: int, kind: str = "data") -> None:
        """Remove ``parent -> child``; :class:`InvalidArgumentError` if there is none."""
        self._change([_pair(parent, child)], kind_code(kind), add=False)

    def remove_edges(
        self, edges: Iterable[tuple[int, int]] | npt.ArrayLike, kind: str = "data"
    ) -> None:
        """Remove many edges of one kind in one logged change, all or none."""
        self._change(_rows(edges), kind_code(kind), add=False)


def _pair(parent: Any, child: Any) -> tuple[int, int]:
    for v in (parent, child):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InvalidArgumentError(f"page ids must be integers, got {v!r}")
    return int(parent), int(child)


def _rows(edges: Any) -> list[tuple[int, int]]:
    try:
        arr = np.asarray(edges)
        if arr.size == 0:
            return []
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
            raise ValueError
    except (ValueError, TypeError):
        raise InvalidArgumentError(
            "edges must be (parent, child) pairs of integer page ids"
        ) from None
    return [(int(p), int(c)) for p, c in arr.tolist()]


def check_edges(
    state: State, rows: list[tuple[int, int]], kind: int, add: bool
) -> list[tuple[int, int]]:
    """Validate edge changes against ``state`` in order (each row sees the ones before it);
    return the rows that change something. ``state`` is left as it was: the rows are tried
    and taken back, and :func:`apply_edges` makes them once their frame is logged."""
    edges = state.edges
    done: list[tuple[int, int]] = []
    staged: list[tuple[int, int]] = []  # rows tried on ``edges``, taken back at the end
    last = len(rows) - 1
    try:
        for i, (p, c) in enumerate(rows):
            state.require(p)
            state.require(c)
            if add:
                if edges.has(p, c, kind):
                    continue
                cycle = edges.find_cycle(p, c)
                if cycle is not None:
                    path = " -> ".join(map(str, [*cycle, cycle[0]]))
                    raise CycleError(
                        f"edge {p} -> {c} ({KINDS[kind]}) would close the cycle {path}", cycle
                    )
            elif not edges.has(p, c, kind):
                raise InvalidArgumentError(f"no {KINDS[kind]} edge {p} -> {c} to remove")
            done.append((p, c))
            if i < last:  # later rows are checked with this one in place (the last need not)
                if add:
                    edges.add(p, c, kind)
                else:
                    edges.remove(p, c, kind)
                staged.append((p, c))
    finally:
        apply_edges(state, staged[::-1], kind, not add)
    return done


def apply_edges(state: State, rows: list[tuple[int, int]], kind: int, add: bool) -> None:
    """Add (or remove) each checked row's edge, in order."""
    edges = state.edges
    for p, c in rows:
        if add:
            edges.add(p, c, kind)
        else:
            edges.remove(p, c, kind)


def graph_frame(done: list[tuple[int, int]], kind: int, add: bool) -> list[bytes | memoryview]:
    return codec.encode_graph_pairs(done, kind, codec.EDGE_ADD if add else codec.EDGE_REMOVE)


__all__ = ["DATA", "EDGE_DTYPE", "KINDS", "Graph", "GraphReport", "GraphView"]
