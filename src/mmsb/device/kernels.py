"""CUDA kernels for device pages (numba-cuda; the same source runs in the simulator).

Importing this module imports ``numba.cuda``: only code that already holds a backend
(:func:`mmsb.device.probe.backend`) imports it. Each kernel is written once as a plain
function and compiled lazily by ``cuda.jit`` on its first launch; :data:`SIGNATURES` gives
the argument types the host code passes, which ``tools/gpu_ptx.py`` compiles to PTX.

Apply semantics are those of :func:`mmsb.engine.kernels.apply_rows_in`: rows in batch
order, later bytes win; kinds 0 = range (copy), 1 = dense masked (write where the mask byte
is non-zero), 2 = sparse masked (the payload holds only the bytes at set mask positions).
Row addresses come precomputed (``bases[i] = slot[page] + offset``, see
:mod:`mmsb.device.plan`), so the kernels never read the page table.

**Ordering.** :func:`apply_ordered` gives each page to one block (rows grouped by page,
in batch order within the group). The block walks its rows one after another; inside a row
every byte position belongs to exactly one thread (a stride for kinds 0 and 1, a contiguous
chunk for kind 2), and a block barrier (``syncthreads``) separates consecutive rows, so all
writes of row r are done and visible to the block before any write of row r + 1. Pages'
slots are disjoint, so no other block writes these bytes: each byte ends as the last row
in batch order that writes it, exactly as on the host, whatever the schedule.
:func:`apply_disjoint` (one thread per row, no order at all) runs only on batches the host
proved to have no two overlapping rows.

**Floating point.** The propagation kernels must give the host's bits. NVVM contracts
``a + w * x`` into one fused multiply-add (one rounding instead of two) unless the product
is an explicit round-to-nearest multiply, so on a device the products go through
``libdevice.fmul_rn``/``dmul_rn``; the simulator (numpy scalars, no contraction) multiplies
plainly.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from mmsb.device.probe import loaded_as_simulator

# typed as Any: numba ships no type information, and mypy reads numba.cuda's source
cuda: Any = importlib.import_module("numba.cuda")

SIMULATOR = loaded_as_simulator(cuda)
MAX_THREADS = 256  # the largest block the kernels accept (their shared arrays' size)
BIG: Any = np.int64(1) << np.int64(62)

if SIMULATOR:

    def _mul32(a: Any, b: Any) -> Any:
        return a * b

    _mul64 = _mul32
else:  # pragma: no cover - needs the CUDA toolkit's libdevice
    libdevice: Any = importlib.import_module("numba.cuda.libdevice")
    _mul32 = libdevice.fmul_rn
    _mul64 = libdevice.dmul_rn

# Kernels call no device functions of their own (``cuda.jit(device=True)``): compiling a
# kernel that calls one asks the driver for the current device, so ``compile_ptx`` would
# need a GPU. Helpers are written out in the kernels; libdevice functions are intrinsics.


# -- apply -----------------------------------------------------------------------------------


def apply_ordered(
    arena: Any, bases: Any, lengths: Any, kinds: Any, pstarts: Any, mstarts: Any,
    payload: Any, mask: Any, order: Any, gstarts: Any,
) -> None:  # fmt: skip
    """One block per page group ``order[gstarts[g]:gstarts[g+1]]`` (grid-stride over
    groups); rows of a group in order, a barrier after each row."""
    counts = cuda.shared.array(MAX_THREADS, np.int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for g in range(cuda.blockIdx.x, gstarts.size - 1, cuda.gridDim.x):
        for t in range(gstarts[g], gstarts[g + 1]):
            i = order[t]
            base = bases[i]
            n = lengths[i]
            ps = pstarts[i]
            k = kinds[i]
            if k == 0:
                for j in range(tid, n, nt):
                    arena[base + j] = payload[ps + j]
            elif k == 1:
                ms = mstarts[i]
                for j in range(tid, n, nt):
                    if mask[ms + j] != 0:
                        arena[base + j] = payload[ps + j]
            else:
                # thread tid owns bytes [c0, c1); its first payload byte follows the set
                # mask bits of the chunks before it (a prefix over the block's counts)
                ms = mstarts[i]
                chunk = (n + nt - 1) // nt
                c0 = min(tid * chunk, n)
                c1 = min(c0 + chunk, n)
                bits = 0
                for j in range(c0, c1):
                    if mask[ms + j] != 0:
                        bits += 1
                counts[tid] = bits
                cuda.syncthreads()
                c = ps
                for q in range(tid):
                    c += counts[q]
                for j in range(c0, c1):
                    if mask[ms + j] != 0:
                        arena[base + j] = payload[c]
                        c += 1
            cuda.syncthreads()


def apply_disjoint(
    arena: Any, bases: Any, lengths: Any, kinds: Any, pstarts: Any, mstarts: Any,
    payload: Any, mask: Any,
) -> None:  # fmt: skip
    """One thread per row (grid-stride). Only for batches whose rows do not overlap."""
    for i in range(cuda.grid(1), bases.size, cuda.gridsize(1)):
        base = bases[i]
        n = lengths[i]
        ps = pstarts[i]
        k = kinds[i]
        if k == 0:
            for j in range(n):
                arena[base + j] = payload[ps + j]
        elif k == 1:
            ms = mstarts[i]
            for j in range(n):
                if mask[ms + j] != 0:
                    arena[base + j] = payload[ps + j]
        else:
            ms = mstarts[i]
            c = ps
            for j in range(n):
                if mask[ms + j] != 0:
                    arena[base + j] = payload[c]
                    c += 1


# -- gathers and fills -----------------------------------------------------------------------


def gather(arena: Any, starts: Any, lengths: Any, ostarts: Any, out: Any) -> None:
    """``out[ostarts[g]:...] = arena[starts[g]:starts[g] + lengths[g]]``, a block per slice."""
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for g in range(cuda.blockIdx.x, starts.size, cuda.gridDim.x):
        s = starts[g]
        o = ostarts[g]
        for j in range(tid, lengths[g], nt):
            out[o + j] = arena[s + j]


def fill(arena: Any, starts: Any, lengths: Any, value: Any) -> None:
    """Set every byte of the slices ``arena[starts[g]:starts[g] + lengths[g]]`` to
    ``value``, a block per slice (zeroing deleted pages' slots)."""
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for g in range(cuda.blockIdx.x, starts.size, cuda.gridDim.x):
        s = starts[g]
        for j in range(tid, lengths[g], nt):
            arena[s + j] = value


# -- semiring propagation ----------------------------------------------------------------------


def prop_level(
    nodes: Any, kind: Any, group: Any, zero32: Any, zero64: Any, pptr: Any, ppage: Any,
    pnode: Any, w32: Any, w64: Any, child: Any, nbytes: Any, stage_off: Any, slot: Any,
    mark: Any, mlo: Any, mhi: Any, changed: Any, lo: Any, hi: Any, slo: Any, shi: Any,
    arena8: Any, arena32: Any, arena64: Any, stage8: Any, stage32: Any, stage64: Any,
    counter: Any,
) -> None:  # fmt: skip
    """Recompute the nodes ``nodes`` (one topological level: none is another's parent),
    a block per node, as :func:`mmsb.engine.propkernels.run_nodes` does for each: the
    elements inside the union of the parents' changed ranges are folded into the node's
    staging slot, compared with its page, and a changed node marks its page. The element
    operations are those of :func:`mmsb.engine.propkernels._apply`: codes 1 MIN_PLUS, 2
    MAX_PLUS, 3 MAX_MIN, 4 SUM_PRODUCT, and min and max keep NaN as numpy does."""
    sh = cuda.shared.array(4, np.int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for b in range(cuda.blockIdx.x, nodes.size, cuda.gridDim.x):
        i = nodes[b]
        k0 = pptr[i]
        k1 = pptr[i + 1]
        if tid == 0:
            rlo = nbytes[i]
            rhi = 0
            for k in range(k0, k1):
                p = ppage[k]
                if mark[p] != 0:
                    rlo = min(rlo, mlo[p])
                    rhi = max(rhi, mhi[p])
            sh[0] = rlo
            sh[1] = rhi
            sh[2] = BIG
            sh[3] = -1
        cuda.syncthreads()
        rlo = sh[0]
        rhi = sh[1]
        if rhi > rlo:  # the same for every thread of the block
            g = group[i]
            code = kind[i]
            so = stage_off[i]
            item = 1 if g == 0 else (4 if g == 1 else 8)
            e0 = rlo // item
            e1 = min((rhi + item - 1) // item, nbytes[i] // item)
            for e in range(e0 + tid, e1, nt):
                if g == 0:
                    acc8 = np.uint8(0)
                    for k in range(k0, k1):
                        if w64[k] == 0:
                            continue  # false ⊗ x is false, the identity of ⊕
                        pn = pnode[k]
                        if pn >= 0 and changed[pn] != 0 and slo[pn] <= e < shi[pn]:
                            x8 = stage8[stage_off[pn] + e]
                        else:
                            x8 = arena8[slot[ppage[k]] + e]
                        if x8 != 0:
                            acc8 = np.uint8(1)
                    stage8[so + e] = acc8
                elif g == 1:
                    acc32 = zero32[i]
                    for k in range(k0, k1):
                        pn = pnode[k]
                        if pn >= 0 and changed[pn] != 0 and slo[pn] // 4 <= e < shi[pn] // 4:
                            x32 = stage32[stage_off[pn] // 4 + e]
                        else:
                            x32 = arena32[slot[ppage[k]] // 4 + e]
                        wf = w32[k]
                        if code == 4:
                            acc32 = acc32 + _mul32(wf, x32)
                        elif code == 3:
                            v32 = wf if (wf <= x32 or wf != wf) else x32
                            acc32 = acc32 if (acc32 >= v32 or acc32 != acc32) else v32
                        elif code == 1:
                            v32 = wf + x32
                            acc32 = acc32 if (acc32 <= v32 or acc32 != acc32) else v32
                        else:
                            v32 = wf + x32
                            acc32 = acc32 if (acc32 >= v32 or acc32 != acc32) else v32
                    stage32[so // 4 + e] = acc32
                else:
                    acc64 = zero64[i]
                    for k in range(k0, k1):
                        pn = pnode[k]
                        if pn >= 0 and changed[pn] != 0 and slo[pn] // 8 <= e < shi[pn] // 8:
                            x64 = stage64[stage_off[pn] // 8 + e]
                        else:
                            x64 = arena64[slot[ppage[k]] // 8 + e]
                        wd = w64[k]
                        if code == 4:
                            acc64 = acc64 + _mul64(wd, x64)
                        elif code == 3:
                            v64 = wd if (wd <= x64 or wd != wd) else x64
                            acc64 = acc64 if (acc64 >= v64 or acc64 != acc64) else v64
                        elif code == 1:
                            v64 = wd + x64
                            acc64 = acc64 if (acc64 <= v64 or acc64 != acc64) else v64
                        else:
                            v64 = wd + x64
                            acc64 = acc64 if (acc64 >= v64 or acc64 != acc64) else v64
                    stage64[so // 8 + e] = acc64
            cuda.syncthreads()
            b0 = e0 * item
            b1 = e1 * item
            cs = slot[child[i]]
            first = BIG
            last = -1
            for j in range(b0 + tid, b1, nt):
                if stage8[so + j] != arena8[cs + j]:
                    first = min(first, j)
                    last = max(last, j)
            if last >= 0:
                cuda.atomic.min(sh, 2, first)
                cuda.atomic.max(sh, 3, last)
            cuda.syncthreads()
            if tid == 0:
                cuda.atomic.add(counter, 0, 1)
                slo[i] = b0
                shi[i] = b1
                if sh[3] >= 0:
                    c = child[i]
                    changed[i] = 1
                    lo[i] = sh[2]
                    hi[i] = sh[3] + 1
                    mark[c] = 1
                    mlo[c] = sh[2]
                    mhi[c] = sh[3] + 1
        cuda.syncthreads()  # the next node of this block reuses sh


# -- compiled kernels and their signatures ---------------------------------------------------

_U8, _I64, _F32, _F64 = "uint8[::1]", "int64[::1]", "float32[::1]", "float64[::1]"
_APPLY = [_U8, _I64, _I64, _U8, _I64, _I64, _U8, _U8]
_PROP = [
    *(_I64, _I64, _I64, _F32, _F64, _I64, _I64, _I64, _F32, _F64, _I64, _I64, _I64, _I64),
    *(_U8, _I64, _I64, _U8, _I64, _I64, _I64, _I64),
    *(_U8, _F32, _F64, _U8, _F32, _F64, _I64),
]
SIGNATURES: dict[str, tuple[Any, str]] = {
    "apply_ordered": (apply_ordered, f"void({', '.join([*_APPLY, _I64, _I64])})"),
    "apply_disjoint": (apply_disjoint, f"void({', '.join(_APPLY)})"),
    "gather": (gather, f"void({_U8}, {_I64}, {_I64}, {_I64}, {_U8})"),
    "fill": (fill, f"void({_U8}, {_I64}, {_I64}, uint8)"),
    "prop_level": (prop_level, f"void({', '.join(_PROP)})"),
}

apply_ordered_k = cuda.jit(apply_ordered)
apply_disjoint_k = cuda.jit(apply_disjoint)
gather_k = cuda.jit(gather)
fill_k = cuda.jit(fill)
prop_level_k = cuda.jit(prop_level)
