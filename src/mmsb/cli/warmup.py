"""``mmsb warmup``: compile every kernel once, so that later processes load machine code.

The kernels (:mod:`mmsb.engine`) are numba functions compiled on first call, one machine
code version per argument-type signature, and stored in numba's on-disk cache
(``cache=True``). A fresh install has an empty cache, so the first ``apply_batch`` or
``tick`` of the first processes pays seconds of compilation. This command pays it once:
it runs a small workload on buses of its own, in a temporary directory, that calls every
kernel through the same code paths (and so with the same signatures) as real use — the
write path, ticks, the graph, GC, checkpoints and recovery, history, snapshots — and
reports, per group, the time and how many signatures were compiled or loaded from the
cache. Run again, it only loads (a check that the cache is used).

Where the cache lives is numba's choice: ``NUMBA_CACHE_DIR`` when set; else ``__pycache__``
next to the kernel modules when that directory is writable; else the user's cache
directory (``~/.cache/numba``). Each entry is keyed by the kernel's source file (a hash of
its content: an edited file is compiled afresh), numba's version and the CPU, so a cache
never serves code for other sources or another machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import click

from mmsb.cli import progress
from mmsb.cli.output import console, emit_json, grid


@dataclass(frozen=True)
class GroupFigures:
    group: str
    seconds: float
    loaded: int  # signatures loaded from the on-disk cache
    compiled: int  # signatures compiled (and stored)


def _write_path(root: str) -> None:
    import numpy as np

    import mmsb
    from mmsb import Delta, DeltaBatch

    with mmsb.open(os.path.join(root, "write"), sync="always") as bus:
        f64 = [int(p) for p in bus.create_pages(4, 64, dtype="float64", names=["a", "b", "c", "d"])]
        raw = [int(p) for p in bus.create_pages(4, 64)]
        bus.apply_batch(DeltaBatch.from_ranges(f64, [0] * 4, np.ones((4, 8))))
        bus.apply_batch(DeltaBatch.from_ranges(raw, [8] * 4, [b"abcdefgh"] * 4))
        bus.write(f64[0], np.arange(8, dtype=np.float64))
        bus.apply(Delta.dense(raw[0], [1, 0, 1, 1], b"wxyz", offset=4))
        bus.apply(Delta.sparse(raw[1], [1, 0, 1], b"xy", offset=2))
        mixed = [Delta.range(raw[2], b"r" * 8, source="warmup", metadata={"k": 1}),
                 Delta.dense(raw[3], [1, 1], b"dd", offset=1),
                 Delta.sparse(raw[2], [0, 1, 1], b"ss", offset=9, source="other")]  # fmt: skip
        bus.apply_batch(DeltaBatch.from_deltas(mixed))
        bus.apply_batch(DeltaBatch.from_deltas(mixed), workers=2)
        agent = np.dtype([("x", "f8"), ("alive", "?")])
        herd = bus.create_page(agent.itemsize * 4, dtype=agent)
        bus.write_field(herd, "x", [1.0, 2.0], index=[0, 3])
        # batches large enough to be split across two workers, raw and masked rows
        many = [int(p) for p in bus.create_pages(64, 8)]
        rows = 2 * 8192 + 64
        ids = np.resize(np.asarray(many, np.int64), rows)
        batch = DeltaBatch.from_ranges(ids, np.zeros(rows, np.int64), np.ones((rows, 8), np.uint8))
        bus.apply_batch(batch, workers=2)
        bus.apply_batch(batch, workers=1)
        masked = DeltaBatch.from_deltas(
            Delta.sparse(int(p), [1, 0, 1, 1, 0, 0, 0, 1], b"spsp") for p in ids.tolist()
        )
        bus.apply_batch(masked, workers=2)
        with contextlib.suppress(mmsb.InvalidDeltaError):  # refused: its epochs taken back
            bus.apply_batch(DeltaBatch.from_ranges([raw[0]], [60], [b"too long"]))
        bus.set_metadata(raw[0], {"role": "warmup"})
        bus.rename_page(raw[1], "renamed")
        bus.delete_pages(raw[2:])
        bus.read_many(f64)


def _ticks(root: str) -> None:
    import numpy as np

    import mmsb
    from mmsb import DeltaBatch, semiring

    with mmsb.open(os.path.join(root, "ticks"), sync="off") as bus:
        for dtype in ("float32", "float64", "int64", "bool"):
            for sr in semiring.BUILTINS:
                pages = [int(p) for p in bus.create_pages(3, 64, dtype=dtype)]
                try:
                    bus.derive_semiring(pages[2], pages[:2], sr)
                except mmsb.InvalidArgumentError:  # a dtype this semiring does not take
                    bus.delete_pages(pages)
        a, b, total, doubled = (int(p) for p in bus.create_pages(4, 64, dtype="float64"))
        bus.derive_semiring(total, [a, b], semiring.SUM_PRODUCT, weights=[1.0, 2.0])
        bus.derive(doubled, lambda t: t * 2.0, parents=[total], name="double")
        parents = bus.create_pages(8, 64, dtype="float64").reshape(4, 2)
        children = bus.create_pages(4, 64, dtype="float64")
        bus.derive_many(children, lambda s: s.sum(axis=1), parents)
        inputs = [p for p in bus.page_ids() if p not in bus.derivations()]
        for step in range(3):
            data = np.full((len(inputs), 8), step, np.float64).view(np.uint8)
            bus.tick(DeltaBatch.from_ranges(inputs, [0] * len(inputs), data))
        bus.tick()
        bus.provenance(doubled)


def _graph(root: str) -> None:
    import mmsb

    with mmsb.open(os.path.join(root, "graph"), sync="off") as bus:
        ids = [int(p) for p in bus.create_pages(6, 8)]
        graph = bus.graph
        graph.add_edges(list(itertools.pairwise(ids)))
        graph.add_edge(ids[0], ids[5], "control")
        graph.validate()
        graph.topo_order()


def _memory(root: str) -> None:
    import numpy as np

    import mmsb
    from mmsb import DeltaBatch

    with mmsb.open(os.path.join(root, "memory"), sync="off") as bus:
        size = 64 * 1024  # 4 MiB of pages, half deleted: enough free room to compact
        ids = [int(p) for p in bus.create_pages(64, size)]
        bus.apply_batch(DeltaBatch.from_ranges(ids, [0] * 64, np.ones((64, 64), np.uint8)))
        bus.delete_pages(ids[::2])
        bus.checkpoint()
        for _ in range(8):  # find candidates, order them, move: one phase per step
            if bus.gc(100.0).pages_moved:
                break
        for _ in range(3):  # mark the hot pages, then sweep the cold ones
            bus.gc(100.0, cold_after_s=0.0)
        bus.memory()


def _recovery(root: str) -> None:
    import numpy as np

    import mmsb
    from mmsb import DeltaBatch

    path = os.path.join(root, "recovery")
    with mmsb.open(path, sync="normal") as bus:
        ids = [int(p) for p in bus.create_pages(8, 64)]
        for i in range(3):
            bus.apply_batch(DeltaBatch.from_ranges(ids, [i] * 8, np.full((8, 4), i, np.uint8)))
            if i == 1:
                bus.checkpoint()
        lsn = bus.lsn
        bus.delete_pages(ids[:2])
    with mmsb.open(path) as bus:  # writer open: clean state, no replay
        bus.write(ids[3], b"again")
    bus = mmsb.open(path, sync="normal")
    bus.write(ids[4], b"torn")
    bus.abandon()  # as a crash: the next open replays the log
    with mmsb.open(path, readonly=True) as ro:
        with ro.at(lsn - 1) as snap:
            snap.read(ids[0])
            snap.state_hash()
        ro.diff(1, ro.lsn)
        ro.history(ids[3])
        ro.export(os.path.join(root, "exported"), lsn)
        ro.verify()
    with mmsb.open(path) as bus:
        bus.compact()
    mmsb.verify(path)


def _snapshots(root: str) -> None:
    import mmsb

    path = os.path.join(root, "snapshots")
    with mmsb.open(path, sync="off") as bus:
        page = int(bus.create_page(64))
        with bus.snapshot() as snap:
            bus.write(page, b"\x01" * 8)
            snap.read(page)
            snap.read_many([page])
        with mmsb.open(path, readonly=True) as reader, reader.snapshot() as snap:
            snap.read(page)


#: The groups, in order: (name, workload on a fresh directory).
GROUPS: list[tuple[str, Callable[[str], None]]] = [
    ("write path (apply_batch, apply, write_field)", _write_path),
    ("ticks (semirings, Python derivations, groups)", _ticks),
    ("graph (edges, validation, order)", _graph),
    ("memory (GC, compaction, eviction)", _memory),
    ("recovery, history, export, verify", _recovery),
    ("snapshots (shared-memory atomics)", _snapshots),
]


def run(sink: progress.Sink | None = None) -> tuple[float, list[GroupFigures], list[str]]:
    """Import numba, then run every group; (seconds to import numba and set the kernels
    up, figures per group, kernels that no group called)."""
    from mmsb.engine import jit

    t0 = time.perf_counter()
    before = jit.compile_counts()  # imports numba and sets every kernel up
    setup = time.perf_counter() - t0
    figures = []
    with tempfile.TemporaryDirectory(prefix="mmsb-warmup-") as root:
        for i, (name, workload) in enumerate(GROUPS):
            if sink is not None:
                sink("warm-up", i, len(GROUPS))
            t = time.perf_counter()
            workload(root)
            seconds = time.perf_counter() - t
            after = jit.compile_counts()
            figures.append(GroupFigures(name, seconds, after[0] - before[0], after[1] - before[1]))
            before = after
    if sink is not None:
        sink("warm-up", len(GROUPS), len(GROUPS))
    unused = [name for name, d in jit.dispatchers() if not d.signatures and not jit.cached(d)]
    return setup, figures, unused


def _cache_dirs() -> list[str]:
    from mmsb.engine import jit

    return sorted({d.stats.cache_path for _, d in jit.dispatchers() if d.stats.cache_path})


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@progress.option
def warmup(as_json: bool, show_progress: bool | None) -> None:
    """Compile every kernel once (or load it from numba's cache) so later processes start
    fast.

    Runs a small workload on buses in a temporary directory that calls every kernel the
    way real use does, and prints per group the time and how many kernel signatures were
    compiled or loaded from numba's on-disk cache. The cache is NUMBA_CACHE_DIR when set,
    else __pycache__ next to the installed modules when writable, else ~/.cache/numba.
    """
    with progress.bars(progress.wanted(show_progress, json_on_stdout=as_json)) as sink:
        setup, figures, unused = run(sink)
    dirs = _cache_dirs()
    total_compiled = sum(f.compiled for f in figures)
    if as_json:
        emit_json({
            "setup_seconds": setup, "groups": [asdict(f) for f in figures],
            "compiled": total_compiled, "loaded": sum(f.loaded for f in figures),
            "not_called": unused, "cache_dirs": dirs,
        })  # fmt: skip
        return
    rows: list[list[Any]] = [["import numba, set kernels up", f"{setup:.2f}", "-", "-"]]
    rows += [[f.group, f"{f.seconds:.2f}", f.compiled, f.loaded] for f in figures]
    console().print(grid("kernel warm-up", ["group", "seconds", "compiled", "from cache"], rows))
    click.echo(f"numba cache: {', '.join(dirs) or 'none (caching unavailable)'}")
    if unused:
        click.echo(f"not called by the warm-up (compiled on first use): {', '.join(unused)}")
