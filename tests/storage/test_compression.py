"""Compressed log frames (open(..., compression="zstd")): every reader of the log gets the
same payload as from an uncompressed bus (replay, crash recovery, at(), history, verify,
live readers, the history table), small or incompressible payloads stay as they are, and a
missing codec or a damaged compressed payload is a typed error."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb.storage.log import FLAG_ZSTD, LogReader


def workload(bus: mmsb.Bus, seed: int = 3) -> list[int]:
    rng = np.random.default_rng(seed)
    grid = bus.create_page(64 * 1024, dtype="float64", name="grid")  # 512 KiB
    small = bus.create_pages(32, 256)
    lsns = []
    u = np.zeros(8192)
    for step in range(12):
        u[rng.integers(0, 8192, 64)] += 1.0  # sparse changes: compresses well
        bus.write(grid, u)
        noise = rng.integers(0, 256, (32, 200), dtype=np.uint8)  # random: does not
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(small, np.zeros(32, np.int64), noise))
        bus.write(int(small[step]), b"tiny")  # below the size worth compressing
        lsns.append(bus.lsn)
    return lsns


def log_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "log").glob("*.seg"))


def test_a_compressed_bus_reads_back_exactly_as_a_plain_one(tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    with (
        mmsb.open(plain, sync="off", clock=lambda: 1) as a,
        mmsb.open(packed, sync="off", compression="zstd", clock=lambda: 1) as b,
    ):
        lsns = workload(a)
        assert workload(b) == lsns
        assert a.state_hash() == b.state_hash()
        for lsn in lsns[::3]:
            assert a.at(lsn).state_hash() == b.at(lsn).state_hash()
        assert a.history("grid") == b.history("grid")
        ta, tb = a.history_table(), b.history_table()
        assert ta.drop_columns(["time"]).equals(tb.drop_columns(["time"]))
    flags = [f.flags for f in LogReader(str(packed / "log")).frames()]
    assert any(f & FLAG_ZSTD for f in flags) and not all(f & FLAG_ZSTD for f in flags)
    assert log_bytes(packed) < log_bytes(plain) * 0.8
    for path in (plain, packed):
        with mmsb.open(path, verify_on_open="full") as bus:
            assert bus.verify().ok
    with mmsb.open(plain, readonly=True) as a, mmsb.open(packed, readonly=True) as b:
        assert a.state_hash() == b.state_hash()


def test_crash_recovery_and_live_readers_decode_compressed_frames(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    bus = mmsb.open(path, sync="normal", compression="zstd")
    with mmsb.open(path, readonly=True) as reader:
        workload(bus)
        want = bus.state_hash()
        assert reader.refresh() == bus.lsn and reader.state_hash() == want
    bus.sync_now()
    bus.abandon()
    with mmsb.open(path) as again:  # no compression asked: the log is read all the same
        assert again.recovery.mode == "replay" and again.state_hash() == want


def test_a_damaged_compressed_payload_is_corruption_not_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", compression="zstd") as bus:
        workload(bus)
    frame = next(f for f in LogReader(str(path / "log")).frames() if f.flags & FLAG_ZSTD)
    seg = path / "log" / frame.segment
    data = bytearray(seg.read_bytes())
    from mmsb.engine.crc import crc32
    from mmsb.storage.log import FRAME_HEADER, FRAME_HEADER_SIZE

    # rewrite the stored bytes as a valid checksum over bytes that do not decompress, so
    # only the decoder can notice
    head = FRAME_HEADER.unpack_from(data, frame.offset)
    length = head[5]
    body = frame.offset + FRAME_HEADER_SIZE
    data[body + 4 : body + length] = b"\xff" * (length - 4)
    padded = bytes(data[body : body + length + (-length) % 8])
    fields = list(head)
    fields[6] = crc32(padded)
    raw = FRAME_HEADER.pack(*fields[:7], 0, 0)[:32]
    fields[7] = crc32(raw)
    data[frame.offset : frame.offset + FRAME_HEADER_SIZE] = FRAME_HEADER.pack(*fields)
    seg.write_bytes(bytes(data))
    (path / "state.clean").unlink()
    with pytest.raises(mmsb.CorruptLogError, match="does not decode"):
        mmsb.open(path)


def test_without_zstandard_the_option_and_the_log_say_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", compression="zstd") as bus:
        workload(bus)
    (path / "state.clean").unlink()
    real = builtins.__import__

    def no_zstd(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "zstandard":
            raise ImportError("no zstandard here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_zstd)
    with pytest.raises(mmsb.InvalidArgumentError, match=r"mmsb\[compress\]"):
        mmsb.open(tmp_path / "other", compression="zstd")
    assert not os.path.exists(tmp_path / "other" / "log")
    with pytest.raises(mmsb.FormatVersionError, match=r"mmsb\[compress\]"):
        mmsb.open(path)


def test_bad_compression_values_are_refused(tmp_path: Path) -> None:
    for bad in ("lz4", "ZSTD", 1, True):
        with pytest.raises(mmsb.InvalidArgumentError, match="compression"):
            mmsb.open(tmp_path / "b", compression=bad)


def test_after_a_miss_the_same_kind_of_payload_is_stored_without_trying(tmp_path: Path) -> None:
    from mmsb.storage.logwriter import SKIP_AFTER_MISS, LogWriter

    (tmp_path / "log").mkdir()
    log = LogWriter(str(tmp_path / "log"), 1, segment_size=1 << 24, fsync_enabled=False,
                    compression="zstd")  # fmt: skip
    calls = []
    real = log.compressor

    class Counting:
        def compress(self, data: bytes) -> bytes:
            calls.append(len(data))
            return real.compress(data)  # type: ignore[no-any-return]

    log.compressor = Counting()
    noise = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    zeros = bytes(8192 * 2)  # another size class: still tried, and compressed
    lsn = 0
    for _ in range(SKIP_AFTER_MISS + 2):
        lsn += 1
        log.append(1, lsn, 0, [noise])
        lsn += 1
        log.append(1, lsn, 0, [zeros])
    log.close()
    assert calls.count(8192) == 2  # the miss, then one retry after SKIP_AFTER_MISS skips
    assert calls.count(len(zeros)) == SKIP_AFTER_MISS + 2
    frames = list(LogReader(str(tmp_path / "log")).frames())
    assert [f.payload.tobytes() for f in frames[::2]] == [noise] * (SKIP_AFTER_MISS + 2)
    assert all(f.flags & FLAG_ZSTD for f in frames[1::2])
    assert log.stored_bytes < log.raw_bytes
