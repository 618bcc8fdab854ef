"""Semiring propagation on the device: :func:`run_nodes_device`, the device twin of
:func:`mmsb.engine.propkernels.run_nodes`.

The host kernel walks the plan's nodes one by one in topological order. Here the nodes
are cut into *levels* (a node's level is one more than the highest level of its parents
that are nodes of the same stretch), and each level is one launch of
:func:`mmsb.device.kernels.prop_level`, a block per node. Nodes of one level never read one
another's results, and launches on one stream run in order, so every node sees exactly the
marks, staged bytes and changed ranges the host walk would give it: the per-node results
(staging bytes, ``changed``, ``lo``/``hi``, ``slo``/``shi``, the marks) are the host's,
byte for byte. Nodes the kernels cannot run (``HOST``: Python functions, user semirings)
cut the plan into stretches; as on the host, the call returns at the first such node that
needs recomputing, and the caller runs it and resumes after it.

Every page the plan reads or writes must be in the one device arena given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.device.arena import DeviceArena, kernels
from mmsb.engine.jit import njit
from mmsb.engine.propkernels import HOST

I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def _levels(pptr: I64, pnode: I64, lo: int, hi: int) -> I64:
    """Level of each node in ``[lo, hi)``: 0 without parent nodes in that stretch, else one
    more than the highest of theirs."""
    level = np.zeros(hi - lo, np.int64)
    for i in range(lo, hi):
        best = -1
        for k in range(pptr[i], pptr[i + 1]):
            pn = pnode[k]
            if lo <= pn < i:
                best = max(best, level[pn - lo])
        level[i - lo] = best + 1
    return level


@dataclass
class DevicePlan:
    """A propagation plan's columns on the device (built once per plan), its staging
    buffer, and the levels of each stretch between host nodes."""

    arena: DeviceArena
    kind: I64
    pptr: I64
    ppage: I64
    pnode: I64
    nbytes: I64
    cols: tuple[Any, ...]  # kind .. stage_off on the device, in prop_level's order
    stage: Any  # device float64 staging buffer
    stretches: dict[int, tuple[int, list[Any]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.kind.size)

    def stretch(self, start: int) -> tuple[int, list[Any]]:
        """The end of the stretch from ``start`` (its first host node, or the node count)
        and its levels as device arrays of node indices."""
        got = self.stretches.get(start)
        if got is None:
            hosts = np.flatnonzero(self.kind[start:] == HOST)
            stop = start + int(hosts[0]) if hosts.size else len(self)
            level = _levels(self.pptr, self.pnode, start, stop)
            cuda, s = self.arena.cuda, self.arena.stream
            groups = []
            for lv in range(int(level.max()) + 1 if level.size else 0):
                nodes = (np.flatnonzero(level == lv) + start).astype(np.int64)
                groups.append(cuda.to_device(nodes, stream=s))
            got = (stop, groups)
            self.stretches[start] = got
        return got


def device_plan(
    arena: DeviceArena,
    kind: I64, group: I64, zero64: Any, pptr: I64, ppage: I64, pnode: I64, w32: Any,
    w64: Any, child: I64, nbytes: I64, stage_off: I64, stage_bytes: int,
) -> DevicePlan:  # fmt: skip
    """Upload a plan's columns (those of ``mmsb.graph.propagate.Plan``)."""
    cuda, s = arena.cuda, arena.stream
    z64 = np.ascontiguousarray(zero64, np.float64)
    host = (
        np.ascontiguousarray(kind, np.int64), np.ascontiguousarray(group, np.int64),
        z64.astype(np.float32), z64, np.ascontiguousarray(pptr, np.int64),
        np.ascontiguousarray(ppage, np.int64), np.ascontiguousarray(pnode, np.int64),
        np.ascontiguousarray(w32, np.float32), np.ascontiguousarray(w64, np.float64),
        np.ascontiguousarray(child, np.int64), np.ascontiguousarray(nbytes, np.int64),
        np.ascontiguousarray(stage_off, np.int64),
    )  # fmt: skip
    cols = tuple(cuda.to_device(c if c.size else np.zeros(1, c.dtype), stream=s) for c in host)
    words = max((int(stage_bytes) + 7) // 8, 1)
    stage = cuda.to_device(np.zeros(words, np.float64), stream=s)
    return DevicePlan(arena, host[0], host[4], host[5], host[6], host[10], cols, stage)


def _needs_run(plan: DevicePlan, i: int, mark: Any, mlo: Any, mhi: Any) -> bool:
    """Whether host node ``i`` has a parent changed within its bytes (reads the marks)."""
    k0, k1 = int(plan.pptr[i]), int(plan.pptr[i + 1])
    if k1 == k0:
        return False
    pages = plan.ppage[k0:k1]
    m, lo, hi = (a.copy_to_host() for a in (mark, mlo, mhi))
    hit = m[pages] != 0
    if not hit.any():
        return False
    return bool(min(int(plan.nbytes[i]), int(lo[pages][hit].min())) < int(hi[pages][hit].max()))


def run_nodes_device(
    start: int,
    plan: DevicePlan,
    slot: Any,
    mark: Any,
    mlo: Any,
    mhi: Any,
    changed: Any,
    lo: Any,
    hi: Any,
    slo: Any,
    shi: Any,
) -> tuple[int, int]:
    """Run nodes from ``start`` as ``propkernels.run_nodes`` does; return (position of the
    next host node to run, or the node count when done; nodes recomputed here).

    ``slot`` (the page table's slot column) and the per-page (``mark``, ``mlo``, ``mhi``)
    and per-node (``changed`` .. ``shi``) columns are device arrays the caller keeps for
    the pass; the staged bytes stay in ``plan.stage``."""
    arena = plan.arena
    cuda, s = arena.cuda, arena.stream
    buf = arena.buf
    words = arena.capacity // 8 * 8
    views = (buf, buf[:words].view(np.float32), buf[:words].view(np.float64))
    stage = plan.stage
    sviews = (stage.view(np.uint8), stage.view(np.float32), stage)
    counter = cuda.to_device(np.zeros(1, np.int64), stream=s)
    prop = kernels().prop_level_k
    n = len(plan)
    pos = start
    while pos < n:
        stop, levels = plan.stretch(pos)
        for nodes in levels:
            blocks = max(1, min(int(nodes.size), 1 << 16))
            prop[blocks, arena.threads, s](
                nodes, *plan.cols, slot, mark, mlo, mhi, changed, lo, hi, slo, shi, *views,
                *sviews, counter,
            )  # fmt: skip
        if stop >= n:
            pos = n
            break
        arena.synchronize()
        if _needs_run(plan, stop, mark, mlo, mhi):
            pos = stop
            break
        pos = stop + 1
    done = counter.copy_to_host(stream=s)
    arena.synchronize()
    return pos, int(done[0])


def gather_stage(plan: DevicePlan, starts: Any, lengths: Any) -> npt.NDArray[np.uint8]:
    """Bytes of the staging buffer, slices concatenated on the host (the derived batch's
    payload, as ``propkernels.gather_ranges``)."""
    st = np.ascontiguousarray(starts, np.int64)
    ln = np.ascontiguousarray(lengths, np.int64)
    total = int(ln.sum())
    if st.size == 0 or total == 0:
        return np.zeros(total, np.uint8)
    arena = plan.arena
    cuda, s = arena.cuda, arena.stream
    ost = np.zeros(st.size, np.int64)
    np.cumsum(ln[:-1], out=ost[1:])
    out = cuda.device_array(total, np.uint8, stream=s)
    kernels().gather_k[max(1, min(int(st.size), 1 << 16)), arena.threads, s](
        plan.stage.view(np.uint8), cuda.to_device(st, stream=s), cuda.to_device(ln, stream=s),
        cuda.to_device(ost, stream=s), out,
    )  # fmt: skip
    host = np.empty(total, np.uint8)
    out.copy_to_host(host, stream=s)
    arena.synchronize()
    return host
