"""``mmsb bench --compare``: MMSB against LMDB, SQLite and a plain numpy array on shared
memory, on the same bytes in the same run.

Workloads (sizes at ``scale=1``; the page ids, in-page offsets and 64-byte payloads come
from one seeded generator and every system receives exactly the same ones):

* (a) 1,000,000 updates of 64 bytes into 65,536 pages of 4 KiB, in 100 batches of 10,000.
  MMSB: ``DeltaBatch.from_ranges`` + ``Bus.apply_batch`` per batch, log on,
  ``sync="normal"``. LMDB: one write transaction per batch, each update a get of the page,
  a 64-byte splice and a put of the whole page, ``sync=False``. SQLite: WAL,
  ``synchronous=NORMAL``, one transaction per batch holding an ``executemany`` of an UPDATE
  that splices the bytes in SQL. numpy: one fancy-index assignment per batch into a 2-D
  ``uint8`` array over ``multiprocessing.shared_memory`` -- no log, no checks: the floor.
* (b) durable single-update commits, each fsynced: MMSB ``sync="always"``, LMDB
  ``sync=True``, SQLite ``synchronous=FULL`` (WAL).
* (c) random whole-page reads (the same page ids for every system).
* (d) reopen after the same history: clean close, then open + read one page; and MMSB after
  a crash (a writer process that applies (a) and leaves with ``os._exit``), recovered by
  replaying its log.
* (e) the agent simulation of :mod:`mmsb.benchmarks.agents` (4,096 agents; derived pages
  recomputed by a semiring layer and a ``derive_many`` layer each tick) against the same
  computation in plain numpy, interleaved in one process; the two must end bit-identical.

After (a) every system's pages are compared byte for byte with the numpy floor's, and after
(b) the pages (b) touched with the floor plus (b)'s updates; a difference raises
:class:`MismatchError`. LMDB is optional (``pip install 'mmsb[compare]'``); without it the
other systems still run and the report says why LMDB was skipped.

Run as ``python -m mmsb.benchmarks.compare [--scale X] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb.benchmarks.peers import (
    PAGE,
    PAYLOAD,
    READ_MANY_CHUNK,
    WORKLOADS,
    LMDBStore,
    MismatchError,
    MMSBStore,
    NumpyFloor,
    SQLiteStore,
    Store,
    Workload,
    load_lmdb,
    make_workload,
    sizes,
)

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Progress = Callable[[str, int, int], None]


@dataclass
class Figure:
    """One measured figure. ``advantage``: how many times better MMSB's figure is (> 1:
    MMSB faster) than this one, the MMSB figure being the workload's row of system
    ``versus``; None on MMSB's own rows."""

    workload: str
    system: str
    value: float
    unit: str
    conditions: str
    extra: dict[str, Any] = field(default_factory=dict)
    advantage: float | None = None
    versus: str = "MMSB"

    @property
    def rate(self) -> bool:
        return self.unit.endswith("/s")


@dataclass
class Goal:
    text: str
    ratio: float | None  # None: a peer was skipped
    met: bool | None


@dataclass
class Report:
    sizes: dict[str, int]
    seed: int
    figures: list[Figure]
    goals: list[Goal]
    skipped: dict[str, str]
    checks: list[str]
    machine: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "sizes": self.sizes,
            "seed": self.seed,
            "workloads": {
                k: {"title": t, "rows": [asdict(f) for f in self.figures if f.workload == k]}
                for k, t in WORKLOADS.items()
            },
            "goals": [asdict(g) for g in self.goals],
            "skipped": self.skipped,
            "checks": self.checks,
        }


def _u8(v: Any) -> U8:
    return v if isinstance(v, np.ndarray) else np.frombuffer(v, np.uint8)


def check_all(store: Store, expected: U8, when: str) -> str:
    """Every page of ``store`` equals ``expected`` (pages x 4096); else MismatchError."""
    bad: list[int] = []
    n = 0
    for i, v in store.pages():
        if i != n:
            raise MismatchError(f"{store.name}: expected page {n} next, got page {i} ({when})")
        if not np.array_equal(_u8(v), expected[i]):
            bad.append(i)
        n += 1
    if n != expected.shape[0]:
        raise MismatchError(f"{store.name}: {n} pages, the floor has {expected.shape[0]}")
    if bad:
        raise MismatchError(
            f"{store.name}: {len(bad)} of {n} pages differ from the numpy floor {when} "
            f"(first: {bad[:5]})"
        )
    return f"{store.name}: all {n:,} pages equal the numpy floor's {when}"


def check_pages(store: Store, want: dict[int, U8], when: str) -> str:
    bad = [i for i, row in want.items() if not np.array_equal(_u8(store.page(i)), row)]
    if bad:
        raise MismatchError(f"{store.name}: pages {bad[:5]} differ from the floor {when}")
    return f"{store.name}: the {len(want):,} pages checked equal the floor's {when}"


def _write_all(store: Store, w: Workload, progress: Progress) -> Figure:
    times = []
    total = -(-w.pids.size // w.batch)
    for k, (p, o, d) in enumerate(w.batches()):
        times.append(store.apply(p, o, d))
        progress(f"(a) {store.name}", k + 1, total)
    s = float(sum(times))
    return Figure("a", store.name, w.pids.size / s, "updates/s", store.conditions["a"],
                  {"seconds": s, "batches": len(times), "batch": w.batch,
                   "batch_ms_median": statistics.median(times) * 1e3,
                   "batch_ms_max": max(times) * 1e3})  # fmt: skip


def _reads(store: Store, w: Workload) -> Figure:
    ids = w.read_ids.tolist()
    dt = store.read_loop(ids)
    return Figure("c", store.name, len(ids) / dt, "reads/s", store.conditions["c"],
                  {"seconds": dt, "reads": len(ids)})  # fmt: skip


def _batched_reads(store: MMSBStore, w: Workload, expected: U8) -> Figure:
    """(c) again through ``Bus.read_many``: a figure of its own (the goal is judged on
    single reads); every row read is checked against the floor's page."""
    ids = w.read_ids.tolist()
    dt, rows = store.read_many_loop(ids)
    if not np.array_equal(rows, expected[w.read_ids]):
        raise MismatchError("MMSB: Bus.read_many returned rows that differ from the floor")
    return Figure("c", "MMSB read_many", len(ids) / dt, "reads/s",
                  f"Bus.read_many of {READ_MANY_CHUNK:,} random ids per call (one 2-D array "
                  "each); the same ids as the single reads; not used for the goal",
                  {"seconds": dt, "reads": len(ids)})  # fmt: skip


def run_store(store: Store, w: Workload, expected: U8, after_b: dict[int, U8], root: str,
              figures: list[Figure], checks: list[str], progress: Progress) -> None:  # fmt: skip
    """Workloads (a), (c), (d), (b) on one system, checking its pages against the floor."""
    sub = tempfile.mkdtemp(prefix=store.name.lower() + "-", dir=root)
    try:
        store.setup(sub, w.pages)
        try:
            _measure(store, w, expected, after_b, figures, checks, progress)
        finally:
            store.close()
    finally:
        shutil.rmtree(sub, ignore_errors=True)


def _measure(store: Store, w: Workload, expected: U8, after_b: dict[int, U8],
             figures: list[Figure], checks: list[str], progress: Progress) -> None:  # fmt: skip
    figures.append(_write_all(store, w, progress))
    checks.append(check_all(store, expected, "after (a)"))
    figures.append(_reads(store, w))
    sample = {int(i): expected[i] for i in w.read_ids[:256]}
    checks.append(check_pages(store, sample, "in (c)'s first reads"))
    if isinstance(store, MMSBStore):
        figures.append(_batched_reads(store, w, expected))
    times = [store.reopen() for _ in range(3)]
    figures.append(Figure("d", store.name, statistics.median(times), "s",
                          store.conditions["d"], {"runs_s": times}))  # fmt: skip
    n = w.dur_pids.size
    dt = store.durable(w.dur_pids, w.dur_offs, w.dur_data)
    figures.append(Figure("b", store.name, n / dt, "commits/s", store.conditions["b"],
                          {"seconds": dt, "commits": n}))  # fmt: skip
    checks.append(check_pages(store, after_b, "after (b)"))


def run_floor(w: Workload, figures: list[Figure], progress: Progress) -> U8:
    """The numpy floor's (a) and (c); returns its final pages, the oracle for the rest."""
    floor = NumpyFloor()
    floor.setup("", w.pages)
    try:
        figures.append(_write_all(floor, w, progress))
        assert floor.arr is not None
        expected = floor.arr.copy()
        figures.append(_reads(floor, w))
        ids = w.read_ids.tolist()
        dt = floor.read_many_loop(ids)
        figures.append(Figure("c", "numpy shm gather", len(ids) / dt, "reads/s",
                              f"arr[ids] of {READ_MANY_CHUNK:,} random ids per gather: the "
                              "floor for MMSB read_many; not used for the goals",
                              {"seconds": dt, "reads": len(ids)},
                              versus="MMSB read_many"))  # fmt: skip
    finally:
        floor.close()
    return expected


def crash_writer(path: str, scale: float, seed: int) -> NoReturn:
    """Apply (a) to a new bus at ``path``, then leave without closing it (a crash)."""
    w = make_workload(sizes(scale), seed)
    bus = mmsb.open(path, sync="normal")
    ids = bus.create_pages(w.pages, PAGE)
    for p, o, d in w.batches():
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids[p], o, d))
    print(f"applied lsn {bus.lsn}", flush=True)
    os._exit(0)


def run_crash(scale: float, seed: int, expected: U8, root: str, checks: list[str]) -> Figure:
    """(d) for MMSB after a crash: a writer process applies (a) and exits without closing;
    time mmsb.open (replay from the newest checkpoint) + one read; check every page."""
    path = os.path.join(root, "mmsb-crash")
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(mmsb.__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "mmsb.benchmarks.compare", "--crash-writer", path,
           "--scale", repr(scale), "--seed", str(seed)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0 or "applied lsn" not in r.stdout:
        raise RuntimeError(f"the crash writer failed (exit {r.returncode}): {r.stderr[-2000:]}")
    store = MMSBStore(0)
    store.path = path
    t = time.perf_counter()
    store.bus = bus = mmsb.open(path, sync="normal")
    store.ids = bus.page_ids()
    bus.read(int(store.ids[0]))
    dt = time.perf_counter() - t
    try:
        info = bus.recovery
        if info.mode != "replay":
            raise MismatchError(f"MMSB after a crash opened in mode {info.mode!r}, not replay")
        checks.append(check_all(store, expected, "after a crash and recovery"))
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    cond = (f"writer process applied (a) with sync=normal and left with os._exit (no close); "
            f"mmsb.open replayed {info.frames_replayed} frames / {info.deltas_replayed:,} "
            f"deltas after checkpoint LSN {info.checkpoint_lsn} + Bus.read of one page; "
            "one run")  # fmt: skip
    return Figure("d", "MMSB after crash", dt, "s", cond,
                  {"recovery_seconds": info.seconds, "frames_replayed": info.frames_replayed,
                   "deltas_replayed": info.deltas_replayed,
                   "checkpoint_lsn": info.checkpoint_lsn})  # fmt: skip


def run_agents(scale: float, checks: list[str], progress: Progress) -> list[Figure]:
    """(e): :func:`mmsb.benchmarks.agents.agent_sim` at ``scale`` x 4,096 agents (fewer
    ticks below full scale); MismatchError unless the bus and numpy end bit-identical."""
    from mmsb.benchmarks import agents

    full = scale >= 1.0
    n = max(int(4096 * scale), 64)
    r = agents.agent_sim(agents=n, ticks=100 if full else 20, pairs=7 if full else 3,
                         warmup=20 if full else 5, progress=progress)  # fmt: skip
    if not r["identical"]:
        raise MismatchError("MMSB: the agent simulation ended unlike plain numpy's")
    checks.append(f"MMSB: the agent simulation ended bit-identical to plain numpy ({n} agents)")
    shape = (f"{n:,} agents of {r['fields']} float64 fields, {r['neighbours']} neighbours; "
             f"{r['pairs']} interleaved pairs of {r['ticks_per_segment']} ticks, "
             "median")  # fmt: skip
    extra = {k: r[k] for k in ("ratio", "bus_ticks_per_s_pairs", "numpy_ticks_per_s_pairs",
                               "recomputed_per_tick", "warmup_ticks", "log_write_ms_per_tick",
                               "ratio_without_log_write")}  # fmt: skip
    return [
        Figure("e", "MMSB", r["bus_ticks_per_s"], "ticks/s",
               f"{shape}; Bus.tick of the new states (log on, sync=normal) recomputes a "
               "semiring layer (derive_semiring, SUM_PRODUCT) and a derive_many layer; one "
               "read_many of the actions per tick", extra),
        Figure("e", "plain numpy", r["numpy_ticks_per_s"], "ticks/s",
               f"{shape}; the same arrays computed in the same order on numpy arrays, "
               "nothing logged", {"ratio": r["ratio"]}),
    ]  # fmt: skip


def _advantages(figures: list[Figure]) -> None:
    for f in figures:
        if f.system.startswith("MMSB"):
            continue
        mine = next((g for g in figures if g.workload == f.workload and g.system == f.versus),
                    None)  # fmt: skip
        if mine is not None:
            f.advantage = mine.value / f.value if f.rate else f.value / mine.value


GOALS = (  # workload, peer, lowest MMSB advantage, how the ratio is written
    ("a", "LMDB", 10.0, "MMSB/LMDB"),
    ("a", "SQLite", 30.0, "MMSB/SQLite"),
    ("a", "numpy shm", 0.5, "numpy/MMSB"),
    ("c", "LMDB", 1.5, "MMSB/LMDB"),
)
READ_MANY_GAIN = 10.0  # a page through read_many (1,000 ids) vs through a single read
AGENTS_WITHIN = 2.0  # the agent simulation: plain numpy at most this many times faster


def _agents_goal(figures: list[Figure]) -> Goal | None:
    """numpy / MMSB on (e): the median of the interleaved pairs' ratios."""
    f = next((f for f in figures if f.workload == "e" and f.system == "MMSB"), None)
    if f is None:
        return None
    ratio = float(f.extra["ratio"])
    met = ratio <= AGENTS_WITHIN
    rest = float(f.extra["ratio_without_log_write"])
    wrote = float(f.extra["log_write_ms_per_tick"])
    return Goal(f"(e) numpy/MMSB = {ratio:.2f}× (median of the pairs; {rest:.2f}× without "
                f"the log's write calls, {wrote:.2f} ms a tick; goal ≤ {AGENTS_WITHIN:g}×) "
                f"{'✓' if met else '✗'}", ratio, met)  # fmt: skip


def _read_many_goal(figures: list[Figure]) -> Goal | None:
    one = next((f for f in figures if f.workload == "c" and f.system == "MMSB"), None)
    many = next((f for f in figures if f.system == "MMSB read_many"), None)
    floor = next((f for f in figures if f.system == "numpy shm gather"), None)
    if one is None or many is None:
        return None
    gain = many.value / one.value
    bound = "" if floor is None else f"; numpy's gather: {floor.value / one.value:.2f}×"
    met = gain >= READ_MANY_GAIN
    return Goal(f"(c) read_many/read per page = {gain:.2f}× (goal ≥ {READ_MANY_GAIN:g}×{bound}) "
                f"{'✓' if met else '✗'}", gain, met)  # fmt: skip


def goals(figures: list[Figure], skipped: dict[str, str]) -> list[Goal]:
    out = []
    for k, peer, lowest, label in GOALS:
        f = next((f for f in figures if f.workload == k and f.system == peer), None)
        if f is None or f.advantage is None:
            why = skipped.get(peer, "not measured")
            out.append(Goal(f"({k}) {label}: skipped ({why})", None, None))
            continue
        inverted = label.startswith("numpy")
        ratio = 1 / f.advantage if inverted else f.advantage
        goal = f"≤ {1 / lowest:g}×" if inverted else f"≥ {lowest:g}×"
        met = f.advantage >= lowest
        out.append(Goal(f"({k}) {label} = {ratio:.2f}× (goal {goal}) {'✓' if met else '✗'}",
                        ratio, met))  # fmt: skip
    many = _read_many_goal(figures)
    if many is not None:
        out.append(many)
    agents = _agents_goal(figures)
    if agents is not None:
        out.append(agents)
    return out


def run(scale: float = 1.0, *, seed: int = 0, crash: bool = True, agents: bool = True,
        progress: Progress | None = None) -> Report:  # fmt: skip
    """Every workload on every available system; see the module docstring."""
    sz = sizes(scale)
    w = make_workload(sz, seed)
    sink: Progress = progress or (lambda what, done, total: None)
    lmdb, why = load_lmdb()
    skipped = {} if lmdb is not None else {"LMDB": why}
    figures: list[Figure] = []
    checks: list[str] = []
    expected = run_floor(w, figures, sink)
    after_b = {int(i): expected[i].copy() for i in np.unique(w.dur_pids)}
    for p, o, d in zip(w.dur_pids.tolist(), w.dur_offs.tolist(), w.dur_data, strict=True):
        after_b[p][o : o + PAYLOAD] = d
    stores: list[Store] = [MMSBStore(w.batch), SQLiteStore(w.batch)]
    if lmdb is not None:
        stores.insert(1, LMDBStore(lmdb, w.batch))
    root = tempfile.mkdtemp(prefix="mmsb-compare-")
    try:
        for s in stores:
            run_store(s, w, expected, after_b, root, figures, checks, sink)
        if crash:
            figures.append(run_crash(scale, seed, expected, root, checks))
        if agents:
            figures.extend(run_agents(scale, checks, sink))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _advantages(figures)
    machine = {"python": platform.python_version(), "platform": platform.platform(),
               "cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}  # fmt: skip
    return Report(sz, seed, figures, goals(figures, skipped), skipped, checks, machine)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="MMSB against LMDB, SQLite and numpy")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--no-crash", action="store_true", help="skip MMSB's crash recovery")
    ap.add_argument("--no-agents", action="store_true", help="skip the agent simulation")
    ap.add_argument("--crash-writer", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.crash_writer:
        crash_writer(args.crash_writer, args.scale, args.seed)
    rep = run(args.scale, seed=args.seed, crash=not args.no_crash, agents=not args.no_agents)
    for f in rep.figures:
        adv = "" if f.advantage is None else f"  MMSB x{f.advantage:.2f}"
        print(f"{f.workload}  {f.system:<18} {f.value:>16,.4g} {f.unit}{adv}")
    for g in rep.goals:
        print(g.text)
    for k, v in rep.skipped.items():
        print(f"{k} skipped: {v}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as out:
            json.dump(rep.to_json(), out, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
