"""Record pages: numpy record dtypes for pages, reads and views returning record arrays,
field writes compiled to one ordinary sparse delta (compared with numpy field assignment as
the oracle), strict checks with nothing committed on bad input, and the dtype kept through
reopen, checkpoints, time travel, snapshots and live readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import InvalidArgumentError, InvalidDeltaError, semiring
from mmsb.types import record_dtype, record_spec

AGENT = np.dtype([("x", "f8"), ("v", "f8", (2,)), ("alive", "?"), ("kind", "i4")])


def test_the_record_spec_round_trips_and_refuses_what_pages_cannot_hold() -> None:
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "f8"], "offsets": [0, 8],
                       "itemsize": 24})  # fmt: skip
    for dt in (AGENT, padded, np.dtype([("only", "i2")])):
        spec = record_spec(dt)
        assert spec is not None and record_dtype(spec) == dt
    assert record_spec("float64") is None and record_spec(np.dtype("f4")) is None
    for bad in ([("s", "U4")], [("o", "O")], [("n", [("a", "f8")])], [("b", ">f8")]):
        with pytest.raises(InvalidArgumentError):
            record_spec(np.dtype(bad))
    with pytest.raises(ValueError, match="canonical"):
        record_dtype(record_spec(AGENT).replace('"itemsize":', '"itemsize": '))  # type: ignore[union-attr]


def test_reads_views_and_snapshots_return_records(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(AGENT.itemsize * 5, dtype=AGENT, name="agents")
        info = bus.page(p)
        assert info.dtype == "record" and info.record_dtype == AGENT
        r = bus.read(p)
        assert r.dtype == AGENT and r.shape == (5,) and not r["alive"].any()
        q = bus.create_page(AGENT.itemsize * 5, dtype=AGENT)
        rows = bus.read_many([p, q])
        assert rows.dtype == AGENT and rows.shape == (2, 5)
        with bus.snapshot() as s:
            bus.write_field(p, "x", 1.5)
            assert s.read(p)["x"].tolist() == [0.0] * 5  # the pinned commit
            assert s.read_many([p])["x"].tolist() == [[0.0] * 5]
            assert s.page(p).record_dtype == AGENT
        assert bus.read(p)["x"].tolist() == [1.5] * 5
        raw = bus.create_page(AGENT.itemsize * 5)  # uint8, the same size
        with pytest.raises(InvalidArgumentError, match="one size and dtype"):
            bus.read_many([p, raw])


def test_field_writes_match_numpy_field_assignment(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 64
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(AGENT.itemsize * n, dtype=AGENT)
        oracle = np.zeros(n, AGENT)
        for step in range(60):
            field = ["x", "v", "alive", "kind"][step % 4]
            form = step % 5
            if form == 0:
                index = None
                k = n
            elif form == 1:
                index = int(rng.integers(-n, n))
                k = 1
            elif form == 2:
                index = slice(int(rng.integers(0, 8)), None, int(rng.integers(1, 5)))
                k = len(range(n)[index])
            elif form == 3:
                index = rng.random(n) < 0.3
                k = int(index.sum())
            else:
                index = rng.permutation(n)[: int(rng.integers(1, 10))]
                k = index.size
            shape = (k, *AGENT.fields[field][0].shape)  # type: ignore[index]
            values = rng.integers(0, 100, shape)
            if field == "alive":
                values = values % 2 == 0
            if form == 1:
                values = values[0]
            target = oracle[field]
            target[index if index is not None else slice(None)] = values
            before = bus.lsn
            c = bus.write_field(p, field, values, index=index)
            if k:
                assert c.count == 1 and bus.lsn == before + 1
                assert bus.history(p, 1)[0].shape == "sparse"
            np.testing.assert_array_equal(bus.read(p), oracle)
        # the deltas are ordinary: replay to every commit gives the same bytes
        assert bus.verify().ok
    with mmsb.open(tmp_path / "b") as bus:
        np.testing.assert_array_equal(bus.read(p), oracle)


def test_bad_field_writes_raise_and_commit_nothing(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(AGENT.itemsize * 4, dtype=AGENT)
        f = bus.create_page(32, dtype="float64")
        lsn = bus.lsn
        cases = [
            (p, "nope", 1.0, None, InvalidArgumentError, "no field 'nope'"),
            (p, "kind", 1.5, None, InvalidDeltaError, "do not cast safely"),
            (p, "v", [1.0, 2.0, 3.0], None, InvalidDeltaError, "do not fit"),
            (p, "x", 1.0, [0, 0], InvalidArgumentError, "twice"),
            (p, "x", 1.0, [4], InvalidArgumentError, "out of range"),
            (p, "x", 1.0, [True, False], InvalidArgumentError, "boolean index needs 4"),
            (p, "x", np.array(["a"]), None, InvalidDeltaError, "cast"),
            (f, "x", 1.0, None, InvalidArgumentError, "not a record page"),
        ]
        for page, field, values, index, err, words in cases:
            with pytest.raises(err, match=words):
                bus.write_field(page, field, values, index=index)
        assert bus.lsn == lsn
        assert bus.write_field(p, "x", [], index=[]).count == 0


def test_whole_record_writes_are_checked_against_the_page_dtype(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(AGENT.itemsize * 4, dtype=AGENT)
        recs = np.zeros(2, AGENT)
        recs["kind"] = [7, 8]
        bus.write(p, recs, offset=AGENT.itemsize)
        assert bus.read(p)["kind"].tolist() == [0, 7, 8, 0]
        other = np.zeros(2, [("x", "f8"), ("y", "f8")])
        with pytest.raises(InvalidDeltaError, match="does not match page"):
            bus.write(p, other)
        with pytest.raises(InvalidDeltaError, match="itemsize"):
            bus.write(p, recs, offset=4)
        with pytest.raises(InvalidDeltaError, match="does not match page"):
            bus.write(p, np.zeros(2, "f8"))
        with pytest.raises(InvalidDeltaError, match="record array"):
            mmsb.DeltaBatch.from_ranges([p], [0], [recs])
        bus.write(p, recs.view(np.uint8)[:4], offset=0)  # raw bytes go anywhere


def test_create_checks(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        with pytest.raises(InvalidArgumentError, match="multiple of the record size"):
            bus.create_page(AGENT.itemsize + 1, dtype=AGENT)
        with pytest.raises(InvalidArgumentError):
            bus.create_page(64, dtype=[("s", "U3")])
        assert len(bus) == 0


@pytest.mark.parametrize("how", ["clean", "crash", "checkpoint"])
def test_the_record_dtype_survives_reopen_and_time_travel(tmp_path: Path, how: str) -> None:
    d = tmp_path / "b"
    bus = mmsb.open(d)
    p = bus.create_page(AGENT.itemsize * 3, dtype=AGENT)
    l1 = bus.write_field(p, "kind", [1, 2, 3]).lsn
    if how == "checkpoint":
        bus.checkpoint()
    bus.write_field(p, "x", 9.0, index=1)
    gone = bus.create_page(AGENT.itemsize, dtype=AGENT)
    bus.delete_page(gone)
    if how == "crash":
        bus.sync_now()
        bus.abandon()
    else:
        bus.close()
    with mmsb.open(d) as bus:
        r = bus.read(p)
        assert r.dtype == AGENT and r["kind"].tolist() == [1, 2, 3] and r["x"][1] == 9.0
        old = bus.at(l1).read(p)
        assert old.dtype == AGENT and old["x"].tolist() == [0.0, 0.0, 0.0]
        assert bus.verify().ok
    with mmsb.open(d, readonly=True) as ro:
        assert ro.read(p).dtype == AGENT


def test_semirings_refuse_record_pages(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(AGENT.itemsize * 2, dtype=AGENT)
        q = bus.create_page(AGENT.itemsize * 2, dtype=AGENT)
        lsn = bus.lsn
        with pytest.raises(InvalidArgumentError, match="record"):
            bus.derive_semiring(q, [p], semiring.SUM_PRODUCT)
        assert bus.lsn == lsn


def test_python_derivations_compute_on_records_and_take_names(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        src = bus.create_page(AGENT.itemsize * 3, dtype=AGENT, name="src")
        out = bus.create_page(AGENT.itemsize * 3, dtype=AGENT, name="out")
        speed = bus.create_page(24, dtype="float64", name="speed")

        def advance(a: np.ndarray) -> np.ndarray:
            b = a.copy()
            b["x"] = a["x"] + a["v"][:, 0]
            return b

        bus.derive("out", advance, parents=["src"])
        bus.derive("speed", lambda a: np.hypot(a["v"][:, 0], a["v"][:, 1]), parents=["out"])
        bus.write_field(src, "v", [[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
        bus.tick()
        assert bus.read(out)["x"].tolist() == [3.0, 0.0, 6.0]
        assert bus.read(speed).tolist() == [5.0, 1.0, 10.0]
        assert bus.derivations()[out] and bus.derivations()[speed]
        bus.underive("speed")
        assert speed not in bus.derivations()
