"""Page metadata changed after creation (``Bus.set_metadata``): one META frame per change,
checked before it is logged, replayed on open, followed by live readers, and visible in
``at``, ``history``, ``verify`` and ``mmsb log``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmsb
from mmsb.cli import cli
from mmsb.errors import CorruptLogError, InvalidArgumentError, PageNotFoundError, ReadOnlyError
from mmsb.storage import codec


def files_of(path: Path) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            out[os.path.relpath(full, path)] = Path(full).read_bytes()
    return out


def test_set_replace_clear(bus: mmsb.Bus) -> None:
    pid = bus.create_page(16, metadata={"name": "a"})
    bus.write(pid, b"abc")
    lsn0 = bus.lsn
    lsn = bus.set_metadata(pid, {"name": "b", "unit": "m"})
    assert lsn == lsn0 + 1 == bus.lsn
    info = bus.page(pid)
    assert info.metadata == {"name": "b", "unit": "m"}
    assert info.epoch == 1  # bytes and epoch untouched
    assert bytes(bus.read(pid)[:3]) == b"abc"
    bus.set_metadata(pid, {"x": [1, 2]})
    assert bus.page(pid).metadata == {"x": [1, 2]}
    bus.set_metadata(pid, None)
    assert bus.page(pid).metadata == {}
    other = bus.create_page(8)
    bus.set_metadata(other, {"k": 1})
    bus.set_metadata(other, {})
    assert bus.page(other).metadata == {}
    assert bus.verify().ok


@pytest.mark.parametrize(
    ("page", "metadata", "error"),
    [
        (1, {"x": math.nan}, InvalidArgumentError),
        (1, {"x": object()}, InvalidArgumentError),
        (1, {1: "int key"}, InvalidArgumentError),
        (1, ["not", "a", "dict"], InvalidArgumentError),
        (99, {"x": 1}, PageNotFoundError),
        ("1", {"x": 1}, PageNotFoundError),
        (2, {"x": 1}, PageNotFoundError),  # deleted
    ],
)
def test_bad_input_changes_nothing(tmp_path: Path, page: object, metadata: object,
                                   error: type[Exception]) -> None:  # fmt: skip
    path = tmp_path / "bus"
    with mmsb.open(path, sync="always") as bus:
        bus.create_page(8, metadata={"keep": True})
        gone = bus.create_page(8)
        bus.delete_page(gone)
        bus.sync_now()
        before = files_of(path)
        lsn, digest = bus.lsn, bus.state_hash()
        with pytest.raises(error):
            bus.set_metadata(page, metadata)  # type: ignore[arg-type]
        assert (bus.lsn, bus.state_hash()) == (lsn, digest)
        assert files_of(path) == before
        assert bus.page(1).metadata == {"keep": True}


def test_readonly_bus_refuses(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path) as bus:
        pid = bus.create_page(8)
    with mmsb.open(path, readonly=True) as ro, pytest.raises(ReadOnlyError):
        ro.set_metadata(pid, {"x": 1})


@pytest.mark.parametrize("crash", [True, False])
def test_reopen_restores(tmp_path: Path, crash: bool) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="always")
    a = bus.create_page(8, metadata={"v": 0})
    b = bus.create_page(8, metadata={"v": 0})
    bus.write(a, b"x")
    bus.set_metadata(a, {"v": 1})
    bus.set_metadata(b, None)
    lsn, digest = bus.lsn, bus.state_hash()
    if crash:
        bus.abandon()
    else:
        bus.close()
    with mmsb.open(path) as again:
        assert (again.lsn, again.state_hash()) == (lsn, digest)
        assert again.page(a).metadata == {"v": 1}
        assert again.page(b).metadata == {}
        if crash:
            assert again.recovery.mode != "clean"
        assert again.verify().ok


def test_at_shows_old_and_new(bus: mmsb.Bus) -> None:
    pid = bus.create_page(8, metadata={"v": "old"})
    before = bus.lsn
    after = bus.set_metadata(pid, {"v": "new"})
    bus.write(pid, b"later")
    with bus.at(before) as snap:
        assert snap.page(pid).metadata == {"v": "old"}
    with bus.at(after) as snap:
        assert snap.page(pid).metadata == {"v": "new"}
    with bus.at() as snap:
        assert snap.page(pid).metadata == {"v": "new"}


def test_history_lists_the_change(bus: mmsb.Bus) -> None:
    pid = bus.create_page(8)
    bus.write(pid, b"a")
    lsn = bus.set_metadata(pid, {"tag": 1})
    bus.write(pid, b"b")
    cleared = bus.set_metadata(pid, None)
    recs = bus.history(pid)
    assert [r.shape for r in recs] == ["metadata", "range", "metadata", "range"]
    assert [r.lsn for r in recs[::2]] == [cleared, lsn]
    assert recs[2].metadata == {"tag": 1} and recs[2].epoch == 1 and recs[2].delta_id == 0
    assert recs[0].metadata is None and recs[0].epoch == 2
    assert [r.lsn for r in bus.history(pid, limit=2)] == [cleared, cleared - 1]
    # the index built from the log (a fresh open) agrees with the one kept by commits
    bus.close()
    with mmsb.open(bus.path, readonly=True) as ro:
        assert ro.history(pid) == recs


def test_live_reader_follows(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        pid = bus.create_page(8, metadata={"v": 0})
        bus.write(pid, b"a")
        with mmsb.open(path, readonly=True) as ro:
            assert ro.page(pid).metadata == {"v": 0}
            bus.set_metadata(pid, {"v": 1})
            bus.write(pid, b"b")
            assert ro.refresh() == bus.lsn
            assert ro.page(pid).metadata == {"v": 1}
            assert ro.state_hash() == bus.state_hash()
            bus.set_metadata(pid, None)
            ro.refresh()
            assert ro.page(pid).metadata == {}
            assert [r.shape for r in ro.history(pid)][:2] == ["metadata", "range"]


def test_cli_log_shows_the_frame(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path) as bus:
        pid = bus.create_page(8)
        bus.set_metadata(pid, {"unit": "kg"})
        bus.set_metadata(pid, None)
    res = CliRunner().invoke(cli, ["log", str(path), "--json"])
    assert res.exit_code == 0, res.output
    frames = json.loads(res.stdout)["frames"]
    assert frames[0]["type"] == "metadata" and frames[0]["metadata"] is None
    assert frames[1] == {**frames[1], "type": "metadata", "page": pid,
                         "metadata": {"unit": "kg"}}  # fmt: skip
    text = CliRunner().invoke(cli, ["log", str(path)])
    assert text.exit_code == 0, text.output
    assert "metadata of page 1" in text.output
    hist = CliRunner().invoke(cli, ["history", str(path), str(pid), "--json"])
    assert hist.exit_code == 0, hist.output
    assert "metadata" in hist.output


def test_checkpoint_and_compact_keep_it(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        pid = bus.create_page(8, metadata={"v": 0})
        bus.set_metadata(pid, {"v": 1})
        bus.checkpoint()
        bus.compact()
        bus.write(pid, b"z")
        digest = bus.state_hash()
        bus.abandon()
    with mmsb.open(path) as again:
        assert again.page(pid).metadata == {"v": 1}
        assert again.state_hash() == digest
        assert again.verify().ok


def test_codec_roundtrip_and_checks() -> None:
    for meta in ('{"a":1}', None):
        rec = codec.MetaRecord(7, 3, meta)
        payload = memoryview(b"".join(bytes(p) for p in codec.encode_meta(rec)))
        assert codec.decode(codec.META, payload) == rec
    bad = [
        b"\0" * 8,  # short
        codec._ATTR_HEAD.pack(1, 0, 2),  # unknown flag
        codec._ATTR_HEAD.pack(0, 0, 0),  # page 0
        codec._ATTR_HEAD.pack(1, 0, 0) + b"{}",  # cleared with text
        codec._ATTR_HEAD.pack(1, 0, 1) + b"{not json",
        codec._ATTR_HEAD.pack(1, 0, 1) + b"[1]",
        codec._ATTR_HEAD.pack(1, 0, 1) + b"{}",  # set to nothing: a clear is logged as one
        codec._ATTR_HEAD.pack(1, 0, 1) + b"\xff",
    ]
    for raw in bad:
        with pytest.raises(CorruptLogError):
            codec.decode(codec.META, memoryview(raw))


def test_replay_rejects_a_frame_for_a_dead_page() -> None:
    from mmsb.storage.arena import MemoryArena
    from mmsb.storage.log import Frame
    from mmsb.storage.recovery import apply_frame
    from mmsb.storage.state import State

    state = State(MemoryArena())
    payload = b"".join(bytes(p) for p in codec.encode_meta(codec.MetaRecord(5, 0, '{"a":1}')))
    frame = Frame(codec.META, 0, 1, 0, memoryview(payload), "seg", 0)
    with pytest.raises(CorruptLogError, match="does not replay"):
        apply_frame(state, frame)
