"""Typed payloads on the batch path: ``apply_batch`` (and ``apply``, ``tick``) hold rows to
the rule ``write`` holds typed arrays to.

The rule: a payload built from a numpy array of any dtype but ``uint8`` is *typed* and must
have its page's dtype, at an offset and over a length that are multiples of the itemsize.
Bytes-like data and uint8 arrays are raw bytes and may go anywhere in a page of any dtype.
A rejected batch changes nothing: the page table, the arena and the log files stay as they
were. The compiled check (``commit_kernels.check_rows``) and the numpy oracle that
words the error (``State.validate``) are held to the same verdict on random batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import Delta, DeltaBatch, InvalidDeltaError
from mmsb.engine import commit_kernels as ck
from mmsb.types import DTYPE_ITEMSIZE, DTYPE_NAMES, MAX_PAGE_SIZE

PAGE = 64


def fingerprint(bus: mmsb.Bus) -> tuple[int, str, str]:
    """LSN, logical state and the bytes of every log segment."""
    h = hashlib.blake2b(digest_size=16)
    log_dir = Path(bus.path) / "log"
    for seg in sorted(log_dir.iterdir()):
        h.update(seg.name.encode())
        h.update(seg.read_bytes())
    return bus.lsn, bus.state_hash(), h.hexdigest()


def refused(bus: mmsb.Bus, attempt: Callable[[], Any], match: str) -> InvalidDeltaError:
    before = fingerprint(bus)
    with pytest.raises(InvalidDeltaError, match=match) as info:
        attempt()
    assert fingerprint(bus) == before  # nothing logged, applied or published
    return info.value


@pytest.fixture
def pages(bus: mmsb.Bus) -> dict[str, int]:
    out = {"raw": bus.create_page(PAGE)}
    for name in ("float64", "int64", "float32", "int16"):
        out[name] = bus.create_page(PAGE, dtype=name)
    return out


# -- the reported cases ---------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_int64_rows_on_a_float64_page_are_refused(
    bus: mmsb.Bus, pages: dict[str, int], workers: int
) -> None:
    f64, i64 = pages["float64"], pages["int64"]
    good = np.arange(4, dtype=np.int64).reshape(2, 2)
    batch = DeltaBatch.from_ranges([i64, f64], [0, 16], good)
    err = refused(
        bus, lambda: bus.apply_batch(batch, workers=workers),
        rf"batch rows \[1\] do not fit the dtype of their page \(row 1: payload dtype int64 "
        rf"does not match page {f64} dtype float64 \(offset 16\)\)",
    )  # fmt: skip
    assert err.rows == [1]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_float64_row_three_bytes_into_its_page_is_refused(
    bus: mmsb.Bus, pages: dict[str, int], workers: int
) -> None:
    f64 = pages["float64"]
    rows = np.ones((3, 2))
    batch = DeltaBatch.from_ranges([f64, f64, f64], [0, 3, 11], rows)
    err = refused(
        bus, lambda: bus.apply_batch(batch, workers=workers),
        rf"batch rows \[1, 2\] do not fit .* \(row 1: offset 3 is not a multiple of page "
        rf"{f64}'s float64 itemsize 8\)",
    )  # fmt: skip
    assert err.rows == [1, 2]


def test_a_typed_row_whose_span_is_not_whole_items_is_refused(
    bus: mmsb.Bus, pages: dict[str, int]
) -> None:
    f64 = pages["float64"]
    # a sparse row: 8 set bits carry one float64, but the mask spans 10 bytes
    delta = Delta.sparse(f64, [1] * 8 + [0, 0], np.array([2.5]), 0)
    match = rf"row 0: length 10 at offset 0 is not a multiple of page {f64}'s float64"
    refused(bus, lambda: bus.apply_batch(DeltaBatch.from_deltas([delta])), match)
    refused(bus, lambda: bus.apply(delta), match)


def test_apply_and_tick_refuse_as_apply_batch_does(bus: mmsb.Bus, pages: dict[str, int]) -> None:
    f64 = pages["float64"]
    refused(bus, lambda: bus.apply(Delta.range(f64, np.arange(2, dtype=np.int64))),
            f"payload dtype int64 does not match page {f64} dtype float64")  # fmt: skip
    refused(bus, lambda: bus.apply(Delta.range(f64, np.ones(1), 4)),
            f"offset 4 is not a multiple of page {f64}'s float64 itemsize 8")  # fmt: skip
    bad = DeltaBatch.from_ranges([f64], [0], [np.arange(2, dtype=np.int64)])
    refused(bus, lambda: bus.tick(bad), "payload dtype int64 does not match")
    bus.tick(DeltaBatch.from_ranges([f64], [8], [np.array([1.5, 2.5])]))
    assert bus.read(f64)[1:3].tolist() == [1.5, 2.5]


def test_a_bad_row_after_good_ones_keeps_the_whole_batch_out(
    bus: mmsb.Bus, pages: dict[str, int]
) -> None:
    f32 = pages["float32"]
    rows = [np.ones(2, np.float32)] * 50 + [np.ones(2, np.float64)] + [b"\x01"] * 49
    batch = DeltaBatch.from_ranges([f32] * 100, [8] * 100, rows)
    err = refused(bus, lambda: bus.apply_batch(batch, workers=2), r"batch rows \[50\]")
    assert err.rows == [50]
    assert not bus.read(f32).any()


# -- what stays allowed -----------------------------------------------------------------------


def test_typed_rows_of_the_page_dtype_at_whole_items_commit(
    bus: mmsb.Bus, pages: dict[str, int]
) -> None:
    f64, i16 = pages["float64"], pages["int16"]
    batch = DeltaBatch.concat([
        DeltaBatch.from_ranges([f64, f64], [0, 48], np.array([[1.0, 2.0], [3.0, 4.0]])),
        DeltaBatch.from_ranges([i16], [2], [np.array([7, -7], np.int16)]),
        DeltaBatch.from_deltas([Delta.dense(f64, [1] * 8 + [0] * 8, np.array([9.0, 0.0]), 16)]),
    ])  # fmt: skip
    assert batch.dtypes.tolist() == [DTYPE_NAMES.index("float64")] * 2 + [
        DTYPE_NAMES.index("int16"), DTYPE_NAMES.index("float64")]  # fmt: skip
    bus.apply_batch(batch, workers=2)
    assert bus.read(f64).tolist() == [1.0, 2.0, 9.0, 0.0, 0.0, 0.0, 3.0, 4.0]
    assert bus.read(i16)[:3].tolist() == [0, 7, -7]


def test_raw_bytes_go_anywhere_on_every_path(bus: mmsb.Bus, pages: dict[str, int]) -> None:
    """Raw bytes carry no element type: ``write``, ``apply`` and ``apply_batch`` all take
    them at any offset of a typed page (the documented rule, the same on every path)."""
    f64 = pages["float64"]
    raw_u8 = np.array([1, 2, 3], np.uint8)
    bus.write(f64, b"\x01\x02\x03", offset=3)
    bus.write(f64, raw_u8, offset=5)
    bus.apply(Delta.range(f64, raw_u8, 11))
    bus.apply_batch(DeltaBatch.from_ranges([f64, f64], [19, 29], [b"abc", raw_u8]))
    bus.apply_batch(DeltaBatch.from_ranges([f64], [37], raw_u8.reshape(1, 3)))
    bus.apply_batch(DeltaBatch.from_deltas([Delta.dense(f64, [1, 0, 1], raw_u8, 45)]))
    assert bus.read(f64).view(np.uint8)[3:8].tolist() == [1, 2, 1, 2, 3]


@pytest.mark.parametrize(
    ("page", "data", "offset"),
    [
        ("float64", np.ones(2), 0), ("float64", np.ones(2), 8), ("float64", np.ones(2), 4),
        ("float64", np.ones(2, np.float32), 0), ("float32", np.ones(2, np.float32), 2),
        ("float32", np.ones(2, np.float32), 4), ("int16", np.ones(3, np.int16), 6),
        ("int16", np.ones(3, np.int16), 7), ("raw", np.ones(2, np.int8), 0),
        ("raw", np.ones(2, np.uint8), 3), ("int64", np.ones(1, np.int64), 56),
        ("int64", b"\x00" * 5, 1), ("float64", np.ones(1, ">f8"), 0),
    ],
)  # fmt: skip
def test_write_and_apply_batch_agree(
    bus: mmsb.Bus, pages: dict[str, int], page: str, data: Any, offset: int
) -> None:
    pid = pages[page]

    def outcome(attempt: Callable[[], Any]) -> bool:
        try:
            attempt()
        except InvalidDeltaError:
            return False
        return True

    by_write = outcome(lambda: bus.write(pid, data, offset=offset))
    by_apply = outcome(lambda: bus.apply(Delta.range(pid, data, offset)))

    def batch() -> None:
        bus.apply_batch(DeltaBatch.from_ranges([pid], [offset], [data]))

    assert by_write == by_apply == outcome(batch)


def test_dtypes_follow_rows_through_the_constructors() -> None:
    f64 = DTYPE_NAMES.index("float64")
    b = DeltaBatch.from_ranges([1, 2], [0, 8], [np.ones(1), b"12345678"])
    assert b.dtypes.tolist() == [f64, 0]
    assert [d.dtype for d in b] == ["float64", None]
    again = DeltaBatch.from_deltas(list(b))
    assert again.dtypes.tolist() == [f64, 0]
    both = DeltaBatch.concat([b, DeltaBatch.from_ranges([3], [0], np.ones((1, 2), np.int32))])
    assert both.dtypes.tolist() == [f64, 0, DTYPE_NAMES.index("int32")]
    assert DeltaBatch.empty().dtypes.size == 0
    assert DeltaBatch.from_ranges([1], [0], np.ones((1, 4), np.uint8)).dtypes.tolist() == [0]
    merged = Delta.range(1, np.ones(1), 8).merge(Delta.range(1, np.ones(1), 0))
    assert merged.dtype == "float64"


def test_coalesce_keeps_typed_rows_whole_and_refuses_two_dtypes_on_a_page() -> None:
    f64 = DTYPE_NAMES.index("float64")
    # a raw masked byte past a float64 row on its page: the merged row spans whole items
    b = DeltaBatch.from_deltas([
        Delta.range(1, np.array([1.0]), 8),
        Delta.dense(1, [0, 0, 1], b"xyz", 17),
        Delta.range(2, b"ab", 3),
    ])  # fmt: skip
    c = b.coalesce()
    assert c.dtypes.tolist() == [f64, 0]
    assert (c.offsets.tolist(), c.lengths.tolist(), c.kinds.tolist()) == ([8, 3], [16, 2], [1, 0])
    assert bytes(c[0].mask) == b"\x01" * 8 + b"\x00\x00\x00\x01" + b"\x00" * 4  # byte 19
    mixed = DeltaBatch.from_ranges([4, 4], [0, 8], [np.ones(1), np.ones(2, np.int32)])
    with pytest.raises(InvalidDeltaError, match="page 4 with payloads of dtypes float64, int32"):
        mixed.coalesce()


def test_payloads_of_a_dtype_no_page_can_have_are_refused_when_built() -> None:
    with pytest.raises(InvalidDeltaError, match="payloads has dtype >f8, which no page can have"):
        DeltaBatch.from_ranges([1], [0], np.ones((1, 2), ">f8"))
    with pytest.raises(InvalidDeltaError, match="payload 0 has dtype datetime64"):
        DeltaBatch.from_ranges([1], [0], [np.zeros(1, "datetime64[s]")])
    with pytest.raises(InvalidDeltaError, match="row 0 has dtype >i4"):
        DeltaBatch.from_deltas([Delta.range(1, np.ones(1, ">i4"))])


def test_a_forged_dtype_code_is_a_structure_error(bus: mmsb.Bus, pages: dict[str, int]) -> None:
    batch = DeltaBatch.from_ranges([pages["raw"]], [0], [b"ab"])
    batch.dtypes = np.array([len(DTYPE_NAMES)], np.uint8)
    assert batch.structure_problem() == "unknown payload dtype code in rows [0]"
    refused(bus, lambda: bus.apply_batch(batch), "unknown payload dtype code")


# -- the compiled check against the oracle ----------------------------------------------------


def random_rows(
    rng: np.random.Generator, page_ids: np.ndarray, n: int, page_codes: np.ndarray
) -> DeltaBatch:
    """Rows on random pages (some unknown), of random or matching dtype codes, at offsets
    and lengths that are often but not always whole items."""
    pids = rng.choice(np.append(page_ids, [0, page_ids.max() + 5]), n).astype(np.int64)
    known = np.isin(pids, page_ids)
    codes = rng.integers(0, len(DTYPE_NAMES), n).astype(np.uint8)
    match = known & (rng.random(n) < 0.8)
    codes[match] = page_codes[pids[match]]
    codes[rng.random(n) < 0.2] = 0
    item = DTYPE_ITEMSIZE[codes]
    lengths = item * rng.integers(1, 3, n)
    offsets = item * rng.integers(0, 4, n)
    skew = rng.random(n) < 0.05
    offsets[skew] += rng.integers(1, 3, int(skew.sum()))
    lskew = rng.random(n) < 0.05
    lengths[lskew] += 1
    pids[pids <= 0] = 1 + page_ids.max() + 7  # structure stays valid: page ids are positive
    pstarts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    payload = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    return DeltaBatch(
        pids, offsets.astype(np.int64), lengths.astype(np.int64), np.zeros(n, np.uint8), pstarts,
        lengths.astype(np.int64), np.full(n, -1, np.int64), payload, np.zeros(0, np.uint8),
        np.zeros(n, np.uint16), ("t",), np.full(n, -1, np.int32), (), codes,
    )  # fmt: skip


def fast_verdict(state: Any, batch: DeltaBatch) -> bool:
    n = len(batch)
    status = ck.check_rows(
        0, n, batch.page_ids, batch.offsets, batch.lengths, batch.kinds, batch.pstarts,
        batch.plens, batch.mstarts, batch.source_idx, batch.meta_idx, batch.payload.size,
        batch.mask, len(batch.sources), len(batch.metas), MAX_PAGE_SIZE, state.next_page_id,
        state.live, state.size, batch.dtypes, state.dtype, DTYPE_ITEMSIZE,
    )  # fmt: skip
    return bool(status == ck.OK)


def oracle_error(state: Any, batch: DeltaBatch) -> str | None:
    try:
        state.validate(batch)
    except mmsb.MMSBError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("seed", range(3))
def test_the_kernel_and_the_oracle_agree_on_random_batches(bus: mmsb.Bus, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = []
    for name in DTYPE_NAMES:
        ids += bus.create_pages(2, 64, dtype=name).tolist()
    bus.delete_page(ids[3])
    state = bus._state
    assert state is not None
    page_ids = np.array(ids, np.int64)
    verdicts = {True: 0, False: 0}
    for _ in range(300):
        batch = random_rows(rng, page_ids, int(rng.integers(1, 12)), state.dtype)
        assert batch.structure_problem() is None
        fast, oracle = fast_verdict(state, batch), oracle_error(state, batch)
        assert fast == (oracle is None), oracle
        verdicts[fast] += 1
    assert min(verdicts.values()) > 50  # both verdicts are common, so a disagreement shows
    # and through the bus, with one worker and two: refused exactly when the oracle refuses,
    # with its words, and then nothing changed
    for _ in range(60):
        batch = random_rows(rng, page_ids, int(rng.integers(1, 12)), state.dtype)
        expected = oracle_error(state, batch)
        for workers in (1, 2):
            before = fingerprint(bus)
            try:
                bus.apply_batch(batch, workers=workers)
                got = None
            except mmsb.MMSBError as exc:
                got = str(exc)
                assert fingerprint(bus) == before
            assert got == expected
