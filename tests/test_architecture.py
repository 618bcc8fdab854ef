"""The package's shape: no import cycles, the runtime loads no tooling, modules stay small.

The layer contract itself is checked by ``lint-imports`` (``make test``); these tests add
what it does not cover: cycles inside a layer, what ``import mmsb`` pulls in, and size.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src" / "mmsb"
TOOLING = ("mmsb.cli", "mmsb.validation", "mmsb.benchmarks", "mmsb.reliability", "mmsb.purity")
OPTIONAL = ("matplotlib", "rich", "click", "lmdb")


def cycles(nodes: Iterable[str], edges: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph, lambda m: graph[m]) == [["a", "b", "c"]]
    assert cycles({"x": {"y"}, "y": set()}, lambda m: {"x": {"y"}, "y": set()}[m]) == []


def test_the_package_has_no_import_cycle() -> None:
    g = grimp.build_graph("mmsb")
    assert cycles(g.modules, g.find_modules_directly_imported_by) == []


def test_import_mmsb_loads_no_tooling() -> None:
    code = (
        "import sys, mmsb; print('\\n'.join(m for m in sys.modules "
        f"if m.startswith({TOOLING + OPTIONAL!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()  # fmt: skip
    assert out == []


def loaded_by(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of ``prefixes`` that ``code`` leaves imported."""
    listing = f"print('\\n'.join(m for m in sys.modules if m.startswith({prefixes!r})))"
    probe = f"{code}\nimport sys\n{listing}"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=120).stdout.split()  # fmt: skip


def test_import_mmsb_loads_neither_numba_nor_numpy() -> None:
    """Public names load on first use and kernels import numba on their first call, so a
    program or command that never runs a kernel does not pay for numba."""
    assert loaded_by("import mmsb", ("numba", "numpy", "mmsb.bus", "mmsb.engine")) == []
    assert loaded_by("import mmsb; mmsb.MMSBError", ("numba", "numpy")) == []
    assert "mmsb.bus" in loaded_by("import mmsb; mmsb.Bus", ("mmsb.bus",))


def test_mmsb_help_loads_neither_numba_nor_numpy() -> None:
    code = (
        "import contextlib, io\nfrom mmsb.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])"
    )
    assert loaded_by(code, ("numba", "numpy", "rich", "mmsb.bus")) == []


def test_mmsb_verify_stays_the_function() -> None:
    """The lazily loaded package keeps ``mmsb.verify`` the function even after the
    submodule :mod:`mmsb.verify` is imported by another route."""
    code = (
        "import mmsb, mmsb.history, mmsb.verify, types\n"
        "assert not isinstance(mmsb.verify, types.ModuleType), mmsb.verify\n"
        "from mmsb.verify import verify\nassert mmsb.verify is verify"
    )
    loaded_by(code, ())


def test_modules_stay_small() -> None:
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines())
             for p in SRC.rglob("*.py")}  # fmt: skip
    assert {m: n for m, n in sizes.items() if n > 500} == {}
    assert sizes["bus.py"] < 300
