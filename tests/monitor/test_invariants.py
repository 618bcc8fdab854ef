"""Invariants: every built-in passes on a healthy bus and, when its violation is injected
(test-only edits of the in-memory state, or a raw log frame), fails alone with a detail
that names the problem; user checks can be registered, fail, raise and be removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.errors import InvalidArgumentError
from mmsb.monitor.invariants import InvariantResult, Invariants
from mmsb.storage import codec
from mmsb.storage.codec import BATCH

BUILTINS = Invariants.BUILTINS


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[mmsb.Bus]:
    """An on-disk bus with ``sync="off"`` and the default (wall) clock: unlike the shared
    ``bus`` in ``conftest.py``, no deterministic clock."""
    with mmsb.open(tmp_path / "bus", sync="off") as b:
        yield b


def populate(bus: mmsb.Bus) -> list[int]:
    """A healthy bus: a few pages of several dtypes, writes, a graph and a derivation."""
    ids = bus.create_pages(3, 16).tolist()
    f = bus.create_pages(2, 16, dtype="float64", metadata={"finite": True}).tolist()
    bus.write(ids[0], b"\x01" * 16)
    bus.write(ids[1], b"\x02" * 4, offset=4)
    bus.derive(f[1], lambda x: x * 2, [f[0]])
    bus.graph.add_edge(ids[0], ids[2], "control")
    bus.write(f[0], np.array([1.5, -2.0]))
    bus.tick()
    return ids + f


def failing(results: list[InvariantResult]) -> dict[str, str]:
    return {r.name: r.detail for r in results if not r.passed}


def test_all_pass_on_a_healthy_bus(bus: mmsb.Bus) -> None:
    populate(bus)
    results = bus.invariants.run()
    assert [r.name for r in results] == list(BUILTINS)
    assert failing(results) == {}
    assert all(r.ns >= 0 and r.detail for r in results)
    details = {r.name: r.detail for r in results}
    assert details["graph"] == "2 edges, acyclic"  # the derivation's data edge + 1 control
    assert details["finite_floats"] == "2 declared-finite pages"
    assert details["replay_matches"] == f"5 pages match replay at LSN {bus.lsn}"
    # the orphan scan is incremental: a second run reads only the new frames
    bus.write(1, b"\x05")
    second = {r.name: r.detail for r in bus.invariants.run()}
    assert second["no_orphan_deltas"] == "1 new frames, 1 deltas scanned"
    assert bus.invariants.runs == 2


def test_epochs_monotone_violation(bus: mmsb.Bus) -> None:
    ids = populate(bus)
    bus.write(ids[0], b"\x03")
    bus.write(ids[0], b"\x04")
    assert failing(bus.invariants.run()) == {}
    st = bus._state
    assert st is not None
    assert int(st.epoch[ids[0]]) == 3
    st.epoch[ids[0]] = 1  # test-only: epochs going backwards
    got = failing(bus.invariants.run())
    assert got == {
        "epochs_monotone": f"epochs went backwards on pages {ids[0]} (page {ids[0]}: 3 -> 1)"
    }
    st.epoch[ids[0]] = -1
    assert failing(bus.invariants.run()) == {
        "epochs_monotone": f"negative epochs on pages {ids[0]}"
    }
    st.epoch[ids[0]] = 3
    assert failing(bus.invariants.run()) == {}


def test_page_table_violation(bus: mmsb.Bus) -> None:
    populate(bus)
    a, b = bus.create_pages(2, 16).tolist()  # zero-filled: sharing a slot keeps bytes equal
    st = bus._state
    assert st is not None
    saved = int(st.slot[b])
    st.slot[b] = st.slot[a]
    got = failing(bus.invariants.run())
    assert got == {"page_table": f"1 overlapping slots (first: pages {a} and {b})"}
    st.slot[b] = saved
    st.dtype[a] = 200
    assert failing(bus.invariants.run()) == {"page_table": f"invalid dtype codes on pages {a}"}
    st.dtype[a] = 0
    assert failing(bus.invariants.run()) == {}


@pytest.mark.parametrize("damage", ["cycle", "dead_endpoint"])
def test_graph_violation(bus: mmsb.Bus, damage: str) -> None:
    ids = populate(bus)
    st = bus._state
    assert st is not None
    if damage == "cycle":
        st.edges.add(ids[2], ids[0], 0)  # closes ids[0] -> ids[2] -> ids[0], unchecked
        want = "cycle among 2 pages"
    else:
        st.edges.add(ids[1], 999, 2)
        want = f"1 edges to missing pages (first {ids[1]} -> 999, gpu)"
    assert failing(bus.invariants.run()) == {"graph": want}


def test_no_orphan_deltas_violation(bus: mmsb.Bus) -> None:
    ids = populate(bus)
    victim = ids[2]
    bus.delete_page(victim)
    # test-only: a logged delta for the deleted page, written past the write path's checks;
    # a checkpoint right after keeps replay (from that checkpoint) from ever reading it
    committer = bus._committer
    st = bus._state
    assert committer is not None and st is not None
    log = committer.log
    lsn = committer.lsn + 1
    did = st.next_delta_id
    frame = codec.encode_single_range(victim, 1, 0, b"x", did, "api", None)
    log.append(BATCH, lsn, committer.timestamp, frame)
    committer.lsn = lsn
    st.next_delta_id = did + 1
    bus.checkpoint()
    got = failing(bus.invariants.run())
    assert got == {"no_orphan_deltas": f"1 orphan deltas (first: LSN {lsn}, page {victim})"}


def test_replay_matches_violation(bus: mmsb.Bus) -> None:
    ids = populate(bus)
    st = bus._state
    assert st is not None
    s = int(st.slot[ids[1]])
    st.arena.buf[s + 3] ^= 0xFF  # test-only: bytes changed without a logged delta
    got = failing(bus.invariants.run())
    assert got == {"replay_matches": f"1 pages differ from replay (first: page {ids[1]})"}
    st.arena.buf[s + 3] ^= 0xFF
    assert failing(bus.invariants.run()) == {}


def test_finite_floats_violation(bus: mmsb.Bus) -> None:
    populate(bus)
    (plain,) = bus.create_pages(1, 16, dtype="float64").tolist()
    (fin,) = bus.create_pages(1, 16, dtype="float64", metadata={"finite": True}).tolist()
    bus.write(plain, np.array([np.nan, np.inf]))  # not declared finite: fine
    assert failing(bus.invariants.run()) == {}
    bus.write(fin, np.array([np.nan]), offset=8)
    assert failing(bus.invariants.run()) == {"finite_floats": f"NaN or infinity in pages {fin}"}


def test_sampled_replay_check(bus: mmsb.Bus) -> None:
    bus.create_pages(300, 8)
    bus.write(7, b"\x01")
    [r] = bus.invariants.run(sample=True, names=["replay_matches"])
    assert r.passed and r.detail == f"256 pages match replay at LSN {bus.lsn}"


def test_orphan_scan_after_compaction(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", keep_checkpoints=1) as bus:
        populate(bus)
        bus.checkpoint()
        bus.write(1, b"\x09")
        bus.checkpoint()
        bus.write(2, b"\x09")
        info = bus.compact()
        assert info.segments_removed >= 1
    with mmsb.open(path, sync="off") as bus:
        assert failing(bus.invariants.run()) == {}


def test_user_checks(bus: mmsb.Bus) -> None:
    populate(bus)
    inv = bus.invariants
    inv.register("has_pages", lambda b: len(b) > 0)
    inv.register("never", lambda b: False)
    inv.register("explained", lambda b: (False, "counted 3 widgets, want 4"))

    def boom(b: mmsb.Bus) -> bool:
        raise RuntimeError("check exploded")

    inv.register("raises", boom)
    assert inv.names() == [*BUILTINS, "has_pages", "never", "explained", "raises"]
    got = failing(inv.run())
    assert got == {
        "never": "",
        "explained": "counted 3 widgets, want 4",
        "raises": "RuntimeError: check exploded",
    }
    only = inv.run(names=["has_pages", "graph"])
    assert [(r.name, r.passed) for r in only] == [("has_pages", True), ("graph", True)]
    inv.unregister("never")
    inv.unregister("never")  # idempotent
    assert "never" not in inv.names()
    assert set(failing(inv.run())) == {"explained", "raises"}
    with pytest.raises(InvalidArgumentError, match="unknown invariants: nope"):
        inv.run(names=["nope"])
    with pytest.raises(InvalidArgumentError, match="reserved invariant name 'graph'"):
        inv.register("graph", lambda b: True)
    with pytest.raises(InvalidArgumentError, match="invalid or reserved invariant name ''"):
        inv.register("", lambda b: True)
    with pytest.raises(InvalidArgumentError, match="must be callable"):
        inv.register("x", 3)  # type: ignore[arg-type]
