"""Provenance: page and byte resolution through range and masked deltas, derived chains
with parents as of the causing write, the depth limit, the cache, snapshots, and
``explain()``. Resolution is checked against a plain walk over ``bus.history``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import DeltaBatch
from mmsb.errors import HistoryUnavailableError, InvalidArgumentError, PageNotFoundError
from mmsb.history.provenance import Provenance, ProvenanceStep
from mmsb.semiring import SUM_PRODUCT
from mmsb.storage import log as logmod
from support import Clock


def f64(*v: float) -> np.ndarray:
    return np.array(v, np.float64)


def test_page_provenance_fields(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 16).tolist()
    prov = bus.provenance(p)
    assert isinstance(prov, Provenance) and prov.record is None and prov.root.record is None
    assert "never written (zero-filled at creation)" in prov.explain()
    did = bus.write(p, b"\x01" * 4, offset=4, source="sensor", metadata={"unit": "K"})
    prov = bus.provenance(p)
    r = prov.record
    assert r is not None
    hist = bus.history(p, limit=1)[0]
    assert r == hist
    assert (r.delta_id, r.lsn, r.epoch, r.source, r.metadata) == (
        did, bus.lsn, 1, "sensor", {"unit": "K"}
    )  # fmt: skip
    assert r.timestamp == hist.timestamp and r.timestamp > 1_000
    assert (r.offset, r.length, r.shape) == (4, 4, "range")
    assert prov.lsn == bus.lsn and prov.depth == 0 and prov.steps == 1
    assert not prov.root.derived and prov.root.parents == ()
    text = prov.explain()
    assert f"page {p}: delta {did} at LSN {bus.lsn}, epoch 1" in text
    assert "sensor, bytes [4, 8)" in text and "metadata: {'unit': 'K'}" in text


def test_byte_provenance_through_range_and_masked_deltas(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 16).tolist()
    d_range = bus.write(p, b"\x01" * 8)  # bytes 0..7
    d_inner = bus.write(p, b"\x02" * 2, offset=4)  # bytes 4, 5
    dense_mask = np.array([1, 0, 1, 0], np.uint8)  # bytes 2 and 4 of [2, 6)
    c1 = bus.apply_batch(DeltaBatch.from_deltas([mmsb.Delta.dense(p, dense_mask, b"\x03" * 4, 2)]))
    sparse_mask = np.array([0, 1, 0, 0, 1], np.uint8)  # bytes 7 and 10 of [6, 11)
    c2 = bus.apply_batch(
        DeltaBatch.from_deltas([mmsb.Delta.sparse(p, sparse_mask, b"\x04\x04", 6)])
    )
    d_dense, d_sparse = c1.first_delta_id, c2.first_delta_id
    want = {
        0: d_range, 1: d_range, 2: d_dense, 3: d_range, 4: d_dense, 5: d_inner, 6: d_range,
        7: d_sparse, 8: None, 9: None, 10: d_sparse, 15: None,
    }  # fmt: skip
    # a plain oracle: the newest delta in history whose written bytes include the byte
    page_bytes = bus.read(p)
    for byte, did in want.items():
        prov = bus.provenance(p, byte=byte)
        got = None if prov.record is None else prov.record.delta_id
        assert got == did, byte
        assert prov.root.byte == byte
        if did is not None:
            assert page_bytes[byte] == {d_range: 1, d_inner: 2, d_dense: 3, d_sparse: 4}[did]
    assert bus.provenance(p).record.delta_id == d_sparse  # type: ignore[union-attr]
    assert bus.provenance(p, byte=7).record.shape == "sparse"  # type: ignore[union-attr]
    assert f"page {p} byte 9: never written" in bus.provenance(p, byte=9).explain()


def test_argument_errors(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 8).tolist()
    with pytest.raises(InvalidArgumentError, match=r"byte 8 is outside page 1 \(8 bytes\)"):
        bus.provenance(p, byte=8)
    with pytest.raises(InvalidArgumentError, match="byte must be an integer"):
        bus.provenance(p, byte=1.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="depth must be a non-negative integer"):
        bus.provenance(p, depth=-1)
    with pytest.raises(PageNotFoundError):
        bus.provenance(99)
    bus.delete_page(p)
    with pytest.raises(PageNotFoundError):
        bus.provenance(p)


def _chain(bus: mmsb.Bus) -> tuple[int, int, int, int]:
    a, b, c, d = bus.create_pages(4, 16, dtype="float64").tolist()
    bus.derive(b, lambda x: x * 2, [a], name="double")
    bus.derive_semiring(c, [b], SUM_PRODUCT, weights=[0.5])
    bus.derive(d, lambda x, y: x + y, [c, a], name="plus")
    return a, b, c, d


def test_derived_chain_uses_parents_as_of_the_cause(bus: mmsb.Bus) -> None:
    a, b, c, d = _chain(bus)
    first = bus.write(a, f64(1, 2))
    second = bus.write(a, f64(3, 4))  # two writes before one tick: the later one fed it
    rep = bus.tick()
    derived = {r.page_id: r for p in (b, c, d) for r in bus.history(p, limit=1)}
    later = bus.write(a, f64(9, 9))  # after the tick: must not appear as a cause
    prov = bus.provenance(d)
    root = prov.root
    assert root.record == derived[d] and root.derived
    # the parents come from the graph at the delta's commit, in the derivation's order
    assert root.record.metadata == {"cause_lsn": rep.lsn - 1, "derive": "plus"}
    pc, pa = root.parents
    assert (pc.page_id, pa.page_id) == (c, a)
    assert pc.record == derived[c] and pc.derived
    assert pa.record is not None and pa.record.delta_id == second != later
    (pb,) = pc.parents
    assert pb.record == derived[b]
    (pa2,) = pb.parents
    assert pa2.record is not None and pa2.record.delta_id == second
    assert first < second < derived[b].delta_id < derived[c].delta_id < derived[d].delta_id
    assert prov.depth == 3 and prov.steps == 5
    text = prov.explain()
    assert "derived by plus" in text and "derived by SUM_PRODUCT" in text
    assert "derived by double" in text
    assert text.splitlines()[0] == f"provenance as of LSN {bus.lsn} (5 steps, depth 3)"
    # indentation follows the levels
    assert any(line.startswith("      page 1: delta") for line in text.splitlines())


def test_unchanged_derived_parent_points_at_its_older_write(bus: mmsb.Bus) -> None:
    a, b, c = bus.create_pages(3, 8, dtype="float64").tolist()
    bus.derive(b, lambda x: np.sign(x), [a], name="sign")
    bus.derive(c, lambda x, y: x * y, [b, a], name="mul")
    bus.write(a, f64(2))
    bus.tick()
    b_write = bus.history(b, limit=1)[0]
    a_now = bus.write(a, f64(5))  # sign(5) == sign(2): b recomputed, unchanged
    bus.tick()
    root = bus.provenance(c).root
    assert root.record is not None and root.record.metadata["cause_lsn"] == bus.lsn - 1
    pb, pa = root.parents
    assert pb.record == b_write
    assert pa.record is not None and pa.record.delta_id == a_now


def test_byte_provenance_of_a_derived_page(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 16, dtype="float64").tolist()
    bus.derive_semiring(b, [a], SUM_PRODUCT, weights=[2.0])
    bus.write(a, f64(1, 1))
    bus.tick()
    whole = bus.history(b, limit=1)[0]
    bus.write(a, f64(7), offset=8)  # only element 1 changes
    bus.tick()
    part = bus.history(b, limit=1)[0]
    assert (part.offset, part.length) == (8, 8)
    assert bus.provenance(b, byte=3).record == whole
    p9 = bus.provenance(b, byte=9)
    assert p9.record == part
    # the parent steps are whole-page, as of the derived write
    assert p9.root.parents[0].byte is None
    assert p9.root.parents[0].record == bus.history(a, limit=1)[0]


def test_depth_limit_truncates(bus: mmsb.Bus) -> None:
    a, _b, _c, d = _chain(bus)
    bus.write(a, f64(1, 1))
    bus.tick()
    p0 = bus.provenance(d, depth=0)
    assert p0.root.truncated and p0.root.parents == () and p0.depth == 0 and p0.steps == 1
    assert "... (depth limit reached)" in p0.explain()
    p1 = bus.provenance(d, depth=1)
    pc, pa = p1.root.parents
    assert pc.truncated and pc.parents == () and not pa.truncated  # a is an input
    assert p1.depth == 1 and p1.steps == 3
    full = bus.provenance(d, depth=32)
    assert not any(s.truncated for s in _walk(full.root))
    assert full.steps == len(list(_walk(full.root))) == 5


def _walk(step: ProvenanceStep):
    yield step
    for p in step.parents:
        yield from _walk(p)


def test_cache_hit_and_invalidation(bus: mmsb.Bus) -> None:
    a, _b = bus.create_pages(2, 8).tolist()
    bus.write(a, b"\x01")
    p1 = bus.provenance(a)
    assert not p1.cached
    p2 = bus.provenance(a)
    assert p2.cached and p2.root == p1.root and p2.lookup_ns == 0
    assert bus.provenance(a, byte=0).cached is False  # another key
    assert bus.provenance(a, byte=0).cached is True
    did = bus.write(a, b"\x02")  # a write to the page drops its cached answers
    p3 = bus.provenance(a)
    assert not p3.cached and p3.record is not None and p3.record.delta_id == did
    assert bus.provenance(a, byte=0).record.delta_id == did  # type: ignore[union-attr]


def test_resolution_reads_the_index_not_the_log(
    bus: mmsb.Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _c, d = _chain(bus)
    bus.write(a, f64(1, 2))
    bus.tick()
    bus.provenance(a)  # builds the history index (one scan)
    want = bus.provenance(d, depth=32)

    def no_scan(*args: object, **kwargs: object) -> None:
        raise AssertionError("provenance scanned the log")

    monkeypatch.setattr(logmod.LogReader, "frames", no_scan)
    bus.write(a, f64(5, 6))
    bus.tick()
    got = bus.provenance(d, depth=32)
    assert got.root.record is not None and got.root.record.lsn == bus.lsn
    assert got.root.record.delta_id > want.root.record.delta_id  # type: ignore[union-attr]
    assert bus.provenance(b, byte=8).record is not None


def test_snapshot_provenance(bus: mmsb.Bus) -> None:
    a, _b, _c, d = _chain(bus)
    d1 = bus.write(a, f64(1, 2))
    bus.tick()
    mid = bus.lsn
    then = bus.provenance(d)
    bus.write(a, f64(3, 4))
    bus.tick()
    with bus.at(mid) as snap:
        sp = snap.provenance(d)
        assert sp.lsn == mid and sp.root == then.root
        assert snap.provenance(a).record.delta_id == d1  # type: ignore[union-attr]
        assert snap.provenance(a, byte=3).record.delta_id == d1  # type: ignore[union-attr]
        assert sp.explain().splitlines()[0].startswith(f"provenance as of LSN {mid} ")
    with bus.at(2) as snap:  # pages created, nothing written yet
        assert snap.provenance(a).record is None
    with bus.at() as snap:
        assert snap.provenance(d).root == bus.provenance(d).root
    detached = mmsb.Snapshot(bus._live_state(), bus.lsn, 0)
    with pytest.raises(HistoryUnavailableError, match="not attached to a bus"):
        detached.provenance(a)


def test_provenance_is_deterministic_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", clock=Clock()) as bus:
        a, _b, c, d = _chain(bus)
        bus.write(a, f64(1, 2))
        bus.tick()
        bus.write(a, f64(2, 2), offset=0)
        bus.tick()
        before = bus.provenance(d).explain(), bus.provenance(c, byte=3).explain()
    with mmsb.open(path, sync="off") as bus:  # the index is rebuilt from the log
        after = bus.provenance(d).explain(), bus.provenance(c, byte=3).explain()
    assert after == before


def test_cache_survives_unrelated_commits(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    did = bus.write(a, b"\x01")
    first = bus.provenance(a)
    for i in range(20):
        bus.write(b, bytes([i]))
        again = bus.provenance(a)
        # still the right answer, as of the current LSN, and served from the cache
        assert again.cached and again.lsn == bus.lsn and again.root == first.root
    assert again.record is not None and again.record.delta_id == did
    assert (
        bus._history._prov is not None and len(bus._history._prov._cache[a]) == 1
    )  # one entry per key


def test_readonly_bus_sees_the_writers_new_writes(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as writer:
        (p,) = writer.create_pages(1, 8).tolist()
        writer.write(p, b"\x01")
        with mmsb.open(path, readonly=True) as reader:
            old = reader.provenance(p)
            assert reader.provenance(p).root == old.root
            did = writer.write(p, b"\x02")
            now = reader.provenance(p)
            assert now.record is not None and now.record.delta_id == did
            assert now.lsn == writer.lsn


def test_compacted_history_is_not_reported_as_never_written(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off", keep_checkpoints=1) as bus:
        a, b = bus.create_pages(2, 8).tolist()
        bus.write(a, b"\x05" * 8)
        bus.checkpoint()
        bus.write(b, b"\x01")
        bus.checkpoint()
        bus.write(b, b"\x02")
        info = bus.compact()
        assert info.segments_removed >= 1
        step = bus.provenance(a).root
        assert step.record is None and step.history_from == info.oldest_lsn + 1
        assert "never written" not in bus.provenance(a).explain()
        assert f"not written since LSN {info.oldest_lsn + 1}" in bus.provenance(a).explain()
        assert bus.provenance(b).record is not None  # written in the retained log
    with mmsb.open(tmp_path / "fresh", sync="off") as bus:  # nothing compacted
        (p,) = bus.create_pages(1, 8).tolist()
        assert bus.provenance(p).root.history_from == 1
