"""The transaction log: frame payload codecs, segments, torn tails and corruption."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb import CorruptLogError, Delta, DeltaBatch
from mmsb.storage import codec
from mmsb.storage.codec import BATCH, CREATE, DELETE
from mmsb.storage.log import (
    FRAME_HEADER_SIZE,
    SEG_HEADER_SIZE,
    LogReader,
    list_segments,
    segment_name,
)
from mmsb.storage.logwriter import LogWriter
from mmsb.types import DTYPE_NAMES, LOCATIONS
from naive import Model, assert_matches


def joined(pieces: list[bytes | memoryview]) -> memoryview:
    return memoryview(b"".join(bytes(p) for p in pieces))


def row_tuples(batch: DeltaBatch) -> list[tuple[object, ...]]:
    return [
        (
            d.page_id, d.offset, d.shape, d.payload.tobytes(),
            None if d.mask is None else d.mask.tobytes(), d.source, d.metadata,
        )
        for d in batch
    ]  # fmt: skip


def round_trip(batch: DeltaBatch, first_delta_id: int = 1) -> codec.DecodedBatch:
    epochs = np.arange(1, len(batch) + 1, dtype=np.int64) * 3
    dec = codec.decode_batch(joined(codec.encode_batch(batch, epochs, first_delta_id)))
    assert dec.first_delta_id == first_delta_id
    assert dec.epochs.tolist() == epochs.tolist()
    assert dec.batch.structure_problem() is None
    assert row_tuples(dec.batch) == row_tuples(batch)
    return dec


# -- payload codecs --------------------------------------------------------------------


def test_range_batch_round_trip() -> None:
    batch = DeltaBatch.from_ranges([1, 2, 1], [0, 3, 7], [b"abc", b"de", b"fghij"])
    round_trip(batch, first_delta_id=41)


def test_batch_with_masked_rows_sources_and_metadata_round_trip() -> None:
    batch = DeltaBatch.from_deltas(
        [
            Delta.range(1, b"abcdefghi", 2, source="sim"),
            Delta.dense(2, [1, 0, 0, 1, 1, 0, 1, 0, 1], b"012345678", 5, metadata={"k": [1]}),
            Delta.sparse(3, [0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1], b"wxyz", 0, source="agent"),
            Delta.range(1, b"q", 0, metadata={"k": [1]}),
            Delta.sparse(2, [0, 0, 0], b"", 1, source="sim", metadata={"other": None}),
        ]
    )
    dec = round_trip(batch)
    assert dec.batch.has_masks


def test_batch_with_uniform_metadata_round_trip() -> None:
    batch = DeltaBatch.from_ranges([1, 2], [0, 0], [b"a", b"b"], source="s", metadata={"x": 1})
    round_trip(batch)


def test_batch_from_non_contiguous_pool_round_trip() -> None:
    # concat and coalesce results are fine inputs; so is a batch whose pool has holes
    batch = DeltaBatch.from_ranges([1, 2], [0, 0], [b"abcd", b"efgh"])
    batch.pstarts = np.array([4, 0], np.int64)
    dec = round_trip(batch)
    assert dec.batch[0].payload.tobytes() == b"efgh"


@st.composite
def random_batches(draw: st.DrawFn) -> DeltaBatch:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        pid = draw(st.integers(1, 2**40))
        offset = draw(st.integers(0, 1000))
        n = draw(st.integers(1, 20))
        source = draw(st.sampled_from(["api", "a", "b"]))
        meta = draw(st.sampled_from([None, {"i": 1}, {"s": "x"}]))
        shape = draw(st.integers(0, 2))
        if shape == 0:
            out.append(Delta.range(pid, draw(st.binary(min_size=n, max_size=n)), offset,
                                   source=source, metadata=meta))  # fmt: skip
            continue
        mask = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        k = n if shape == 1 else sum(mask)
        data = draw(st.binary(min_size=k, max_size=k))
        make = Delta.dense if shape == 1 else Delta.sparse
        out.append(make(pid, mask, data, offset, source=source, metadata=meta))
    return DeltaBatch.from_deltas(out)


@settings(max_examples=50, deadline=None)
@given(random_batches(), st.integers(1, 2**40))
def test_random_batches_round_trip(batch: DeltaBatch, first: int) -> None:
    round_trip(batch, first)


def test_create_record_round_trip() -> None:
    rec = codec.CreateRecord(7, 3, 64, DTYPE_NAMES.index("float32"), 2, '{"a":1}')
    assert codec.decode_create(joined(codec.encode_create(rec))) == rec
    bare = codec.CreateRecord(1, 1, 8, 0, 0, None)
    assert codec.decode_create(joined(codec.encode_create(bare))) == bare
    assert LOCATIONS[rec.location] == "unified"


def test_delete_record_round_trip() -> None:
    ids = np.array([5, 1, 2**40], np.int64)
    assert codec.decode_delete(joined(codec.encode_delete(ids))).tolist() == ids.tolist()


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"[]", b'{"first":1}', b'{"first":1,"n":1,"size":8,"dtype":"nope",'
     b'"location":"cpu","metadata":null}',
     b'{"first":1,"n":1e400,"size":8,"dtype":"uint8","location":"cpu","metadata":null}',
     b'{"first":1,"n":1,"size":8,"dtype":"uint8","location":"cpu","metadata":"{bad"}'],
)  # fmt: skip
def test_decode_create_rejects_garbage(garbage: bytes) -> None:
    with pytest.raises(CorruptLogError, match="create frame is invalid"):
        codec.decode_create(memoryview(garbage))


def test_decode_delete_rejects_short_payload() -> None:
    with pytest.raises(CorruptLogError, match="too short for its page ids"):
        codec.decode_delete(memoryview(struct.pack("<II", 3, 0) + b"\0" * 8))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_decode_batch_on_garbage_raises_only_corrupt_log_error(data: bytes) -> None:
    try:
        dec = codec.decode_batch(memoryview(data))
    except CorruptLogError:
        return
    assert dec.batch.structure_problem() is None


@settings(max_examples=50, deadline=None)
@given(random_batches(), st.data())
def test_decode_batch_on_damaged_encodings(batch: DeltaBatch, data: st.DataObject) -> None:
    raw = bytearray(joined(codec.encode_batch(batch, np.ones(len(batch), np.int64), 1)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        dec = codec.decode_batch(memoryview(bytes(raw[:cut])))
    except CorruptLogError:
        return
    assert dec.batch.structure_problem() is None


def test_decode_batch_rejects_unknown_flags() -> None:
    raw = bytearray(joined(codec.encode_batch(DeltaBatch.from_ranges([1], [0], [b"a"]),
                                              np.ones(1, np.int64), 1)))  # fmt: skip
    raw[4] |= 0x80
    with pytest.raises(CorruptLogError, match="unknown flags"):
        codec.decode_batch(memoryview(bytes(raw)))


# -- segments and frames on disk ------------------------------------------------------------


def frames_of(bus_path: Path) -> list:
    return list(LogReader(str(bus_path / "log")).frames())


def test_bus_frames_decode_to_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    batch = DeltaBatch.from_deltas(
        [Delta.range(1, b"abc", 1, source="s1"), Delta.dense(2, [1, 0], b"xy", metadata={"m": 1})]
    )
    with mmsb.open(path, clock=lambda: 1234) as bus:
        bus.create_pages(2, 16, metadata={"kind": "cell"})
        commit = bus.apply_batch(batch)
        bus.delete_page(1)
    frames = frames_of(path)
    assert [(f.type, f.lsn, f.timestamp) for f in frames] == [
        (CREATE, 1, 1234),
        (BATCH, 2, 1234),
        (DELETE, 3, 1234),
    ]
    assert codec.decode_create(frames[0].payload) == codec.CreateRecord(
        1, 2, 16, 0, 0, '{"kind":"cell"}'
    )
    dec = codec.decode_batch(frames[1].payload)
    assert dec.first_delta_id == commit.first_delta_id == 1
    assert dec.epochs.tolist() == [1, 1]
    assert row_tuples(dec.batch) == row_tuples(batch)
    assert codec.decode_delete(frames[2].payload).tolist() == [1]
    assert frames[0].offset == SEG_HEADER_SIZE
    assert frames[1].offset == frames[0].offset + frames[0].size


def test_small_segments_roll(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    model = Model()
    rng = np.random.default_rng(7)
    with mmsb.open(path, segment_size=4096, sync="off") as bus:
        pids = [bus.create_page(1024) for _ in range(4)]
        for _ in pids:
            model.create(1024)
        for _ in range(40):
            pid = int(rng.choice(pids))
            data = rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
            off = int(rng.integers(0, 512))
            bus.write(pid, data, offset=off)
            model.apply_delta(Delta.range(pid, data, off))
        assert_matches(bus, model)
        lsn = bus.lsn
    segs = list_segments(str(path / "log"))
    assert len(segs) >= 5
    for first, seg in segs:
        assert os.path.basename(seg) == segment_name(first)
        assert os.path.getsize(seg) <= 4096 + FRAME_HEADER_SIZE + 1024
    frames = frames_of(path)
    assert [f.lsn for f in frames] == list(range(1, lsn + 1))
    firsts = {first for first, _ in segs}
    for f in frames:
        if f.offset == SEG_HEADER_SIZE:
            assert f.lsn in firsts
            assert f.segment == segment_name(f.lsn)
    # a crash-style reopen replays every segment
    os.unlink(path / "state.clean")
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert bus.recovery.frames_replayed == lsn
        assert_matches(bus, model)


def build_log(path: Path, commits: int = 5) -> tuple[Model, list]:
    """A closed bus with one page and ``commits`` one-row writes; the model after each."""
    model = Model()
    states = []
    with mmsb.open(path, sync="off") as bus:
        pid = bus.create_page(64)
        model.create(64)
        states.append(model.copy())
        for i in range(commits):
            data = bytes([i + 1]) * 8
            bus.write(pid, data, offset=i * 8)
            model.apply_delta(Delta.range(pid, data, i * 8))
            states.append(model.copy())
    return model, states


def only_segment(path: Path) -> Path:
    (seg,) = list_segments(str(path / "log"))
    return Path(seg[1])


@pytest.mark.parametrize("cut", [1, 7, FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + 3])
def test_truncated_tail_is_torn_and_reported(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "bus"
    _, states = build_log(path)
    seg = only_segment(path)
    frames = frames_of(path)
    last = frames[-1]
    with open(seg, "r+b") as f:
        f.truncate(last.offset + last.size - cut)
    reader = LogReader(str(path / "log"))
    got = list(reader.frames())
    assert [f.lsn for f in got] == [f.lsn for f in frames[:-1]]
    assert [bytes(f.payload) for f in got] == [bytes(f.payload) for f in frames[:-1]]
    assert reader.torn is not None
    assert reader.torn.segment == seg.name
    assert reader.torn.offset == last.offset
    assert reader.torn.bytes == last.size - cut
    assert reader.end_lsn == last.lsn - 1
    os.unlink(path / "state.clean")  # as after a crash (a clean close records the frame)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert bus.recovery.torn_tail_bytes == last.size - cut
        assert bus.recovery.torn_tail_segment == seg.name
        assert bus.lsn == last.lsn - 1
        assert_matches(bus, states[-2])
    assert os.path.getsize(seg) == last.offset  # the torn bytes are gone
    assert LogReader(str(path / "log")).torn is None


def test_bad_checksum_on_a_complete_last_frame_is_corruption(tmp_path: Path) -> None:
    """A complete final frame (intact header, all its bytes in the file) that fails its
    checksum may be an acknowledged commit: it is corruption, not a torn append. Only a
    reader that was asked to drop it (``recovery="truncate"``) does, naming its LSN."""
    path = tmp_path / "bus"
    _, states = build_log(path)
    seg = only_segment(path)
    last = frames_of(path)[-1]
    data = bytearray(seg.read_bytes())
    data[last.offset + FRAME_HEADER_SIZE] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match=f"LSN {last.lsn}.*payload checksum mismatch"):
        list(LogReader(str(path / "log")).frames())
    reader = LogReader(str(path / "log"), drop_damaged_tail=True)
    assert len(list(reader.frames())) == last.lsn - 1
    assert reader.torn is not None and reader.torn.dropped_lsn == last.lsn
    os.unlink(path / "state.clean")  # as after a crash
    with pytest.raises(CorruptLogError, match=f"LSN {last.lsn}"):
        mmsb.open(path)
    assert seg.read_bytes() == bytes(data)  # the refused open changed nothing
    with mmsb.open(path, recovery="truncate") as bus:
        assert bus.recovery.dropped_lsns == (last.lsn,)
        assert bus.recovery.torn_tail_bytes == last.size
        assert_matches(bus, states[-2])


def test_zero_filled_tail_is_torn(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    _, states = build_log(path)
    seg = only_segment(path)
    with open(seg, "ab") as f:
        f.write(b"\0" * 100)
    reader = LogReader(str(path / "log"))
    assert len(list(reader.frames())) == len(states)
    assert reader.torn is not None
    assert reader.torn.bytes == 100


@pytest.mark.parametrize("where", ["header", "payload"])
def test_flipped_byte_in_an_earlier_frame_is_corruption(tmp_path: Path, where: str) -> None:
    path = tmp_path / "bus"
    build_log(path)
    seg = only_segment(path)
    frames = frames_of(path)
    victim = frames[2]
    data = bytearray(seg.read_bytes())
    pos = victim.offset + (12 if where == "header" else FRAME_HEADER_SIZE + 1)
    data[pos] ^= 0x01
    seg.write_bytes(bytes(data))
    reader = LogReader(str(path / "log"))
    seen = []
    with pytest.raises(CorruptLogError, match=rf"segment {seg.name} at offset {victim.offset}"):
        for f in reader.frames():
            seen.append(f.lsn)
    assert seen == [1, 2]
    with pytest.raises(CorruptLogError) as info:
        list(LogReader(str(path / "log")).frames())
    assert info.value.segment == seg.name
    assert info.value.offset == victim.offset
    # a writer open replays (no clean file) and must stop on the damage, not skip it
    os.unlink(path / "state.clean")
    before = seg.read_bytes()
    with pytest.raises(CorruptLogError) as opened:
        mmsb.open(path)
    assert opened.value.segment == seg.name
    assert opened.value.offset == victim.offset
    assert seg.read_bytes() == before  # never truncated behind good frames


def test_corruption_in_an_older_segment(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, segment_size=4096, sync="off") as bus:
        pid = bus.create_page(2048)
        for i in range(12):
            bus.write(pid, bytes([i]) * 1024)
    segs = list_segments(str(path / "log"))
    assert len(segs) >= 3
    _, victim = segs[1]
    data = bytearray(Path(victim).read_bytes())
    data[-5] ^= 0x10  # inside the last frame of a segment that is not the newest
    Path(victim).write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as info:
        list(LogReader(str(path / "log")).frames())
    assert info.value.segment == os.path.basename(victim)
    assert info.value.offset > SEG_HEADER_SIZE - 1


def test_missing_middle_segment_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, segment_size=4096, sync="off") as bus:
        pid = bus.create_page(2048)
        for i in range(12):
            bus.write(pid, bytes([i]) * 1024)
    segs = list_segments(str(path / "log"))
    os.unlink(segs[1][1])
    with pytest.raises(CorruptLogError, match="a segment is missing") as info:
        list(LogReader(str(path / "log")).frames())
    assert info.value.segment == os.path.basename(segs[2][1])


def test_unknown_frame_type(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    w = LogWriter(str(log_dir), 1, segment_size=1 << 20, fsync_enabled=False)
    w.append(CREATE, 1, 10, codec.encode_create(codec.CreateRecord(1, 1, 8, 0, 0, None)))
    off = w.append(77, 2, 11, [b"mystery!"])
    w.append(DELETE, 3, 12, codec.encode_delete(np.array([1], np.int64)))
    w.close()
    with pytest.raises(CorruptLogError, match="unknown frame type 77") as info:
        list(LogReader(str(log_dir)).frames())
    assert info.value.offset == off
    assert info.value.segment == segment_name(1)


def test_frames_with_empty_pieces(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    w = LogWriter(str(log_dir), 1, segment_size=1 << 20, fsync_enabled=False)
    w.append(DELETE, 1, 5, [b"", b"abc", b"", memoryview(b"")])
    w.append(DELETE, 2, 6, [b""])
    w.close()
    frames = list(LogReader(str(log_dir)).frames())
    assert [(f.lsn, bytes(f.payload)) for f in frames] == [(1, b"abc"), (2, b"")]


def test_batch_that_writes_no_byte_is_logged_and_replayed(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="off")
    pid = bus.create_page(8)
    commit = bus.apply_batch(DeltaBatch.from_deltas([Delta.sparse(pid, [0, 0, 0], b"")]))
    assert commit.count == 1
    assert bus.page(pid).epoch == 1  # the delta was applied, though it changed no byte
    bus.abandon()  # no clean shutdown: the reopen replays the frame
    with mmsb.open(path) as bus:
        assert bus.recovery.frames_replayed == 2
        assert bus.page(pid).epoch == 1
        assert bus.read(pid).tobytes() == bytes(8)


def test_out_of_sequence_lsn(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    w = LogWriter(str(log_dir), 1, segment_size=1 << 20, fsync_enabled=False)
    w.append(DELETE, 1, 0, codec.encode_delete(np.array([1], np.int64)))
    off = w.append(DELETE, 5, 0, codec.encode_delete(np.array([1], np.int64)))
    w.close()
    with pytest.raises(CorruptLogError, match="frame has LSN 5, expected 2") as info:
        list(LogReader(str(log_dir)).frames())
    assert info.value.offset == off


def test_frames_after_an_lsn_skip_older_segments(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, segment_size=4096, sync="off") as bus:
        pid = bus.create_page(2048)
        for i in range(12):
            bus.write(pid, bytes([i]) * 1024)
    reader = LogReader(str(path / "log"))
    assert [f.lsn for f in reader.frames(after_lsn=9)] == [10, 11, 12, 13]
    assert reader.end_lsn == 13


@pytest.mark.parametrize("mapped", [True, False])
def test_the_last_frame_check_reads_its_bytes_mapped_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    """The clean open's last-frame checksum is taken over a read-only mapping of the bytes
    (no copy) from ``map_min`` bytes on; below that, or where the file cannot be mapped, it
    reads them. Each equals the checksum of the bytes read (the oracle), for ranges that
    start anywhere in a page, and empty ones."""
    import mmap
    import zlib

    from mmsb.storage import log

    if not mapped:

        def refuse(*args: object, **kwargs: object) -> mmap.mmap:
            raise OSError("cannot map")

        monkeypatch.setattr(log.mmap, "mmap", refuse)
    data = np.random.default_rng(4).integers(0, 256, 3 * 4096 + 77, dtype=np.uint8).tobytes()
    path = tmp_path / "seg"
    path.write_bytes(data)
    with open(path, "rb") as f:
        for start, end in ((0, len(data)), (1, 4096), (4095, 4097), (4096, 8192),
                           (5000, len(data)), (9000, 9000)):  # fmt: skip
            want = zlib.crc32(data[start:end])
            assert log._mapped_crc(f, start, end, map_min=0) == want, (start, end)
            assert log._mapped_crc(f, start, end) == want, (start, end)  # small: read
