"""Named pages: created, looked up, renamed and deleted as logged changes; names accepted
wherever a page id is; they survive reopen (clean and by replay), checkpoints, live readers
and time travel; bad and duplicate names are refused with nothing committed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import InvalidArgumentError, PageNotFoundError
from mmsb.storage import codec


def test_create_lookup_and_use_names_wherever_ids_go(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        g = bus.create_page(64, dtype="float64", name="grid")
        a, b = bus.create_pages(2, 16, names=["a", None])
        assert bus.page_id("grid") == g and bus.page_id("a") == a
        assert bus.page_names() == {"grid": g, "a": a}
        assert bus.page("grid").name == "grid" and bus.page(int(b)).name is None
        assert "grid" in bus and "nope" not in bus
        bus.write("grid", np.arange(8.0))
        np.testing.assert_array_equal(bus.read("grid"), np.arange(8.0))
        np.testing.assert_array_equal(bus.read_many(["grid"])[0], np.arange(8.0))
        np.testing.assert_array_equal(bus.read_many(np.array(["a"]))[0], bus.read(a))
        assert [r.page_id for r in bus.history("grid")] == [g]
        assert bus.provenance("grid", 0).steps >= 1
        bus.set_metadata("a", {"k": 1})
        assert bus.page(a).metadata == {"k": 1}
        with bus.snapshot() as s:
            np.testing.assert_array_equal(s.read("grid"), np.arange(8.0))
        with pytest.raises(PageNotFoundError, match="no live page is named 'missing'"):
            bus.read("missing")


@pytest.mark.parametrize(
    "bad", ["", "1abc", "has space", "x" * 129, "é", "a\nb", "{}", 7, None, b"bytes"]
)
def test_invalid_names_are_refused_before_anything_is_logged(tmp_path: Path, bad: object) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        lsn = bus.lsn
        if bad is None:  # None means "no name": allowed
            assert bus.create_page(8, name=None) > 0
            return
        with pytest.raises(InvalidArgumentError):
            bus.create_page(8, name=bad)  # type: ignore[arg-type]
        assert bus.lsn == lsn and len(bus) == 0


def test_duplicates_are_refused_and_nothing_is_half_applied(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(8, name="x")
        q = bus.create_page(8, name="y")
        lsn = bus.lsn
        with pytest.raises(InvalidArgumentError, match="taken by page"):
            bus.create_pages(2, 8, names=["z", "x"])
        with pytest.raises(InvalidArgumentError, match="same name twice"):
            bus.create_pages(2, 8, names=["z", "z"])
        with pytest.raises(InvalidArgumentError, match="2 names for 3 pages"):
            bus.create_pages(3, 8, names=["m", "n"])
        with pytest.raises(InvalidArgumentError, match="taken by page"):
            bus.rename_page(q, "x")
        assert bus.lsn == lsn and len(bus) == 2
        assert bus.page_names() == {"x": p, "y": q}
        bus.rename_page(q, "y")  # its own name again: allowed, logged
        assert bus.lsn == lsn + 1


def test_rename_delete_and_time_travel(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        p = bus.create_page(8, name="old")
        l1 = bus.rename_page("old", "new")
        l2 = bus.rename_page(p, None)
        q = bus.create_page(8, name="old")  # a freed name can be taken again
        bus.delete_page(q)
        assert bus.page_names() == {}
        assert bus.at(l1 - 1).page_id("old") == p
        assert bus.at(l1).page_names() == {"new": p}
        assert bus.at(l2).page_names() == {}
        assert bus.at(bus.lsn - 1).page_names() == {"old": q}
        hist = bus.history(p)
        assert [(r.shape, r.metadata) for r in hist[:2]] == [
            ("name", {"name": None}),
            ("name", {"name": "new"}),
        ]


@pytest.mark.parametrize("how", ["clean", "crash", "checkpoint"])
def test_names_survive_reopen(tmp_path: Path, how: str) -> None:
    d = tmp_path / "b"
    bus = mmsb.open(d)
    ids = bus.create_pages(3, 8, names=["a", "b", None])
    bus.rename_page("b", "bee")
    bus.delete_page("a")
    if how == "checkpoint":
        bus.checkpoint()
        bus.rename_page(int(ids[2]), "c")
    if how == "crash":
        bus.sync_now()
        bus.abandon()
    else:
        bus.close()
    with mmsb.open(d) as bus:
        want = {"bee": int(ids[1])}
        if how == "checkpoint":
            want["c"] = int(ids[2])
        assert bus.page_names() == want
        assert bus.verify().ok
        h = bus.state_hash()
    with mmsb.open(d, readonly=True) as ro:  # a read-only open replays to the same state
        assert ro.page_names() == want and ro.state_hash() == h


def test_a_live_reader_sees_names_as_they_change(tmp_path: Path) -> None:
    d = tmp_path / "b"
    with mmsb.open(d) as bus, mmsb.open(d, readonly=True) as ro:
        p = bus.create_page(8, name="first")
        assert ro.page_id("first") == p
        bus.rename_page(p, "second")
        assert ro.page_names() == {"second": p}
        bus.delete_page(p)
        assert ro.page_names() == {}


def test_the_name_frame_round_trips_and_damage_is_caught() -> None:
    for name in ("grid", None):
        rec = codec.NameRecord(5, 3, name)
        payload = memoryview(b"".join(bytes(x) for x in codec.encode_name(rec)))
        assert codec.decode(codec.NAME, payload) == rec
    good = b"".join(bytes(x) for x in codec.encode_name(codec.NameRecord(5, 3, "grid")))
    with pytest.raises(mmsb.CorruptLogError, match="name frame"):
        codec.decode(codec.NAME, memoryview(good[:-4] + b"1 2 "))
    create = codec.CreateRecord(1, 2, 8, 0, 0, None, None, ("a", "a"))
    raw = memoryview(b"".join(bytes(x) for x in codec.encode_create(create)))
    with pytest.raises(mmsb.CorruptLogError, match="same name twice"):
        codec.decode(codec.CREATE, raw)


def test_the_cli_shows_names(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mmsb.cli import cli

    d = tmp_path / "b"
    with mmsb.open(d) as bus:
        p = bus.create_page(8, name="grid")
        bus.rename_page(p, "grid2")
    out = CliRunner().invoke(cli, ["log", str(d)])
    assert out.exit_code == 0, out.output
    assert "named grid" in out.output and "name of page 1: grid2" in out.output
    out = CliRunner().invoke(cli, ["history", str(d), "grid2", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["page_id"] == p and data["page"]["name"] == "grid2"


def test_names_and_records_survive_copies_of_the_state(tmp_path: Path) -> None:
    """Background checkpoints and at(head) work on a copy of the live state: the copy keeps
    names and record dtypes, so a recovery that starts from such a checkpoint (its older log
    compacted away) still has them."""
    rec = np.dtype([("x", "f8"), ("n", "i4")])
    d = tmp_path / "b"
    bus = mmsb.open(d, sync="normal", checkpoint_every=4096, auto_compact=True,
                    keep_checkpoints=1)  # fmt: skip
    bus.create_page(8, name="named")
    r = bus.create_page(rec.itemsize * 4, dtype=rec, name="records")
    assert bus.at(bus.lsn).page_names() == {"named": 1, "records": r}
    assert bus.at(bus.lsn).read("records").dtype == rec
    for k in range(40):  # enough log for automatic checkpoints and compaction
        bus.write_field(r, "n", k)
        bus.write("named", np.full(8, k, np.uint8))
    bus._checkpointer.join()
    assert bus.last_checkpoint_error is None
    bus.compact()  # keeps the newest automatic checkpoint, written from a copy
    segs = sorted(p.name for p in (d / "log").glob("*.seg"))  # (not *.drop)
    assert segs[0] != f"{1:020d}.seg"  # the frames that named the pages are gone
    bus.sync_now()
    bus.abandon()
    with mmsb.open(d) as again:
        assert again.recovery.mode == "replay"
        assert again.page_names() == {"named": 1, "records": r}
        assert again.read("records").dtype == rec and again.read("records")["n"][0] == 39
