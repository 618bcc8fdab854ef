"""Applying a batch's rows to a :class:`~mmsb.device.arena.DeviceArena`.

:func:`apply_rows_device` has the meaning of :func:`mmsb.engine.kernels.apply_rows` (rows
in batch order, later bytes win, kinds range / dense masked / sparse masked) for a batch
the caller validated: every page live and on this arena, every row inside its page. It
plans on the host (:func:`mmsb.device.plan.plan_rows`), queues the columns' copies to the
device on the arena's stream (columns that already are device arrays are used as they are)
and launches one kernel: the one-thread-per-row kernel when the plan proves the rows
disjoint, the ordered kernel (one block per page) otherwise.

:class:`HostCopy` is the other direction: a device array copied to pinned host memory on a
stream of its own, so a device batch's payload can travel to the log while it is applied.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mmsb.device.arena import DeviceArena, is_device_array, kernels
from mmsb.device.plan import I64, RowPlan, grouped, plan_rows
from mmsb.errors import InvalidArgumentError

Kernel = Literal["auto", "ordered", "disjoint"]
_PAD = np.zeros(1, np.uint8)  # stands for an empty pool (a kernel takes no empty array)


def _numba_array(a: Any) -> Any:
    """A device array with numba's methods (a CuPy array is wrapped, not copied)."""
    if hasattr(a, "copy_to_host"):
        return a
    from mmsb.device.probe import backend

    return backend().cuda.as_cuda_array(a)


def _host(a: Any, dtype: Any) -> npt.NDArray[Any]:
    """A host copy of a column (the planner reads these on the host)."""
    if is_device_array(a):
        a = _numba_array(a).copy_to_host()
    return np.ascontiguousarray(a, dtype)


def _device(arena: DeviceArena, a: Any, dtype: Any, name: str) -> Any:
    """A device copy of a host column (queued on the arena's stream), or the device column
    itself when it already is one of the right dtype."""
    if is_device_array(a):
        if np.dtype(a.dtype) != np.dtype(dtype) or a.ndim != 1:
            raise InvalidArgumentError(
                f"device column {name} must be one-dimensional {np.dtype(dtype).name}, "
                f"got {a.ndim}-d {np.dtype(a.dtype).name}"
            )
        return a if a.size else arena.cuda.to_device(_PAD.astype(dtype), stream=arena.stream)
    host = np.ascontiguousarray(a, dtype)
    if host.size == 0:
        host = _PAD.astype(dtype)
    return arena.cuda.to_device(host, stream=arena.stream)


def apply_rows_device(
    arena: DeviceArena,
    slots: I64,
    page_ids: Any,
    offsets: Any,
    lengths: Any,
    kinds: Any,
    pstarts: Any,
    mstarts: Any,
    payload: Any,
    mask: Any,
    *,
    plan: RowPlan | None = None,
    kernel: Kernel = "auto",
    sync: bool = True,
) -> str:
    """Apply the rows to ``arena``; return the kernel that ran (``"ordered"``,
    ``"disjoint"``, or ``"none"`` for no rows).

    ``slots`` is the host page table's slot column (byte address by page id). ``plan``
    may be given when the caller planned already; ``kernel`` forces a kernel (the disjoint
    one only where the plan proves the rows disjoint). With ``sync=False`` the call returns
    once the work is queued; :meth:`DeviceArena.synchronize` waits for it."""
    if kernel not in ("auto", "ordered", "disjoint"):
        raise InvalidArgumentError(f"kernel must be auto, ordered or disjoint, not {kernel!r}")
    if plan is None:
        plan = plan_rows(
            np.asarray(slots), _host(page_ids, np.int64), _host(offsets, np.int64),
            _host(lengths, np.int64),
        )  # fmt: skip
    n = int(plan.bases.size)
    if n == 0:
        return "none"
    if plan.end > arena.capacity:
        raise InvalidArgumentError(
            f"rows reach byte {plan.end} but the device arena holds {arena.capacity}"
        )
    use = kernel if kernel != "auto" else ("disjoint" if plan.disjoint else "ordered")
    if use == "disjoint" and not plan.disjoint:
        raise InvalidArgumentError("the disjoint kernel needs rows proved not to overlap")
    if use == "ordered" and not plan.grouped:
        plan = grouped(plan, _host(page_ids, np.int64), _host(offsets, np.int64),
                       _host(lengths, np.int64))  # fmt: skip
    cuda, s, k = arena.cuda, arena.stream, kernels()
    cols = (
        arena.buf,
        cuda.to_device(plan.bases, stream=s),
        _device(arena, lengths, np.int64, "lengths"),
        _device(arena, kinds, np.uint8, "kinds"),
        _device(arena, pstarts, np.int64, "pstarts"),
        _device(arena, mstarts, np.int64, "mstarts"),
        _device(arena, payload, np.uint8, "payload"),
        _device(arena, mask, np.uint8, "mask"),
    )
    if use == "disjoint":
        threads = max(arena.threads, 32) if not arena.simulator else arena.threads
        blocks = max(1, min((n + threads - 1) // threads, 1 << 16))
        k.apply_disjoint_k[blocks, threads, s](*cols)
    else:
        groups = int(plan.gstarts.size) - 1
        order = cuda.to_device(plan.order, stream=s)
        gstarts = cuda.to_device(plan.gstarts, stream=s)
        blocks = max(1, min(groups, 1 << 16))
        k.apply_ordered_k[blocks, block_size(arena, plan, n), s](*cols, order, gstarts)
    if sync:
        arena.synchronize()
    return use


def block_size(arena: DeviceArena, plan: RowPlan, n: int) -> int:
    """Threads per page block: on a device, about the mean row length (a warp at least,
    the arena's setting at most), so short rows do not leave most of a block idle at each
    row's barrier. The simulator keeps the arena's setting (tests choose it)."""
    if arena.simulator:
        return arena.threads
    want = 32
    while want < arena.threads and want * n < plan.spanned:
        want *= 2
    return min(want, arena.threads)


class HostCopy:
    """A device array's copy to pinned host memory, queued on its own stream; :meth:`wait`
    returns the host array once the copy is done (the log waits here, not the apply)."""

    def __init__(self, arena: DeviceArena, device_array: Any) -> None:
        cuda = arena.cuda
        self.stream = cuda.stream()
        src = _numba_array(device_array)
        self.host = cuda.pinned_array(src.shape, src.dtype)
        src.copy_to_host(self.host, stream=self.stream)
        self.event = cuda.event()
        self.event.record(self.stream)

    def wait(self) -> npt.NDArray[Any]:
        self.event.synchronize()
        return np.asarray(self.host)
