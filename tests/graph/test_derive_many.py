"""``derive_many``: one function call per tick for a group of derived pages.

The slow oracle is the same graph built from ``n`` ordinary ``derive`` calls, each running
the group's function on its own row: on random graphs and inputs both buses must hold the
same bytes after every tick, in ``at()`` of every tick afterwards and after reopening, and
report the same counts. The rest pins the contract: the stacked shape, only the members
whose parents changed are written, typed errors with nothing committed, and every
per-derivation feature (underive, deletes, edges by hand, provenance) on single members.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import DeltaBatch
from mmsb.engine import propkernels as pk
from mmsb.errors import (
    CycleError,
    InvalidArgumentError,
    InvalidDeltaError,
    PageNotFoundError,
    PropagationError,
)
from mmsb.graph import propagate
from mmsb.semiring import MAX_PLUS, SUM_PRODUCT
from support import Clock

Fn = Callable[[np.ndarray], np.ndarray]


def mix(coef: float) -> Fn:
    """A row-wise function of exact operations (no transcendental ones, whose vectorised and
    scalar paths may round differently): row i of the result uses row i only."""

    def fn(x: np.ndarray) -> np.ndarray:
        acc = x[:, 0] * coef
        for j in range(1, x.shape[1]):
            acc = np.maximum(acc * 0.5 + x[:, j], x[:, j] - 1.0)
        return acc

    return fn


def one_row(fn: Fn) -> Callable[..., np.ndarray]:
    """The oracle's per-child function: the group's function on a stack of one row."""

    def single(*parents: np.ndarray) -> np.ndarray:
        return np.asarray(fn(np.stack(parents)[None])[0])

    return single


# -- the oracle: n ordinary derivations -----------------------------------------------------


def build(bus: mmsb.Bus, seed: int, many: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Inputs, a semiring layer, a group over inputs and semiring pages, an ordinary
    derivation over group members, and a second group over the first one's children.
    Returns the input pages and every page group (for comparisons)."""
    rng = np.random.default_rng(seed)
    elems = int(rng.integers(1, 6))
    size = 8 * elems
    inputs = bus.create_pages(int(rng.integers(6, 14)), size, dtype="float64")
    semi = bus.create_pages(int(rng.integers(2, 6)), size, dtype="float64")
    for s in semi.tolist():
        ps = rng.choice(inputs, int(rng.integers(1, 4)), replace=False).tolist()
        bus.derive_semiring(s, ps, SUM_PRODUCT if rng.random() < 0.5 else MAX_PLUS,
                            weights=rng.uniform(-1, 1, len(ps)))  # fmt: skip
    pool = np.concatenate([inputs, semi])
    layers: list[np.ndarray] = []
    for layer in range(2):
        n = int(rng.integers(1, 9))
        k = int(rng.integers(1, min(5, pool.size) + 1))
        kids = bus.create_pages(n, size, dtype="float64")
        rows = np.stack([rng.choice(pool, k, replace=False) for _ in range(n)])
        fn = mix(float(rng.uniform(0.5, 2.0)))
        if many:
            bus.derive_many(kids, fn, rows, name=f"group{layer}")
        else:
            for c, r in zip(kids.tolist(), rows.tolist(), strict=True):
                bus.derive(c, one_row(fn), r, name=f"group{layer}")
        layers.append(kids)
        if layer == 0:  # an ordinary derivation downstream of the group
            tail = bus.create_page(size, dtype="float64")
            bus.derive(tail, lambda a, b: a - 2.0 * b, kids[[0, -1]].tolist()
                       if n > 1 else [int(kids[0]), int(inputs[0])], name="tail")  # fmt: skip
            layers.append(np.array([tail]))
            pool = np.concatenate([inputs, kids])  # the second group reads this one
    return inputs, [inputs, semi, *layers]


def ticks(seed: int, inputs: np.ndarray, size: int, count: int) -> list[DeltaBatch | None]:
    rng = np.random.default_rng(seed + 1000)
    out: list[DeltaBatch | None] = []
    elems = size // 8
    for _ in range(count):
        if rng.random() < 0.15:
            out.append(None)  # a tick with no input
            continue
        pids = rng.choice(inputs, int(rng.integers(1, inputs.size + 1)), replace=False)
        offs, payloads = [], []
        for _ in pids:
            a = int(rng.integers(0, elems))
            b = int(rng.integers(a + 1, elems + 1))
            offs.append(8 * a)
            # a few repeated values, so that some recomputations change nothing (cutoff)
            payloads.append(np.round(rng.normal(0, 2, b - a), 1).tobytes())
        out.append(DeltaBatch.from_ranges(pids, offs, payloads))
    return out


def snapshot(bus: mmsb.Bus | Any, pages: list[np.ndarray]) -> list[bytes]:
    return [bus.read(int(p)).tobytes() for group in pages for p in group.tolist()]


@pytest.mark.parametrize("seed", range(8))
def test_derive_many_matches_n_derivations(tmp_path: Path, seed: int) -> None:
    fast = mmsb.open(tmp_path / "many", sync="off", clock=Clock())
    slow = mmsb.open(tmp_path / "one", sync="off", clock=Clock())
    try:
        inputs, pages = build(fast, seed, many=True)
        _, pages2 = build(slow, seed, many=False)
        assert all(np.array_equal(a, b) for a, b in zip(pages, pages2, strict=True))
        assert fast.derivations() == slow.derivations()
        for c in pages[2].tolist() + pages[4].tolist():
            assert fast.graph.parents(c, "data").tolist() == slow.graph.parents(c, "data").tolist()
        size = int(fast.page(int(inputs[0])).size)
        lsns: list[tuple[int, int, list[bytes]]] = []
        for batch in ticks(seed, inputs, size, 12):
            a, b = fast.tick(batch), slow.tick(batch)
            counts = [(r.input_deltas, r.derived_deltas, r.pages_recomputed, r.pages_changed)
                      for r in (a, b)]  # fmt: skip
            assert counts[0] == counts[1]
            now = snapshot(fast, pages)
            assert now == snapshot(slow, pages)
            lsns.append((fast.lsn, slow.lsn, now))
        for la, lb, want in lsns:  # history: at() rebuilds each tick's state from the log
            with fast.at(la) as sa, slow.at(lb) as sb:
                assert snapshot(sa, pages) == want == snapshot(sb, pages)
        # every derived row names its own parents, as n derivations' rows do
        for c in pages[2].tolist():
            pa, pb = fast.provenance(c, depth=1), slow.provenance(c, depth=1)
            assert [s.page_id for s in pa.root.parents] == [s.page_id for s in pb.root.parents]
    finally:
        fast.close()
        slow.close()
    with mmsb.open(tmp_path / "many", sync="off") as again:  # replayed from the log
        assert snapshot(again, pages) == lsns[-1][2]
        assert again.derivations() == {}  # functions are code: registered again by hand


# -- the contract ---------------------------------------------------------------------------


@pytest.fixture
def agents(bus: mmsb.Bus) -> tuple[mmsb.Bus, np.ndarray, np.ndarray, np.ndarray]:
    """Six state pages (4 float64), six children, each reading three states."""
    states = bus.create_pages(6, 32, dtype="float64")
    kids = bus.create_pages(6, 32, dtype="float64")
    rows = np.array([[states[i], states[(i + 1) % 6], states[(i + 3) % 6]] for i in range(6)])
    return bus, states, kids, rows


def write_all(bus: mmsb.Bus, pages: np.ndarray, values: np.ndarray) -> mmsb.TickReport:
    return bus.tick(DeltaBatch.from_ranges(pages, np.zeros(pages.size, np.int64), values))


def test_one_call_per_tick_with_the_stacked_parents(agents: Any) -> None:
    bus, states, kids, rows = agents
    seen: list[np.ndarray] = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        assert not x.flags.writeable
        return x.sum(axis=1)

    bus.derive_many(kids, fn, rows, name="sum3")
    vals = np.arange(24, dtype=np.float64).reshape(6, 4)
    rep = write_all(bus, states, vals)
    assert len(seen) == 1 and seen[0].shape == (6, 3, 4) and seen[0].dtype == np.float64
    idx = np.searchsorted(states, rows)
    np.testing.assert_array_equal(seen[0], vals[idx])
    np.testing.assert_array_equal(bus.read_many(kids), vals[idx].sum(axis=1))
    assert rep.pages_recomputed == rep.pages_changed == rep.derived_deltas == 6
    assert bus.derivations() == {int(c): "sum3" for c in kids}


def test_only_members_whose_parents_changed_are_written(agents: Any) -> None:
    bus, states, kids, rows = agents
    bus.derive_many(kids, lambda x: x.sum(axis=1), rows)
    write_all(bus, states, np.ones((6, 4)))
    # a member written by hand keeps its bytes while its own parents do not change
    hand = int(kids[2])  # reads states 2, 3, 5
    bus.write(hand, np.full(4, 99.0))
    rep = bus.tick(DeltaBatch.from_ranges([states[0]], [8], [np.array([5.0])]))
    users = [int(c) for c, r in zip(kids, rows, strict=True) if states[0] in r]
    assert rep.pages_recomputed == len(users) == rep.derived_deltas
    np.testing.assert_array_equal(bus.read(hand), np.full(4, 99.0))
    for c in users:
        assert bus.read(c)[1] == 7.0 and bus.read(c)[0] == 3.0
    assert bus.tick().pages_recomputed == 0  # nothing pending: the group does not run


def test_group_children_feed_later_derivations_glitch_free(agents: Any) -> None:
    bus, states, kids, rows = agents
    total = bus.create_page(32, dtype="float64")
    bus.derive_semiring(total, kids.tolist(), SUM_PRODUCT)
    seen: list[np.ndarray] = []
    later = bus.create_pages(6, 32, dtype="float64")

    def twice(x: np.ndarray) -> np.ndarray:
        seen.append(x.copy())
        return x[:, 0] * 2 + x[:, 1]

    # a second group reads the first group's children and the semiring page over them
    bus.derive_many(later, twice, np.stack([kids, np.full(6, total)], axis=1))
    bus.derive_many(kids, lambda x: x.max(axis=1), rows)
    for t in range(3):
        vals = np.random.default_rng(t).normal(size=(6, 4))
        write_all(bus, states, vals)
        got = bus.read_many(kids)
        np.testing.assert_array_equal(bus.read(total), SUM_PRODUCT.fold(list(got)))
        np.testing.assert_array_equal(bus.read_many(later), got * 2 + bus.read(total))
        assert len(seen) == t + 1  # once per tick, after both of its parents were final


@pytest.mark.parametrize(
    "result",
    [
        lambda x: x.sum(axis=1)[:-1],  # a row short
        lambda x: x.sum(axis=1).astype(np.float32),  # the wrong dtype
        lambda x: x.sum(axis=1).reshape(-1),  # flat
        lambda x: x.sum(axis=1).tobytes(),  # not an array
    ],
)
def test_a_wrong_result_commits_nothing(agents: Any, result: Fn) -> None:
    bus, states, kids, rows = agents
    bus.derive_many(kids, result, rows, name="bad")
    lsn = bus.lsn
    with pytest.raises(InvalidDeltaError, match="bad"):
        write_all(bus, states, np.ones((6, 4)))
    assert bus.lsn == lsn and not bus.read_many(states).any()  # the input went back too
    assert not bus.read_many(kids).any()


def test_a_raising_or_writing_function_commits_nothing(agents: Any) -> None:
    bus, states, kids, rows = agents

    def boom(x: np.ndarray) -> np.ndarray:
        raise KeyError("no")

    def scribble(x: np.ndarray) -> np.ndarray:
        x[0, 0, 0] = 1.0
        return x.sum(axis=1)

    for fn in (boom, scribble):
        bus.derive_many(kids, fn, rows)
        lsn = bus.lsn
        with pytest.raises(PropagationError) as err:
            write_all(bus, states, np.ones((6, 4)))
        assert err.value.function == fn.__qualname__ and err.value.page == int(kids[0])
        assert bus.lsn == lsn and not bus.read_many(states).any()


def test_registration_errors_change_nothing(bus: mmsb.Bus) -> None:
    a = bus.create_pages(4, 16, dtype="float64")
    kids = bus.create_pages(2, 16, dtype="float64")
    odd = bus.create_page(8, dtype="float64")
    f32 = bus.create_page(16, dtype="float32")
    lsn = bus.lsn
    bad: list[tuple[type[Exception], Any, Any]] = [
        (InvalidArgumentError, kids, [[a[0]], [a[1]], [a[2]]]),  # three rows for two
        (InvalidArgumentError, kids, [a[0], a[1]]),  # 1-D
        (InvalidArgumentError, kids, np.zeros((2, 0), np.int64)),  # no parents
        (InvalidArgumentError, [kids[0], kids[0]], [[a[0]], [a[1]]]),  # a child twice
        (InvalidArgumentError, kids, [[a[0], a[0]], [a[1], a[2]]]),  # a parent twice
        (InvalidArgumentError, kids, [[a[0]], [odd]]),  # parents of two sizes
        (InvalidArgumentError, kids, [[a[0]], [f32]]),  # parents of two dtypes
        (InvalidArgumentError, [kids[0], odd], [[a[0]], [a[1]]]),  # children of two sizes
        (InvalidArgumentError, kids, [[0.5], [1.5]]),  # not page ids
        (InvalidArgumentError, [], np.zeros((0, 1), np.int64)),  # no children
        (PageNotFoundError, kids, [[a[0]], [999]]),
        (PageNotFoundError, [kids[0], 999], [[a[0]], [a[1]]]),
        (CycleError, kids, [[kids[0]], [a[1]]]),  # a self-loop
        (CycleError, kids, [[a[0]], [kids[0]]]),  # one member feeds another
    ]
    for exc, children, parents in bad:
        with pytest.raises(exc):
            bus.derive_many(children, lambda x: x[:, 0], parents)
    with pytest.raises(InvalidArgumentError):
        bus.derive_many(kids, "not callable", [[a[0]], [a[1]]])  # type: ignore[arg-type]
    assert bus.lsn == lsn and len(bus.graph) == 0 and bus.derivations() == {}


def test_members_that_would_depend_on_each_other_are_refused(bus: mmsb.Bus) -> None:
    a, b, x, y = bus.create_pages(4, 16, dtype="float64").tolist()
    k1, k2, k3 = bus.create_pages(3, 16, dtype="float64").tolist()
    bus.derive_many([k1, k2], lambda v: v[:, 0], [[a], [x]], name="g")
    lsn = bus.lsn
    with pytest.raises(CycleError, match="'g'"):  # k1 -> x -> k2: not one call any more
        bus.derive(x, lambda v: v + 1, [k1])
    with pytest.raises(CycleError):  # the same through a second group
        bus.derive_many([x, y], lambda v: v[:, 0], [[k1], [b]], name="h")
    assert bus.lsn == lsn and bus.derivations() == {k1: "g", k2: "g"}
    bus.derive(x, lambda v: v + 1, [b])  # fine: no member reaches x
    bus.derive(k3, lambda v: v * 3, [k2])  # downstream of the group: fine
    bus.write(b, np.ones(2))
    bus.tick()
    np.testing.assert_array_equal(bus.read(k2), [2.0, 2.0])
    np.testing.assert_array_equal(bus.read(k3), [6.0, 6.0])


def test_single_members_underive_delete_and_hand_edges(bus: mmsb.Bus) -> None:
    states = bus.create_pages(8, 32, dtype="float64")
    kids = bus.create_pages(8, 32, dtype="float64")
    rows = np.array([[states[i], states[(i + 1) % 8], states[(i + 3) % 8]] for i in range(8)])
    shapes: list[tuple[int, ...]] = []

    def fn(x: np.ndarray) -> np.ndarray:
        shapes.append(x.shape)
        return x.sum(axis=1)

    bus.derive_many(kids, fn, rows, name="g")
    write_all(bus, states, np.ones((8, 4)))
    bus.underive(int(kids[0]))  # its edges stay; it is no longer computed
    dead = int(rows[1][2])  # a parent of member 1 (and of others)
    users = {int(c) for c, r in zip(kids, rows, strict=True) if dead in r}
    bus.delete_page(dead)
    bus.graph.remove_edge(int(rows[7][0]), int(kids[7]))  # a member's edges by hand
    left = [int(c) for c in kids[1:7] if int(c) not in users]
    assert len(left) == 3
    assert sorted(bus.derivations()) == sorted(left)
    before = {int(c): bus.read(int(c)).copy() for c in kids if bus.page(int(c))}
    live = [int(s) for s in states if int(s) != dead]
    write_all(bus, np.array(live), np.full((len(live), 4), 2.0))
    assert shapes[-1] == (len(left), 3, 4)
    for c in kids.tolist():
        if c in left:
            np.testing.assert_array_equal(bus.read(c), np.full(4, 6.0))
        else:
            np.testing.assert_array_equal(bus.read(c), before[c])
    # re-registering one member on its own takes it out of the group
    bus.derive(left[0], lambda v: v * 10, [live[0]], name="own")
    write_all(bus, np.array(live), np.full((len(live), 4), 3.0))
    assert shapes[-1] == (len(left) - 1, 3, 4)
    np.testing.assert_array_equal(bus.read(left[0]), np.full(4, 30.0))


def test_the_group_is_one_graph_change_and_edges_stay_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        states = bus.create_pages(50, 16, dtype="float64")
        kids = bus.create_pages(50, 16, dtype="float64")
        rows = np.stack([np.roll(states, -j) for j in range(4)], axis=1)
        lsn = bus.lsn
        bus.derive_many(kids, lambda x: x.sum(axis=1), rows)
        assert bus.lsn == lsn + 1 and len(bus.graph) == 200
        assert bus.graph.parents(int(kids[7]), "data").tolist() == sorted(rows[7].tolist())
        write_all(bus, states, np.ones((50, 2)))
        rec = bus.provenance(int(kids[7]), depth=1)
        assert sorted(s.page_id for s in rec.root.parents) == sorted(rows[7].tolist())
    with mmsb.open(path, sync="off") as bus:
        lsn = bus.lsn
        bus.derive_many(kids, lambda x: x.sum(axis=1) * 2, rows)
        assert bus.lsn == lsn  # the edges are there already: nothing to log
        write_all(bus, states, np.full((50, 2), 2.0))
        np.testing.assert_array_equal(bus.read_many(kids), np.full((50, 2), 16.0))


def test_parents_of_mixed_dtypes_reach_an_ordinary_derivation_aligned(bus: mmsb.Bus) -> None:
    b = bus.create_page(3, dtype="uint8")
    f = bus.create_page(12, dtype="float32")
    d = bus.create_page(16, dtype="float64")
    out = bus.create_page(16, dtype="float64")
    seen: list[tuple[str, bool]] = []

    def fn(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        seen.extend((str(v.dtype), v.flags.aligned) for v in (x, y, z))
        return z + y[:2].astype(np.float64) + x[:2]

    bus.derive(out, fn, [b, f, d])
    bus.write(b, np.array([1, 2, 3], np.uint8))
    bus.write(f, np.array([0.5, 0.25, 9], np.float32))
    bus.write(d, np.array([10.0, 20.0]))
    bus.tick()
    assert seen == [("uint8", True), ("float32", True), ("float64", True)]
    np.testing.assert_array_equal(bus.read(out), [11.5, 22.25])


@pytest.mark.parametrize("gather_min", [1, 100])  # the compiled gather, the plain copies
def test_an_ordinary_derivation_sees_its_parents_by_either_path(
    bus: mmsb.Bus, monkeypatch: pytest.MonkeyPatch, gather_min: int
) -> None:
    monkeypatch.setattr(propagate, "GATHER_MIN", gather_min)
    f64s = bus.create_pages(6, 32, dtype="float64").tolist()
    f32s = bus.create_pages(2, 12, dtype="float32").tolist()
    u8s = bus.create_pages(2, 5, dtype="uint8").tolist()
    s1 = bus.create_page(32, dtype="float64")
    s2 = bus.create_page(12, dtype="float32")
    out = bus.create_page(32, dtype="float64")
    bus.derive_semiring(s1, f64s[:2], SUM_PRODUCT)
    bus.derive_semiring(s2, f32s, MAX_PLUS)
    parents = [*f64s, *f32s, *u8s, s1, s2]
    seen: list[list[np.ndarray]] = []

    def fn(*xs: np.ndarray) -> np.ndarray:
        assert all(not x.flags.writeable and x.flags.aligned for x in xs)
        seen.append([x.copy() for x in xs])
        return sum(xs[:6]) + xs[10] + float(xs[11].sum()) + float(xs[8].sum())

    bus.derive(out, fn, parents)
    rng = np.random.default_rng(0)
    for t in range(4):
        batch = DeltaBatch.from_ranges(  # part of a parent of s1: s1 recomputes part of it
            [f64s[0], f32s[1], u8s[0]], [8 * (t % 4), 4, 1],
            [rng.normal(size=1), rng.normal(size=2).astype(np.float32), bytes([t + 1])],
        )  # fmt: skip
        bus.tick(batch)
        assert [x.tobytes() for x in seen[-1]] == [bus.read(p).tobytes() for p in parents]
    assert len(seen) == 4


# -- the kernels against numpy --------------------------------------------------------------


def test_gather_and_stage_kernels_match_numpy() -> None:
    rng = np.random.default_rng(3)
    arena = rng.integers(0, 256, 4096).astype(np.uint8)
    stage = rng.integers(0, 256, 2048).astype(np.uint8)
    pages = 40
    size = rng.integers(1, 40, pages).astype(np.int64)
    slot = np.sort(rng.choice(np.arange(0, 4000, 8), pages, replace=False)).astype(np.int64)
    slot[::3] += 3  # some unaligned slots: the byte path
    rows = rng.integers(0, pages, 25).astype(np.int64)
    pnode = np.where(rng.random(25) < 0.5, rng.integers(0, 6, 25), -1).astype(np.int64)
    changed = rng.integers(0, 2, 6).astype(np.uint8)
    stage_off = np.arange(6, dtype=np.int64) * 48
    slo = rng.integers(0, 3, 6).astype(np.int64)
    shi = slo + rng.integers(0, 3, 6)
    size[rows[pnode >= 0]] = 40  # a staged parent spans its staging range
    offs = np.zeros(rows.size, np.int64)
    np.cumsum(size[rows][:-1] + rng.integers(0, 3, rows.size - 1), out=offs[1:])
    out = np.zeros(int(offs[-1] + size[rows[-1]]), np.uint8)
    pk.gather_parents(arena, stage, slot, size, rows, pnode, changed, stage_off, slo, shi,
                      0, rows.size, offs, out)  # fmt: skip
    for r, p in enumerate(rows.tolist()):
        want = arena[slot[p] : slot[p] + size[p]].copy()
        pn = pnode[r]
        if pn >= 0 and changed[pn]:
            want[slo[pn] : shi[pn]] = stage[stage_off[pn] + slo[pn] : stage_off[pn] + shi[pn]]
        assert out[offs[r] : offs[r] + size[p]].tobytes() == want.tobytes()
    # stage_rows: dirty rows staged and diffed against the arena, the others untouched
    n = 5
    nbytes = np.full(n, 16, np.int64)
    child = np.arange(n, dtype=np.int64)
    cslot = np.arange(n, dtype=np.int64) * 16
    new = np.tile(arena[:16], n)
    new[16 * 1 + 5] ^= 1  # member 1 differs in byte 5; the others match the arena
    arena2 = np.tile(arena[:16], n)
    dirty = np.array([1, 1, 0, 1, 1], np.uint8)
    st = np.zeros(n * 16, np.uint8)
    changed2 = np.zeros(n, np.uint8)
    z = [np.zeros(n, np.int64) for _ in range(4)]
    mark = np.zeros(n, np.uint8)
    mr = np.zeros((n, 2), np.int64)
    pk.stage_rows(new, 0, n, dirty, nbytes, st, cslot, arena2, cslot, child, changed2, *z,
                  mark, mr)  # fmt: skip
    assert changed2.tolist() == [0, 1, 0, 0, 0] and mark.tolist() == [0, 1, 0, 0, 0]
    assert (z[0][1], z[1][1], mr[1, 0], mr[1, 1]) == (5, 6, 5, 6)
    assert st[32:48].tobytes() == bytes(16)  # the clean member was not staged
    assert st[16:32].tobytes() == new[16:32].tobytes()


def test_agent_benchmark_runs_small_and_agrees_with_numpy() -> None:
    from mmsb.benchmarks import agents

    r = agents.agent_sim(agents=64, ticks=3, pairs=2, warmup=1, sync="off")
    assert r["identical"] and r["recomputed_per_tick"] == 128
    assert r["bus_ticks_per_s"] > 0 and r["numpy_ticks_per_s"] > 0 and r["ratio"] > 0
    # every tick appends one frame: the write calls took time, and taking it out of the
    # bus's ticks leaves a smaller ratio
    assert len(r["log_write_ms_per_tick_pairs"]) == 2 and r["log_write_ms_per_tick"] > 0
    assert 0 < r["ratio_without_log_write"] < r["ratio"]
    nbr = agents.neighbours(50, 8, np.random.default_rng(0))
    assert (nbr != np.arange(50)[:, None]).all()
    assert all(len(set(row)) == 8 for row in nbr.tolist())
