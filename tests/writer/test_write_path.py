"""The per-call ``Bus.write`` path against the general batch path it shortcuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import mmsb
from mmsb.storage import codec
from mmsb.storage.log import LogReader


def _join(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in pieces)


@settings(max_examples=50, deadline=None)
@given(
    page_id=st.integers(1, 2**40),
    epoch=st.integers(1, 2**32 - 1),
    offset=st.integers(0, 4096),
    payload=st.binary(min_size=1, max_size=100),
    first=st.integers(1, 2**50),
    source=st.sampled_from(["api", "sensor", "ünïcode"]),
    meta=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)),
)
def test_single_range_encoding_equals_batch_encoding(
    page_id: int,
    epoch: int,
    offset: int,
    payload: bytes,
    first: int,
    source: str,
    meta: dict[str, int] | None,
) -> None:
    batch = mmsb.DeltaBatch.from_ranges(
        [page_id], [offset], [payload], source=source, metadata=meta
    )
    slow = _join(codec.encode_batch(batch, np.array([epoch], np.int64), first))
    meta_json = mmsb.types.encode_metadata(meta, "delta")
    fast = _join(
        codec.encode_single_range(page_id, epoch, offset, payload, first, source, meta_json)
    )
    assert fast == slow
    dec = codec.decode_batch(memoryview(fast))
    assert dec.first_delta_id == first
    assert dec.epochs.tolist() == [epoch]
    assert dec.batch.sources == (source,)
    assert bytes(dec.batch.payload) == payload


def test_write_and_apply_batch_leave_identical_logs_and_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ops = [
        (int(rng.integers(1, 5)), int(rng.integers(0, 48)), rng.bytes(int(rng.integers(1, 16))))
        for _ in range(200)
    ]
    clock_a = iter(range(1, 10_000))
    clock_b = iter(range(1, 10_000))
    with (
        mmsb.open(tmp_path / "a", clock=lambda: next(clock_a)) as a,
        mmsb.open(tmp_path / "b", clock=lambda: next(clock_b)) as b,
    ):
        for bus in (a, b):
            bus.create_pages(4, 64)
        for pid, off, data in ops:
            did_a = a.write(pid, data, offset=off, metadata={"k": off})
            commit = b.apply_batch(
                mmsb.DeltaBatch.from_ranges([pid], [off], [data], metadata={"k": off})
            )
            assert did_a == commit.first_delta_id
        assert a.state_hash() == b.state_hash()
        assert a.lsn == b.lsn
        frames_a = [bytes(f.payload) for f in LogReader(str(tmp_path / "a" / "log")).frames()]
        frames_b = [bytes(f.payload) for f in LogReader(str(tmp_path / "b" / "log")).frames()]
        assert frames_a == frames_b
        assert a.history(1) == b.history(1)
