"""Checkpoint files: round trips, damage detection, forged page tables, recovery fallback."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import CorruptCheckpointError, Delta, DeltaBatch
from mmsb.history import copy_state
from mmsb.storage.arena import MemoryArena
from mmsb.storage.checkpoint import (
    Sections,
    list_checkpoints,
    load_state,
    read_header,
    write_state,
)
from mmsb.storage.state import State
from mmsb.storage.tablecheck import check_table
from mmsb.types import DTYPE_NAMES, MAX_PAGE_SIZE
from naive import Model, assert_matches


def sample_state() -> State:
    st = State(MemoryArena())
    st.create(3, 24, DTYPE_NAMES.index("uint8"), 0, '{"role":"a"}')
    st.create(2, 16, DTYPE_NAMES.index("float64"), 2, None)
    st.create(1, 5, DTYPE_NAMES.index("uint8"), 1, None)
    st.delete(np.array([2, 4], np.int64))  # leaves a gap and a dead id in the table
    batch = DeltaBatch.from_deltas(
        [Delta.range(1, b"hello", 3), Delta.dense(5, [1, 0, 1], b"xyz", 8),
         Delta.sparse(6, [0, 1, 1], b"pq", 2), Delta.range(3, bytes(range(24)))]
    )  # fmt: skip
    st.validate(batch)
    st.assign_epochs(batch.page_ids)
    st.apply(batch)
    st.next_delta_id = 5
    return st


def assert_same_state(a: State, b: State) -> None:
    assert a.state_hash() == b.state_hash()
    assert a.live_ids().tolist() == b.live_ids().tolist()
    assert (a.next_page_id, a.next_delta_id, a.live_count, a.end) == (
        b.next_page_id, b.next_delta_id, b.live_count, b.end,
    )  # fmt: skip
    assert a.gap_start.tolist() == b.gap_start.tolist()
    assert a.gap_len.tolist() == b.gap_len.tolist()
    assert a.metadata == b.metadata
    for pid in a.live_ids().tolist():
        assert a.info(pid) == b.info(pid)
        assert a.read(pid).tobytes() == b.read(pid).tobytes()


def test_write_load_round_trip(tmp_path: Path) -> None:
    st = sample_state()
    path = str(tmp_path / "00000000000000000009.ckpt")
    size = write_state(path, st, 9, 12345, with_arena=True, sync=False)
    assert size == os.path.getsize(path)
    assert not os.path.exists(path + ".tmp")
    loaded, lsn, ts = load_state(path, MemoryArena())
    assert (lsn, ts) == (9, 12345)
    assert_same_state(loaded, st)
    # allocation continues exactly as it would have on the original
    for s in (st, loaded):
        s.create(1, 8, 0, 0, None)
    assert_same_state(loaded, st)


def test_round_trip_of_an_empty_state(tmp_path: Path) -> None:
    path = str(tmp_path / "empty.ckpt")
    write_state(path, State(MemoryArena()), 0, 0, with_arena=True, sync=True)
    loaded, lsn, _ = load_state(path, MemoryArena())
    assert lsn == 0
    assert loaded.live_count == 0
    assert loaded.end == 0


def test_load_clears_free_space_of_the_target_arena(tmp_path: Path) -> None:
    st = sample_state()
    path = str(tmp_path / "c.ckpt")
    write_state(path, st, 1, 1, with_arena=True, sync=False)
    arena = MemoryArena(1 << 20)
    arena.buf[:] = 0xAB  # stale bytes from whatever the arena held before
    loaded, _, _ = load_state(path, arena)
    assert_same_state(loaded, st)
    live = np.zeros(arena.capacity, bool)
    for pid in loaded.live_ids().tolist():
        s = int(loaded.slot[pid])
        live[s : s + int(loaded.size[pid])] = True
    assert not arena.buf[~live].any()


def test_bus_checkpoint_file_matches_the_live_state(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off") as bus:
        a = bus.create_page(32, metadata={"n": 1})
        bus.write(a, b"abc", offset=4)
        info = bus.checkpoint()
        assert info.lsn == bus.lsn == 2
        assert info.pages == 1
        assert info.path.endswith("00000000000000000002.ckpt")
        assert os.path.getsize(info.path) == info.bytes
        loaded, lsn, _ = load_state(info.path, MemoryArena())
        assert lsn == 2
        assert loaded.state_hash() == bus.state_hash()


# -- damage ----------------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path: Path) -> str:
    path = str(tmp_path / "00000000000000000003.ckpt")
    write_state(path, sample_state(), 3, 7, with_arena=True, sync=False)
    return path


def flip(path: str, offset: int, bit: int = 0x01) -> None:
    data = bytearray(Path(path).read_bytes())
    data[offset] ^= bit
    Path(path).write_bytes(bytes(data))


def section_offsets(path: str) -> dict[str, tuple[int, int]]:
    with open(path, "rb") as f:
        header, base = read_header(f, path)
    return {k: (base + off, length) for k, (off, length, _) in header.sections.items()}


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "bad magic"),
        (8, "unsupported version"),
        (12, "header fails its checksum"),  # header length
        (16, "header fails its checksum"),  # header crc
        (30, "header fails its checksum"),  # inside the JSON header
    ],
)
def test_header_damage(ckpt: str, offset: int, message: str) -> None:
    flip(ckpt, offset)
    with pytest.raises(CorruptCheckpointError, match=message):
        load_state(ckpt, MemoryArena())


@pytest.mark.parametrize("name", ["slot", "size", "epoch", "dtype", "loc", "live", "metadata"])
def test_section_damage(ckpt: str, name: str) -> None:
    start, length = section_offsets(ckpt)[name]
    flip(ckpt, start + length - 1)
    with pytest.raises(CorruptCheckpointError, match=f"section '{name}' fails its checksum"):
        load_state(ckpt, MemoryArena())


def test_arena_damage(ckpt: str) -> None:
    start, length = section_offsets(ckpt)["arena"]
    flip(ckpt, start + length // 2)
    arena = MemoryArena()
    with pytest.raises(CorruptCheckpointError, match="arena fails its checksum"):
        load_state(ckpt, arena)


@pytest.mark.parametrize(
    ("keep", "message"),
    [(0, r"truncated \(no header\)"), (10, r"truncated \(no header\)"), (40, "header fails")],
)
def test_truncated_checkpoint(ckpt: str, keep: int, message: str) -> None:
    with open(ckpt, "r+b") as f:
        f.truncate(keep)
    with pytest.raises(CorruptCheckpointError, match=message):
        load_state(ckpt, MemoryArena())


def test_checkpoint_missing_its_tail(ckpt: str) -> None:
    size = os.path.getsize(ckpt)
    with open(ckpt, "r+b") as f:
        f.truncate(size - 8)
    with pytest.raises(CorruptCheckpointError, match="section 'arena' lies outside the file"):
        load_state(ckpt, MemoryArena())


def test_missing_file() -> None:
    with pytest.raises(CorruptCheckpointError, match="cannot open checkpoint"):
        load_state("/nonexistent/dir/1.ckpt", MemoryArena())


def rewrite_header(path: str, change) -> None:
    """Edit the JSON header and re-seal it with a correct checksum (a forged file)."""
    data = Path(path).read_bytes()
    magic, version, hlen, _ = struct.unpack_from("<8sIII", data, 0)
    header = json.loads(data[24 : 24 + hlen])
    change(header)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (hlen - len(raw))
    assert len(raw) == hlen
    pre = struct.pack("<8sIII4x", magic, version, hlen, zlib.crc32(raw))
    Path(path).write_bytes(pre + raw + data[24 + hlen :])


def test_forged_header_with_out_of_range_values(ckpt: str) -> None:
    rewrite_header(ckpt, lambda h: h.update(next_page_id=0))
    with pytest.raises(CorruptCheckpointError, match="out-of-range values"):
        load_state(ckpt, MemoryArena())


def test_a_forged_page_count_is_refused_before_anything_is_allocated(ckpt: str) -> None:
    """The page table is sized by next_page_id only once every column's section, which
    lies inside the file, has been found to hold exactly that many rows."""

    def forge(h: dict) -> None:
        h["sections"].pop("edges")  # optional; makes room in the header for the digits
        h["next_page_id"] = 2**36  # a table of terabytes

    rewrite_header(ckpt, forge)
    with pytest.raises(CorruptCheckpointError, match="column 'slot' has the wrong length"):
        load_state(ckpt, MemoryArena())


def test_forged_header_missing_a_section(ckpt: str) -> None:
    rewrite_header(ckpt, lambda h: h["sections"].pop("epoch"))
    with pytest.raises(CorruptCheckpointError, match="lacks section 'epoch'"):
        load_state(ckpt, MemoryArena())


def test_forged_header_not_an_object(ckpt: str) -> None:
    rewrite_header(ckpt, lambda h: h.update(sections=[1, 2]))
    with pytest.raises(CorruptCheckpointError, match="header is invalid"):
        load_state(ckpt, MemoryArena())


def forged(tmp_path: Path, edit) -> str:
    """A checkpoint written from an edited copy of a valid state (all CRCs valid)."""
    st = copy_state(sample_state())
    edit(st)
    path = str(tmp_path / "forged.ckpt")
    write_state(path, st, 1, 1, with_arena=True, sync=False)
    return path


def test_forged_overlapping_slots_are_rejected(tmp_path: Path) -> None:
    def overlap(st: State) -> None:
        st.slot[3] = st.slot[1] + 8  # page 3 now shares bytes with page 1

    path = forged(tmp_path, overlap)
    arena = MemoryArena(64)
    arena.buf[:] = 0x5A
    with pytest.raises(CorruptCheckpointError, match="overlapping page slots"):
        load_state(path, arena)
    assert (arena.buf == 0x5A).all()  # rejected before anything was written


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda st: st.slot.__setitem__(6, 10**9), "pages outside its arena"),
        (lambda st: st.slot.__setitem__(1, -8), "invalid page table rows for pages \\[1\\]"),
        (lambda st: st.size.__setitem__(5, 0), "invalid page table rows for pages \\[5\\]"),
        (lambda st: st.dtype.__setitem__(1, 200), "invalid page table rows"),
        (lambda st: st.loc.__setitem__(1, 9), "invalid page table rows"),
        (lambda st: st.size.__setitem__(5, 12), "sizes that do not fit dtypes"),
        (lambda st: st.metadata.__setitem__(2, "{}"), "metadata for a dead page"),
        (lambda st: st.metadata.__setitem__(1, "{not json"), "metadata is invalid"),
    ],
)
def test_forged_page_tables_are_rejected(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        load_state(forged(tmp_path, edit), MemoryArena())


@pytest.mark.parametrize("deleted", [False, True])
def test_the_lazy_table_check_rejects_pages_outside_the_arena(deleted: bool) -> None:
    st = State(MemoryArena())
    st.create(6, 16, DTYPE_NAMES.index("uint8"), 0, None)
    if deleted:  # the check's masked path
        st.delete(np.array([2], np.int64))
        st.slot[2] = st.size[2] = -(10**9)  # a dead page's row is not looked at
    check_table(st, st.end, "t", overlaps=False)
    edits = [
        lambda t: t.slot.__setitem__(6, t.end),  # starts at the end: reaches past it
        lambda t: t.slot.__setitem__(1, -8),
        lambda t: t.size.__setitem__(5, 0),
        lambda t: t.size.__setitem__(3, MAX_PAGE_SIZE + 1),
    ]
    for edit in edits:
        bad = copy_state(st)
        edit(bad)
        with pytest.raises(CorruptCheckpointError, match="pages outside its arena"):
            check_table(bad, bad.end, "t", overlaps=False)


def test_the_lazy_table_check_sums_ends_where_its_bound_is_past_the_arena() -> None:
    """The largest slot plus the largest size bounds every page's end; where that bound is
    past the arena (a large page before small ones) the ends themselves are summed: the
    table is accepted, and a page that does reach past the end, not at the largest slot,
    is still found."""
    st = State(MemoryArena())
    st.create(1, 4096, DTYPE_NAMES.index("uint8"), 0, None)
    st.create(4, 16, DTYPE_NAMES.index("uint8"), 0, None)
    assert int(st.slot[1:6].max()) + 4096 > st.end
    check_table(st, st.end, "t", overlaps=False)
    bad = copy_state(st)
    bad.slot[1] = 100  # 100 + 4096 is past the end; the largest slot is still a small page's
    with pytest.raises(CorruptCheckpointError, match="pages outside its arena"):
        check_table(bad, bad.end, "t", overlaps=False)


def test_columns_read_in_place_are_length_and_checksum_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.ckpt"
    st = sample_state()
    write_state(str(path), st, 1, 1, with_arena=True, sync=False)
    n = st.next_page_id
    with open(path, "rb") as f:
        header, base = read_header(f, str(path))
        sections = Sections(f, header, base, path.stat().st_size, "c.ckpt")
        out = np.zeros(n, np.int64)
        sections.read_into("slot", out)
        assert out.tolist() == st.slot[:n].tolist()
        with pytest.raises(CorruptCheckpointError, match="'slot' has the wrong length"):
            sections.read_into("slot", np.zeros(n + 1, np.int64))
        off, length, _ = sections.locate("size")
    raw = bytearray(path.read_bytes())
    raw[off + length - 1] ^= 0x40  # the last page's size, CRC left as it was
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="'size' fails its checksum"):
        load_state(str(path), MemoryArena())


# -- the clean-shutdown file's columns, mapped copy-on-write ----------------------------------


def clean_file(tmp_path: Path) -> tuple[str, State]:
    st = sample_state()
    path = str(tmp_path / "state.clean")
    write_state(path, st, 4, 7, with_arena=False, sync=False)
    return path, st


def test_a_clean_file_maps_its_columns_and_matches_the_read_path(tmp_path: Path) -> None:
    path, st = clean_file(tmp_path)
    loaded, lsn, _ = load_state(path, st.arena, with_arena=False)
    assert lsn == 4
    assert_same_state(loaded, st)
    n = st.next_page_id
    with open(path, "rb") as f:  # the read path is the oracle, column by column
        header, base = read_header(f, path)
        sections = Sections(f, header, base, os.path.getsize(path), "state.clean")
        for name, dt in (("slot", np.int64), ("size", np.int64), ("epoch", np.int64),
                         ("dtype", np.uint8), ("loc", np.uint8)):  # fmt: skip
            col = getattr(loaded, name)
            assert not col.flags.owndata and col.size == n  # a view of the mapping
            out = np.zeros(n, dt)
            sections.read_into(name, out)
            assert col.tolist() == out.tolist()
    assert loaded.live.dtype == np.bool_ and loaded.live.tolist() == st.live[:n].tolist()
    assert loaded.last_access.size == loaded.seen_epoch.size == n


def test_writes_to_a_mapped_table_never_reach_the_file(tmp_path: Path) -> None:
    path, st = clean_file(tmp_path)
    before = Path(path).read_bytes()
    loaded = load_state(path, st.arena, with_arena=False)[0]
    assert not loaded.slot.flags.owndata  # mapped, not read
    loaded.slot[1] += 8
    loaded.live[3] = False
    loaded.create(2, 8, 0, 0, None)  # grows the table out of the mapping
    assert loaded.slot.flags.owndata
    assert Path(path).read_bytes() == before


@pytest.mark.parametrize("name", ["slot", "size", "epoch", "dtype", "loc", "live"])
def test_mapped_columns_are_checksum_checked(tmp_path: Path, name: str) -> None:
    path, st = clean_file(tmp_path)
    start, length = section_offsets(path)[name]
    flip(path, start + length - 1)
    with pytest.raises(CorruptCheckpointError, match=f"section '{name}' fails its checksum"):
        load_state(path, st.arena, with_arena=False)


def test_a_live_byte_other_than_0_or_1_reads_as_live_when_mapped(tmp_path: Path) -> None:
    path, st = clean_file(tmp_path)
    start, length = section_offsets(path)["live"]
    data = bytearray(Path(path).read_bytes())
    assert data[start + 1] == 1
    data[start + 1] = 7  # page 1, still live; re-seal the section's checksum
    Path(path).write_bytes(bytes(data))
    crc = zlib.crc32(bytes(data[start : start + length]))
    rewrite_header(path, lambda h: h["sections"]["live"].__setitem__(2, crc))
    loaded = load_state(path, st.arena, with_arena=False)[0]
    assert loaded.live.dtype == np.bool_ and loaded.live.view(np.uint8).max() == 1
    assert_same_state(loaded, st)


def test_a_file_that_cannot_be_mapped_is_read(tmp_path: Path, monkeypatch) -> None:
    path, st = clean_file(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr("mmsb.storage.checkpoint.mmap.mmap", refuse)
    loaded = load_state(path, st.arena, with_arena=False)[0]
    assert loaded.slot.flags.owndata
    assert_same_state(loaded, st)


# -- recovery over checkpoints ---------------------------------------------------------------


def crash(bus: mmsb.Bus) -> None:
    """Drop the bus without a clean shutdown, as if the process had died."""
    bus.abandon()


def workload(bus: mmsb.Bus, model: Model, rounds: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        if not model.pages or rng.random() < 0.2:
            bus.create_page(64)
            model.create(64)
            continue
        pid = int(rng.choice(sorted(model.pages)))
        off = int(rng.integers(0, 56))
        data = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
        bus.write(pid, data, offset=off)
        model.apply_delta(Delta.range(pid, data, off))


def test_recovery_falls_back_to_an_older_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    bus = mmsb.open(path, sync="off")
    workload(bus, model, 10, seed=1)
    older = bus.checkpoint()
    workload(bus, model, 10, seed=2)
    newest = bus.checkpoint()
    workload(bus, model, 5, seed=3)
    lsn = bus.lsn
    crash(bus)
    start, length = section_offsets(newest.path)["arena"]
    flip(newest.path, start + length - 1)
    with mmsb.open(path) as bus:
        rec = bus.recovery
        assert rec.mode == "replay"
        assert rec.checkpoint_lsn == older.lsn
        assert len(rec.skipped_checkpoints) == 1
        assert os.path.basename(newest.path) in rec.skipped_checkpoints[0]
        assert "arena fails its checksum" in rec.skipped_checkpoints[0]
        assert rec.frames_replayed == lsn - older.lsn
        assert bus.lsn == lsn
        assert_matches(bus, model)
        assert bus.verify().ok
    assert not os.path.exists(newest.path)
    assert os.path.exists(newest.path + ".corrupt")  # set aside, not deleted


def test_readonly_open_skips_a_corrupt_checkpoint_without_touching_it(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    with mmsb.open(path, sync="off") as bus:
        workload(bus, model, 8, seed=4)
        newest = bus.checkpoint()
        workload(bus, model, 4, seed=5)
    flip(newest.path, 0)
    with mmsb.open(path, readonly=True) as ro:
        assert ro.recovery.checkpoint_lsn == 0
        assert len(ro.recovery.skipped_checkpoints) == 1
        assert_matches(ro, model)
    assert os.path.exists(newest.path)


def test_recovery_uses_the_newest_good_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    bus = mmsb.open(path, sync="off")
    workload(bus, model, 6, seed=6)
    bus.checkpoint()
    workload(bus, model, 6, seed=7)
    newest = bus.checkpoint()
    workload(bus, model, 3, seed=8)
    crash(bus)
    with mmsb.open(path) as bus:
        assert bus.recovery.checkpoint_lsn == newest.lsn
        assert bus.recovery.skipped_checkpoints == ()
        assert bus.recovery.frames_replayed == 3
        assert_matches(bus, model)


def test_no_usable_checkpoint_after_compaction_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    bus = mmsb.open(path, sync="off", keep_checkpoints=1)
    workload(bus, model, 10, seed=9)
    only = bus.checkpoint()
    workload(bus, model, 4, seed=10)
    info = bus.compact()
    assert info.segments_removed == 1
    assert info.oldest_lsn == only.lsn
    crash(bus)
    flip(only.path, 30)
    with pytest.raises(CorruptCheckpointError, match="no usable checkpoint") as err:
        mmsb.open(path)
    assert f"log starts at LSN {only.lsn + 1}" in str(err.value)
    # the failed open released the writer lock: a later writer gets the same clear error
    with pytest.raises(CorruptCheckpointError, match="no usable checkpoint"):
        mmsb.open(path)


def test_compacted_bus_recovers_from_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    bus = mmsb.open(path, sync="off", keep_checkpoints=1)
    workload(bus, model, 10, seed=11)
    only = bus.checkpoint()
    workload(bus, model, 4, seed=12)
    bus.compact()
    crash(bus)
    with mmsb.open(path) as bus:
        assert bus.recovery.checkpoint_lsn == only.lsn
        assert_matches(bus, model)
    assert [lsn for lsn, _ in list_checkpoints(str(path / "ckpt"))] == [only.lsn]
