"""Atomic ticks, seen from everywhere: a writer process runs ticks (semiring and Python
derivations) while reader processes look through snapshots and plain ``read_many``; then
``at(lsn)`` for every LSN of the log and a replay from disk. No view may show a derived page
that disagrees with its recomputation from its parents at the same LSN, and each tick
advances the LSN by exactly one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import semiring
from mmsb.storage import layout
from mmsb.storage.log import LogReader
from mmsb.storage.recovery import apply_frame
from mmsb.storage.replay import state_at

N_IN, WIDTH = 6, 16  # input pages of 16 float64
WEIGHTS = [1.0, 2.0, 0.5, -1.0, 3.0, 0.25]
# pages: 1..6 inputs, 7 = weighted sum of the inputs (semiring), 8 = max-plus of 1..3,
# 9 = a Python function of 7 and 8, 10 = a Python function of 9 and input 6
TOTAL = N_IN + 4


def scale(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 0.5 * x - y


def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.sqrt(np.abs(x)) + y


def recompute(rows: np.ndarray) -> np.ndarray:
    """Slow oracle: the derived pages (rows 6..9) from the input rows 0..5."""
    ins = rows[:N_IN]
    s = sum(w * r for w, r in zip(WEIGHTS, ins, strict=True))
    m = np.maximum(np.maximum(ins[0], ins[1]), ins[2])
    a = scale(s, m)
    return np.stack([s, m, a, mix(a, ins[5])])


def disagrees(rows: np.ndarray) -> bool:
    return not np.allclose(rows[N_IN:], recompute(rows), rtol=1e-12, atol=1e-9)


def writer_main(path: str, seconds: float, out: str, max_ticks: int = 1 << 62) -> None:
    bus = mmsb.open(path, sync="off")
    ids = bus.create_pages(TOTAL, WIDTH * 8, dtype="float64").tolist()
    ins, (s, m, a, z) = ids[:N_IN], ids[N_IN:]
    bus.derive_semiring(s, ins, semiring.SUM_PRODUCT, WEIGHTS, name="weighted")
    bus.derive_semiring(m, ins[:3], semiring.MAX_PLUS, name="max3")
    bus.derive(a, scale, [s, m], name="scale")
    bus.derive(z, mix, [a, ins[5]], name="mix")
    bus.tick()
    rng = np.random.default_rng(7)
    print("ready", flush=True)
    sys.stdin.readline()
    ticks = bad_steps = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and ticks < max_ticks:
        k = int(rng.integers(1, N_IN + 1))
        pages = rng.choice(ins, k, replace=False)
        data = rng.normal(size=(k, WIDTH)).view(np.uint8)
        before = bus.lsn
        rep = bus.tick(mmsb.DeltaBatch.from_ranges(pages, np.zeros(k, np.int64), data))
        ticks += 1
        bad_steps += int(rep.lsn != before + 1 or bus.lsn != rep.lsn)
    Path(out).write_text(json.dumps({"ticks": ticks, "bad_steps": bad_steps, "lsn": bus.lsn,
                                     "hash": bus.state_hash()}))  # fmt: skip
    bus.close()


def reader_main(path: str, seconds: float, out: str) -> None:
    bus = mmsb.open(path, readonly=True)
    ids = np.arange(1, TOTAL + 1)
    with bus.snapshot() as snap:
        snap.read_many(ids)
    print("ready", flush=True)
    sys.stdin.readline()
    views = bad = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with bus.snapshot() as snap:
            rows = np.stack([snap.read(int(p)) for p in ids])  # page by page, one LSN
            bad += int(disagrees(rows))
            bad += int(disagrees(snap.read_many(ids)))
        bad += int(disagrees(bus.read_many(ids)))  # one call, one commit
        views += 3
    Path(out).write_text(json.dumps({"views": views, "bad": bad}))
    bus.close()


def run(
    tmp_path: Path, seconds: float, readers: int, max_ticks: int = 1 << 62, every_at: bool = False
) -> dict[str, int]:
    path = str(tmp_path / "bus")
    me = [sys.executable, __file__]
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}

    def start(role: str, name: str) -> subprocess.Popen[str]:
        args = [*me, role, path, str(seconds), str(tmp_path / f"{name}.json"), str(max_ticks)]
        return subprocess.Popen(args, **pipes)

    procs = [start("writer", "w")]
    assert procs[0].stdout.readline().strip() == "ready"
    procs += [start("reader", f"r{i}") for i in range(readers)]
    try:
        for p in procs[1:]:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            assert p.wait(timeout=seconds + 120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
            p.stdin.close()
            p.stdout.close()
    w = json.loads((tmp_path / "w.json").read_text())
    rs = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(readers)]
    fig = {"ticks": w["ticks"], "bad_steps": w["bad_steps"],
           "reader_views": sum(r["views"] for r in rs),
           "reader_bad": sum(r["bad"] for r in rs)}  # fmt: skip
    ids = np.arange(1, TOTAL + 1)
    first = w["lsn"] - w["ticks"]  # the last commit before the timed ticks
    # at(): a sample of LSNs (each one rebuilds the state from the log); then every LSN,
    # by applying the log's frames one at a time to the state at the first of them
    at_bad = at_checked = 0
    with mmsb.open(path, readonly=True) as r:
        assert r.lsn == w["lsn"]
        step = 1 if every_at else max(1, w["ticks"] // 40)
        for lsn in [*range(first, w["lsn"], step), w["lsn"]]:
            with r.at(lsn) as view:
                at_bad += int(disagrees(np.stack([view.read(int(p)) for p in ids])))
                at_checked += 1
    state, _ = state_at(path, first)
    replay_bad = replay_checked = 0
    for frame in LogReader(str(Path(path) / layout.LOG_DIR)).frames(after_lsn=first):
        apply_frame(state, frame)
        replay_bad += int(disagrees(np.stack([state.read(int(p)) for p in ids])))
        replay_checked += 1
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == w["hash"]
        assert not disagrees(again.read_many(ids))
    fig.update(at_checked=at_checked, at_bad=at_bad, replay_checked=replay_checked,
               replay_bad=replay_bad)  # fmt: skip
    print("ticks:", json.dumps(fig))
    return fig


def check(fig: dict[str, int]) -> None:
    assert fig["ticks"] > 20 and fig["reader_views"] > 20
    assert fig["bad_steps"] == 0
    assert fig["reader_bad"] == 0 and fig["at_bad"] == 0 and fig["replay_bad"] == 0
    assert fig["replay_checked"] == fig["ticks"]  # one frame per tick
    assert fig["at_checked"] >= 20


def test_the_oracle_can_tell() -> None:
    rows = np.zeros((TOTAL, WIDTH))
    rows[:N_IN] = np.arange(N_IN)[:, None]
    rows[N_IN:] = recompute(rows)
    assert not disagrees(rows)
    rows[0, 3] += 1.0  # an input without the derived pages it causes: a half tick
    assert disagrees(rows)


def test_ticks_are_atomic_for_readers_at_and_replay(tmp_path: Path) -> None:
    check(run(tmp_path, seconds=1.5, readers=1))


@pytest.mark.slow
def test_ticks_are_atomic_with_two_readers_and_at_every_lsn(tmp_path: Path) -> None:
    fig = run(tmp_path, seconds=10.0, readers=2, max_ticks=600, every_at=True)
    check(fig)
    assert fig["at_checked"] == fig["ticks"] + 1  # at() rebuilt every LSN of the ticks


if __name__ == "__main__":
    role, bus_path, secs, out_path = sys.argv[1:5]
    if role == "writer":
        writer_main(bus_path, float(secs), out_path, int(sys.argv[5]))
    else:
        reader_main(bus_path, float(secs), out_path)
