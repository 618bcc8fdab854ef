"""The frame checksum split across threads against one pass of zlib.crc32."""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.engine import checksum, crc
from mmsb.storage.logsync import PeriodicSync
from mmsb.storage.logwriter import LogWriter


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_split_crc_equals_one_pass(parts: int) -> None:
    rng = np.random.default_rng(parts)
    sizes = [0, 1, 7, 4096, 1 << 20, 3, 700_001, 0, 65_536]
    pieces: list[bytes | memoryview] = [rng.integers(0, 256, n, dtype=np.uint8).data for n in sizes]
    pieces.insert(2, b"\x00" * 5)
    whole = b"".join(bytes(p) for p in pieces)
    assert checksum.crc32(pieces, parts) == zlib.crc32(whole)
    assert checksum.crc32(pieces, parts, split=True) == zlib.crc32(whole)
    assert checksum.crc32(pieces, parts, split=False) == zlib.crc32(whole)


def test_the_fast_crc_is_zlibs() -> None:
    rng = np.random.default_rng(9)
    for n in (0, 1, 15, 16, 17, 4095, 1 << 20, 3_000_001):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        assert crc.crc32(data) == zlib.crc32(data)
        assert crc.crc32(data[1:], 12345) == zlib.crc32(data[1:], 12345)


def test_spans_cover_the_stream_in_order() -> None:
    views = [memoryview(bytes(range(n % 256)) * 3) for n in (10, 0, 200, 1, 77)]
    whole = b"".join(bytes(v) for v in views)
    for parts in (1, 2, 5, 9):
        spans = checksum.spans([v for v in views if v.nbytes], parts)
        assert len(spans) == parts
        assert b"".join(bytes(v) for s in spans for v in s) == whole
        lengths = [sum(v.nbytes for v in s) for s in spans]
        assert max(lengths) - min(lengths) <= 1


def test_combine_matches_the_python_oracle() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        want = zlib.crc32(a + b)
        assert checksum.combine_slow(zlib.crc32(a), zlib.crc32(b), len(b)) == want
        assert checksum.combine(zlib.crc32(a), zlib.crc32(b), len(b)) == want


def test_a_multi_worker_frame_reads_back(tmp_path: Path) -> None:
    """Frames whose CRC was computed on two threads pass the reader's one-pass check."""
    rng = np.random.default_rng(3)
    with mmsb.open(tmp_path / "b") as bus:
        ids = bus.create_pages(256, 1024)
        for _ in range(3):
            n = 200_000
            bus.apply_batch(
                mmsb.DeltaBatch.from_ranges(
                    rng.choice(ids, n),
                    rng.integers(0, 1000, n),
                    rng.integers(0, 256, (n, 16), dtype=np.uint8),
                ),
                workers=2,
            )
        h = bus.state_hash()
    assert mmsb.verify(tmp_path / "b").ok
    with mmsb.open(tmp_path / "b") as again:
        assert again.state_hash() == h


def test_segments_are_preallocated_without_changing_their_size(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    w = LogWriter(str(log_dir), 1, segment_size=1 << 20, fsync_enabled=True)
    if not w.preallocate:
        pytest.skip("this filesystem does not reserve blocks")
    w.append(1, 1, 0, [b"x" * 1000])
    st = os.stat(w.path)
    assert st.st_size == w.pos  # readers and recovery go by the size
    assert st.st_blocks * 512 >= 1 << 20  # the segment's blocks are reserved
    path, pos = w.path, w.pos
    w.close()
    st = os.stat(path)
    assert st.st_size == pos and st.st_blocks * 512 < 1 << 20  # released at close


def test_backlog_wakes_the_sync_thread_early(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    w = LogWriter(str(log_dir), 1, segment_size=64 << 20, fsync_enabled=True)
    syncer = PeriodicSync(w, interval=3600.0, backlog=64 << 10)
    try:
        w.append(1, 1, 0, [b"y" * 1000])  # under the backlog: waits for the interval
        time.sleep(0.2)
        assert w.unsynced > 0
        w.append(1, 2, 0, [b"z" * (128 << 10)])  # over it: synced well before the hour
        deadline = time.monotonic() + 30
        while w.unsynced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.unsynced == 0
    finally:
        syncer.stop()
        w.close()
