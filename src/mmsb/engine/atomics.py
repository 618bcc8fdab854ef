"""Atomic operations and a full memory fence on 64-bit words of shared memory.

Processes that share a memory-mapped file coordinate through these (the snapshot reader
table, :mod:`mmsb.storage.snapstore`). Python has no atomic read-modify-write on shared
memory and cannot order a store before a later load (x86-64 may let a load overtake an
earlier store to another address: the one reordering TSO allows). Each function here
compiles to one LLVM atomic instruction with sequentially consistent ordering (``lock
xadd``, ``lock cmpxchg``, ``mfence`` on x86-64), so two processes that each store to one
word and then load the other's word cannot both miss each other's store (Dekker's
pattern, which the snapshot registration relies on).

Arguments are 1-D ``uint64`` arrays (typically a view of a shared mapping) and an index;
callers check the index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine.jit import njit

U64 = npt.NDArray[np.uint64]

# The intrinsics, set by _numba_globals() before the first kernel here compiles (numba is
# imported then, not when this module is).
_fence: Any = None
_fetch_add: Any = None
_cas: Any = None


def _numba_globals() -> dict[str, Any]:
    """The LLVM intrinsics the kernels below call (see :mod:`mmsb.engine.jit`)."""
    from numba import types
    from numba.extending import intrinsic

    from mmsb.engine.memops import pointer

    @intrinsic
    def fence(typingctx: Any) -> Any:
        sig = types.void()

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            builder.fence("seq_cst")
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def fetch_add(typingctx: Any, arr: Any, idx: Any, value: Any) -> Any:
        sig = types.uint64(arr, idx, types.uint64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = pointer(context, builder, signature.args[0], args[0], args[1])
            return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

        return sig, codegen

    @intrinsic
    def cas(typingctx: Any, arr: Any, idx: Any, expected: Any, new: Any) -> Any:
        sig = types.uint64(arr, idx, types.uint64, types.uint64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ptr = pointer(context, builder, signature.args[0], args[0], args[1])
            pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "seq_cst")
            return builder.extract_value(pair, 0)

        return sig, codegen

    return {"_fence": fence, "_fetch_add": fetch_add, "_cas": cas}


@njit(cache=True, nogil=True)
def fence() -> None:
    """A full (sequentially consistent) memory fence."""
    _fence()


@njit(cache=True, nogil=True)
def fetch_add(words: U64, i: int, value: Any) -> Any:
    """Atomically add ``value`` (mod 2**64) to ``words[i]``; return the old value."""
    return _fetch_add(words, i, np.uint64(value))


@njit(cache=True, nogil=True)
def compare_exchange(words: U64, i: int, expected: Any, new: Any) -> Any:
    """Atomically set ``words[i] = new`` if it equals ``expected``; return the value it
    held (equal to ``expected`` exactly when the exchange happened)."""
    return _cas(words, i, np.uint64(expected), np.uint64(new))


@njit(cache=True, nogil=True)
def store_fenced(words: U64, i: int, value: Any) -> None:
    """Store ``value`` in ``words[i]``, then fence: the store is visible to every other
    core before any later load of this thread runs."""
    words[i] = np.uint64(value)
    _fence()


@njit(cache=True, nogil=True)
def fence_load(words: U64, i: int) -> Any:
    """Fence, then load ``words[i]``: the load cannot run before this thread's earlier
    stores are visible (the writer's side of Dekker's pattern, in one call)."""
    _fence()
    return words[i]
