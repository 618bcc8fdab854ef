"""Derived pages across shards: the registry, and one tick's propagation.

A derived page may read pages of other shards. A tick computes its derived pages before
anything is logged, level by level in topological order (a level's pages do not read each
other): each derived page is computed on its own shard, from its parents' bytes, which
come from that shard's bus, from the object store (a parent page read on another shard,
or recomputed earlier in the tick), or from the tick's own inputs as they will be (each
input page's shard applies the tick's rows to a copy). A page is recomputed only when a
parent changed since the last tick (or in it), and a recomputed page whose bytes did not
change stops there, as on a single bus. The inputs and the changed derived pages then go
to the global log as one frame with one LSN, and to the shards: a tick is one global
commit, and rebuilding a shard never runs a derivation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.cluster import partition as part
from mmsb.cluster import runtime
from mmsb.errors import CycleError, InvalidArgumentError, InvalidDeltaError, PropagationError
from mmsb.graph.propagate import check_page_id, check_parents, check_weights, describe
from mmsb.semiring import Semiring
from mmsb.types import DTYPE_NAMES

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Derivation:
    child: int
    parents: tuple[int, ...]
    name: str
    fn: Callable[..., Any] | None = None
    semiring: Semiring | None = None
    weights: tuple[float, ...] | None = None


class Derivations:
    """The registered derivations (code: they live in the driver process only) and the
    pages written since the last tick."""

    def __init__(self) -> None:
        self.by_child: dict[int, Derivation] = {}
        self.pending = np.zeros(1, np.bool_)  # by global page id: written since the last tick
        self.pending_lsn = 0  # the last commit that wrote a pending page
        self.seeds: set[int] = set()  # parents of derivations registered since the last tick

    def note_written(self, page_ids: I64, lsn: int, next_page_id: int) -> None:
        if self.pending.size < next_page_id:
            grown = np.zeros(next_page_id, np.bool_)
            grown[: self.pending.size] = self.pending
            self.pending = grown
        if page_ids.size:
            self.pending[page_ids] = True
            self.pending_lsn = lsn

    def register(self, d: Derivation, table: part.PageTable) -> None:
        child = d.child
        table.require([child, *d.parents])
        if not d.parents:
            raise InvalidArgumentError(f"derivation of page {child} needs at least one parent")
        if len(set(d.parents)) != len(d.parents):
            raise InvalidArgumentError(f"derivation of page {child} lists a parent twice")
        for p in d.parents:
            path = self._ancestry(p, child)
            if path is not None:  # child -> ... -> p: the edge p -> child closes a cycle
                raise CycleError(f"deriving page {child} from {p} would close a cycle",
                                 [p, *path[:-1]])  # fmt: skip
        self.by_child[child] = d
        self.seeds.update(d.parents)

    def _ancestry(self, page: int, target: int) -> list[int] | None:
        """A chain of data edges ``target -> ... -> page`` when ``target`` is ``page`` or
        one of its ancestors, else None."""
        if page == target:
            return [page]
        stack: list[tuple[int, list[int]]] = [(page, [page])]
        seen = {page}
        while stack:
            cur, chain = stack.pop()
            d = self.by_child.get(cur)
            for q in d.parents if d is not None else ():
                if q == target:
                    return [q, *reversed(chain)]
                if q not in seen:
                    seen.add(q)
                    stack.append((q, [*chain, q]))
        return None

    def levels(self) -> list[list[int]]:
        """The derived pages by topological level (a page's level is one more than its
        highest derived parent's), each level in page id order."""
        level: dict[int, int] = {}

        def depth(c: int) -> int:
            todo = [c]
            while todo:
                page = todo[-1]
                parents = [p for p in self.by_child[page].parents if p in self.by_child]
                missing = [p for p in parents if p not in level]
                if missing:
                    todo.extend(missing)
                    continue
                todo.pop()
                level[page] = 1 + max((level[p] for p in parents), default=-1)
            return level[c]

        for c in self.by_child:
            depth(c)
        out: list[list[int]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
        for c in sorted(level):
            out[level[c]].append(c)
        return out

    def clear_pending(self) -> None:
        self.pending[:] = False
        self.seeds.clear()


def make_derivation(
    child: int,
    parents: Sequence[int],
    table: part.PageTable,
    *,
    fn: Callable[..., Any] | None = None,
    semiring: Semiring | None = None,
    weights: Any = None,
    name: str | None = None,
) -> Derivation:
    """Check a registration as a bus does and return it."""
    c = check_page_id(child, "child")
    pids = check_parents(parents)
    if semiring is None:
        if not callable(fn):
            raise InvalidArgumentError(f"derivation for page {c} is not callable")
        return Derivation(c, pids, describe(fn, None, name), fn=fn)
    if not isinstance(semiring, Semiring):
        raise InvalidArgumentError(f"expected a Semiring, got {type(semiring).__name__}")
    table.require([c, *pids])
    semiring.check_dtype(DTYPE_NAMES[int(table.dtype[c])])
    for p in pids:
        if table.size[p] != table.size[c] or table.dtype[p] != table.dtype[c]:
            raise InvalidArgumentError(f"semiring parent {p} and child {c} differ in size or dtype")
    w = check_weights(weights, len(pids))
    return Derivation(c, pids, describe(None, semiring, name), semiring=semiring, weights=w)


@dataclass
class PassResult:
    batch: DeltaBatch | None  # the changed derived pages, one range row each
    recomputed: int
    changed: int


def propagate(
    reg: Derivations,
    shards: Sequence[Any],
    table: part.PageTable,
    batch: DeltaBatch | None,
    batch_ref: Any,
    cause_lsn: int,
) -> PassResult:
    """One tick's pass (see the module docstring); nothing is written."""
    n = len(shards)
    changed = np.zeros(table.next_page_id, np.bool_)
    changed[: reg.pending.size] |= reg.pending[: table.next_page_id]
    changed[list(reg.seeds)] = True
    args: list[Any] = []  # object refs: previews, remote reads, earlier levels' results
    staged: dict[int, tuple[int, int]] = {}  # page -> (args index, item): its bytes now
    if batch is not None and len(batch):
        changed[batch.page_ids] = True
        involved = set(reg.by_child) | {p for d in reg.by_child.values() for p in d.parents}
        _preview(batch, batch_ref, involved, shards, args, staged)
    rows: list[tuple[int, int, int, npt.NDArray[np.uint8]]] = []
    recomputed = 0
    for level in reg.levels():
        todo = [c for c in level if changed[list(reg.by_child[c].parents)].any()]
        if not todo:
            continue
        reads: dict[int, list[int]] = {}
        for c in todo:
            for p in reg.by_child[c].parents:
                if p not in staged and part.shard_of(p, n) != part.shard_of(c, n):
                    reads.setdefault(part.shard_of(p, n), []).append(p)
        current = dict(staged)
        for s, pages in reads.items():
            uniq = sorted(set(pages))
            args.append(shards[s].read_pages.remote([part.to_local(p, n) for p in uniq]))
            current.update({p: (len(args) - 1, i) for i, p in enumerate(uniq)})
        calls: dict[int, list[int]] = {}
        for c in todo:
            calls.setdefault(part.shard_of(c, n), []).append(c)
        submitted = []
        for s, children in sorted(calls.items()):
            used: dict[int, int] = {}  # args index -> position in this call's lists
            nodes = [_node(reg.by_child[c], s, n, table, current, used) for c in children]
            refs = [args[k] for k in sorted(used, key=used.__getitem__)]
            submitted.append((children, shards[s].compute.remote(nodes, *refs)))
        for children, ref in submitted:
            results = runtime.get(ref)
            _raise_failure(results)
            args.append(ref)
            recomputed += len(children)
            for i, (c, res) in enumerate(zip(children, results, strict=True)):
                if res is not None:
                    changed[c] = True
                    staged[c] = (len(args) - 1, i)
                    rows.append((c, res[0], res[1], res[2]))
    return PassResult(_derived_batch(reg, rows, cause_lsn), recomputed, len(rows))


def _preview(
    batch: DeltaBatch,
    batch_ref: Any,
    involved: set[int],
    shards: Sequence[Any],
    args: list[Any],
    staged: dict[int, tuple[int, int]],
) -> None:
    """Ask each shard for the bytes its input pages will have after the tick's rows."""
    n = len(shards)
    pages = [int(p) for p in np.unique(batch.page_ids) if int(p) in involved]
    by_shard: dict[int, list[int]] = {}
    for p in pages:
        by_shard.setdefault(part.shard_of(p, n), []).append(p)
    for s, ps in by_shard.items():
        args.append(shards[s].preview.remote(batch_ref, [part.to_local(p, n) for p in ps]))
        staged.update({p: (len(args) - 1, i) for i, p in enumerate(ps)})


def _node(
    d: Derivation,
    shard: int,
    n: int,
    table: part.PageTable,
    current: dict[int, tuple[int, int]],
    used: dict[int, int],
) -> dict[str, Any]:
    def source(p: int) -> tuple[Any, ...]:
        if p in current:
            k, i = current[p]
            return ("arg", used.setdefault(k, len(used)), i)
        assert part.shard_of(p, n) == shard
        return ("local", int(part.to_local(p, n)))

    c = d.child
    return {
        "page": c, "name": d.name, "fn": d.fn, "semiring": d.semiring, "weights": d.weights,
        "dtype": DTYPE_NAMES[int(table.dtype[c])], "size": int(table.size[c]),
        "parents": [source(p) for p in d.parents],
        "pdtypes": [DTYPE_NAMES[int(table.dtype[p])] for p in d.parents],
        "current": source(c),
    }  # fmt: skip


def _raise_failure(results: list[Any]) -> None:
    if results and isinstance(results[0], tuple) and results[0][:1] == ("error",):
        _, kind, message, page, function = results[0]
        if kind == "PropagationError":
            raise PropagationError(message, int(page), str(function))
        raise InvalidDeltaError(message)


def _derived_batch(
    reg: Derivations, rows: list[tuple[int, int, int, npt.NDArray[np.uint8]]], cause: int
) -> DeltaBatch | None:
    """One range row per changed derived page, with the metadata a single bus writes."""
    if not rows:
        return None
    k = len(rows)
    lo = np.array([r[1] for r in rows], np.int64)
    lengths = np.array([r[2] - r[1] for r in rows], np.int64)
    payload = np.concatenate([r[3][r[1] : r[2]] for r in rows])
    pstarts = np.zeros(k, np.int64)
    np.cumsum(lengths[:-1], out=pstarts[1:])
    metas = tuple(
        json.dumps({"cause_lsn": cause, "derive": reg.by_child[r[0]].name,
                    "parents": list(reg.by_child[r[0]].parents)}, separators=(",", ":"))
        for r in rows
    )  # fmt: skip
    return DeltaBatch(
        np.array([r[0] for r in rows], np.int64), lo, lengths, np.zeros(k, np.uint8), pstarts,
        lengths.copy(), np.full(k, -1, np.int64), payload, np.zeros(0, np.uint8),
        np.zeros(k, np.uint16), ("propagation",), np.arange(k, dtype=np.int32), metas,
    )  # fmt: skip
