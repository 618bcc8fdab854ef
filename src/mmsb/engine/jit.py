"""Kernels that import numba and compile (or load from numba's on-disk cache) on first use.

Importing numba costs about a quarter of a second and compiling the kernels several
seconds; neither should be paid by ``import mmsb``, ``mmsb --help`` or a command that never
runs a kernel. :func:`njit` takes numba's options but only records the function: it
returns a :class:`Kernel`, a stand-in that numba never sees. The first call of any kernel
of a module imports numba and turns every kernel of that module into a numba dispatcher,
replacing the module's globals (so kernels that call kernels, and callers that look a
kernel up on the module, reach the dispatcher itself); a caller holding the stand-in is
forwarded to it. Compilation stays per signature, on first call, as with ``numba.njit``;
with ``cache=True`` the machine code of each signature is stored on disk and loaded by
later processes (``mmsb warmup`` fills that cache once).

``refcounts=False`` (our option, numba's private ``_nrt=False``) compiles a kernel without
numba's reference counting: arrays are then passed between kernels as plain pointers. For a
kernel that neither allocates nor returns an array this changes nothing but speed. With
counting on, each call of a kernel from another kernel increments and decrements every
array argument's count with an atomic instruction, inside the caller's loop, even when
numba inlines the call: a row helper taking two arrays measured 26 ns a call against 0.8 ns
without (4,096 calls: 106 against 3.2 us). A kernel that allocates fails to compile with it.
Where numba no longer takes the option, the kernel compiles with counting (slower, same
results).

A module that needs numba objects at module level (intrinsics) defines
``_numba_globals()``: it is called, with numba importable, before that module's first
kernel is compiled, and the names it returns are set in the module.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])

#: Every module (by name) that defines kernels with :func:`njit`.
MODULES: list[str] = []

_lock = threading.RLock()
_loaded: set[str] = set()
_loading: set[str] = set()


class Kernel:
    """A kernel not compiled yet: calls and attribute lookups go to its numba dispatcher,
    which the first of them creates (for every kernel of the module at once)."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.py_func = fn
        self.options = options
        self.__module__ = fn.__module__
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self._dispatcher: Any = None  # made while the module loads
        self._ready: Any = None  # the same, once the whole module is loaded: what calls use

    @property
    def dispatcher(self) -> Any:
        """The numba dispatcher (created, with its module's others, on first use)."""
        if self._ready is None:
            load(self.__module__)
            if self._ready is None:  # asked while its own module is loading (a kernel of
                return self._dispatcher  # another module loaded meanwhile refers to it)
        return self._ready

    def __call__(self, *args: Any) -> Any:
        return (self._ready or self.dispatcher)(*args)

    def __getattr__(self, name: str) -> Any:  # .signatures, .stats of numba's dispatcher
        return getattr(self.dispatcher, name)

    def __repr__(self) -> str:
        state = "not loaded" if self._ready is None else "loaded"
        return f"<kernel {self.__module__}.{self.__qualname__} ({state})>"


def njit(**options: Any) -> Callable[[F], F]:
    """``numba.njit(**options)``, deferred to the first call of a kernel of this module."""

    def record(fn: F) -> F:
        if fn.__module__ not in MODULES:
            MODULES.append(fn.__module__)
        return cast(F, Kernel(fn, options))

    return record


def load(module: str) -> None:
    """Turn every kernel of ``module`` into a numba dispatcher (once; thread-safe: other
    threads see the kernels only when the whole module is done).

    Compilation itself stays lazy: a signature is compiled, or loaded from the cache, on
    the first call with it."""
    if module in _loaded:
        return
    with _lock:
        if module in _loaded or module in _loading:
            return
        _loading.add(module)
        try:
            import numba

            namespace = vars(sys.modules[module])
            prepare = namespace.get("_numba_globals")
            if prepare is not None:
                namespace.update(prepare())
            own = [
                v for v in namespace.values() if isinstance(v, Kernel) and v.__module__ == module
            ]
            for kernel in own:
                if kernel._dispatcher is None:
                    kernel._dispatcher = _dispatcher(numba, kernel)
            for name, value in list(namespace.items()):  # own kernels, then imported ones
                if isinstance(value, Kernel):
                    namespace[name] = value._dispatcher if value in own else value.dispatcher
            for kernel in own:
                kernel._ready = kernel._dispatcher
            _loaded.add(module)
        finally:
            _loading.discard(module)


def numba_options(numba: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Our :func:`njit` options as numba's: ``refcounts=False`` becomes ``_nrt=False``
    where this numba takes it (its target options list ``_nrt``), and is dropped
    elsewhere."""
    out = dict(options)
    if out.pop("refcounts", True) is False and _takes_nrt(numba):
        out["_nrt"] = False
    return out


def _takes_nrt(numba: Any) -> bool:
    try:
        from numba.core.cpu import CPUTargetOptions
    except ImportError:  # pragma: no cover - another numba layout
        return False
    return hasattr(CPUTargetOptions, "_nrt")


def _dispatcher(numba: Any, kernel: Kernel) -> Any:
    options = numba_options(numba, kernel.options)
    try:
        return numba.njit(**options)(kernel.py_func)
    except RuntimeError as exc:
        # no writable cache directory anywhere (numba raises "cannot cache function ...: no
        # locator available"): compile in memory only, as each process did before caching
        if "no locator available" not in str(exc) or not options.get("cache"):
            raise
        return numba.njit(**{**options, "cache": False})(kernel.py_func)


def kernel_modules() -> list[str]:
    """The modules of :mod:`mmsb.engine` whose functions are numba kernels (imported)."""
    names = ("atomics", "commit_kernels", "gc_kernels", "graphkernels", "kernels",
             "propkernels")  # fmt: skip
    return [importlib.import_module(f"mmsb.engine.{n}").__name__ for n in names]


def dispatchers() -> Iterator[tuple[str, Any]]:
    """``("module.kernel", dispatcher)`` for every kernel of :func:`kernel_modules`, loading
    (not compiling) them. Works whether a module uses :func:`njit` or ``numba.njit``."""
    from numba.core.dispatcher import Dispatcher

    for module in kernel_modules():
        if module in MODULES:
            load(module)
        for name, value in sorted(vars(sys.modules[module]).items()):
            if isinstance(value, Dispatcher) and value.py_func.__module__ == module:
                yield f"{module.rsplit('.', 1)[1]}.{name}", value


def compile_counts() -> tuple[int, int]:
    """(signatures loaded from the on-disk cache, signatures compiled) in this process,
    over every kernel (from numba's per-dispatcher cache statistics)."""
    hits = misses = 0
    for _, dispatcher in dispatchers():
        stats = dispatcher.stats
        hits += sum(stats.cache_hits.values())
        misses += sum(stats.cache_misses.values())
    return hits, misses


def cached(dispatcher: Any) -> bool:
    """Whether numba's on-disk cache holds machine code of ``dispatcher`` for its current
    source (a kernel reached only from other kernels is compiled into theirs, and has no
    signature of its own in a process that loaded them from the cache)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())  # numba internals
    except (AttributeError, OSError):  # pragma: no cover - another numba version
        return False
