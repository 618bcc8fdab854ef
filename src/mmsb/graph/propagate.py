"""Glitch-free propagation: derivations, the compiled plan, and one propagation pass.

A *derivation* says how a page is computed from its parents: a Python function or a
semiring. Derivations are code and live only in the process (after reopening, register
them again); the graph's ``data`` edges, which they create, are logged.

A *plan* is compiled from the derivations and the graph whenever either changes: the
derived pages in topological order (ties by page id) with their parents as flat columns.
One propagation pass walks the plan once: a node is recomputed only if one of its parents
changed (an input page written since the last pass, or a derived page recomputed earlier in
this pass whose bytes changed), so each page is computed at most once, after all its parents
are final (topological order), and never from a mix of old and new parents. New contents go
to a staging buffer, not the arena: nothing is written until the whole pass succeeded, and
then all derived changes are committed as one logged batch (source ``propagation``), one
range delta per changed page covering its changed bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.engine import propkernels as pk
from mmsb.errors import InvalidArgumentError, InvalidDeltaError, PropagationError
from mmsb.graph.devicepass import run_device_pass
from mmsb.graph.groups import Group, has_groups, schedule
from mmsb.semiring import Semiring
from mmsb.storage.edges import DATA
from mmsb.storage.state import State
from mmsb.types import DTYPE_NAMES

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Fn = Callable[..., Any]
GATHER_MIN = 9  # parents from which a node's parents are gathered by one compiled call


@dataclass(frozen=True)
class Derivation:
    child: int
    parents: tuple[int, ...]
    name: str
    fn: Fn | None = None
    semiring: Semiring | None = None
    weights: tuple[float, ...] | None = None
    group: Group | None = None  # a member of a derive_many group (fn is the group's)
    row: int = 0  # the member's row in its group's registration


@dataclass
class PassResult:
    # the derived changes, or None when nothing changed; its payload may be a span of the
    # plan's staging buffer, valid until the plan's next pass
    batch: DeltaBatch | None
    recomputed: int  # pages whose contents were computed
    changed_pages: I64  # derived pages whose bytes changed, in topological order


def _group(dtype: str) -> int:
    if dtype in ("float32",):
        return pk.G_F32
    if dtype in ("float64",):
        return pk.G_F64
    return pk.G_BOOL


class Plan:
    """The derived pages of a graph in topological order, as columns for the kernel."""

    def __init__(self, state: State, derivations: dict[int, Derivation]) -> None:
        edges = state.edges
        self.version = edges.version
        if has_groups(derivations):
            nodes = schedule(derivations)  # each group's members together
        else:
            p, c, k = edges.columns()
            data = k == DATA
            from mmsb.engine.graphkernels import topo_order

            order, _ = topo_order(p[data], c[data])
            nodes = [int(v) for v in order.tolist() if int(v) in derivations]
        self.derivations = [derivations[v] for v in nodes]
        n = len(nodes)
        self.child = np.array(nodes, np.int64)
        index = {v: i for i, v in enumerate(nodes)}
        self.kind = np.empty(n, np.int64)
        self.group = np.empty(n, np.int64)
        self.zero64 = np.zeros(n, np.float64)
        self.nbytes = np.empty(n, np.int64)
        self.item = np.empty(n, np.int64)
        self.pptr = np.zeros(n + 1, np.int64)
        ppage: list[int] = []
        pnode: list[int] = []
        weights: list[float] = []
        # the metadata of a node's delta names its derivation (its parents are the graph's:
        # mmsb.history.lineage): one string per derivation name, shared by its rows
        self.meta_parts: list[str] = []
        self.meta_of = np.empty(n, np.int32)
        parts: dict[str, int] = {}
        for i, d in enumerate(self.derivations):
            dtype = DTYPE_NAMES[int(state.dtype[d.child])]
            sr = d.semiring
            self.kind[i] = sr.code if sr is not None and sr.code >= 0 else pk.HOST
            self.group[i] = _group(dtype)
            self.zero64[i] = float(sr.zero) if sr is not None else 0.0
            self.nbytes[i] = int(state.size[d.child])
            self.item[i] = np.dtype(dtype).itemsize
            ppage.extend(d.parents)
            pnode.extend(index.get(q, -1) for q in d.parents)
            ws = d.weights if d.weights is not None else (
                (float(sr.one) if sr is not None else 1.0),) * len(d.parents)  # fmt: skip
            weights.extend(float(w) for w in ws)
            self.pptr[i + 1] = len(ppage)
            name_k = parts.setdefault(d.name, len(parts))
            if name_k == len(self.meta_parts):
                self.meta_parts.append(
                    "," + json.dumps({"derive": d.name}, separators=(",", ":"))[1:]
                )
            self.meta_of[i] = name_k
        self.ppage = np.array(ppage, np.int64)
        self.pnode = np.array(pnode, np.int64)
        self.w64 = np.array(weights, np.float64)
        self.w32 = self.w64.astype(np.float32)
        sizes = (self.nbytes + 7) // 8 * 8
        self.stage_off = np.zeros(n, np.int64)
        if n:
            self.stage_off[1:] = np.cumsum(sizes)[:-1]
        self.stage = np.zeros(max(int(sizes.sum()) // 8, 1), np.float64)
        self.scratch = pk.empty_scratch(max(len(ppage), 1))
        # constant columns of a pass's batch (sliced to its rows; shared, never written)
        self.zeros8 = np.zeros(n, np.uint8)
        self.zeros16 = np.zeros(n, np.uint16)
        self.no_mask = np.full(n, -1, np.int64)
        self.group_offs: dict[int, I64] = {}  # a group's parent offsets in its gather
        # per node of a group: the group's span of nodes [gstart, gend); -1 elsewhere
        self.gstart = np.full(n, -1, np.int64)
        self.gend = np.full(n, -1, np.int64)
        i = 0
        while i < n:
            g = self.derivations[i].group
            j = i + 1
            if g is not None:
                while j < n and self.derivations[j].group is g:
                    j += 1
                self.gstart[i:j], self.gend[i:j] = i, j
            i = j

    def __len__(self) -> int:
        return int(self.child.size)


def _views(buf: npt.NDArray[np.uint8]) -> tuple[Any, Any, Any]:
    n8 = buf.size // 8 * 8
    return buf, buf[:n8].view(np.float32), buf[:n8].view(np.float64)


def run_pass(
    plan: Plan, state: State, pages: I64, lo_in: I64, hi_in: I64, cause_lsn: int
) -> PassResult:
    """One propagation pass over ``plan``: input page ``pages[r]`` changed within bytes
    ``[lo_in[r], hi_in[r])`` since the last pass (rows may repeat a page)."""
    n = len(plan)
    if n == 0:
        return PassResult(None, 0, np.zeros(0, np.int64))
    if state.dev is not None and state.dev.count:  # device pages: mmsb.graph.devicepass
        done = run_device_pass(plan, state, pages, lo_in, hi_in, cause_lsn, run_pass,
                               pass_result)  # fmt: skip
        if done is not None:
            return cast(PassResult, done)
    mark = np.zeros(state.next_page_id, np.uint8)
    mr = np.empty((state.next_page_id, 2), np.int64)  # only read where mark is set
    pk.mark_ranges(mark, mr, pages, lo_in, hi_in)
    changed = np.zeros(n, np.uint8)
    lo = np.zeros(n, np.int64)
    hi = np.zeros(n, np.int64)
    slo = np.zeros(n, np.int64)
    shi = np.zeros(n, np.int64)
    arena8, arena32, arena64 = _views(state.arena.buf)
    stage8 = plan.stage.view(np.uint8)
    stage32 = plan.stage.view(np.float32)
    stage64 = plan.stage
    pos = 0
    recomputed = 0
    try:
        while pos < n:
            pos, done = pk.run_nodes(
                pos, plan.kind, plan.group, plan.zero64, plan.pptr, plan.ppage, plan.pnode,
                plan.w32, plan.w64, plan.child, plan.nbytes, plan.stage_off, state.slot, mark,
                mr, changed, lo, hi, slo, shi, arena8, arena32, arena64, stage8, stage32,
                stage64, *plan.scratch,
            )  # fmt: skip
            recomputed += done
            if pos >= n:
                break
            if plan.gend[pos] >= 0:  # a group: its members run together
                pos, done = run_group(plan, state, pos, stage8, changed, lo, hi, slo, shi,
                                      mark, mr)  # fmt: skip
                recomputed += done
                continue
            _run_host(plan, state, pos, stage8, changed, lo, hi, slo, shi, mark, mr)
            recomputed += 1
            pos += 1
    finally:
        # an exception's traceback keeps this frame: it must not keep views of the mapping
        del arena8, arena32, arena64

    def gather(starts: I64, lengths: I64) -> U8:
        # the rows' ranges are in node order, each inside its node's slot: when they span
        # exactly their total length they lie back to back (the usual case: whole pages
        # whose sizes are multiples of 8), and the payload is that span of the staging
        # buffer itself, valid until the next pass (the tick logs and applies it first)
        total = int(lengths.sum())
        s0 = int(starts[0])
        if int(starts[-1]) + int(lengths[-1]) - s0 == total:
            return stage8[s0 : s0 + total]
        payload = np.empty(total, np.uint8)
        pk.gather_ranges(stage8, starts, lengths, payload)
        return payload

    return pass_result(plan, changed, lo, hi, recomputed, cause_lsn, gather)


def pass_result(
    plan: Plan, changed: U8, lo: I64, hi: I64, recomputed: int, cause_lsn: int,
    gather: Callable[[I64, I64], U8],
) -> PassResult:  # fmt: skip
    """The pass's batch from its per-node results; ``gather(starts, lengths)`` returns
    the staged bytes of those ranges, concatenated."""
    # whole elements, so typed reads of a delta make sense; the derivation names present,
    # in name order, and each row's index among them
    rows, pages, lo_r, lengths, starts, pstarts, meta_idx, names = pk.changed_rows(
        changed, plan.child, plan.item, lo, hi, plan.stage_off, plan.meta_of,
        len(plan.meta_parts),
    )  # fmt: skip
    if rows.size == 0:
        return PassResult(None, recomputed, np.zeros(0, np.int64))
    payload = gather(starts, lengths)
    head = '{"cause_lsn":' + str(int(cause_lsn))
    metas = tuple(head + plan.meta_parts[k] for k in names.tolist())
    m = rows.size
    zeros8 = plan.zeros8[:m]
    batch = DeltaBatch(
        pages, lo_r, lengths, zeros8, pstarts, lengths, plan.no_mask[:m], payload, zeros8[:0],
        plan.zeros16[:m], ("propagation",), meta_idx, metas, zeros8,
    )  # fmt: skip
    return PassResult(batch, recomputed, pages)


def _run_host(
    plan: Plan,
    state: State,
    i: int,
    stage8: npt.NDArray[np.uint8],
    changed: npt.NDArray[np.uint8],
    lo: I64,
    hi: I64,
    slo: I64,
    shi: I64,
    mark: npt.NDArray[np.uint8],
    mr: I64,
) -> None:
    d = plan.derivations[i]
    child = d.child
    dtype = state.np_dtype(child)
    size = int(plan.nbytes[i])
    raw = _parent_bytes(plan, state, i, stage8, changed, slo, shi)
    inputs = [v.view(state.np_dtype(p)) for p, v in raw]
    for view in inputs:
        view.flags.writeable = False
    try:
        if d.semiring is not None:
            out: Any = d.semiring.fold(inputs, d.weights, dtype=dtype)
        else:
            assert d.fn is not None
            out = d.fn(*inputs)
            if any(v.flags.writeable for v in inputs):
                raise ValueError("it made a read-only input writable")
    except Exception as exc:
        raise PropagationError(
            f"derivation {d.name!r} of page {child} raised {type(exc).__name__}: {exc}",
            child,
            d.name,
        ) from exc
    new = _as_page_bytes(out, d.name, child, dtype, size)
    o = int(plan.stage_off[i])
    stage8[o : o + size] = new
    s = int(state.slot[child])
    first, end = pk.diff_range(new, state.arena.buf[s : s + size])
    slo[i], shi[i] = 0, size
    if first >= 0:
        changed[i] = 1
        lo[i], hi[i] = first, end
        mark[child] = 1
        mr[child] = first, end


def _parent_bytes(
    plan: Plan, state: State, i: int, stage8: U8, changed: U8, slo: I64, shi: I64
) -> list[tuple[int, U8]]:
    """The current bytes of node ``i``'s parents (a parent recomputed this pass: from its
    staging slot), as private copies: not views of the mapping, since a function (or a
    traceback) that keeps its input would otherwise pin the mmap export, and the arena could
    never grow. Up to ``GATHER_MIN - 1`` parents are copied one by one, more by one compiled
    call into one buffer (each at an 8-aligned offset): below that the call costs more than
    it saves."""
    k0, k1 = int(plan.pptr[i]), int(plan.pptr[i + 1])
    pages = plan.ppage[k0:k1].tolist()
    if k1 - k0 >= GATHER_MIN:
        sizes = state.size[plan.ppage[k0:k1]]
        offs = np.zeros(k1 - k0, np.int64)
        np.cumsum((sizes[:-1] + 7) // 8 * 8, out=offs[1:])
        buf = np.empty(int(offs[-1] + sizes[-1]), np.uint8)
        pk.gather_parents(state.arena.buf, stage8, state.slot, state.size, plan.ppage,
                          plan.pnode, changed, plan.stage_off, slo, shi, k0, k1, offs,
                          buf)  # fmt: skip
        spans = zip(pages, offs.tolist(), sizes.tolist(), strict=True)
        return [(p, buf[o : o + n]) for p, o, n in spans]
    out = []
    for k, page in zip(range(k0, k1), pages, strict=True):
        pn = int(plan.pnode[k])
        s = int(state.slot[page])
        raw = state.arena.buf[s : s + int(state.size[page])].copy()
        if pn >= 0 and changed[pn]:
            o = int(plan.stage_off[pn])
            a, b = int(slo[pn]), int(shi[pn])
            raw[a:b] = stage8[o + a : o + b]
        out.append((page, raw))
    return out


def _as_page_bytes(
    out: Any, name: str, page: int, dtype: np.dtype[Any], size: int
) -> npt.NDArray[np.uint8]:
    if isinstance(out, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(out, np.uint8)
    elif isinstance(out, np.ndarray):
        if out.dtype != dtype:
            raise InvalidDeltaError(
                f"derivation {name!r} returned dtype {out.dtype} for page {page} of dtype {dtype}"
            )
        raw = np.ascontiguousarray(out).reshape(-1).view(np.uint8)
    else:
        raise InvalidDeltaError(
            f"derivation {name!r} returned {type(out).__name__} for page {page}; expected a "
            "numpy array or bytes"
        )
    if raw.size != size:
        raise InvalidDeltaError(
            f"derivation {name!r} returned {raw.size} bytes for page {page} of {size} bytes"
        )
    return raw


def describe(fn: Fn | None, semiring: Semiring | None, name: str | None) -> str:
    if name is not None:
        return name
    if semiring is not None:
        return semiring.name
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def check_page_id(page: Any, what: str) -> int:
    """``page`` as an int; InvalidArgumentError for anything but an integer (1.5 must not
    quietly become page 1)."""
    if isinstance(page, (bool, np.bool_)) or not isinstance(page, (int, np.integer)):
        raise InvalidArgumentError(f"{what} page id must be an integer, got {page!r}")
    return int(page)


def check_weights(weights: Any, parents: int) -> tuple[float, ...] | None:
    """A semiring derivation's weights as a tuple of floats, one per parent (None: none)."""
    if weights is None:
        return None
    arr = np.asarray(weights, dtype=np.float64).reshape(-1)
    if arr.size != parents:
        raise InvalidArgumentError(f"{parents} parents but {arr.size} weights")
    return tuple(float(x) for x in arr.tolist())


def check_parents(parents: Sequence[int]) -> tuple[int, ...]:
    try:
        items = list(parents)
    except TypeError:
        raise InvalidArgumentError(
            f"parents must be a sequence of page ids, got {parents!r}"
        ) from None
    return tuple(check_page_id(p, "parent") for p in items)


def run_group(
    plan: Plan, state: State, pos: int, stage8: U8, changed: U8, lo: I64, hi: I64,
    slo: I64, shi: I64, mark: U8, mr: I64,
) -> tuple[int, int]:  # fmt: skip
    """Run the group of plan node ``pos`` once: gather the parents of its members with one
    compiled call, call its function on the stacked array, stage the rows of the members
    one of whose parents changed. Returns (the node after the group, pages recomputed)."""
    g0, g1 = int(plan.gstart[pos]), int(plan.gend[pos])
    m = g1 - g0
    dirty = np.empty(m, np.uint8)
    count = pk.dirty_nodes(g0, g1, plan.pptr, plan.ppage, plan.nbytes, mark, mr, dirty)
    if count == 0:
        return g1, 0
    d0 = plan.derivations[g0]
    group = d0.group
    assert group is not None
    k0, k1 = int(plan.pptr[g0]), int(plan.pptr[g1])
    k = (k1 - k0) // m
    first = int(plan.ppage[k0])
    psize = int(state.size[first])
    pdtype = state.np_dtype(first)
    buf = np.empty((k1 - k0) * psize, np.uint8)
    offs = plan.group_offs.get(g0)  # (a plan's groups and page sizes never change)
    if offs is None:
        offs = plan.group_offs[g0] = np.arange(k1 - k0, dtype=np.int64) * psize
    pk.gather_parents(state.arena.buf, stage8, state.slot, state.size, plan.ppage, plan.pnode,
                      changed, plan.stage_off, slo, shi, k0, k1, offs, buf)  # fmt: skip
    stacked = buf.view(pdtype).reshape(m, k, psize // pdtype.itemsize)
    stacked.flags.writeable = False
    try:
        out = group.fn(stacked)
        if stacked.flags.writeable:
            raise ValueError("it made its read-only input writable")
    except Exception as exc:
        raise PropagationError(
            f"derivation group {group.name!r} ({m} pages from {d0.child}) raised "
            f"{type(exc).__name__}: {exc}", d0.child, group.name,
        ) from exc  # fmt: skip
    csize = int(plan.nbytes[g0])
    cdtype = state.np_dtype(d0.child)
    want = (m, csize // cdtype.itemsize)
    if not isinstance(out, np.ndarray) or out.dtype != cdtype or out.shape != want:
        got = (f"an array of shape {out.shape} and dtype {out.dtype}"
               if isinstance(out, np.ndarray) else type(out).__name__)  # fmt: skip
        raise InvalidDeltaError(
            f"derivation group {group.name!r} returned {got}; expected shape {want} and "
            f"dtype {cdtype} (one row per page from {d0.child})"
        )
    rows8 = np.ascontiguousarray(out).reshape(-1).view(np.uint8)
    pk.stage_rows(rows8, g0, g1, dirty, plan.nbytes, stage8, plan.stage_off, state.arena.buf,
                  state.slot, plan.child, changed, lo, hi, slo, shi, mark, mr)  # fmt: skip
    return g1, count
