"""Propagation passes whose plan reads or writes device pages (``gpu``/``unified`` pages
of a state with :class:`~mmsb.storage.devicepages.DevicePages`).

:func:`mmsb.graph.propagate.run_pass` calls :func:`run_device_pass` first on such a state:

* a plan whose pages (parents and derived pages) all live in one device arena, with only
  built-in semiring nodes, runs on the device: the plan's columns are uploaded once per
  plan (cached until the plan is rebuilt), each pass uploads the input marks and the
  device slot column, and :func:`~mmsb.device.propagate.run_nodes_device` computes what
  :func:`~mmsb.engine.propkernels.run_nodes` does, bit for bit; the changed ranges come
  back, and the staged bytes of the changed pages become the pass's batch, which is
  logged and applied (to the device) like any batch;
* any other plan that touches a device page (Python functions, groups, user semirings,
  pages in several places) runs the host pass over a private copy of exactly the plan's
  pages, gathered from wherever each page is;
* a plan with no device page returns None: the ordinary host pass runs.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.device.propagate import DevicePlan, device_plan, gather_stage, run_nodes_device
from mmsb.engine import propkernels as pk
from mmsb.storage.arena import MemoryArena
from mmsb.storage.devicepages import DevicePages
from mmsb.storage.rowcheck import aligned
from mmsb.storage.state import State

I64 = npt.NDArray[np.int64]
Plan = Any  # mmsb.graph.Plan (which imports this module)
HostPass = Callable[[Plan, State, I64, I64, I64, int], Any]
Result = Callable[..., Any]  # mmsb.graph.propagate.pass_result
_plans: weakref.WeakKeyDictionary[Plan, DevicePlan] = weakref.WeakKeyDictionary()


def on_device(plan: Plan, state: State) -> int:
    """The location code of the one device arena holding all of ``plan``'s pages, when
    the device can run the plan (semiring nodes only); 0 otherwise."""
    nodes = np.unique(np.concatenate((plan.child, plan.ppage)))
    locs = state.loc[nodes]
    code = int(locs[0]) if locs.size else 0
    if code == 0 or (locs != code).any():
        return 0
    if (plan.kind == pk.HOST).any() or (plan.gend >= 0).any():
        return 0
    return code


def run_device_pass(
    plan: Plan, state: State, pages: I64, lo_in: I64, hi_in: I64, cause_lsn: int,
    host_pass: HostPass, result: Result,
) -> Any | None:  # fmt: skip
    """The pass for a plan that touches device pages (see the module doc); None when the
    plan touches none."""
    dev = state.dev
    assert isinstance(dev, DevicePages)
    nodes = np.unique(np.concatenate((plan.child, plan.ppage)))
    if not state.loc[nodes].any():
        return None
    code = on_device(plan, state)
    if code:
        return _device_pass(plan, state, dev, code, pages, lo_in, hi_in, cause_lsn, result)
    return _host_copy_pass(plan, state, nodes, pages, lo_in, hi_in, cause_lsn, host_pass)


def _host_copy_pass(
    plan: Plan, state: State, nodes: I64, pages: I64, lo_in: I64, hi_in: I64,
    cause_lsn: int, host_pass: HostPass,
) -> Any:  # fmt: skip
    """The host pass over a private arena holding only the plan's pages (each at an
    8-aligned offset, as both allocators place them)."""
    steps = aligned(state.size[nodes]).astype(np.int64)
    at = np.zeros(nodes.size, np.int64)
    np.cumsum(steps[:-1], out=at[1:])
    arena = MemoryArena(0)
    arena.buf = np.zeros(max(int(steps.sum()), 8), np.uint8)
    state.gather_into(nodes, steps, arena.buf)
    view = copy.copy(state)  # shares the table; only the slots and the arena differ
    view.dev = None
    view.arena = arena
    view.slot = state.slot.copy()
    view.slot[nodes] = at
    return host_pass(plan, view, pages, lo_in, hi_in, cause_lsn)


def _device_pass(
    plan: Plan, state: State, dev: DevicePages, code: int, pages: I64, lo_in: I64,
    hi_in: I64, cause_lsn: int, result: Result,
) -> Any:  # fmt: skip
    arena = dev.arenas[code]
    dp = _plans.get(plan)
    if dp is None or dp.arena is not arena:
        dp = device_plan(arena, plan.kind, plan.group, plan.zero64, plan.pptr, plan.ppage,
                         plan.pnode, plan.w32, plan.w64, plan.child, plan.nbytes,
                         plan.stage_off, int(plan.stage.nbytes))  # fmt: skip
        _plans[plan] = dp
    n, npg = len(plan), state.next_page_id
    mark = np.zeros(npg, np.uint8)
    mr = np.zeros((npg, 2), np.int64)
    pk.mark_ranges(mark, mr, pages, lo_in, hi_in)
    mlo, mhi = np.ascontiguousarray(mr[:, 0]), np.ascontiguousarray(mr[:, 1])
    slots = np.zeros(npg, np.int64)
    k = min(npg, dev.dslot.size)
    slots[:k] = dev.dslot[:k]
    cuda, s = arena.cuda, arena.stream

    def up(a: Any) -> Any:
        return cuda.to_device(a, stream=s)

    changed, lo, hi = (
        up(np.zeros(n, np.uint8)),
        up(np.zeros(n, np.int64)),
        up(np.zeros(n, np.int64)),
    )
    pos, done = run_nodes_device(0, dp, up(slots), up(mark), up(mlo), up(mhi), changed, lo, hi,
                                 up(np.zeros(n, np.int64)), up(np.zeros(n, np.int64)))  # fmt: skip
    assert pos == n, "a device plan has no host nodes"
    return result(
        plan, changed.copy_to_host(), lo.copy_to_host(), hi.copy_to_host(), done, cause_lsn,
        lambda starts, lengths: gather_stage(dp, starts, lengths),
    )  # fmt: skip
