"""The slot allocator of the page table: first fit, coalescing, the moving end, zeroing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsb import DeltaBatch, InvalidArgumentError, InvalidDeltaError, PageNotFoundError
from mmsb.history import copy_state
from mmsb.storage.arena import MemoryArena
from mmsb.storage.state import ALIGN, State, aligned, zeroed
from mmsb.types import DTYPE_NAMES

U8 = DTYPE_NAMES.index("uint8")
F64 = DTYPE_NAMES.index("float64")


def new_state() -> State:
    return State(MemoryArena())


def create(state: State, size: int, n: int = 1) -> list[int]:
    first = state.create(n, size, U8, 0, None)
    return list(range(first, first + n))


def delete(state: State, *ids: int) -> None:
    state.delete(np.array(ids, np.int64))


def gaps(state: State) -> list[tuple[int, int]]:
    return list(zip(state.gap_start.tolist(), state.gap_len.tolist(), strict=True))


def fill(state: State, pids: list[int]) -> None:
    """Write a non-zero byte pattern (1 + id % 255) over the whole of each page."""
    sizes = [int(state.size[p]) for p in pids]
    batch = DeltaBatch.from_ranges(
        pids, [0] * len(pids), [bytes([1 + p % 255]) * n for p, n in zip(pids, sizes, strict=True)]
    )
    state.validate(batch)
    state.apply(batch)


def expected_free(state: State) -> list[tuple[int, int]]:
    """Free regions of [0, end) worked out from the page table alone, byte by byte."""
    used = np.zeros(state.end + 2, bool)
    used[0] = used[-1] = True  # sentinels around [0, end)
    for pid in state.live_ids().tolist():
        s = int(state.slot[pid])
        used[1 + s : 1 + s + int(aligned(int(state.size[pid])))] = True
    edges = np.diff(used.astype(np.int8))
    starts = np.nonzero(edges == -1)[0]  # used -> free
    stops = np.nonzero(edges == 1)[0]  # free -> used
    return [(int(a), int(b - a)) for a, b in zip(starts, stops, strict=True)]


def check_invariants(state: State) -> None:
    ids = state.live_ids()
    assert state.live_count == ids.size
    starts = state.slot[ids]
    ends = starts + aligned(state.size[ids])
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    assert (starts % ALIGN == 0).all()
    assert (starts >= 0).all()
    if ids.size:
        assert int(ends.max()) == state.end  # the end is the end of the last slot
        assert (ends[:-1] <= starts[1:]).all(), "slots overlap"
    else:
        assert state.end == 0
    assert gaps(state) == expected_free(state)
    assert (state.gap_len > 0).all()
    # every byte outside live slots reads zero, beyond the end too
    free = np.ones(state.arena.capacity, bool)
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        free[s:e] = False
    assert not state.arena.buf[free].any(), "free bytes are not zero"


# -- first fit ------------------------------------------------------------------------


def test_pages_are_packed_in_order_and_aligned() -> None:
    st_ = new_state()
    a, b, c = create(st_, 10), create(st_, 8), create(st_, 1)
    assert st_.slot[[a[0], b[0], c[0]]].tolist() == [0, 16, 24]
    assert st_.end == 32
    assert gaps(st_) == []
    check_invariants(st_)


def test_deleted_space_is_reused_first_fit() -> None:
    st_ = new_state()
    ids = create(st_, 16, 4)
    delete(st_, ids[1])
    assert gaps(st_) == [(16, 16)]
    (new,) = create(st_, 16)
    assert st_.slot[new] == 16
    assert gaps(st_) == []
    assert st_.end == 64
    check_invariants(st_)


def test_smaller_page_takes_the_front_of_a_gap() -> None:
    st_ = new_state()
    ids = create(st_, 32, 3)
    delete(st_, ids[1])
    (small,) = create(st_, 8)
    assert st_.slot[small] == 32
    assert gaps(st_) == [(40, 24)]
    check_invariants(st_)


def test_first_gap_that_fits_wins_in_address_order() -> None:
    st_ = new_state()
    ids = create(st_, 16, 6)  # slots 0, 16, ..., 80
    delete(st_, ids[0])  # gap (0, 16): too small for 24
    delete(st_, ids[2], ids[3])  # gap (32, 32)
    delete(st_, ids[4])  # grows it to (32, 48)
    assert gaps(st_) == [(0, 16), (32, 48)]
    (big,) = create(st_, 24)
    assert st_.slot[big] == 32
    (tiny,) = create(st_, 4)
    assert st_.slot[tiny] == 0  # the lowest gap that fits
    check_invariants(st_)


def test_a_page_too_big_for_every_gap_goes_to_the_end() -> None:
    st_ = new_state()
    ids = create(st_, 16, 3)
    delete(st_, ids[1])
    (big,) = create(st_, 40)
    assert st_.slot[big] == 48
    assert st_.end == 88
    assert gaps(st_) == [(16, 16)]
    check_invariants(st_)


def test_many_pages_fill_several_gaps_then_the_end() -> None:
    st_ = new_state()
    ids = create(st_, 8, 10)
    delete(st_, ids[1], ids[2])  # gap of two slots
    delete(st_, ids[5])  # gap of one slot
    new = create(st_, 8, 5)
    assert st_.slot[new].tolist() == [8, 16, 40, 80, 88]
    assert gaps(st_) == []
    check_invariants(st_)


# -- coalescing and the end -------------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (0, 2, 1), (1, 0, 2), (1, 2, 0)])
def test_adjacent_free_slots_coalesce(order: tuple[int, int, int]) -> None:
    st_ = new_state()
    ids = create(st_, 16, 5)
    for k in order:
        delete(st_, ids[1 + k])
        check_invariants(st_)
    assert gaps(st_) == [(16, 48)]
    assert st_.end == 80


def test_end_moves_back_when_the_last_page_goes() -> None:
    st_ = new_state()
    ids = create(st_, 16, 4)
    delete(st_, ids[3])
    assert st_.end == 48
    assert gaps(st_) == []
    check_invariants(st_)


def test_end_moves_back_over_a_gap_before_the_last_page() -> None:
    st_ = new_state()
    ids = create(st_, 16, 4)
    delete(st_, ids[1])
    delete(st_, ids[2])
    assert gaps(st_) == [(16, 32)]
    delete(st_, ids[3])
    assert st_.end == 16
    assert gaps(st_) == []
    delete(st_, ids[0])
    assert st_.end == 0
    (again,) = create(st_, 8)
    assert st_.slot[again] == 0
    check_invariants(st_)


def test_large_delete_rebuilds_gaps() -> None:
    st_ = new_state()
    ids = create(st_, 8, 200)
    gone = ids[10:150:2]  # 70 pages: more than the incremental path handles
    delete(st_, *gone)
    assert len(gaps(st_)) == 70
    check_invariants(st_)
    delete(st_, *ids[150:])
    check_invariants(st_)
    assert st_.end == 150 * 8


# -- zeroing ------------------------------------------------------------------------------


def test_freed_bytes_are_zero_and_reused_pages_start_zeroed() -> None:
    st_ = new_state()
    a, b, c = create(st_, 24, 3)
    fill(st_, [a, b, c])
    slot_b = int(st_.slot[b])
    delete(st_, b)
    assert not st_.arena.buf[slot_b : slot_b + 24].any()
    (d,) = create(st_, 24)
    assert st_.slot[d] == slot_b
    assert st_.read(d).tobytes() == bytes(24)
    assert st_.read(a).tobytes() == bytes([1 + a]) * 24
    assert st_.read(c).tobytes() == bytes([1 + c]) * 24
    check_invariants(st_)


def test_delete_zeroes_the_alignment_padding_too() -> None:
    st_ = new_state()
    (a,) = create(st_, 3)
    st_.arena.buf[0:8] = 0xFF  # bytes beyond the page's size but inside its slot
    delete(st_, a)
    assert not st_.arena.buf[:8].any()


def test_arena_grows_as_pages_are_added() -> None:
    st_ = new_state()
    create(st_, 1 << 20, 3)
    assert st_.arena.capacity >= 3 << 20
    check_invariants(st_)


# -- page table lookups --------------------------------------------------------------------


def test_require_distinguishes_deleted_and_unknown_pages() -> None:
    st_ = new_state()
    a, _b = create(st_, 8, 2)
    delete(st_, a)
    with pytest.raises(PageNotFoundError, match=f"page {a} was deleted"):
        st_.require(a)
    with pytest.raises(PageNotFoundError, match="page 3 does not exist"):
        st_.require(3)
    with pytest.raises(PageNotFoundError, match="page 0 does not exist"):
        st_.require(0)
    with pytest.raises(PageNotFoundError, match="page id must be an integer"):
        st_.require("2")


def test_page_ids_are_never_reused() -> None:
    st_ = new_state()
    ids = create(st_, 8, 3)
    delete(st_, *ids)
    assert create(st_, 8) == [4]
    assert st_.live_ids().tolist() == [4]


def test_page_table_grows_past_its_capacity() -> None:
    st_ = State(MemoryArena(), capacity=4)
    ids = create(st_, 8, 3) + create(st_, 8, 5)
    assert ids == list(range(1, 9))
    assert st_.live_ids().tolist() == ids
    check_invariants(st_)


@pytest.mark.parametrize(
    ("size", "dtype", "message"),
    [
        (0, U8, r"page size must be in \[1, "),
        (-8, U8, r"page size must be in \[1, "),
        (2**32, U8, r"page size must be in \[1, "),
        (12, F64, "page size 12 is not a multiple of the float64 itemsize 8"),
        (8.0, U8, "page size must be an integer"),
    ],
)
def test_bad_page_shapes(size: object, dtype: int, message: str) -> None:
    st_ = new_state()
    with pytest.raises(InvalidArgumentError, match=message):
        st_.create(1, size, dtype, 0, None)  # type: ignore[arg-type]
    assert st_.next_page_id == 1
    assert st_.end == 0


def test_validate_rejects_rows_past_the_page_end() -> None:
    st_ = new_state()
    (a,) = create(st_, 8)
    batch = DeltaBatch.from_ranges([a, a], [0, 6], [b"ok", b"long"])
    with pytest.raises(InvalidDeltaError, match=r"rows \[1\] reach past the end") as info:
        st_.validate(batch)
    assert info.value.rows == [1]


# -- random sequences -----------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(1, 80), st.sampled_from([1, 7, 8, 16, 24, 40])),
        st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 90)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=50, deadline=None)
@given(ops, st.randoms(use_true_random=False))
def test_incremental_gaps_equal_rebuilt_gaps(sequence, rnd) -> None:
    st_ = new_state()
    live: set[int] = set()
    for op in sequence:
        if op[0] == "create":
            _, n, size = op
            new = create(st_, size, n)
            assert not live.intersection(new)
            live.update(new)
            assert not st_.gather(np.array(new, np.int64)).any()
            fill(st_, new)
        elif live:
            _, fraction, cap = op
            k = max(1, min(cap, int(len(live) * fraction)))
            gone = sorted(rnd.sample(sorted(live), k))
            delete(st_, *gone)
            live.difference_update(gone)
        assert st_.live_ids().tolist() == sorted(live)
        incremental = (gaps(st_), st_.end)
        rebuilt = copy_state(st_)
        rebuilt.rebuild_gaps()
        assert (gaps(rebuilt), rebuilt.end) == incremental
        check_invariants(st_)
    for pid in sorted(live):
        assert st_.read(pid).tobytes() == bytes([1 + pid % 255]) * int(st_.size[pid])


@pytest.mark.parametrize("n", [0, 5, 16_384, 100_000])
@pytest.mark.parametrize("dtype", [np.uint32, np.int64])
def test_zeroed_columns_are_writable_zeros_of_their_own(n: int, dtype: type) -> None:
    """``zeroed`` (an anonymous mapping from 64 KiB on) gives what ``np.zeros`` gives: the
    dtype, the length, zeros, writable, and memory no other column shares."""
    a, b = zeroed(n, dtype), zeroed(n, dtype)
    assert a.dtype == np.dtype(dtype) and a.shape == (n,) and not a.any()
    assert a.flags.writeable
    if n:
        a[-1] = 7
        assert int(a[-1]) == 7 and not b.any() and not np.shares_memory(a, b)


def test_zeroed_falls_back_to_numpy_where_nothing_can_be_mapped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mmap

    from mmsb.storage import state

    def refuse(*args: object) -> mmap.mmap:
        raise OSError("no memory to map")

    monkeypatch.setattr(state.mmap, "mmap", refuse)
    col = zeroed(100_000, np.uint32)
    assert col.shape == (100_000,) and not col.any() and col.flags.writeable
