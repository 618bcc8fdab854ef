"""Memory intrinsics for the compiled kernels: byte moves, unaligned word loads, prefetches.

Each becomes one LLVM instruction or one call to the C library where a loop of numba array
accesses would be many: a loop of stores costs ~20 ns for a 64-byte page where ``memmove``
costs ~3 ns, and a kernel that walks rows at random places in a large arena waits for
memory on every row unless it asks for the next rows' bytes early (a prefetch is only a
hint: it never faults and never changes a value, so an address past an array is harmless).

A kernel module uses them by defining ``_numba_globals = memops.numba_globals`` and a
module name set to None for each one it calls (``_move``, ``_load64``, ``_prefetch``):
:mod:`mmsb.engine.jit` calls ``_numba_globals()`` with numba importable before the
module's first kernel compiles (numba is imported then, not when the module is). None of
them checks bounds: callers pass ranges inside their arrays.
"""

from __future__ import annotations

from typing import Any

# rows ahead of the current one whose bytes a kernel walking rows at random asks for
# (measured on 16-byte rows over 64 MiB: 8 to 16 rows ahead are the fastest, 1.6x a loop
# without prefetches; docs/performance.md)
PREFETCH_ROWS = 12


def pointer(context: Any, builder: Any, aty: Any, arr: Any, idx: Any) -> Any:
    """In an intrinsic's code generation: the address of ``arr[idx]`` (no bounds check)."""
    from numba.core import cgutils

    ary = context.make_array(aty)(context, builder, arr)
    return cgutils.get_item_pointer(  # type: ignore[no-untyped-call]
        context, builder, aty, ary, [idx], wraparound=False
    )


def numba_globals() -> dict[str, Any]:
    """``_move``, ``_load64`` and ``_prefetch`` as numba intrinsics."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def move(typingctx: Any, dst: Any, do: Any, src: Any, so: Any, n: Any) -> Any:
        """dst[do:do+n] = src[so:so+n] for uint8 arrays (memmove: overlap is allowed)."""
        sig = types.void(dst, do, src, so, n)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            d = pointer(context, builder, signature.args[0], args[0], args[1])
            s = pointer(context, builder, signature.args[2], args[2], args[3])
            cgutils.raw_memmove(builder, d, s, args[4], 1)  # type: ignore[no-untyped-call]
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def load64(typingctx: Any, arr: Any, off: Any) -> Any:
        """The 8 bytes at arr[off:off+8] of a uint8 array as one uint64 (any alignment)."""
        sig = types.uint64(arr, off)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            p = pointer(context, builder, signature.args[0], args[0], args[1])
            word = builder.bitcast(p, context.get_value_type(types.uint64).as_pointer())
            return builder.load(word, align=1)

        return sig, codegen

    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    prefetch_type = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])

    @intrinsic
    def prefetch(typingctx: Any, arr: Any, idx: Any, write: Any) -> Any:
        """Ask for the cache line holding arr[idx] ahead of a read (``write`` False) or a
        write (True); ``write`` must be a compile-time constant."""
        if not isinstance(write, types.BooleanLiteral):
            return None
        rw = 1 if write.literal_value else 0
        sig = types.void(arr, idx, write)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            p = pointer(context, builder, signature.args[0], args[0], args[1])
            fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
                builder.module, prefetch_type, "llvm.prefetch.p0"
            )
            # locality 3: keep in every cache level; cache type 1: data
            builder.call(fn, [builder.bitcast(p, i8p), i32(rw), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return {"_move": move, "_load64": load64, "_prefetch": prefetch}
