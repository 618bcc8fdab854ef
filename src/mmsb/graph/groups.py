"""Derivation groups: many derived pages computed by one function call per tick.

``bus.derive_many(children, fn, parents)`` registers ``n`` derivations at once: child
``children[i]`` is computed from the pages ``parents[i, :]`` (a 2-D array of page ids,
``n`` rows of ``k``). Every member is an ordinary derivation for the rest of the system: its
data edges are logged, its derived rows name its own parents (provenance), and it can be
dropped on its own (``underive``, deleting a parent, changing its edges by hand). What
differs is the pass: a group is one node of the schedule, so its members are contiguous in
the plan, and when any member needs recomputing the whole group's parents are gathered by
one compiled call into one array of shape ``(m, k, elems)`` (``m`` live members) and ``fn``
runs once on it. Only the members one of whose parents changed are staged and compared
(the others keep their bytes, as ``m`` separate derivations would), so a group gives the
same pages as ``m`` calls of ``derive`` with a function that computes each row from its own
parents.

A group can run as one call only if no member depends on another one through derived
pages; :func:`schedule` orders the plan with each group contracted to one node and raises
:class:`CycleError` when that order does not exist.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from mmsb.engine.graphkernels import topo_order
from mmsb.errors import CycleError, InvalidArgumentError
from mmsb.storage.edges import DATA
from mmsb.storage.state import State

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Group:
    """One ``derive_many`` registration: its function and name (members point here)."""

    fn: Callable[..., Any]
    name: str


class Derivation(Protocol):
    """What scheduling reads of a derivation (``mmsb.graph.propagate.Derivation``)."""

    @property
    def parents(self) -> tuple[int, ...]: ...
    @property
    def name(self) -> str: ...
    @property
    def group(self) -> Group | None: ...
    @property
    def row(self) -> int: ...


def check_many(state: State, children: Any, parents: Any) -> tuple[I64, I64]:
    """``children`` as a 1-D and ``parents`` as a 2-D int64 array, checked: ``n >= 1``
    distinct live children of one size and dtype, ``n`` rows of ``k >= 1`` distinct live
    parents of one size and dtype."""
    kids = _ids(children, "children")
    rows = _ids(parents, "parents")
    if kids.ndim != 1 or kids.size == 0:
        raise InvalidArgumentError("derive_many needs a 1-D sequence of at least one child")
    if rows.ndim != 2 or rows.shape[0] != kids.size or rows.shape[1] == 0:
        raise InvalidArgumentError(
            f"parents must be a 2-D array of {kids.size} rows of page ids, got shape {rows.shape}"
        )
    if np.unique(kids).size != kids.size:
        raise InvalidArgumentError("derive_many lists a child twice")
    srt = np.sort(rows, axis=1)
    if (srt[:, 1:] == srt[:, :-1]).any():
        bad = int(kids[np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]])
        raise InvalidArgumentError(f"derivation of page {bad} lists a parent twice")
    for what, ids in (("children", kids), ("parents", rows.reshape(-1))):
        _require_all(state, ids)
        if (state.size[ids] != state.size[ids[0]]).any() or (
            state.dtype[ids] != state.dtype[ids[0]]
        ).any():
            raise InvalidArgumentError(f"the {what} of derive_many differ in size or dtype")
    return kids, rows


def _ids(value: Any, what: str) -> I64:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} must be page ids") from None
    if arr.size and (arr.dtype.kind not in "iu" or arr.dtype == np.bool_):
        raise InvalidArgumentError(f"{what} must be integer page ids, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _require_all(state: State, ids: I64) -> None:
    ok = (ids > 0) & (ids < state.next_page_id)
    ok[ok] = state.live[ids[ok]]
    if not ok.all():
        state.require(int(ids[~ok][0]))  # raises PageNotFoundError naming it


def has_groups(derivations: Mapping[int, Derivation]) -> bool:
    return any(d.group is not None for d in derivations.values())


def reaches_a_group(state: State, page: int, derivations: Mapping[int, Derivation]) -> bool:
    """Whether a member of a group depends on ``page`` (over data edges): only then can a
    new derivation of ``page`` make a group unschedulable."""
    seen: set[int] = set()
    stack = [page]
    children = state.edges.children
    while stack:
        for w, mask in children.get(stack.pop(), {}).items():
            if mask & (1 << DATA) and w not in seen:
                d = derivations.get(w)
                if d is not None and d.group is not None:
                    return True
                seen.add(w)
                stack.append(w)
    return False


def schedule(derivations: Mapping[int, Derivation]) -> list[int]:
    """The derived pages in plan order: topological over the derivations' parents with
    each group contracted to one node (ties: the smaller page id, a group counting as its
    first member), each group's members together in registration order. Raises
    :class:`CycleError` when a group's members depend on each other through derived pages
    (directly, or through another group that depends on them)."""
    members: dict[Group, list[tuple[int, int]]] = {}
    for c, d in derivations.items():
        if d.group is not None:
            members.setdefault(d.group, []).append((d.row, c))
    kids = np.fromiter(derivations.keys(), np.int64, len(derivations))
    counts = np.fromiter((len(d.parents) for d in derivations.values()), np.int64, kids.size)
    src = np.fromiter(itertools.chain.from_iterable(d.parents for d in derivations.values()),
                      np.int64, int(counts.sum()))  # fmt: skip
    dst = np.repeat(kids, counts)
    rep = np.arange(int(max(kids.max(), src.max())) + 1, dtype=np.int64)
    first: dict[int, list[int]] = {}
    for ms in members.values():
        ms.sort()
        ids = [c for _, c in ms]
        rep[ids] = ids[0]
        first[ids[0]] = ids
    src, dst = rep[src], rep[dst]
    inner = src == dst
    if inner.any():
        c = int(dst[np.flatnonzero(inner)[0]])
        raise CycleError(
            f"derivation group {derivations[c].name!r} cannot run as one call: one of its "
            "children is a parent of another", [c]
        )  # fmt: skip
    order, acyclic = topo_order(src, dst)
    if not acyclic:
        left = sorted(set(np.unique(dst).tolist()) - set(order.tolist()))
        names = sorted({derivations[c].name for c in left if derivations[c].group is not None})
        raise CycleError(
            f"derivation groups {names} cannot run as one call each: their children depend "
            "on each other through derived pages", left
        )  # fmt: skip
    out: list[int] = []
    for v in order.tolist():
        if v in first:
            out.extend(first[v])
        elif v in derivations:
            out.append(v)
    return out
