"""``mmsb bench --compare`` (mmsb.benchmarks.compare) at a small scale: every system ends
with the same pages as the numpy floor, the floor itself matches a plain bytearray model,
a system that loses writes is caught, every workload yields positive figures, the CLI writes
JSON with the five workloads, and a missing lmdb is skipped with the reason. No timings are
asserted."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mmsb
from mmsb.benchmarks import compare, peers
from mmsb.cli import cli

SCALE = 0.005  # 327 pages, 5,000 updates in 100 batches of 50, 1,000 reads, 10 commits
HAVE_LMDB = importlib.util.find_spec("lmdb") is not None


@pytest.fixture(scope="module")
def report() -> compare.Report:
    return compare.run(SCALE, seed=3)


def naive_pages(w: peers.Workload) -> list[bytearray]:
    """The slow oracle: one bytearray per page, the updates applied one by one in order."""
    pages = [bytearray(peers.PAGE) for _ in range(w.pages)]
    for p, o, d in zip(w.pids.tolist(), w.offs.tolist(), w.data, strict=True):
        pages[p][o : o + peers.PAYLOAD] = d.tobytes()
    return pages


def test_sizes_scale_and_reject_non_positive() -> None:
    full = peers.sizes(1.0)
    assert full == {**peers.FULL, "batch": 10_000}
    small = peers.sizes(SCALE)
    assert small["batches"] == 100 and small["batch"] * 100 >= small["updates"]
    with pytest.raises(mmsb.InvalidArgumentError, match="scale must be positive"):
        peers.sizes(0)


def test_the_floor_matches_the_bytearray_model() -> None:
    w = peers.make_workload(peers.sizes(SCALE), seed=5)
    # pages written many times over, so the order of overlapping writes matters
    assert np.unique(w.pids).size < w.pids.size // 4
    expected = compare.run_floor(w, [], lambda *_: None)
    want = np.frombuffer(b"".join(naive_pages(w)), np.uint8).reshape(w.pages, peers.PAGE)
    assert np.array_equal(expected, want)


def test_every_system_ends_byte_equal_to_the_floor(report: compare.Report) -> None:
    systems = ["MMSB", "SQLite"] + (["LMDB"] if HAVE_LMDB else [])
    for name in systems:
        assert any(c.startswith(f"{name}: all ") and "after (a)" in c for c in report.checks)
        assert any(c.startswith(f"{name}: the ") and "after (b)" in c for c in report.checks)
    assert any("after a crash and recovery" in c for c in report.checks)
    assert any("agent simulation ended bit-identical to plain numpy" in c for c in report.checks)
    crash = next(f for f in report.figures if f.system == "MMSB after crash")
    assert crash.extra["deltas_replayed"] >= report.sizes["updates"]


def test_each_workload_gives_positive_figures_and_ratios(report: compare.Report) -> None:
    by = {(f.workload, f.system): f for f in report.figures}
    peers = ["SQLite"] + (["LMDB"] if HAVE_LMDB else [])
    for k in "abcd":
        for name in ["MMSB", *peers]:
            f = by[(k, name)]
            assert f.value > 0 and math.isfinite(f.value), f
            assert f.conditions
            assert (f.advantage is None) == (name == "MMSB")
            if f.advantage is not None:
                assert f.advantage > 0
    assert {("a", "numpy shm"), ("c", "numpy shm")} <= set(by)
    assert by[("a", "MMSB")].unit == "updates/s" and by[("d", "MMSB")].unit == "s"
    assert by[("a", "MMSB")].extra["batch"] == report.sizes["batch"]
    assert len(report.goals) == 6
    many = report.goals[-2]  # a page through read_many against one through read
    assert many.ratio == pytest.approx(by[("c", "MMSB read_many")].value / by[("c", "MMSB")].value)
    assert by[("c", "numpy shm gather")].advantage == pytest.approx(
        by[("c", "MMSB read_many")].value / by[("c", "numpy shm gather")].value
    )
    # (e): the bus and plain numpy, with the goal read from the median of the paired ratios
    agents, plain = by[("e", "MMSB")], by[("e", "plain numpy")]
    assert agents.unit == plain.unit == "ticks/s" and agents.value > 0 and plain.value > 0
    bus, plain_np = agents.extra["bus_ticks_per_s_pairs"], agents.extra["numpy_ticks_per_s_pairs"]
    pairs = [n / b for b, n in zip(bus, plain_np, strict=True)]
    assert report.goals[-1].ratio == pytest.approx(float(np.median(pairs)), rel=2e-2)
    assert report.goals[-1].text.startswith("(e) numpy/MMSB = ")
    for (k, name), f in by.items():  # every peer against MMSB's own figure of its workload
        if name in ("numpy shm", "LMDB", "SQLite", "plain numpy"):
            mine = by[(k, "MMSB")].value
            assert f.advantage == pytest.approx(mine / f.value if f.rate else f.value / mine)
    for g in report.goals:
        if g.met is None:
            assert not HAVE_LMDB and "skipped" in g.text
        else:
            assert g.ratio is not None and g.ratio > 0
            assert g.text.endswith("✓" if g.met else "✗")


class LosesLastBatch(peers.MMSBStore):
    """An MMSB store that silently drops its last batch: the check must catch it."""

    def __init__(self, batch: int, batches: int) -> None:
        super().__init__(batch)
        self.left = batches

    def apply(self, pids: peers.I64, offs: peers.I64, data: peers.U8) -> float:
        self.left -= 1
        return 1e-3 if self.left == 0 else super().apply(pids, offs, data)


def test_a_system_that_loses_writes_fails_loudly(tmp_path: Path) -> None:
    w = peers.make_workload(peers.sizes(SCALE), seed=1)
    expected = compare.run_floor(w, [], lambda *_: None)
    store = LosesLastBatch(w.batch, peers.sizes(SCALE)["batches"])
    with pytest.raises(peers.MismatchError, match=r"MMSB: \d+ of 327 pages differ"):
        compare.run_store(store, w, expected, {}, str(tmp_path), [], [], lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # its files are removed


def test_missing_lmdb_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` fail
    rep = compare.run(SCALE, seed=2, crash=False, agents=False)
    assert "LMDB" in rep.skipped and "mmsb[compare]" in rep.skipped["LMDB"]
    assert not any(f.system == "LMDB" for f in rep.figures)
    assert {f.system for f in rep.figures} == {
        "numpy shm",
        "numpy shm gather",
        "MMSB",
        "MMSB read_many",
        "SQLite",
    }
    lmdb_goals = [g for g in rep.goals if "LMDB" in g.text]
    assert len(lmdb_goals) == 2
    assert all(g.met is None and "skipped (lmdb is not importable" in g.text for g in lmdb_goals)
    sqlite_goal = next(g for g in rep.goals if "SQLite" in g.text)
    assert sqlite_goal.met is not None


def test_cli_compare_writes_json_with_the_five_workloads(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["bench", "--compare", "--scale", "0.01", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert set(doc["workloads"]) == {"a", "b", "c", "d", "e"}
    for k, w in doc["workloads"].items():
        assert w["title"].startswith(f"({k})")
        assert any(r["system"] == "MMSB" and r["value"] > 0 for r in w["rows"])
    assert doc["scale"] == 0.01 and doc["sizes"]["pages"] == 655
    assert len(doc["goals"]) == 6
    assert "mmsb bench --compare" in result.stdout
    assert "(e) numpy/MMSB = " in result.stdout and "agent simulation" in result.stdout
    assert "(a) MMSB/SQLite = " in result.stdout
    assert "(goal ≥ 30×)" in result.stdout


def test_cli_compare_without_lmdb_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmdb", None)
    # the crash-recovery run is covered above; leaving it out keeps this test short
    monkeypatch.setattr(compare, "run", functools.partial(compare.run, crash=False, agents=False))
    result = CliRunner().invoke(cli, ["bench", "--compare", "--scale", "0.002"])
    assert result.exit_code == 0, result.output
    assert "LMDB skipped: lmdb is not importable" in result.stdout
    assert "(a) MMSB/LMDB: skipped" in result.stdout


def test_an_agent_simulation_that_differs_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsb.benchmarks import agents

    real = agents.agent_sim

    def differs(**kw: object) -> dict[str, object]:
        return {**real(**kw), "identical": False}  # type: ignore[arg-type]

    monkeypatch.setattr(agents, "agent_sim", differs)
    with pytest.raises(peers.MismatchError, match="agent simulation ended unlike"):
        compare.run_agents(0.001, [], lambda *_: None)
