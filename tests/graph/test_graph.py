"""The dependency graph: edge API, cycle errors, kinds, deleted pages, deterministic
topological order, validation, and persistence through reopen, checkpoint, crash recovery
and ``at(lsn)``. The incremental cycle check is compared with a plain reachability search."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import mmsb
from mmsb.errors import CycleError, InvalidArgumentError, PageNotFoundError
from mmsb.graph import KINDS, GraphReport
from mmsb.storage.edges import EdgeTable


def edge_set(view) -> set[tuple[int, int, str]]:
    return {(int(e["parent"]), int(e["child"]), KINDS[int(e["kind"])]) for e in view.edges()}


def reaches(edges: set[tuple[int, int]], src: int, dst: int) -> bool:
    """Plain depth-first reachability over a set of (parent, child) pairs."""
    seen, stack = {src}, [src]
    while stack:
        v = stack.pop()
        if v == dst:
            return True
        for p, c in edges:
            if p == v and c not in seen:
                seen.add(c)
                stack.append(c)
    return False


# -- the edge API -----------------------------------------------------------------------


def test_add_remove_and_queries(bus: mmsb.Bus) -> None:
    a, b, c, d, e = bus.create_pages(5, 8).tolist()
    g = bus.graph
    assert len(g) == 0
    assert g.add_edge(a, b) is True
    assert g.add_edge(a, b) is False  # already there: no change, nothing logged
    lsn = bus.lsn
    assert g.add_edge(a, b) is False and bus.lsn == lsn
    g.add_edge(a, c, "control")
    g.add_edge(b, d)
    g.add_edge(c, d, "gpu")
    g.add_edge(d, e, "compiler")
    assert len(g) == 5
    assert g.has_edge(a, b) and g.has_edge(a, c, "control") and not g.has_edge(a, c)
    assert g.parents(d).tolist() == [b, c]
    assert g.parents(d, "data").tolist() == [b]
    assert g.parents(d, "gpu").tolist() == [c]
    assert g.children(a).tolist() == [b, c]
    assert g.children(a, "control").tolist() == [c]
    assert g.ancestors(e).tolist() == [a, b, c, d]
    assert g.ancestors(e, "data").tolist() == []  # e's only parent edge is a compiler edge
    assert g.descendants(a).tolist() == [b, c, d, e]
    assert g.descendants(a, "data").tolist() == [b, d]
    assert g.descendants(e).tolist() == []
    assert edge_set(g) == {
        (a, b, "data"), (a, c, "control"), (b, d, "data"), (c, d, "gpu"), (d, e, "compiler")
    }  # fmt: skip
    g.remove_edge(c, d, "gpu")
    assert not g.has_edge(c, d, "gpu") and g.parents(d).tolist() == [b]
    with pytest.raises(InvalidArgumentError, match=r"no gpu edge 3 -> 4 to remove"):
        g.remove_edge(c, d, "gpu")
    assert "4 edges" in repr(g)


def test_same_pair_several_kinds(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    for k in KINDS:
        assert bus.graph.add_edge(a, b, k)
    assert len(bus.graph) == 4
    assert bus.graph.children(a).tolist() == [b]
    bus.graph.remove_edge(a, b, "control")
    assert bus.graph.children(a, "control").tolist() == []
    assert bus.graph.children(a, "gpu").tolist() == [b]


def test_bad_arguments(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    with pytest.raises(InvalidArgumentError, match=r"unknown edge kind 'weird'"):
        bus.graph.add_edge(a, b, "weird")
    with pytest.raises(InvalidArgumentError, match=r"\(parent, child\) pairs"):
        bus.graph.add_edges([(1.5, 2.0)])
    with pytest.raises(InvalidArgumentError, match=r"\(parent, child\) pairs"):
        bus.graph.add_edges([1, 2, 3])
    assert bus.graph.add_edges([]) == 0
    assert len(bus.graph) == 0


def test_unknown_and_deleted_pages_rejected(bus: mmsb.Bus) -> None:
    a, b, c = bus.create_pages(3, 8).tolist()
    bus.delete_page(c)
    lsn = bus.lsn
    with pytest.raises(PageNotFoundError, match=r"page 99"):
        bus.graph.add_edge(a, 99)
    with pytest.raises(PageNotFoundError, match=rf"page {c}"):
        bus.graph.add_edge(c, a)
    with pytest.raises(PageNotFoundError):
        bus.graph.add_edge(a, 0)
    # all or none: a batch with one bad row adds nothing
    with pytest.raises(PageNotFoundError):
        bus.graph.add_edges([(a, b), (b, c)])
    assert len(bus.graph) == 0 and bus.lsn == lsn


# -- cycles -----------------------------------------------------------------------------


def test_self_loop(bus: mmsb.Bus) -> None:
    (a,) = bus.create_pages(1, 8).tolist()
    with pytest.raises(CycleError, match=r"would close the cycle 1 -> 1") as info:
        bus.graph.add_edge(a, a, "control")
    assert info.value.cycle == [a]
    assert isinstance(info.value, ValueError) and mmsb.CycleError is CycleError
    assert len(bus.graph) == 0


def test_cycle_error_names_the_full_cycle_and_leaves_graph_unchanged(bus: mmsb.Bus) -> None:
    ids = bus.create_pages(6, 8).tolist()
    p1, p2, p3, p4, p5, p6 = ids
    g = bus.graph
    # a chain of mixed kinds plus a side branch: the graph is acyclic over all kinds together
    g.add_edge(p1, p2)
    g.add_edge(p2, p3, "control")
    g.add_edge(p3, p4, "gpu")
    g.add_edge(p4, p5, "compiler")
    g.add_edge(p2, p6)
    before = edge_set(g)
    lsn = bus.lsn
    with pytest.raises(CycleError) as info:
        g.add_edge(p5, p1)
    cyc = info.value.cycle
    assert cyc == [p5, p1, p2, p3, p4]
    # every consecutive pair (and last -> first) is an edge, apart from the rejected one
    pairs = {(p, c) for p, c, _ in before} | {(p5, p1)}
    assert all((cyc[i], cyc[(i + 1) % len(cyc)]) in pairs for i in range(len(cyc)))
    assert str(info.value).endswith("5 -> 1 -> 2 -> 3 -> 4 -> 5")
    assert edge_set(g) == before and bus.lsn == lsn
    # a many-row change that closes a cycle on its last row is rolled back entirely
    with pytest.raises(CycleError):
        g.add_edges([(p6, p3), (p6, p4), (p4, p2)])
    assert edge_set(g) == before and bus.lsn == lsn
    # the graph still accepts edges that respect the order afterwards
    assert g.add_edges([(p6, p3), (p6, p4)]) == 2
    assert bus.graph.validate().ok


def test_topo_order_ties_by_page_id(bus: mmsb.Bus) -> None:
    ids = bus.create_pages(8, 8).tolist()
    g = bus.graph
    assert g.topo_order().tolist() == []
    assert ids == list(range(1, 9))
    g.add_edges([(8, 2), (7, 2), (5, 3), (3, 1)])
    g.add_edge(6, 1, "control")
    # only pages with an edge appear (4 has none); the ready set starts as {5, 6, 7, 8} and
    # the smallest ready id always goes next: 5 frees 3, 3 waits for 6 to free 1, and so on
    assert g.topo_order().tolist() == [5, 3, 6, 1, 7, 8, 2]


def test_topo_order_is_a_min_heap_kahn(bus: mmsb.Bus) -> None:
    rng = np.random.default_rng(7)
    n = 40
    bus.create_pages(n, 8)
    pairs: set[tuple[int, int]] = set()
    for _ in range(120):
        a, b = sorted(rng.choice(np.arange(1, n + 1), 2, replace=False).tolist())
        # random direction relative to a hidden permutation keeps it acyclic
        pairs.add((a, b))
    perm = rng.permutation(n) + 1
    relabel = {i + 1: int(perm[i]) for i in range(n)}
    edges = sorted({(relabel[a], relabel[b]) for a, b in pairs})
    bus.graph.add_edges(edges)
    # oracle: repeatedly take the smallest node with no remaining parents
    nodes = {v for e in edges for v in e}
    left = set(edges)
    expect = []
    while nodes:
        ready = min(v for v in nodes if not any(c == v for _, c in left))
        expect.append(ready)
        nodes.discard(ready)
        left = {(p, c) for p, c in left if p != ready}
    assert bus.graph.topo_order().tolist() == expect


def test_validate_report(bus: mmsb.Bus) -> None:
    a, b, c = bus.create_pages(3, 8).tolist()
    bus.graph.add_edges([(a, b), (b, c)])
    rep = bus.graph.validate()
    assert isinstance(rep, GraphReport)
    assert rep.ok and rep.acyclic and rep.nodes == 3 and rep.edges == 2
    assert rep.dead_endpoints == [] and rep.cyclic_nodes == 0
    assert set(rep.timings_ns) == {"cycle_check", "endpoints"}
    assert all(v >= 0 for v in rep.timings_ns.values())
    assert "OK" in rep.explain() and "acyclic: yes" in rep.explain()
    # what validate reports for a graph damaged behind the API's back (test-only)
    st_ = bus._state
    assert st_ is not None
    st_.edges.add(c, a, 0)  # closes a -> b -> c -> a without the check
    st_.edges.add(a, 42, 1)  # page 42 does not exist
    rep = bus.graph.validate()
    assert not rep.ok and not rep.acyclic and rep.cyclic_nodes == 4  # 42 lies behind it
    assert rep.dead_endpoints == [(a, 42, "control")]
    text = rep.explain()
    assert "INVALID" in text and "no (4 pages involved)" in text and "1 -> 42 (control)" in text
    with pytest.raises(CycleError, match="holds a cycle"):
        bus.graph.topo_order()
    st_.edges.remove(c, a, 0)
    st_.edges.remove(a, 42, 1)
    assert bus.graph.validate().ok


# -- deleting pages -----------------------------------------------------------------------


def test_delete_drops_edges_and_derivation(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        a, b, c, d = bus.create_pages(4, 8).tolist()
        bus.graph.add_edges([(a, b), (b, c)])
        bus.graph.add_edge(b, d, "control")
        (e,) = bus.create_pages(1, 8).tolist()
        bus.derive(c, lambda x: x, [b], name="reads_b")
        bus.derive(b, lambda x: x, [a], name="computes_b")
        bus.derive(e, lambda x: x, [a], name="unrelated")
        bus.delete_page(b)
        assert edge_set(bus.graph) == {(a, e, "data")}
        # b's own derivation and the one reading b are gone at once, not at the next tick
        assert bus.derivations() == {e: "unrelated"}
        assert bus.graph.validate().ok
        bus.write(a, b"\x07")
        rep = bus.tick()
        assert rep.pages_recomputed == 1 and bus.read(e)[0] == 7 and bus.read(c)[0] == 0
        # the remaining pages still accept edges, and the dead one is refused
        bus.graph.add_edge(a, c)
        with pytest.raises(PageNotFoundError):
            bus.graph.add_edge(b, c)
        final = edge_set(bus.graph)
        h = bus.state_hash()
    with mmsb.open(path, sync="off") as bus:  # replayed / reloaded the same way
        assert edge_set(bus.graph) == final == {(a, c, "data"), (a, e, "data")}
        assert bus.state_hash() == h


def test_delete_drops_edges_under_replay(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    a, b, c = bus.create_pages(3, 8).tolist()
    bus.graph.add_edges([(a, b), (b, c), (a, c)])
    bus.delete_page(b)
    expect = edge_set(bus.graph)
    bus.abandon()  # crash: recovery replays CREATE, GRAPH, DELETE
    with mmsb.open(path, sync="off") as bus:
        assert bus.recovery.frames_replayed >= 3
        assert edge_set(bus.graph) == expect == {(a, c, "data")}


# -- persistence --------------------------------------------------------------------------


def _build(bus: mmsb.Bus) -> list[int]:
    """Pages and a mixed-kind graph built over several commits; returns the LSNs after
    each graph change."""
    bus.create_pages(6, 16)
    g = bus.graph
    lsns = []
    g.add_edges([(1, 2), (1, 3)])
    lsns.append(bus.lsn)
    g.add_edge(2, 4, "control")
    lsns.append(bus.lsn)
    g.add_edge(3, 4, "gpu")
    g.add_edge(4, 5, "compiler")
    lsns.append(bus.lsn)
    g.remove_edge(1, 3)
    lsns.append(bus.lsn)
    bus.write(1, b"\x01" * 16)
    g.add_edge(5, 6)
    lsns.append(bus.lsn)
    return lsns


def _snapshots(bus: mmsb.Bus, lsns: list[int]) -> list[set[tuple[int, int, str]]]:
    out = []
    for lsn in lsns:
        with bus.at(lsn) as snap:
            out.append(edge_set(snap.graph))
    return out


EXPECTED = [
    {(1, 2, "data"), (1, 3, "data")},
    {(1, 2, "data"), (1, 3, "data"), (2, 4, "control")},
    {(1, 2, "data"), (1, 3, "data"), (2, 4, "control"), (3, 4, "gpu"), (4, 5, "compiler")},
    {(1, 2, "data"), (2, 4, "control"), (3, 4, "gpu"), (4, 5, "compiler")},
    {(1, 2, "data"), (2, 4, "control"), (3, 4, "gpu"), (4, 5, "compiler"), (5, 6, "data")},
]


@pytest.mark.parametrize("how", ["close", "checkpoint_then_crash", "crash", "readonly"])
def test_graph_survives(tmp_path: Path, how: str) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    lsns = _build(bus)
    assert _snapshots(bus, lsns) == EXPECTED
    assert edge_set(bus.graph) == EXPECTED[-1]
    h = bus.state_hash()
    if how == "close":
        bus.close()
    elif how == "checkpoint_then_crash":
        bus.checkpoint()
        bus.graph.add_edge(2, 3, "control")
        bus.abandon()
    else:
        bus.abandon()
    extra = {(2, 3, "control")} if how == "checkpoint_then_crash" else set()
    with mmsb.open(path, sync="off", readonly=how == "readonly") as bus:
        assert edge_set(bus.graph) == EXPECTED[-1] | extra
        if not extra:
            assert bus.state_hash() == h
        assert _snapshots(bus, lsns) == EXPECTED
        assert bus.graph.validate().ok
        assert bus.verify().ok
        if how == "checkpoint_then_crash":
            assert bus.recovery.checkpoint_lsn == lsns[-1]
        if not bus.readonly:
            # the restored cycle check still works on reloaded edges
            with pytest.raises(CycleError) as info:
                bus.graph.add_edge(6, 1)
            assert info.value.cycle == [6, 1, 2, 4, 5]


def test_at_lsn_graph_before_any_edge_and_readonly_snapshot(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    before = bus.lsn
    bus.graph.add_edge(a, b)
    with bus.at(before) as snap:
        assert len(snap.graph) == 0
        assert not hasattr(snap.graph, "add_edge")
    with bus.at() as snap:
        assert snap.graph.children(a).tolist() == [b]
        assert snap.graph.topo_order().tolist() == [a, b]


def test_verify_clean_with_graph_frames(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        _build(bus)
        bus.checkpoint()
        bus.graph.add_edge(1, 6, "gpu")
        rep = bus.verify()
        assert rep.ok, rep
    rep = mmsb.verify(path)
    assert rep.ok, rep


# -- the incremental cycle check against plain reachability --------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 12),
    ops=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11), st.booleans()), max_size=80),
)
def test_incremental_cycle_check_matches_reachability(n: int, ops: list) -> None:
    table = EdgeTable()
    model: set[tuple[int, int]] = set()
    for a, b, remove in ops:
        p, c = a % n + 1, b % n + 1
        if remove:
            assert table.remove(p, c, 0) == ((p, c) in model)
            model.discard((p, c))
            continue
        if (p, c) in model:
            continue
        cycle = table.find_cycle(p, c)
        closes = p == c or reaches(model, c, p)
        assert (cycle is not None) == closes
        if cycle is None:
            table.add(p, c, 0)
            model.add((p, c))
        else:
            assert cycle[0] == p and cycle[1 % len(cycle)] == c
            both = model | {(p, c)}
            assert all((cycle[i], cycle[(i + 1) % len(cycle)]) in both for i in range(len(cycle)))
            assert len(set(cycle)) == len(cycle)
    pp, cc, _ = table.columns()
    assert set(zip(pp.tolist(), cc.tolist(), strict=True)) == model
    table.check_acyclic()


# -- a model-based run: random edge changes, deletes, checkpoints, crashes, reopens -------


class GraphMachine(RuleBasedStateMachine):
    """The bus's graph against a plain set of edges, through every way of losing and
    rebuilding the in-memory state."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mmsb-graph-")
        self.path = os.path.join(self.dir, "bus")
        self.bus = mmsb.open(self.path, sync="off")
        self.bus.create_pages(6, 8)
        self.live = set(range(1, 7))
        self.edges: set[tuple[int, int, str]] = set()
        self.history: list[tuple[int, set[tuple[int, int, str]]]] = []

    def _pairs(self) -> set[tuple[int, int]]:
        return {(p, c) for p, c, _ in self.edges}

    @rule(p=st.integers(1, 9), c=st.integers(1, 9), kind=st.sampled_from(KINDS))
    def add(self, p: int, c: int, kind: str) -> None:
        if p not in self.live or c not in self.live:
            with pytest.raises(PageNotFoundError):
                self.bus.graph.add_edge(p, c, kind)
            return
        if (p, c, kind) in self.edges:
            assert self.bus.graph.add_edge(p, c, kind) is False
            return
        if p == c or reaches(self._pairs(), c, p):
            with pytest.raises(CycleError) as info:
                self.bus.graph.add_edge(p, c, kind)
            cyc = info.value.cycle
            pairs = self._pairs() | {(p, c)}
            assert cyc[0] == p and all(
                (cyc[i], cyc[(i + 1) % len(cyc)]) in pairs for i in range(len(cyc))
            )
            return
        assert self.bus.graph.add_edge(p, c, kind) is True
        self.edges.add((p, c, kind))

    @precondition(lambda self: bool(self.edges))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        p, c, kind = data.draw(st.sampled_from(sorted(self.edges)))
        self.bus.graph.remove_edge(p, c, kind)
        self.edges.discard((p, c, kind))

    @precondition(lambda self: len(self.live) > 2)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(sorted(self.live)))
        self.bus.delete_page(victim)
        self.live.discard(victim)
        self.edges = {e for e in self.edges if victim not in e[:2]}

    @rule()
    def create(self) -> None:
        self.live.add(self.bus.create_page(8))

    @rule()
    def checkpoint(self) -> None:
        self.bus.checkpoint()

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        if clean:
            self.bus.close()
        else:
            self.bus.abandon()
        self.bus = mmsb.open(self.path, sync="off")

    @rule()
    def remember(self) -> None:
        self.history.append((self.bus.lsn, set(self.edges)))

    @invariant()
    def matches(self) -> None:
        assert edge_set(self.bus.graph) == self.edges
        assert self.bus.graph.validate().ok

    def teardown(self) -> None:
        try:
            for lsn, want in self.history:
                with self.bus.at(lsn) as snap:
                    assert edge_set(snap.graph) == want
            assert self.bus.verify().ok
        finally:
            self.bus.close()
            shutil.rmtree(self.dir, ignore_errors=True)


GraphMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_graph_model = GraphMachine.TestCase


def test_readonly_bus_follows_graph_changes(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as writer:
        a, b, c = writer.create_pages(3, 8).tolist()
        with mmsb.open(path, readonly=True) as reader:
            assert len(reader.graph) == 0
            writer.graph.add_edges([(a, b), (b, c)])
            writer.graph.add_edge(a, c, "gpu")
            assert edge_set(reader.graph) == edge_set(writer.graph)
            assert reader.graph.topo_order().tolist() == [a, b, c]
            writer.delete_page(b)
            assert edge_set(reader.graph) == {(a, c, "gpu")}
            with pytest.raises(mmsb.ReadOnlyError):
                reader.graph.add_edge(a, c)


def test_edge_table_copy_is_independent_and_equal() -> None:
    """``copy`` copies the columns only and builds its maps on first use; they must equal
    the maps the original kept up edge by edge (the oracle), and share nothing with it."""
    rng = np.random.default_rng(3)
    table = EdgeTable()
    for _ in range(300):
        p, c = sorted(rng.choice(np.arange(1, 60), 2, replace=False).tolist())
        table.add(p, c, int(rng.integers(0, 4)))
    for _ in range(40):
        p, c, k = (int(x) for x in table.columns()[0][:1].tolist() + table.columns()[1][:1].tolist()
                   + table.columns()[2][:1].tolist())  # fmt: skip
        table.remove(p, c, k)
    dup = table.copy()
    rebuilt = EdgeTable()
    rebuilt.load(*table.sorted_rows())
    assert dup.encode() == table.encode() == rebuilt.encode()
    assert dup.children == rebuilt.children and dup.parents == rebuilt.parents
    assert dup.find_cycle(59, 1) == table.find_cycle(59, 1)
    dup.add(1, 59, 0)
    dup.remove(*[int(x) for x in (table.columns()[0][0], table.columns()[1][0],
                                  table.columns()[2][0])])  # fmt: skip
    assert table.encode() == rebuilt.encode()  # the original did not move
    assert table.children == rebuilt.children and table.parents == rebuilt.parents
    assert not table.has(1, 59, 0) or rebuilt.has(1, 59, 0)


def test_edge_table_load_keeps_a_repeated_row_once_and_versions_only_grow() -> None:
    """``load`` drops repeated rows (as adding them one by one would); ``load`` and
    ``clear`` move the version on, never back, since plans are cached by version."""
    p = np.array([3, 1, 3, 2, 1], np.int64)
    c = np.array([4, 2, 4, 3, 2], np.int64)
    k = np.array([0, 1, 0, 0, 2], np.uint8)
    oracle = EdgeTable()
    for row in zip(p.tolist(), c.tolist(), k.tolist(), strict=True):
        oracle.add(*row)
    table = EdgeTable()
    table.add(7, 8, 0)
    before = table.version
    table.load(p, c, k)
    assert table.version > before
    assert len(table) == len(oracle) == 4
    assert table.encode() == oracle.encode()
    assert table.children == oracle.children and table.parents == oracle.parents
    assert table.children[1] == {2: 0b110} and not table.has(7, 8, 0)
    before = table.version
    table.clear()
    assert table.version > before and len(table) == 0 and table.children == {}
