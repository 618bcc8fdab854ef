"""Semiring propagation on the device against ``propkernels.run_nodes`` (the host kernel):
the same staged bytes, changed ranges and marks, pass after pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from mmsb.device import Backend
from mmsb.device.apply import apply_rows_device
from mmsb.device.arena import DeviceArena
from mmsb.device.propagate import device_plan, gather_stage, run_nodes_device
from mmsb.engine import propkernels as pk

# the simulator computes with numpy scalars, which warn where a device quietly gives NaN
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")

ZERO = {0: 0.0, 1: np.inf, 2: -np.inf, 3: -np.inf, 4: 0.0}  # by semiring code
ITEM = {0: 1, 1: 4, 2: 8}  # by dtype group
DTYPE = {0: np.uint8, 1: np.float32, 2: np.float64}


@dataclass
class Case:
    cols: dict[str, Any]  # the plan's columns, as mmsb.graph.propagate.Plan has them
    slots: np.ndarray
    nbytes_page: np.ndarray
    inputs: list[int]
    arena: np.ndarray


def random_case(rng: np.random.Generator, per_group: int, elems: int, hosts: int = 0) -> Case:
    pages: dict[int, int] = {}  # page id -> group
    order: list[tuple[int, int, list[int]]] = []  # (child, group, parents) in topo order
    inputs: list[int] = []
    pid = 1
    chains: dict[int, list[int]] = {}
    for g in (0, 1, 2):
        chains[g] = []
        for _ in range(3):
            pages[pid] = g
            chains[g].append(pid)
            inputs.append(pid)
            pid += 1
    todo = [g for g in (0, 1, 2) for _ in range(per_group)]
    for g in (todo[i] for i in rng.permutation(len(todo))):
        known = chains[g]
        parents = [int(p) for p in rng.choice(known, int(rng.integers(1, 4)), replace=True)]
        pages[pid] = g
        order.append((pid, g, parents))
        known.append(pid)
        pid += 1
    n_pages = pid
    nbytes_page = np.zeros(n_pages, np.int64)
    slots = np.zeros(n_pages, np.int64)
    pos = 0
    for p in range(1, n_pages):
        nbytes_page[p] = elems * ITEM[pages[p]]
        slots[p] = pos
        pos += (int(nbytes_page[p]) + 15) // 8 * 8
    arena = np.zeros(pos + 64, np.uint8)
    for p in range(1, n_pages):
        g = pages[p]
        if g == 0:
            vals = (rng.random(elems) < 0.3).astype(np.uint8)
        else:
            vals = rng.normal(size=elems).round(2)
            vals[rng.random(elems) < 0.05] = np.nan
            vals[rng.random(elems) < 0.05] = np.inf
            vals = vals.astype(DTYPE[g])
        arena[slots[p] : slots[p] + nbytes_page[p]] = vals.view(np.uint8)
    index = {c: i for i, (c, _, _) in enumerate(order)}
    kind, group, zero64, pptr, ppage, pnode, w = [], [], [], [0], [], [], []
    host_nodes = set(rng.choice(len(order), hosts, replace=False).tolist()) if hosts else set()
    for i, (_c, g, parents) in enumerate(order):
        code = 0 if g == 0 else int(rng.integers(1, 5))
        kind.append(pk.HOST if i in host_nodes else code)
        group.append(g)
        zero64.append(ZERO[code])
        for q in parents:
            ppage.append(q)
            pnode.append(index.get(q, -1))
            w.append(float(rng.integers(0, 2)) if g == 0 else round(float(rng.normal()), 3))
        pptr.append(len(ppage))
    child = np.array([c for c, _, _ in order], np.int64)
    nbytes = nbytes_page[child]
    sizes = (nbytes + 7) // 8 * 8
    stage_off = np.zeros(len(order), np.int64)
    stage_off[1:] = np.cumsum(sizes)[:-1]
    w64 = np.array(w, np.float64)
    cols = dict(
        kind=np.array(kind, np.int64), group=np.array(group, np.int64),
        zero64=np.array(zero64, np.float64), pptr=np.array(pptr, np.int64),
        ppage=np.array(ppage, np.int64), pnode=np.array(pnode, np.int64),
        w32=w64.astype(np.float32), w64=w64, child=child, nbytes=nbytes, stage_off=stage_off,
        stage_bytes=int(sizes.sum()),
    )  # fmt: skip
    return Case(cols, slots, nbytes_page, inputs, arena)


def host_pass(case: Case, stage: np.ndarray, mark: np.ndarray, mlo: np.ndarray,
              mhi: np.ndarray) -> tuple[list[int], int, tuple[np.ndarray, ...]]:  # fmt: skip
    c = case.cols
    n = c["kind"].size
    per_node = tuple(np.zeros(n, t) for t in (np.uint8, *[np.int64] * 4))
    a = case.arena
    n8 = a.size // 8 * 8
    mr = np.stack([mlo, mhi], axis=1)  # the host kernel keeps both ends side by side
    stops, total, pos = [], 0, 0
    while pos < n:
        pos, done = pk.run_nodes(
            pos, c["kind"], c["group"], c["zero64"], c["pptr"], c["ppage"], c["pnode"],
            c["w32"], c["w64"], c["child"], c["nbytes"], c["stage_off"], case.slots, mark, mr,
            *per_node, a, a[:n8].view(np.float32), a[:n8].view(np.float64),
            stage.view(np.uint8), stage.view(np.float32), stage,
            *pk.empty_scratch(max(c["ppage"].size, 1)),
        )  # fmt: skip
        total += done
        stops.append(pos)
        pos += 1  # a host node: counted as run, unchanged
    mlo[:], mhi[:] = mr[:, 0], mr[:, 1]
    return stops, total, per_node


def device_pass(
    dev: Backend, case: Case, plan: Any, mark: np.ndarray, mlo: np.ndarray, mhi: np.ndarray
) -> tuple[list[int], int, tuple[np.ndarray, ...]]:
    cuda = dev.cuda
    n = case.cols["kind"].size
    per_node = [cuda.to_device(np.zeros(n, t)) for t in (np.uint8, *[np.int64] * 4)]
    marks = [cuda.to_device(m) for m in (mark, mlo, mhi)]
    slot = cuda.to_device(case.slots)
    stops, total, pos = [], 0, 0
    while pos < n:
        pos, done = run_nodes_device(pos, plan, slot, *marks, *per_node)
        total += done
        stops.append(pos)
        pos += 1
    for host, d in zip((mark, mlo, mhi), marks, strict=True):
        host[:] = d.copy_to_host()
    return stops, total, tuple(d.copy_to_host() for d in per_node)


def random_marks(rng: np.random.Generator, case: Case) -> tuple[np.ndarray, ...]:
    n_pages = case.slots.size
    mark = np.zeros(n_pages, np.uint8)
    mr = np.zeros((n_pages, 2), np.int64)
    pages = [p for p in range(1, n_pages) if rng.random() < 0.4] or [case.inputs[0]]
    lo = np.array([int(rng.integers(0, case.nbytes_page[p])) for p in pages], np.int64)
    hi = np.array([int(rng.integers(lo[i] + 1, case.nbytes_page[p] + 1))
                   for i, p in enumerate(pages)], np.int64)  # fmt: skip
    pk.mark_ranges(mark, mr, np.array(pages, np.int64), lo, hi)
    return mark, mr[:, 0].copy(), mr[:, 1].copy()


@pytest.mark.parametrize(("seed", "hosts"), [(0, 0), (1, 0), (2, 0), (3, 2), (4, 3)])
def test_passes_match_the_host_kernel(dev: Backend, scale: int, seed: int, hosts: int) -> None:
    rng = np.random.default_rng(seed)
    case = random_case(rng, 5 * scale, int(rng.integers(3, 14)), hosts)
    darena = DeviceArena(case.arena.size, min_capacity=256, threads=int(rng.choice([2, 4])))
    darena.from_host(0, case.arena)
    plan = device_plan(darena, *(case.cols[k] for k in (
        "kind", "group", "zero64", "pptr", "ppage", "pnode", "w32", "w64", "child", "nbytes",
        "stage_off", "stage_bytes")))  # fmt: skip
    stage = np.zeros(max(case.cols["stage_bytes"] // 8, 1), np.float64)
    recomputed = 0
    for _tick in range(3):
        hm, hlo, hhi = random_marks(rng, case)
        dm, dlo, dhi = hm.copy(), hlo.copy(), hhi.copy()
        hstops, hdone, hnode = host_pass(case, stage, hm, hlo, hhi)
        dstops, ddone, dnode = device_pass(dev, case, plan, dm, dlo, dhi)
        assert dstops == hstops
        assert ddone == hdone
        for h, d in zip(hnode, dnode, strict=True):
            assert np.array_equal(h, d)
        assert np.array_equal(hm, dm)
        assert np.array_equal(hlo[hm != 0], dlo[dm != 0])
        assert np.array_equal(hhi[hm != 0], dhi[dm != 0])
        dstage = plan.stage.copy_to_host()
        assert np.array_equal(stage.view(np.uint8), dstage.view(np.uint8))
        recomputed += hdone
        # commit the changed pages' new bytes to both arenas, as the tick's batch would
        changed, lo, hi = hnode[0], hnode[1], hnode[2]
        rows = np.flatnonzero(changed)
        if rows.size:
            starts = case.cols["stage_off"][rows] + lo[rows]
            lengths = hi[rows] - lo[rows]
            payload = gather_stage(plan, starts, lengths)
            pids = case.cols["child"][rows]
            pst = np.zeros(rows.size, np.int64)
            np.cumsum(lengths[:-1], out=pst[1:])
            for r in range(rows.size):
                a = int(case.slots[pids[r]] + lo[rows[r]])
                case.arena[a : a + lengths[r]] = payload[pst[r] : pst[r] + lengths[r]]
            z = np.zeros(rows.size, np.int64)
            apply_rows_device(darena, case.slots, pids, lo[rows], lengths,
                              np.zeros(rows.size, np.uint8), pst, z - 1, payload,
                              np.zeros(0, np.uint8))  # fmt: skip
        assert np.array_equal(darena.to_host(0, case.arena.size), case.arena)
    assert recomputed > 0


def test_levels_cut_at_host_nodes_only_where_they_need_running(dev: Backend) -> None:
    rng = np.random.default_rng(9)
    case = random_case(rng, 4, 4, hosts=12)  # all 12 nodes run on the host
    darena = DeviceArena(case.arena.size, min_capacity=256)
    darena.from_host(0, case.arena)
    plan = device_plan(darena, *(case.cols[k] for k in (
        "kind", "group", "zero64", "pptr", "ppage", "pnode", "w32", "w64", "child", "nbytes",
        "stage_off", "stage_bytes")))  # fmt: skip
    stage = np.zeros(max(case.cols["stage_bytes"] // 8, 1), np.float64)
    hm, hlo, hhi = random_marks(rng, case)
    dm, dlo, dhi = hm.copy(), hlo.copy(), hhi.copy()
    hstops, hdone, _ = host_pass(case, stage, hm, hlo, hhi)
    dstops, ddone, _ = device_pass(dev, case, plan, dm, dlo, dhi)
    assert hdone == ddone == 0
    assert dstops == hstops
    assert len(hstops) < 12  # some host nodes had nothing to do and were passed over
