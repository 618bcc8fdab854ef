"""Kernels compiled on first use (``mmsb.engine.jit``): no numba at import, the same
results before and after the first call, and numba's on-disk cache keyed by the source."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmsb.engine import jit

ENGINE = Path(jit.__file__).parent
CONVERTED = ("atomics", "commit_kernels", "gc_kernels", "graphkernels", "kernels")

TOY = """
from mmsb.engine.jit import njit

STEP = {step}


@njit(cache={cache}, nogil=True)
def add_step(x):
    return x + STEP


@njit(cache={cache}, nogil=True)
def twice(x):
    return add_step(add_step(x))
"""


def run_python(code: str, **env: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, **env})  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_the_kernel_modules_import_without_numba() -> None:
    names = ", ".join(f"mmsb.engine.{m}" for m in CONVERTED)
    code = f"import sys, {names}; print('numba' in sys.modules)"
    assert run_python(code).split() == ["False"]


def test_a_kernel_is_the_same_function_before_and_after_its_module_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mmsb_toy_kernels.py").write_text(TOY.format(step=3, cache=False))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mmsb_toy_kernels as toy

    held = toy.add_step
    assert isinstance(held, jit.Kernel) and "not loaded" in repr(held)
    assert held.__name__ == "add_step" and held.py_func(1) == 4  # the Python function
    assert toy.twice(1) == 7  # the first call loads the module: a kernel calling a kernel
    assert not isinstance(toy.add_step, jit.Kernel)  # the module now holds dispatchers
    assert toy.add_step.signatures and "loaded" in repr(held)
    assert held(10) == 13  # a stand-in kept from before forwards to the dispatcher
    assert held.dispatcher is toy.add_step
    monkeypatch.delitem(sys.modules, "mmsb_toy_kernels")


def test_every_kernel_of_the_engine_is_listed() -> None:
    """:func:`jit.dispatchers` (what ``mmsb warmup`` reports on) finds every decorated
    function of every kernel module."""
    declared = set()
    for module in jit.kernel_modules():
        path = ENGINE / f"{module.rsplit('.', 1)[1]}.py"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                "njit" in ast.unparse(d) for d in node.decorator_list
            ):
                declared.add(f"{path.stem}.{node.name}")
    assert {name for name, _ in jit.dispatchers()} == declared


PROBE = """
import json, mmsb_toy_kernels as toy
result = toy.twice(1)
d = toy.twice
print(json.dumps([result, sum(d.stats.cache_hits.values()), sum(d.stats.cache_misses.values())]))
"""


def test_the_cache_is_used_and_never_for_changed_source(tmp_path: Path) -> None:
    """Compiled once, loaded by the next process; after the source changes (same length,
    so only the content differs) the old machine code is not used."""
    src = tmp_path / "src"
    src.mkdir()
    module = src / "mmsb_toy_kernels.py"
    module.write_text(TOY.format(step=3, cache=True))
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(src)}
    assert json.loads(run_python(PROBE, **env)) == [7, 0, 1]  # compiled
    assert json.loads(run_python(PROBE, **env)) == [7, 1, 0]  # from the cache
    stat = module.stat()
    module.write_text(TOY.format(step=5, cache=True))
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time
    assert json.loads(run_python(PROBE, **env)) == [11, 0, 1]  # compiled afresh
    assert json.loads(run_python(PROBE, **env)) == [11, 1, 0]


def test_without_a_writable_cache_directory_kernels_compile_in_memory(tmp_path: Path) -> None:
    """numba raises when no cache directory is writable; the kernels then compile without
    the cache, as every process did before caching, instead of failing."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "mmsb_toy_kernels.py").write_text(TOY.format(step=3, cache=True))
    (src / "__pycache__").write_text("a file where numba wants a directory")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    env = {"PYTHONPATH": str(src), "HOME": str(blocked), "XDG_CACHE_HOME": str(blocked)}
    code = "import os; os.environ.pop('NUMBA_CACHE_DIR', None)\n" + PROBE
    assert json.loads(run_python(code, **env))[0] == 7


def test_threads_calling_a_kernel_first_at_once_all_get_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "mmsb_toy_threads.py").write_text(TOY.format(step=2, cache=False))
    monkeypatch.syspath_prepend(str(tmp_path))
    import mmsb_toy_threads as toy

    held = toy.twice
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(held, range(32)))
    assert results == [i + 4 for i in range(32)]
    assert toy.twice is held.dispatcher and "mmsb_toy_threads" in jit._loaded
    monkeypatch.delitem(sys.modules, "mmsb_toy_threads")


COUNTING = """
import numpy as np
from mmsb.engine.jit import njit


@njit(cache=False, nogil=True{opt})
def first_diff(a, b, o):
    for j in range(4):
        if a[o + j] != b[o + j]:
            return j
    return -1


@njit(cache=False, nogil=True{opt})
def diffs(a, b, out):
    for i in range(out.size):
        out[i] = first_diff(a, b, 4 * i)


@njit(cache=False, nogil=True{opt})
def fresh(n):
    return np.zeros(n)
"""


def _counting_module(tmp_path: Path, name: str, opt: str) -> object:
    (tmp_path / f"{name}.py").write_text(COUNTING.format(opt=opt))
    sys.path.insert(0, str(tmp_path))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_refcounts_false_takes_numbas_reference_counting_out_of_a_kernel(tmp_path: Path) -> None:
    import numpy as np

    off = _counting_module(tmp_path, "mmsb_toy_nocount", ", refcounts=False")
    on = _counting_module(tmp_path, "mmsb_toy_count", "")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 3, 4000).astype(np.uint8)
    b = rng.integers(0, 3, 4000).astype(np.uint8)
    got, want = np.empty(1000, np.int64), np.empty(1000, np.int64)
    off.diffs(a, b, got)  # type: ignore[attr-defined]
    on.diffs(a, b, want)  # type: ignore[attr-defined]
    assert np.array_equal(got, want) and (got >= 0).any() and (got < 0).any()

    def counts(kernel: object) -> int:
        llvm = kernel.inspect_llvm()  # type: ignore[attr-defined]  # (loaded: a dispatcher)
        return sum(ir.count("NRT_incref") for ir in llvm.values())

    # with counting, the per-row call increments both arrays' counts in the loop
    assert counts(on.diffs) > 0  # type: ignore[attr-defined]
    assert counts(off.diffs) == 0  # type: ignore[attr-defined]
    assert on.fresh(3).tolist() == [0.0, 0.0, 0.0]  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="array"):  # making an array needs the counting
        off.fresh(3)  # type: ignore[attr-defined]


def test_refcounts_false_is_dropped_where_numba_does_not_take_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import numba

    opts = {"cache": True, "nogil": True, "refcounts": False}
    assert jit.numba_options(numba, opts) == {"cache": True, "nogil": True, "_nrt": False}
    assert jit.numba_options(numba, {"cache": True}) == {"cache": True}
    assert jit._takes_nrt(numba)
    monkeypatch.setattr(jit, "_takes_nrt", lambda numba: False)  # a numba without it
    assert jit.numba_options(numba, opts) == {"cache": True, "nogil": True}


def test_the_propagation_kernels_run_without_reference_counting() -> None:
    from mmsb.engine import propkernels as pk

    jit.load(pk.__name__)
    names = [n for n, v in vars(pk).items() if hasattr(v, "targetoptions")]
    assert "run_nodes" in names and "stage_rows" in names and "_diff" in names
    for name in names:  # changed_rows returns new arrays: it keeps the counting
        assert (getattr(pk, name).targetoptions.get("_nrt") is False) == (name != "changed_rows"), (
            name
        )
