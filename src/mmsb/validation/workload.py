"""The shared workload of targets #1 and #2: random ticks against an on-disk bus.

Each tick commits one batch of random deltas of every shape (range, dense masked, sparse
masked) over a fixed set of byte pages and float64 pages, built through the public
constructors (``Delta.range/dense/sparse`` stacked with ``DeltaBatch.from_deltas``, columnar
``DeltaBatch.from_ranges``, single ``Bus.write``). Page creations and deletions are sprinkled
in as commits of their own, and checkpoints are taken at evenly spaced ticks. The live state
hash is recorded after every commit, so any LSN can later be checked against what the live
bus held at that moment.

Everything is driven by one seeded generator and an injected clock: the same parameters give
the same log, byte for byte.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import mmsb
from mmsb import semiring
from mmsb.batch import DeltaBatch
from mmsb.delta import Delta

Progress = Callable[[str, int, int], None]

# the injected clock starts at a fixed instant and advances 1 ms per reading
CLOCK_START_NS = 1_700_000_000_000_000_000
CLOCK_STEP_NS = 1_000_000


@dataclass(frozen=True)
class WorkloadParams:
    ticks: int = 1000
    pages: int = 256  # byte pages created up front
    page_size: int = 1024
    float_pages: int = 8  # float64 pages created up front
    float_page_size: int = 4096
    max_deltas: int = 64  # deltas per tick are drawn from [1, max_deltas]
    checkpoints: int = 3  # taken at evenly spaced ticks, never at the last one
    create_rate: float = 0.05  # chance per tick of a page-creation commit
    delete_rate: float = 0.03  # chance per tick of deleting pages created during the run
    seed: int = 0
    sync: str = "normal"
    derived: bool = True  # a small dependency graph propagated at every tick

    @property
    def checkpoint_ticks(self) -> list[int]:
        step = self.ticks / (self.checkpoints + 1)
        return sorted({round(step * (i + 1)) for i in range(self.checkpoints)} - {0})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> WorkloadParams:
        """The workload described by a target's parameters (unknown keys are ignored)."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in params.items() if k in names})


@dataclass
class WorkloadRun:
    """A finished workload: the bus is still open for writing, at ``path``."""

    params: WorkloadParams
    path: str
    bus: mmsb.Bus
    hashes: list[str]  # hashes[lsn]: live state hash right after commit ``lsn`` (0: empty)
    deltas: int = 0
    batch_commits: int = 0
    pages_created: int = 0
    pages_deleted: int = 0
    checkpoint_lsns: list[int] = field(default_factory=list)
    deleted_ids: list[int] = field(default_factory=list)
    float_ids: list[int] = field(default_factory=list)
    byte_ids: list[int] = field(default_factory=list)
    derived_ids: list[int] = field(default_factory=list)
    derived_commits: int = 0
    derived_deltas: int = 0
    seconds: float = 0.0

    @property
    def lsn(self) -> int:
        return self.bus.lsn


def make_clock() -> Callable[[], int]:
    state = {"t": CLOCK_START_NS}

    def clock() -> int:
        state["t"] += CLOCK_STEP_NS
        return state["t"]

    return clock


def _squash(x: np.ndarray) -> np.ndarray:
    """A Python derivation: a bounded, NaN-free image of its input."""
    out: np.ndarray = np.tanh(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0))
    return out


class _Driver:
    def __init__(self, params: WorkloadParams, bus: mmsb.Bus, run: WorkloadRun) -> None:
        self.p = params
        self.bus = bus
        self.run = run
        self.rng = np.random.default_rng(params.seed)
        self.extra: list[int] = []  # pages created during the run, candidates for deletion
        self.sizes: dict[int, int] = {}
        self.floats: set[int] = set()

    def record(self) -> None:
        self.run.hashes.append(self.bus.state_hash())
        assert len(self.run.hashes) == self.bus.lsn + 1, "one recorded hash per commit"

    def setup(self) -> None:
        p = self.p
        ids = self.bus.create_pages(p.pages, p.page_size, metadata={"role": "bytes"})
        self.record()
        self.run.byte_ids = [int(i) for i in ids]
        self.sizes.update({int(i): p.page_size for i in ids})
        if p.float_pages:
            fids = self.bus.create_pages(p.float_pages, p.float_page_size, dtype="float64")
            self.record()
            self.run.float_ids = [int(i) for i in fids]
            self.sizes.update({int(i): p.float_page_size for i in fids})
            self.floats.update(int(i) for i in fids)
        self.run.pages_created = p.pages + p.float_pages
        if p.derived and p.float_pages >= 4 and p.pages >= 4:
            self.setup_graph()

    def setup_graph(self) -> None:
        """Derived pages over the fixed pages: a semiring diamond feeding a Python function
        and a chain, a boolean page over two byte pages, and a control edge."""
        p, bus = self.p, self.bus
        f0, f1, f2, f3 = self.run.float_ids[:4]
        b0, b1, b2, b3 = self.run.byte_ids[:4]
        d = bus.create_pages(5, p.float_page_size, dtype="float64", metadata={"role": "derived"})
        self.record()
        bb = bus.create_page(p.page_size, metadata={"role": "derived"})
        self.record()
        d1, d2, d3, d4, d5 = (int(x) for x in d)
        steps: list[Callable[[], object]] = [
            lambda: bus.derive_semiring(d1, [f0, f1], semiring.SUM_PRODUCT, weights=[0.5, 2.0]),
            lambda: bus.derive_semiring(d2, [f1, f2], semiring.MIN_PLUS, weights=[1.0, -1.0]),
            lambda: bus.derive_semiring(d3, [d1, d2], semiring.MAX_PLUS),
            lambda: bus.derive(d4, _squash, [d3], name="squash"),
            lambda: bus.derive_semiring(d5, [d4, f3], semiring.MAX_MIN),
            lambda: bus.derive_semiring(bb, [b0, b1], semiring.BOOLEAN),
            lambda: bus.graph.add_edge(b2, b3, "control"),
        ]
        for step in steps:
            step()
            self.record()  # each registration is one logged graph change
        self.run.derived_ids = [d1, d2, d3, d4, d5, bb]
        self.run.pages_created += 6

    def propagate(self) -> None:
        rep = self.bus.tick()
        if rep.derived_deltas:
            self.record()
            self.run.derived_commits += 1
            self.run.derived_deltas += rep.derived_deltas

    def live(self) -> list[int]:
        return self.run.byte_ids + self.run.float_ids + self.extra

    def maybe_create(self, tick: int) -> None:
        rng = self.rng
        if rng.random() >= self.p.create_rate:
            return
        n = int(rng.integers(1, 4))
        size = int(rng.choice([64, 256, 1024, 4096]))
        dtype = str(rng.choice(["uint8", "int32", "float64"]))
        meta = {"born": tick} if rng.random() < 0.5 else None
        ids = self.bus.create_pages(n, size, dtype=dtype, metadata=meta)
        self.record()
        for i in ids.tolist():
            self.extra.append(i)
            self.sizes[i] = size
            if dtype == "float64":
                self.floats.add(i)
        self.run.pages_created += n

    def maybe_delete(self) -> None:
        rng = self.rng
        if not self.extra or rng.random() >= self.p.delete_rate:
            return
        k = int(rng.integers(1, min(3, len(self.extra)) + 1))
        picks = rng.choice(len(self.extra), size=k, replace=False)
        ids = [self.extra[int(i)] for i in picks]
        self.bus.delete_pages(ids)
        self.record()
        for pid in ids:
            self.extra.remove(pid)
            self.floats.discard(pid)
        self.run.deleted_ids += ids
        self.run.pages_deleted += len(ids)

    def random_delta(self, tick: int, row: int, pid: int) -> Delta:
        rng = self.rng
        size = self.sizes[pid]
        meta = {"tick": tick, "row": row} if rng.random() < 0.05 else None
        r = rng.random()
        if r < 0.5:
            if pid in self.floats:
                items = size // 8
                m = int(rng.integers(1, min(16, items) + 1))
                at = int(rng.integers(0, items - m + 1))
                values = rng.standard_normal(m)
                return Delta.range(pid, values, 8 * at, source="validate", metadata=meta)
            length = int(rng.integers(1, min(128, size) + 1))
            off = int(rng.integers(0, size - length + 1))
            data = rng.integers(0, 256, length, dtype=np.uint8)
            return Delta.range(pid, data, off, source="validate", metadata=meta)
        length = int(rng.integers(1, min(256, size) + 1))
        off = int(rng.integers(0, size - length + 1))
        mask = rng.random(length) < rng.random()
        if r < 0.75:
            data = rng.integers(0, 256, length, dtype=np.uint8)
            return Delta.dense(pid, mask, data, off, source="validate", metadata=meta)
        data = rng.integers(0, 256, int(mask.sum()), dtype=np.uint8)
        return Delta.sparse(pid, mask, data, off, source="validate", metadata=meta)

    def tick(self, tick: int) -> None:
        rng = self.rng
        live = self.live()
        kind = rng.random()
        if kind < 0.8:
            k = int(rng.integers(1, self.p.max_deltas + 1))
            pids = [live[int(i)] for i in rng.integers(0, len(live), k)]
            deltas = [self.random_delta(tick, i, pid) for i, pid in enumerate(pids)]
            commit = self.bus.apply_batch(DeltaBatch.from_deltas(deltas))
            self.run.deltas += commit.count
        elif kind < 0.9:
            k = int(rng.integers(1, self.p.max_deltas + 1))
            width = int(rng.integers(8, 65))
            byte_pages = np.asarray(self.run.byte_ids, np.int64)
            targets = byte_pages[rng.integers(0, byte_pages.size, k)]
            offs = rng.integers(0, self.p.page_size - width + 1, k)
            rows = rng.integers(0, 256, (k, width), dtype=np.uint8)
            batch = DeltaBatch.from_ranges(targets, offs, rows, source="validate-columns")
            self.run.deltas += self.bus.apply_batch(batch).count
        else:
            pid = live[int(rng.integers(0, len(live)))]
            if pid in self.floats:
                at = int(rng.integers(0, self.sizes[pid] // 8))
                self.bus.write(pid, np.array([rng.standard_normal()]), offset=8 * at)
            else:
                off = int(rng.integers(0, self.sizes[pid] - 4 + 1))
                self.bus.write(pid, rng.integers(0, 256, 4, dtype=np.uint8).tobytes(), offset=off)
            self.run.deltas += 1
        self.run.batch_commits += 1
        self.record()
        if self.p.derived:
            self.propagate()


def run_workload(
    params: WorkloadParams, directory: str, progress: Progress | None = None
) -> WorkloadRun:
    """Run the workload on a new bus at ``directory``; return it with the bus still open."""
    t0 = time.perf_counter()
    bus = mmsb.open(
        directory,
        sync=params.sync,
        clock=make_clock(),
        checkpoint_every=None,  # checkpoints are taken explicitly, at known ticks
    )
    run = WorkloadRun(params, os.fspath(directory), bus, [])
    try:
        drv = _Driver(params, bus, run)
        drv.record()
        drv.setup()
        stops = set(params.checkpoint_ticks)
        for t in range(1, params.ticks + 1):
            drv.maybe_create(t)
            drv.maybe_delete()
            drv.tick(t)
            if t in stops and t < params.ticks:
                run.checkpoint_lsns.append(bus.checkpoint().lsn)
            if progress is not None:
                progress("ticks", t, params.ticks)
    except BaseException:
        bus.close()
        raise
    run.seconds = time.perf_counter() - t0
    return run
