"""``mmsb bench --cluster``: the sharded bus (:mod:`mmsb.cluster`) on a Ray instance on
this machine, with 1, 2 and 4 shards, and Ray's own per-call cost measured in the same run.

On one machine every shard, the sequencer and the driver share the same cores, so adding
shards cannot show scaling; the run therefore also measures the parts a commit is made of
(the sequencer's log append, one shard's apply, a Ray call, putting a batch in the object
store) and states a *model* of what a cluster of separate machines would reach from them
(:func:`model`). The model is arithmetic on measured parts, not a measurement.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.benchmarks.common import Result
from mmsb.cluster import ClusterBus, runtime
from mmsb.cluster.globallog import GlobalLog

Progress = Callable[[str, int, int], None]
PAGE = 1024
PAYLOAD = 16


def _batch(rng: np.random.Generator, ids: np.ndarray, rows: int) -> DeltaBatch:
    pages = rng.choice(ids, rows)
    offs = rng.integers(0, PAGE // PAYLOAD, rows) * PAYLOAD
    return DeltaBatch.from_ranges(pages, offs, rng.integers(0, 256, (rows, PAYLOAD), np.uint8))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q)) if xs else 0.0


def ray_call_cost(actor: Any, batch: DeltaBatch, n: int = 300) -> dict[str, float]:
    """Seconds per round trip of an empty actor call and per ``ray.put`` of ``batch``."""
    ray = runtime.ray_module()
    runtime.get(actor.ping.remote())
    t = time.perf_counter()
    for _ in range(n):
        runtime.get(actor.ping.remote())
    rtt = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(20):
        ray.put(batch)
    put = (time.perf_counter() - t) / 20
    return {"rtt_s": rtt, "put_s": put}


def local_parts(batch: DeltaBatch, pages: int, commits: int = 20) -> dict[str, float]:
    """Seconds per commit of the global log's append (sync normal) and of applying the
    whole batch to one on-disk bus: the sequencer's and the shards' work, without Ray."""
    d = tempfile.mkdtemp(prefix="mmsb-bench-")
    try:
        log = GlobalLog(os.path.join(d, "seq"), sync="normal")
        t = time.perf_counter()
        for _ in range(commits):
            log.append_batch(batch)
        append = (time.perf_counter() - t) / commits
        log.close()
        with mmsb.open(os.path.join(d, "bus"), sync="normal") as bus:
            bus.create_pages(pages, PAGE)
            bus.apply_batch(batch)
            t = time.perf_counter()
            for _ in range(commits):
                bus.apply_batch(batch)
            apply = (time.perf_counter() - t) / commits
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {"append_s": append, "apply_s": apply}


def _run_one(address: str, shards: int, rows: int, commits: int, small: int,
             progress: Progress) -> tuple[list[Result], dict[str, float]]:  # fmt: skip
    rng = np.random.default_rng(shards)
    d = tempfile.mkdtemp(prefix="mmsb-bench-")
    label = f"{shards} shard{'s' if shards > 1 else ''}"
    try:
        with ClusterBus.create(os.path.join(d, "c"), shards=shards, address=address) as cb:
            ids = cb.create_pages(1024 * shards, PAGE)
            batches = [_batch(rng, ids, rows) for _ in range(4)]
            cb.apply_batch(batches[0])  # first use of the kernels in every process
            lat = []
            t0 = time.perf_counter()
            for i in range(commits):
                t = time.perf_counter()
                cb.apply_batch(batches[i % 4])
                lat.append(time.perf_counter() - t)
                progress(f"cluster {label}", i + 1, commits + small)
            total = time.perf_counter() - t0
            one = [_batch(rng, ids, 1) for _ in range(8)]
            small_lat = []
            for i in range(small):
                t = time.perf_counter()
                cb.apply_batch(one[i % 8])
                small_lat.append(time.perf_counter() - t)
                progress(f"cluster {label}", commits + i + 1, commits + small)
            _, shard_actors = cb.actors()
            cost = ray_call_cost(shard_actors[0], batches[0])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    cond = {"shards": shards, "rows_per_commit": rows, "payload_bytes": PAYLOAD,
            "pages": 1024 * shards, "page_bytes": PAGE, "sync": "normal",
            "machine_cpus": os.cpu_count()}  # fmt: skip
    res = [
        Result(f"cluster {label}: throughput", rows * commits / total, "deltas/s", cond,
               {"commits": commits}),
        Result(f"cluster {label}: commit p50 ({rows:,} rows)", _pct(lat, 50) * 1e3, "ms", cond),
        Result(f"cluster {label}: commit p99 ({rows:,} rows)", _pct(lat, 99) * 1e3, "ms", cond),
        Result(f"cluster {label}: 1-row commit p50", _pct(small_lat, 50) * 1e3, "ms", cond,
               {"commits": small}),
        Result(f"cluster {label}: 1-row commit p99", _pct(small_lat, 99) * 1e3, "ms", cond),
    ]  # fmt: skip
    return res, cost


def model(parts: dict[str, float], rows: int, shards: int, net_gbps: float = 10.0,
          net_rtt_s: float = 200e-6) -> dict[str, float]:  # fmt: skip
    """A model (not a measurement) of one commit on ``shards`` separate machines, from the
    measured parts: the driver puts the batch, one call to the sequencer (a network round
    trip plus its append), then the shards in parallel (a round trip, the batch's bytes
    over the network, and a 1/shards share of the apply), plus the rest of Ray's per-commit
    cost measured on one machine (``other_s``: serialising arguments, scheduling). Commits
    are synchronous, so one driver's throughput is rows / latency."""
    wire = rows * (PAYLOAD + 24) * 8 / (net_gbps * 1e9)  # payload and row columns
    latency = (parts["put_s"] + net_rtt_s + parts["append_s"] + net_rtt_s + wire
               + parts["apply_s"] / shards + parts["other_s"])  # fmt: skip
    return {"latency_ms": latency * 1e3, "deltas_per_s": rows / latency,
            "sequencer_share": (parts["append_s"] + net_rtt_s) / latency}  # fmt: skip


def run(scale: float = 1.0, progress: Progress | None = None) -> tuple[list[Result], list[str]]:
    """Measure 1, 2 and 4 shards and the parts of a commit; return the results and the
    model's lines (each says it is a model)."""
    sink: Progress = progress or (lambda what, done, total: None)
    rows = max(int(10_000 * scale), 100)
    commits = max(int(40 * scale), 5)
    small = max(int(200 * scale), 20)
    address, tmp = runtime.start_local(4, 256 << 20)
    results: list[Result] = []
    costs = []
    try:
        for shards in (1, 2, 4):
            res, cost = _run_one(address, shards, rows, commits, small, sink)
            results += res
            costs.append(cost)
    finally:
        runtime.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(0)
    parts = local_parts(_batch(rng, np.arange(1, 4097), rows), 4096)
    parts["rtt_s"] = float(np.median([c["rtt_s"] for c in costs]))
    parts["put_s"] = float(np.median([c["put_s"] for c in costs]))
    inside = parts["put_s"] + 2 * parts["rtt_s"] + parts["append_s"] + parts["apply_s"]
    parts["other_s"] = max(0.0, results[1].value / 1e3 - inside)  # 1 shard, p50
    cond = {"rows_per_commit": rows, "machine_cpus": os.cpu_count()}
    results += [
        Result("ray actor call round trip", parts["rtt_s"] * 1e6, "us", cond),
        Result(f"ray.put of a {rows:,}-row batch", parts["put_s"] * 1e3, "ms", cond),
        Result("sequencer log append per commit", parts["append_s"] * 1e3, "ms", cond),
        Result("one bus applying the whole batch", parts["apply_s"] * 1e3, "ms", cond),
        Result("rest of a 1-shard commit: object fetch, decoding, scheduling (p50 minus the "
               "parts above)", parts["other_s"] * 1e3, "ms", cond),
    ]  # fmt: skip
    measured = {1: results[0].value, 2: results[5].value, 4: results[10].value}
    lines = []
    for n in (1, 2, 4, 8, 16):
        m = model(parts, rows, n)
        got = f"; measured here: {measured[n]:,.0f} deltas/s" if n in measured else ""
        lines.append(
            f"MODEL, not measured: {n:>2} machines: {m['latency_ms']:.2f} ms per "
            f"{rows:,}-row commit, {m['deltas_per_s']:,.0f} deltas/s for one driver "
            f"(sequencer {m['sequencer_share']:.0%} of the latency){got}"
        )
    lines.append(
        "MODEL assumptions: 10 Gb/s links, 200 us network round trip, the append, put, apply "
        "and remaining per-commit times measured on this machine, shards applying in "
        "parallel on their own cores; one synchronous driver (several drivers would "
        "pipeline commits up to the sequencer's append rate: "
        f"{rows / (parts['append_s'] + 200e-6):,.0f} deltas/s)"
    )
    return results, lines
