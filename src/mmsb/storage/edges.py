"""The dependency graph's edges, as part of the state (logged, checkpointed, replayed).

Edges are typed ``(parent, child, kind)``; at most one edge per triple. They are held twice:

* as columns (``parent``, ``child``, ``kind`` arrays, rows in no particular order, removal by
  swapping the last row in), which the compiled kernels scan for ``validate`` and
  ``topo_order``;
* as adjacency maps (``children[p]`` and ``parents[c]``: neighbour -> bitmask of kinds), for
  the incremental queries and the cycle check. The maps are an index over the columns: a
  copy or a load leaves them to be built on first use (a checkpoint's copy, taken on the
  commit path, only ever encodes the columns; copying the maps cost about 10 ms for
  40,000 edges).

The graph is acyclic over all kinds together. The cycle check is incremental (Pearce and
Kelly's dynamic topological order, 2006): every node keeps a rank with ``rank[p] <
rank[c]`` for each edge; an insertion that already respects the ranks costs O(1); otherwise
only the nodes whose ranks lie between the two endpoints are searched and re-ranked.
Object counts grow with the number of edges, never with the number of pages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine.graphkernels import topo_order

KINDS: tuple[str, ...] = ("data", "control", "gpu", "compiler")
DATA, CONTROL, GPU, COMPILER = 0, 1, 2, 3
I64 = npt.NDArray[np.int64]
Adjacency = dict[int, dict[int, int]]
Maps = tuple[dict[tuple[int, int, int], int], Adjacency, Adjacency]  # rows, children, parents


def kind_code(kind: str) -> int:
    try:
        return KINDS.index(kind)
    except ValueError:
        from mmsb.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"unknown edge kind {kind!r}; expected one of {', '.join(KINDS)}"
        ) from None


class EdgeTable:
    """Typed edges with columns, adjacency maps and an incremental topological rank."""

    def __init__(self, capacity: int = 64) -> None:
        self._parent = np.zeros(capacity, np.int64)
        self._child = np.zeros(capacity, np.int64)
        self._kind = np.zeros(capacity, np.uint8)
        self.count = 0
        self._m: Maps | None = ({}, {}, {})  # None: build from the columns on first use
        self._rank: dict[int, int] | None = {}  # None: rebuild from a topological order
        self._next_rank = 0
        self.version = 0  # bumped on every change; caches key on it

    # -- columns ------------------------------------------------------------------------

    def columns(self) -> tuple[I64, I64, npt.NDArray[np.uint8]]:
        """(parent, child, kind) of every edge, as views (rows unordered)."""
        n = self.count
        return self._parent[:n], self._child[:n], self._kind[:n]

    def sorted_rows(self) -> tuple[I64, I64, npt.NDArray[np.uint8]]:
        """The columns sorted by (parent, child, kind): a canonical form for files and hashes."""
        p, c, k = self.columns()
        order = np.lexsort((k, c, p))
        return p[order], c[order], k[order]

    def _maps(self) -> Maps:
        """(row of each edge, children, parents), built from the columns if not yet."""
        m = self._m
        if m is None:
            row: dict[tuple[int, int, int], int] = {}
            children: Adjacency = {}
            parents: Adjacency = {}
            p, c, k = (a.tolist() for a in self.columns())
            for i, key in enumerate(zip(p, c, k, strict=True)):
                row[key] = i
                a, b, bit = key[0], key[1], 1 << key[2]
                ch = children.setdefault(a, {})
                ch[b] = ch.get(b, 0) | bit
                pa = parents.setdefault(b, {})
                pa[a] = pa.get(a, 0) | bit
            m = self._m = (row, children, parents)
        return m

    @property
    def children(self) -> Adjacency:
        """``children[p]``: child -> bitmask of the kinds of its edges from ``p``."""
        return self._maps()[1]

    @property
    def parents(self) -> Adjacency:
        """``parents[c]``: parent -> bitmask of the kinds of its edges to ``c``."""
        return self._maps()[2]

    def has(self, parent: int, child: int, kind: int) -> bool:
        return (parent, child, kind) in self._maps()[0]

    def __len__(self) -> int:
        return self.count

    # -- changes (no validation here: the graph layer checks, replay trusts the log) -----

    def add(self, parent: int, child: int, kind: int) -> None:
        rows, children, parents = self._maps()
        key = (parent, child, kind)
        if key in rows:
            return
        n = self.count
        if n == self._parent.size:
            for name in ("_parent", "_child", "_kind"):
                old = getattr(self, name)
                new = np.zeros(max(64, 2 * old.size), old.dtype)
                new[:n] = old[:n]
                setattr(self, name, new)
        self._parent[n], self._child[n], self._kind[n] = parent, child, kind
        rows[key] = n
        self.count = n + 1
        bit = 1 << kind
        ch = children.setdefault(parent, {})
        ch[child] = ch.get(child, 0) | bit
        pa = parents.setdefault(child, {})
        pa[parent] = pa.get(parent, 0) | bit
        rank = self._rank
        if rank is not None:
            # callers checked acyclicity first (find_cycle), which also fixed the ranks;
            # ranks only need assigning for new nodes here
            for node in (parent, child):
                if node not in rank:
                    rank[node] = self._next_rank
                    self._next_rank += 1
            if rank[parent] >= rank[child]:
                self._rank = None  # replayed without a check: recompute lazily
        self.version += 1

    def remove(self, parent: int, child: int, kind: int) -> bool:
        rows, children, parents = self._maps()
        row = rows.pop((parent, child, kind), None)
        if row is None:
            return False
        last = self.count - 1
        if row != last:
            lp, lc, lk = int(self._parent[last]), int(self._child[last]), int(self._kind[last])
            self._parent[row], self._child[row], self._kind[row] = lp, lc, lk
            rows[(lp, lc, lk)] = row
        self.count = last
        bit = 1 << kind
        for table, a, b in ((children, parent, child), (parents, child, parent)):
            m = table[a][b] & ~bit
            if m:
                table[a][b] = m
            else:
                del table[a][b]
                if not table[a]:
                    del table[a]
        self.version += 1
        return True

    def drop_pages(self, ids: I64) -> int:
        """Remove every edge that touches one of ``ids``; return how many."""
        if self.count == 0:
            return 0
        victims: list[tuple[int, int, int]] = []
        for node in ids.tolist():
            for table, out in ((self.children, True), (self.parents, False)):
                for other, mask in table.get(node, {}).items():
                    for k in range(len(KINDS)):
                        if mask >> k & 1:
                            victims.append((node, other, k) if out else (other, node, k))
        for p, c, k in victims:
            self.remove(p, c, k)  # an edge between two dead pages is listed twice
        if victims and self._rank is not None:
            for node in ids.tolist():
                self._rank.pop(node, None)
        return len(set(victims))

    def clear(self) -> None:
        version = self.version
        self.__init__()  # type: ignore[misc]
        self.version = version + 1  # caches keyed on the version must not match again

    def copy(self) -> EdgeTable:
        """An independent copy: the columns only (a background checkpoint takes one on the
        commit path); its maps and ranks are built on first use."""
        out = EdgeTable.__new__(EdgeTable)
        size = max(64, self.count)
        out._parent = self._parent[:size].copy()
        out._child = self._child[:size].copy()
        out._kind = self._kind[:size].copy()
        out.count = self.count
        out._m = None
        out._rank = None
        out._next_rank = 0
        out.version = self.version
        return out

    def load(self, parents: I64, children: I64, kinds: npt.NDArray[Any]) -> None:
        """Replace the edges with the given rows, a repeated row kept once (maps and ranks
        built on first use)."""
        p = np.asarray(parents, np.int64)
        c = np.asarray(children, np.int64)
        k = np.asarray(kinds).astype(np.uint8)
        if p.size > 1:
            order = np.lexsort((k, c, p))
            p, c, k = p[order], c[order], k[order]
            keep = np.ones(p.size, np.bool_)
            keep[1:] = (p[1:] != p[:-1]) | (c[1:] != c[:-1]) | (k[1:] != k[:-1])
            p, c, k = p[keep], c[keep], k[keep]
        version = self.version
        self.__init__(max(64, p.size))  # type: ignore[misc]
        n = p.size
        self._parent[:n], self._child[:n], self._kind[:n] = p, c, k
        self.count = n
        self._m = None
        self._rank = None
        self.version = version + 1

    # -- incremental cycle check ----------------------------------------------------------

    def check_acyclic(self) -> None:
        """Raise ValueError if the edges hold a cycle (and build the ranks if they do not)."""
        self._ranks()

    def _ranks(self) -> dict[int, int]:
        if self._rank is None:
            p, c, _ = self.columns()
            order, acyclic = topo_order(p, c)
            if not acyclic:
                raise ValueError("edge table holds a cycle")
            self._rank = {int(v): i for i, v in enumerate(order.tolist())}
            self._next_rank = len(self._rank)
        return self._rank

    def find_cycle(self, parent: int, child: int) -> list[int] | None:
        """The cycle that ``parent -> child`` would close (``cycle[i] -> cycle[i+1]`` are
        edges, the last node leads back to the first), or None. When None, the ranks are
        updated so that the edge may be added."""
        if parent == child:
            return [parent]
        rank = self._ranks()
        for node in (parent, child):
            if node not in rank:
                rank[node] = self._next_rank
                self._next_rank += 1
        lb, ub = rank[child], rank[parent]
        if ub < lb:
            return None
        _, children, parents = self._maps()
        # forward search from child over nodes ranked <= ub, looking for parent
        pred: dict[int, int] = {child: child}
        stack = [child]
        fwd: list[int] = []
        while stack:
            v = stack.pop()
            fwd.append(v)
            for w in children.get(v, ()):
                if w == parent:
                    path = [v]
                    while path[-1] != child:
                        path.append(pred[path[-1]])
                    path.reverse()
                    return [parent, *path]
                if w not in pred and rank[w] <= ub:
                    pred[w] = v
                    stack.append(w)
        # backward search from parent over nodes ranked >= lb
        seen = {parent}
        stack = [parent]
        back: list[int] = []
        while stack:
            v = stack.pop()
            back.append(v)
            for w in parents.get(v, ()):
                if w not in seen and rank[w] >= lb:
                    seen.add(w)
                    stack.append(w)
        # re-rank: the backward set first, then the forward set, reusing their ranks
        back.sort(key=rank.__getitem__)
        fwd.sort(key=rank.__getitem__)
        pool = sorted(rank[v] for v in back + fwd)
        for v, r in zip(back + fwd, pool, strict=True):
            rank[v] = r
        return None

    # -- files ----------------------------------------------------------------------------

    def encode(self) -> bytes:
        """Canonical bytes: u64 count, then parent u64[], child u64[], kind u8[] (sorted)."""
        p, c, k = self.sorted_rows()
        return b"".join(
            (np.uint64(p.size).tobytes(), p.astype("<u8").tobytes(), c.astype("<u8").tobytes(),
             k.astype(np.uint8).tobytes())
        )  # fmt: skip

    @staticmethod
    def decode(data: bytes) -> tuple[I64, I64, npt.NDArray[np.uint8]]:
        """Inverse of :meth:`encode`; raises ValueError on malformed input."""
        if len(data) < 8:
            raise ValueError("edge section too short")
        n = int(np.frombuffer(data, "<u8", 1)[0])
        if len(data) != 8 + 17 * n:
            raise ValueError(f"edge section length {len(data)} does not hold {n} edges")
        p = np.frombuffer(data, "<u8", n, 8).astype(np.int64)
        c = np.frombuffer(data, "<u8", n, 8 + 8 * n).astype(np.int64)
        k = np.frombuffer(data, np.uint8, n, 8 + 16 * n).copy()
        if n and (int(k.max()) >= len(KINDS) or p.min() <= 0 or c.min() <= 0):
            raise ValueError("edge section holds an invalid edge")
        return p, c, k
