"""The device check for a machine with an NVIDIA GPU (``make gpu-check``, under 8 minutes).

1. the device test suite on the GPU, without the simulator (``tests/device`` with
   ``MMSB_DEVICE_TESTS=real``, the ``gpu``-marked tests included);
2. a race test: batches whose rows overlap, spread over many pages, applied on the device
   and by the host kernel, 100 repetitions, every byte compared;
3. a benchmark in one run: applying 16-byte range deltas on the device (columns from host
   memory, and the kernel alone with columns already on the device) against the host
   kernel; and the tick of a semiring graph shaped like validation target #6 (chains and
   diamonds, 1 KiB float64 pages), device against host, p50/p99. These measure the device
   package alone, without the bus;
4. the same through the bus, with its log on (every batch validated, encoded, checksummed
   and appended before it is applied, then published): 16-byte range deltas by
   ``apply_batch`` on a bus of ``gpu`` pages and on one of ``cpu`` pages, same batches in
   the same run, deltas/s each and every page's bytes compared; and ``bus.tick`` of the
   target #6 graph registered with ``derive_semiring`` on ``gpu`` pages, p50/p99 per tick,
   with a bus of ``cpu`` pages as the oracle (same batches; every page's bytes compared).

Every figure is printed with the card's name. ``--install`` first installs the CUDA
libraries (``pip install 'numba-cuda[cu12]'``) into this interpreter. Exit status 1 when a
test fails or a byte differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]


def random_columns(
    rng: np.random.Generator, sizes: I64, rows: int, max_len: int, hot: int = 8
) -> dict[str, Any]:
    """A batch's columns: ``rows`` rows on random pages at one of ``hot`` offsets per page
    (so rows of a page overlap), kinds range / dense / sparse."""
    n_pages = sizes.size - 1
    pids = rng.integers(1, n_pages + 1, rows).astype(np.int64)
    size = sizes[pids]
    offs = np.minimum(rng.integers(0, hot, rows) * 4, size - 1).astype(np.int64)
    lens = np.minimum(rng.integers(1, max_len + 1, rows), size - offs).astype(np.int64)
    kinds = rng.integers(0, 3, rows).astype(np.uint8)
    masked = kinds != 0
    mlens = np.where(masked, lens, 0)
    mstarts = np.where(masked, np.cumsum(mlens) - mlens, -1).astype(np.int64)
    mask = (rng.random(int(mlens.sum())) < 0.5).astype(np.uint8)
    plens = lens.copy()
    sparse = np.flatnonzero(kinds == 2)
    if sparse.size:
        csum = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        plens[sparse] = csum[mstarts[sparse] + lens[sparse]] - csum[mstarts[sparse]]
    pstarts = (np.cumsum(plens) - plens).astype(np.int64)
    payload = rng.integers(0, 256, int(plens.sum())).astype(np.uint8)
    return {"page_ids": pids, "offsets": offs, "lengths": lens, "kinds": kinds,
            "pstarts": pstarts, "mstarts": mstarts, "payload": payload, "mask": mask}  # fmt: skip


def _cols(c: dict[str, Any]) -> list[Any]:
    return [c[k] for k in ("page_ids", "offsets", "lengths", "kinds", "pstarts", "mstarts",
                           "payload", "mask")]  # fmt: skip


def layout(n_pages: int, size: int) -> tuple[I64, I64, int]:
    """Pages 1..n of ``size`` bytes, back to back 8-aligned (row 0 unused)."""
    step = (size + 7) // 8 * 8
    slots = np.zeros(n_pages + 1, np.int64)
    slots[1:] = np.arange(n_pages, dtype=np.int64) * step
    sizes = np.full(n_pages + 1, size, np.int64)
    return slots, sizes, n_pages * step


def race(reps: int = 100, pages: int = 4096, rows: int = 50_000, seed: int = 0) -> dict[str, Any]:
    """Overlapping rows from many pages in one batch, device against host, ``reps`` times
    (block sizes varied); returns the differing bytes (0 expected) and the kernels used."""
    from mmsb.device.apply import apply_rows_device
    from mmsb.device.arena import DeviceArena
    from mmsb.engine import kernels

    rng = np.random.default_rng(seed)
    slots, sizes, end = layout(pages, 256)
    used: dict[str, int] = {}
    differing = 0
    for r in range(reps):
        dev = DeviceArena(end, threads=(32, 64, 128, 256)[r % 4])
        host = rng.integers(0, 256, dev.capacity).astype(np.uint8)
        dev.from_host(0, host)
        cols = random_columns(rng, sizes, rows, 48)
        kernels.apply_rows(host, slots, *_cols(cols))
        k = apply_rows_device(dev, slots, *_cols(cols))
        used[k] = used.get(k, 0) + 1
        differing += int(np.count_nonzero(dev.to_host(0, dev.capacity) != host))
        dev.close()
    return {"reps": reps, "rows": rows, "pages": pages, "differing_bytes": differing,
            "kernels": used}  # fmt: skip


def _best(f: Any, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def _launcher(dev: Any, dk: Any, plan: Any, kind: str, n: int, d: list[Any]) -> Any:
    """The bare kernel launch for ``plan`` with its columns ``d`` already on the device."""
    from mmsb.device.apply import block_size

    cuda = dev.cuda
    if kind == "disjoint":
        blocks = min((n + 255) // 256, 1 << 16)

        def disjoint() -> None:
            dk.apply_disjoint_k[blocks, 256](dev.buf, *d)

        return disjoint
    order, gst = cuda.to_device(plan.order), cuda.to_device(plan.gstarts)
    threads = block_size(dev, plan, n)

    def ordered() -> None:
        dk.apply_ordered_k[min(int(gst.size) - 1, 1 << 16), threads](dev.buf, *d, order, gst)

    return ordered


def bench_apply(rows: int = 1 << 23, pages: int = 1 << 20) -> dict[str, Any]:
    """16-byte range deltas at random 16-byte places of 256-byte pages: host kernel
    against the device (from host columns, and the kernel alone), random and sorted."""
    from mmsb.device import kernels as dk
    from mmsb.device.apply import apply_rows_device
    from mmsb.device.arena import DeviceArena
    from mmsb.device.plan import plan_rows
    from mmsb.engine import kernels

    rng = np.random.default_rng(1)
    slots, _, end = layout(pages, 256)
    host = np.zeros(end, np.uint8)
    dev = DeviceArena(end)
    cuda = dev.cuda
    out: dict[str, Any] = {"rows": rows, "pages": pages, "delta_bytes": 16}
    for name, sort in (("random", False), ("sorted", True)):
        pids = rng.integers(1, pages + 1, rows).astype(np.int64)
        offs = rng.integers(0, 16, rows).astype(np.int64) * 16
        if sort:
            key = np.unique(pids * 256 + offs)[:rows]
            pids, offs = key // 256, key % 256
        n = int(pids.size)
        lens = np.full(n, 16, np.int64)
        kinds = np.zeros(n, np.uint8)
        pst = np.arange(n, dtype=np.int64) * 16
        mst = np.full(n, -1, np.int64)
        payload = rng.integers(0, 256, 16 * n).astype(np.uint8)
        mask = np.zeros(0, np.uint8)
        cols = (pids, offs, lens, kinds, pst, mst, payload, mask)
        t_host = _best(lambda c=cols: kernels.apply_rows(host, slots, *c))
        kind = apply_rows_device(dev, slots, *cols)  # compiles the kernel
        t_dev = _best(lambda c=cols: apply_rows_device(dev, slots, *c))
        plan = plan_rows(slots, pids, offs, lens)
        d = [cuda.to_device(a) for a in (plan.bases, lens, kinds, pst, mst, payload,
                                         np.zeros(1, np.uint8))]  # fmt: skip
        launch = _launcher(dev, dk, plan, kind, n, d)
        launch()
        cuda.synchronize()
        t_kernel = _best(lambda f=launch: (f(), cuda.synchronize()))
        differing = int(np.count_nonzero(dev.to_host(0, end) != host))
        out[name] = {"rows": n, "kernel": kind, "host_per_s": n / t_host,
                     "device_per_s": n / t_dev, "kernel_per_s": n / t_kernel,
                     "device_vs_host": t_host / t_dev, "differing_bytes": differing}  # fmt: skip
    dev.close()
    return out


def tick_graph(pages: int, derived: int, page_size: int) -> dict[str, Any]:
    """Target #6's graph, semiring nodes only: groups of five, B = A1 + A2, C = min(A2, A3)
    (weights 0), D = max(B, C) (weights 0), E = D / 2, F = E + A1, as plan columns."""
    rng = np.random.default_rng(7)
    groups = derived // 5
    first = pages - 5 * groups + 1  # page ids start at 1
    inputs = np.arange(1, first, dtype=np.int64)
    kind, zero, pptr, ppage, pnode, w = [], [], [0], [], [], []
    for g in range(groups):
        b, c, d, e, _ = range(first + 5 * g, first + 5 * g + 5)
        a1, a2, a3 = (int(x) for x in rng.choice(inputs, 3, replace=False))
        base = 5 * g
        for code, z, parents, weights in (
            (4, 0.0, [(a1, -1), (a2, -1)], [1.0, 1.0]),
            (1, np.inf, [(a2, -1), (a3, -1)], [0.0, 0.0]),
            (2, -np.inf, [(b, base), (c, base + 1)], [0.0, 0.0]),
            (4, 0.0, [(d, base + 2)], [0.5]),
            (4, 0.0, [(e, base + 3), (a1, -1)], [1.0, 1.0]),
        ):
            kind.append(code)
            zero.append(z)
            for (p, node), wt in zip(parents, weights, strict=True):
                ppage.append(p)
                pnode.append(node)
                w.append(wt)
            pptr.append(len(ppage))
    n = len(kind)
    child = np.arange(first, first + n, dtype=np.int64)
    nbytes = np.full(n, page_size, np.int64)
    w64 = np.array(w, np.float64)
    return {"kind": np.array(kind, np.int64), "group": np.full(n, 2, np.int64),
            "zero64": np.array(zero), "pptr": np.array(pptr, np.int64),
            "ppage": np.array(ppage, np.int64), "pnode": np.array(pnode, np.int64),
            "w32": w64.astype(np.float32), "w64": w64, "child": child, "nbytes": nbytes,
            "stage_off": np.arange(n, dtype=np.int64) * page_size,
            "stage_bytes": n * page_size, "inputs": inputs}  # fmt: skip


def bench_tick(pages: int = 65_536, derived: int = 10_000, deltas: int = 10_000,
               ticks: int = 200, page_size: int = 1024) -> dict[str, Any]:  # fmt: skip
    """Per tick: apply ``deltas`` input range deltas of 16-64 bytes, propagate, gather the
    changed bytes, apply them; device and host on the same graph and batches."""
    from mmsb.device.apply import apply_rows_device
    from mmsb.device.arena import DeviceArena
    from mmsb.device.propagate import device_plan, gather_stage, run_nodes_device
    from mmsb.engine import kernels
    from mmsb.engine import propkernels as pk

    g = tick_graph(pages, derived, page_size)
    rng = np.random.default_rng(3)
    slots, _, end = layout(pages, page_size)
    host = rng.standard_normal(end // 8 + 1).view(np.uint8)[: end + 8].copy()
    dev = DeviceArena(end + 8)
    dev.from_host(0, host)
    cuda = dev.cuda
    keys = ("kind", "group", "zero64", "pptr", "ppage", "pnode", "w32", "w64", "child",
            "nbytes", "stage_off", "stage_bytes")  # fmt: skip
    plan = device_plan(dev, *(g[k] for k in keys))
    n_nodes = int(g["kind"].size)
    stage = np.zeros(g["stage_bytes"] // 8, np.float64)
    slot_d = cuda.to_device(slots)
    n8 = host.size // 8 * 8
    times: dict[str, list[float]] = {"device": [], "host": []}
    differing = 0
    for t in range(ticks + 10):
        pids = rng.choice(g["inputs"], deltas).astype(np.int64)
        nel = rng.integers(2, 9, deltas)
        offs = (rng.integers(0, page_size // 8 - nel + 1) * 8).astype(np.int64)
        lens = (nel * 8).astype(np.int64)
        pst = (np.cumsum(lens) - lens).astype(np.int64)
        payload = rng.standard_normal(int(lens.sum()) // 8).view(np.uint8)
        cols = (pids, offs, lens, np.zeros(deltas, np.uint8), pst, np.full(deltas, -1, np.int64),
                payload, np.zeros(0, np.uint8))  # fmt: skip
        for side in ("device", "host"):
            t0 = time.perf_counter()
            mark = np.zeros(pages + 2, np.uint8)
            mr = np.zeros((pages + 2, 2), np.int64)  # each page's [lo, hi) side by side
            pk.mark_ranges(mark, mr, pids, offs, offs + lens)
            if side == "device":
                apply_rows_device(dev, slots, *cols, sync=False)
                m = [cuda.to_device(np.ascontiguousarray(a), stream=dev.stream)
                     for a in (mark, mr[:, 0], mr[:, 1])]  # fmt: skip
                per = [cuda.to_device(np.zeros(n_nodes, ty), stream=dev.stream)
                       for ty in (np.uint8, np.int64, np.int64, np.int64, np.int64)]  # fmt: skip
                run_nodes_device(0, plan, slot_d, *m, *per)
                changed, lo, hi = (a.copy_to_host() for a in per[:3])
            else:
                kernels.apply_rows(host, slots, *cols)
                changed = np.zeros(n_nodes, np.uint8)
                lo, hi, slo, shi = (np.zeros(n_nodes, np.int64) for _ in range(4))
                pk.run_nodes(0, g["kind"], g["group"], g["zero64"], g["pptr"], g["ppage"],
                             g["pnode"], g["w32"], g["w64"], g["child"], g["nbytes"],
                             g["stage_off"], slots, mark, mr, changed, lo, hi, slo, shi,
                             host, host[:n8].view(np.float32), host[:n8].view(np.float64),
                             stage.view(np.uint8), stage.view(np.float32), stage,
                             *pk.empty_scratch(g["ppage"].size))  # fmt: skip
            rows = np.flatnonzero(changed)
            lo_r, hi_r = lo[rows] // 8 * 8, -(-hi[rows] // 8) * 8
            ln = (hi_r - lo_r).astype(np.int64)
            ps = (np.cumsum(ln) - ln).astype(np.int64)
            starts = g["stage_off"][rows] + lo_r
            if side == "device":
                pay = gather_stage(plan, starts, ln)
            else:
                pay = np.empty(int(ln.sum()), np.uint8)
                pk.gather_ranges(stage.view(np.uint8), starts, ln, pay)
            z = np.zeros(rows.size, np.int64)
            dcols = (g["child"][rows], lo_r, ln, np.zeros(rows.size, np.uint8), ps, z - 1, pay,
                     np.zeros(0, np.uint8))  # fmt: skip
            if side == "device":
                apply_rows_device(dev, slots, *dcols)
            else:
                kernels.apply_rows(host, slots, *dcols)
            if t >= 10:
                times[side].append(time.perf_counter() - t0)
    differing = int(np.count_nonzero(dev.to_host(0, host.size) != host))
    dev.close()
    out: dict[str, Any] = {"pages": pages, "derived": derived, "deltas": deltas,
                           "ticks": ticks, "differing_bytes": differing}  # fmt: skip
    for side, ts in times.items():
        ms = np.array(ts) * 1000
        out[side] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    return out


def bench_bus_apply(rows: int = 1 << 18, pages: int = 1 << 16, batches: int = 20) -> dict[str, Any]:
    """``apply_batch`` of ``rows`` 16-byte range deltas at random 16-byte places of
    256-byte pages, through a bus (log on, ``sync="normal"``): ``gpu`` pages against
    ``cpu`` pages, the same batches in turn; deltas/s and differing bytes."""
    import tempfile

    import mmsb
    from mmsb.batch import DeltaBatch

    rng = np.random.default_rng(2)
    out: dict[str, Any] = {"rows": rows, "pages": pages, "batches": batches}
    with tempfile.TemporaryDirectory() as tmp:
        buses = {loc: mmsb.open(os.path.join(tmp, loc), sync="normal", checkpoint_every=None)
                 for loc in ("gpu", "cpu")}  # fmt: skip
        try:
            ids = {loc: bus.create_pages(pages, 256, location=loc) for loc, bus in buses.items()}
            times: dict[str, list[float]] = {loc: [] for loc in buses}
            for b in range(batches + 2):
                at = rng.integers(0, pages, rows)
                offs = rng.integers(0, 16, rows).astype(np.int64) * 16
                payload = rng.integers(0, 256, (rows, 16)).astype(np.uint8)
                for loc, bus in buses.items():
                    batch = DeltaBatch.from_ranges(ids[loc][at], offs, payload)
                    t0 = time.perf_counter()
                    bus.apply_batch(batch)
                    if b >= 2:  # the first two compile and warm up
                        times[loc].append(time.perf_counter() - t0)
            got = {loc: bus.read_many(ids[loc]) for loc, bus in buses.items()}
            out["differing_bytes"] = int(np.count_nonzero(got["gpu"] != got["cpu"]))
            for loc, ts in times.items():
                out[loc] = {"deltas_per_s": rows * len(ts) / sum(ts),
                            "batch_p50_ms": float(np.percentile(ts, 50)) * 1000}  # fmt: skip
        finally:
            for bus in buses.values():
                bus.close()
    return out


def bench_bus_tick(pages: int = 65_536, derived: int = 10_000, deltas: int = 10_000,
                   ticks: int = 100, page_size: int = 1024) -> dict[str, Any]:  # fmt: skip
    """``bus.tick(batch)`` of target #6's graph (:func:`tick_graph`'s shape, registered
    with ``derive_semiring``) on ``gpu`` float64 pages, log on; a bus of ``cpu`` pages runs
    the same ticks as the oracle. Per-tick p50/p99 of each, and the differing bytes."""
    import tempfile

    import mmsb
    from mmsb.batch import DeltaBatch
    from mmsb.semiring import MAX_PLUS, MIN_PLUS, SUM_PRODUCT

    g = tick_graph(pages, derived, page_size)
    srs = {1: MIN_PLUS, 2: MAX_PLUS, 4: SUM_PRODUCT}
    rng = np.random.default_rng(4)
    out: dict[str, Any] = {"pages": pages, "derived": int(g["kind"].size), "deltas": deltas,
                           "ticks": ticks}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        buses = {loc: mmsb.open(os.path.join(tmp, loc), sync="normal", checkpoint_every=None,
                                tick_gc_budget_ms=0, invariant_every=0)
                 for loc in ("gpu", "cpu")}  # fmt: skip
        n_in = int(g["inputs"].size)
        start = DeltaBatch.from_ranges(g["inputs"], np.zeros(n_in, np.int64),
                                       rng.standard_normal((n_in, page_size // 8)))  # fmt: skip
        try:
            for loc, bus in buses.items():
                ids = bus.create_pages(pages, page_size, dtype="float64", location=loc)
                assert int(ids[0]) == 1
                bus.apply_batch(start)
                for i in range(int(g["kind"].size)):
                    k0, k1 = int(g["pptr"][i]), int(g["pptr"][i + 1])
                    sr = srs[int(g["kind"][i])]
                    bus.derive_semiring(int(g["child"][i]), g["ppage"][k0:k1].tolist(), sr,
                                        weights=g["w64"][k0:k1])  # fmt: skip
                bus.tick()
            times: dict[str, list[float]] = {loc: [] for loc in buses}
            for t in range(ticks + 5):
                pids = rng.choice(g["inputs"], deltas).astype(np.int64)
                nel = int(rng.integers(2, 9))
                offs = rng.integers(0, page_size // 8 - nel + 1, deltas).astype(np.int64) * 8
                payload = rng.standard_normal((deltas, nel))
                batch = DeltaBatch.from_ranges(pids, offs, payload)
                for loc, bus in buses.items():
                    t0 = time.perf_counter()
                    bus.tick(batch)
                    if t >= 5:
                        times[loc].append(time.perf_counter() - t0)
            ids = buses["cpu"].page_ids()
            a, b = (bus.read_many(ids) for bus in buses.values())
            out["differing_bytes"] = int(np.count_nonzero(a.view(np.uint8) != b.view(np.uint8)))
            for loc, ts in times.items():
                ms = np.array(ts) * 1000
                out[loc] = {"p50_ms": float(np.percentile(ms, 50)),
                            "p99_ms": float(np.percentile(ms, 99))}  # fmt: skip
        finally:
            for bus in buses.values():
                bus.close()
    return out


def run_tests(timeout: int) -> int:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["MMSB_DEVICE_TESTS"] = "real"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu or not gpu",
           str(ROOT / "tests" / "device")]  # fmt: skip
    print("$ MMSB_DEVICE_TESTS=real " + " ".join(cmd[2:]), flush=True)
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"device tests ran past {timeout} s")
        return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--install", action="store_true", help="pip install 'numba-cuda[cu12]'")
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smaller race and benchmark")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "numba-cuda[cu12]"],
                       check=True)  # fmt: skip
    os.environ.pop("NUMBA_ENABLE_CUDASIM", None)
    from mmsb.device import backend
    from mmsb.errors import DeviceUnavailableError

    try:
        be = backend()
    except DeviceUnavailableError as exc:
        print(f"no device: {exc}")
        return 1
    card = be.describe()
    print(f"device: {card}", flush=True)
    failed = False
    report: dict[str, Any] = {"device": card}
    if not args.skip_tests:
        rc = run_tests(timeout=300)
        report["tests_rc"] = rc
        failed |= rc != 0
    q = args.quick
    r = race(reps=20 if q else 100, rows=10_000 if q else 50_000)
    report["race"] = r
    failed |= r["differing_bytes"] != 0
    print(f"[{card}] race: {r['reps']} batches of {r['rows']:,} overlapping rows on "
          f"{r['pages']:,} pages: {r['differing_bytes']} differing bytes; kernels {r['kernels']}",
          flush=True)  # fmt: skip
    a = bench_apply(rows=1 << (20 if q else 23), pages=1 << (16 if q else 20))
    report["apply"] = a
    for name in ("random", "sorted"):
        x = a[name]
        failed |= x["differing_bytes"] != 0
        print(f"[{card}] apply 16 B range deltas, {name} ({x['rows']:,} rows, {x['kernel']} "
              f"kernel): host {x['host_per_s'] / 1e6:.1f} M/s; device from host columns "
              f"{x['device_per_s'] / 1e6:.1f} M/s ({x['device_vs_host']:.1f}x host); kernel "
              f"alone {x['kernel_per_s'] / 1e6:.1f} M/s; {x['differing_bytes']} differing bytes",
              flush=True)  # fmt: skip
    t = bench_tick(ticks=50 if q else 200)
    report["tick"] = t
    failed |= t["differing_bytes"] != 0
    print(f"[{card}] tick ({t['pages']:,} pages of 1 KiB, {t['derived']:,} semiring derived, "
          f"{t['deltas']:,} deltas/tick, {t['ticks']} ticks): device p50 "
          f"{t['device']['p50_ms']:.2f} ms p99 {t['device']['p99_ms']:.2f} ms; host p50 "
          f"{t['host']['p50_ms']:.2f} ms p99 {t['host']['p99_ms']:.2f} ms; "
          f"{t['differing_bytes']} differing bytes", flush=True)  # fmt: skip
    ba = bench_bus_apply(rows=1 << (14 if q else 18), pages=1 << (12 if q else 16),
                         batches=5 if q else 20)  # fmt: skip
    report["bus_apply"] = ba
    failed |= ba["differing_bytes"] != 0
    print(f"[{card}] bus apply_batch, 16 B range deltas, log on ({ba['rows']:,} rows a batch "
          f"on {ba['pages']:,} pages): gpu pages {ba['gpu']['deltas_per_s'] / 1e6:.2f} M/s "
          f"(batch p50 {ba['gpu']['batch_p50_ms']:.1f} ms); cpu pages "
          f"{ba['cpu']['deltas_per_s'] / 1e6:.2f} M/s (batch p50 "
          f"{ba['cpu']['batch_p50_ms']:.1f} ms); {ba['differing_bytes']} differing bytes",
          flush=True)  # fmt: skip
    bt = bench_bus_tick(pages=8192 if q else 65_536, derived=1000 if q else 10_000,
                        deltas=1000 if q else 10_000, ticks=20 if q else 100)  # fmt: skip
    report["bus_tick"] = bt
    failed |= bt["differing_bytes"] != 0
    print(
        f"[{card}] bus tick, target #6 graph ({bt['pages']:,} pages of 1 KiB, "
        f"{bt['derived']:,} semiring derived, {bt['deltas']:,} deltas/tick, {bt['ticks']} "
        f"ticks, log on): gpu pages p50 {bt['gpu']['p50_ms']:.2f} ms p99 "
        f"{bt['gpu']['p99_ms']:.2f} ms; cpu pages p50 {bt['cpu']['p50_ms']:.2f} ms p99 "
        f"{bt['cpu']['p99_ms']:.2f} ms; {bt['differing_bytes']} differing bytes",
        flush=True,
    )
    report["seconds"] = time.perf_counter() - start
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"gpu-check {'FAILED' if failed else 'passed'} in {report['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
