"""Deltas and columnar batches: constructors, validation, stacking, coalescing, merging."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmsb import Delta, DeltaBatch, InvalidArgumentError, InvalidDeltaError
from mmsb.delta import DENSE, RANGE, SPARSE
from naive import Model

PAGE_SIZE = 32


def rows(batch: DeltaBatch) -> list[tuple[object, ...]]:
    """Everything a row means, in comparable form."""
    out = []
    for d in batch:
        mask = None if d.mask is None else d.mask.tobytes()
        out.append((d.page_id, d.offset, d.shape, d.payload.tobytes(), mask, d.source, d.metadata))
    return out


def model_with_pages(n: int, size: int = PAGE_SIZE) -> Model:
    m = Model()
    for _ in range(n):
        m.create(size)
    return m


# -- single deltas ----------------------------------------------------------------------


def test_range_delta_fields() -> None:
    d = Delta.range(3, b"abc", 5, source="sim", metadata={"why": "test"})
    assert (d.page_id, d.offset, d.shape, d.shape_name) == (3, 5, RANGE, "range")
    assert d.payload.tobytes() == b"abc"
    assert d.payload.dtype == np.uint8
    assert d.mask is None
    assert d.length == 3
    assert d.source == "sim"
    assert d.metadata == {"why": "test"}
    assert d.dtype is None


def test_range_delta_from_typed_array_keeps_raw_bytes_and_dtype() -> None:
    values = np.array([1.5, -2.0], dtype=np.float64)
    d = Delta.range(1, values, 8)
    assert d.dtype == "float64"
    assert d.length == 16
    assert d.payload.tobytes() == values.tobytes()


def test_range_delta_from_non_contiguous_array() -> None:
    values = np.arange(10, dtype=np.int32)[::2]
    d = Delta.range(1, values)
    assert d.payload.tobytes() == np.ascontiguousarray(values).tobytes()


def test_dense_delta_fields() -> None:
    d = Delta.dense(2, [True, False, True], b"xyz", 4)
    assert (d.shape, d.shape_name, d.offset, d.length) == (DENSE, "dense", 4, 3)
    assert d.mask is not None
    assert d.mask.tolist() == [1, 0, 1]
    assert d.payload.tobytes() == b"xyz"


def test_sparse_delta_fields() -> None:
    d = Delta.sparse(2, np.array([0, 1, 0, 1, 1], dtype=np.int8), b"abc", 1)
    assert (d.shape, d.shape_name, d.offset) == (SPARSE, "sparse", 1)
    assert d.length == 5  # the span is the mask, not the payload
    assert d.payload.tobytes() == b"abc"


def test_mask_from_bytes_treats_nonzero_as_set() -> None:
    d = Delta.dense(1, b"\x00\x07\x01", b"abc")
    assert d.mask is not None
    assert d.mask.tolist() == [0, 1, 1]


def test_dense_mask_payload_length_mismatch() -> None:
    with pytest.raises(InvalidDeltaError, match=r"page 4: mask has 3 entries but payload has 2"):
        Delta.dense(4, [1, 1, 1], b"ab")


def test_sparse_payload_must_match_set_bits() -> None:
    with pytest.raises(InvalidDeltaError, match=r"page 4: mask has 2 set bits but payload has 3"):
        Delta.sparse(4, [1, 0, 1], b"abc")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Delta.range(1, b""), "empty payload for page 1"),
        (lambda: Delta.range(1, np.zeros(0, np.float64)), "empty payload for page 1"),
        (lambda: Delta.dense(1, np.zeros(0, bool), b""), "empty mask for page 1"),
        (lambda: Delta.sparse(1, b"", b""), "empty mask for page 1"),
    ],
)
def test_empty_deltas_are_rejected(make, message: str) -> None:
    with pytest.raises(InvalidDeltaError, match=message):
        make()


@pytest.mark.parametrize("offset", [-1, -100])
def test_negative_offset(offset: int) -> None:
    with pytest.raises(InvalidDeltaError, match=rf"offset {offset} is out of range"):
        Delta.range(1, b"a", offset)


@pytest.mark.parametrize("offset", ["zero", "3", 2.0, 2.5, float("inf"), float("nan"), True, None])
def test_non_integer_offset(offset: object) -> None:
    # inf once raised a bare OverflowError (found by the long fuzz run); 2.5 was truncated
    with pytest.raises(InvalidDeltaError, match="offset must be an integer"):
        Delta.range(1, b"a", offset)  # type: ignore[arg-type]


def test_numpy_integer_offsets_are_integers() -> None:
    assert Delta.range(1, b"a", np.int32(7)).offset == 7
    assert Delta.range(1, b"a", np.uint64(8)).offset == 8


def test_offset_past_largest_page() -> None:
    with pytest.raises(InvalidDeltaError, match="ends past the largest page size"):
        Delta.range(1, b"ab", 2**32 - 2)


@pytest.mark.parametrize("page_id", [0, -3, 2**63])
def test_page_id_out_of_range(page_id: int) -> None:
    with pytest.raises(InvalidDeltaError, match=rf"page id {page_id} is out of range"):
        Delta.range(page_id, b"a")


@pytest.mark.parametrize("page_id", ["1", 1.0, True, None])
def test_page_id_must_be_an_integer(page_id: object) -> None:
    with pytest.raises(InvalidDeltaError, match="page id must be an integer"):
        Delta.range(page_id, b"a")  # type: ignore[arg-type]


def test_numpy_integer_page_id_is_accepted() -> None:
    assert Delta.range(np.uint32(7), b"a").page_id == 7


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"x": object()}, "delta metadata is not JSON-serialisable"),
        ({"x": float("nan")}, "delta metadata is not JSON-serialisable"),
        ({1: "a"}, "delta metadata must be a dict with str keys"),
        (["a"], "delta metadata must be a dict with str keys"),
    ],
)
def test_non_json_metadata(metadata: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Delta.range(1, b"a", metadata=metadata)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=message):
        Delta.dense(1, [1], b"a", metadata=metadata)  # type: ignore[arg-type]


def test_two_dimensional_payload() -> None:
    with pytest.raises(InvalidDeltaError, match=r"payload must be 1-D, got .* shape \(2, 3\)"):
        Delta.range(1, np.zeros((2, 3), np.uint8))


def test_two_dimensional_mask() -> None:
    with pytest.raises(InvalidDeltaError, match=r"mask must be 1-D, got shape \(2, 2\)"):
        Delta.dense(1, np.ones((2, 2), bool), b"abcd")


def test_float_mask_is_rejected() -> None:
    with pytest.raises(InvalidDeltaError, match="mask must be boolean or integer"):
        Delta.dense(1, np.array([1.0, 0.0]), b"ab")


@pytest.mark.parametrize("payload", ["text", [1, 2, 3], 5])
def test_payload_must_be_bytes_or_array(payload: object) -> None:
    with pytest.raises(InvalidDeltaError, match="payload must be bytes-like or a numpy array"):
        Delta.range(1, payload)


def test_object_array_payload_is_rejected() -> None:
    with pytest.raises(InvalidDeltaError, match="object dtype"):
        Delta.range(1, np.array([b"a", 1], dtype=object))


def test_source_must_be_a_short_str() -> None:
    with pytest.raises(InvalidDeltaError, match="source must be a str"):
        Delta.range(1, b"a", source=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidDeltaError, match="at most 255 bytes"):
        Delta.range(1, b"a", source="s" * 256)
    assert Delta.range(1, b"a", source="s" * 255).source == "s" * 255


# -- batches from columns -------------------------------------------------------------


def test_from_ranges_with_two_dimensional_uint8_rows() -> None:
    payloads = np.arange(12, dtype=np.uint8).reshape(3, 4)
    batch = DeltaBatch.from_ranges([1, 2, 1], [0, 8, 4], payloads, source="bulk")
    assert len(batch) == 3
    assert batch.structure_problem() is None
    assert not batch.has_masks
    assert rows(batch) == [
        (1, 0, RANGE, bytes([0, 1, 2, 3]), None, "bulk", None),
        (2, 8, RANGE, bytes([4, 5, 6, 7]), None, "bulk", None),
        (1, 4, RANGE, bytes([8, 9, 10, 11]), None, "bulk", None),
    ]


def test_from_ranges_with_typed_rows_takes_their_bytes() -> None:
    payloads = np.array([[1.0, 2.0], [3.0, 4.0]])
    batch = DeltaBatch.from_ranges(np.array([5, 6], np.uint64), [0, 16], payloads)
    assert batch.lengths.tolist() == [16, 16]
    assert batch[1].payload.tobytes() == payloads[1].tobytes()
    assert batch.page_ids.dtype == np.int64


@pytest.mark.parametrize("seed", range(3))
def test_from_ranges_of_a_2d_array_refuses_exactly_what_the_general_check_refuses(
    seed: int,
) -> None:
    """The 2-D array path checks only the page ids and offsets (the rest is right by
    construction); the same rows given as a list of arrays go through the general check.
    Both refuse the same batches with the same words, and build the same columns."""
    from mmsb.types import MAX_PAGE_SIZE

    rng = np.random.default_rng(seed)
    refused = 0
    for _ in range(300):
        n = int(rng.integers(1, 6))
        width = int(rng.choice([0, 1, 8, 24]))
        data = rng.integers(0, 256, (n, width), dtype=np.uint8)
        pids = rng.integers(1, 9, n)
        offs = rng.integers(0, 64, n)
        if rng.random() < 0.6:  # one bad cell, or one at the edge of the rules
            col = pids if rng.random() < 0.4 else offs
            col[int(rng.integers(0, n))] = int(rng.choice(
                [0, -1, -7, MAX_PAGE_SIZE - width, MAX_PAGE_SIZE - width + 1, MAX_PAGE_SIZE]
            ))  # fmt: skip
        try:
            general = DeltaBatch.from_ranges(pids, offs, list(data))
        except InvalidDeltaError as exc:
            with pytest.raises(InvalidDeltaError) as fast:
                DeltaBatch.from_ranges(pids, offs, data)
            assert str(fast.value) == str(exc) and fast.value.rows == exc.rows
            refused += 1
            continue
        batch = DeltaBatch.from_ranges(pids, offs, data)
        for name in ("page_ids", "offsets", "lengths", "pstarts", "plens", "payload"):
            assert np.array_equal(getattr(batch, name), getattr(general, name)), name
    assert refused > 50


def test_from_ranges_with_list_of_bytes_of_any_lengths() -> None:
    batch = DeltaBatch.from_ranges(
        [3, 1, 2], [0, 5, 1], [b"a", bytearray(b"bcd"), np.array([7, 8], np.uint8)],
        metadata={"step": 1},
    )  # fmt: skip
    assert batch.lengths.tolist() == [1, 3, 2]
    assert rows(batch) == [
        (3, 0, RANGE, b"a", None, "api", {"step": 1}),
        (1, 5, RANGE, b"bcd", None, "api", {"step": 1}),
        (2, 1, RANGE, bytes([7, 8]), None, "api", {"step": 1}),
    ]


def test_from_ranges_empty() -> None:
    batch = DeltaBatch.from_ranges([], [], [])
    assert len(batch) == 0
    assert list(batch) == []
    assert batch.structure_problem() is None


@pytest.mark.parametrize(
    ("pids", "offs", "payloads", "message"),
    [
        ([1, 2], [0], [b"a", b"b"], "2 page ids but 1 offsets"),
        ([1, 2], [0, 0], [b"a"], "2 page ids but 1 payloads"),
        ([1, 2], [0, 0], np.zeros((3, 2), np.uint8), "2 page ids but 3 payload rows"),
        ([1], [0], np.zeros(4, np.uint8), r"payloads must be a 2-D array .* shape \(4,\)"),
        ([[1]], [0], [b"a"], r"page_ids must be 1-D"),
        ([1.5], [0], [b"a"], "page_ids must be integers"),
        ([1], [0.5], [b"a"], "offsets must be integers"),
        ([1], [0], ["text"], "payload 0 must be bytes-like"),
    ],
)
def test_from_ranges_shape_errors(pids, offs, payloads, message: str) -> None:
    with pytest.raises(InvalidDeltaError, match=message):
        DeltaBatch.from_ranges(pids, offs, payloads)


@pytest.mark.parametrize(
    ("pids", "offs", "payloads", "message", "bad_rows"),
    [
        ([1, 0, 2], [0, 0, 0], [b"a", b"b", b"c"], r"invalid page id in rows \[1\]", [1]),
        ([1, 2, 3], [0, -1, -5], [b"a", b"b", b"c"], r"negative offset in rows \[1, 2\]", [1, 2]),
        ([1, 2], [0, 0], [b"a", b""], r"empty payload in rows \[1\]", [1]),
        ([1, 2], [0, 0], np.zeros((2, 0), np.uint8), r"empty payload in rows \[0, 1\]", [0, 1]),
    ],
)
def test_from_ranges_names_bad_rows(pids, offs, payloads, message: str, bad_rows) -> None:
    with pytest.raises(InvalidDeltaError, match=message) as info:
        DeltaBatch.from_ranges(pids, offs, payloads)
    assert info.value.rows == bad_rows


def test_from_ranges_rejects_non_json_metadata() -> None:
    with pytest.raises(InvalidArgumentError, match="delta metadata is not JSON-serialisable"):
        DeltaBatch.from_ranges([1], [0], [b"a"], metadata={"f": print})


def test_from_ranges_lists_many_bad_rows_briefly() -> None:
    with pytest.raises(InvalidDeltaError, match=r"rows \[0, 1, .*, 9 and 5 more\]") as info:
        DeltaBatch.from_ranges(np.zeros(15, np.int64), np.zeros(15, np.int64), [b"a"] * 15)
    assert info.value.rows == list(range(15))


# -- batches from deltas and concatenation ---------------------------------------------


def mixed_deltas() -> list[Delta]:
    return [
        Delta.range(1, b"abcd", 2, source="a"),
        Delta.dense(2, [1, 0, 1], b"xyz", 1, metadata={"k": 1}),
        Delta.sparse(1, [0, 1, 1, 0], b"pq", 0, source="b", metadata={"k": 2}),
        Delta.range(3, b"z", 0, source="a", metadata={"k": 1}),
    ]


def test_from_deltas_round_trips_every_row() -> None:
    deltas = mixed_deltas()
    batch = DeltaBatch.from_deltas(deltas)
    assert batch.structure_problem() is None
    assert batch.has_masks
    assert batch.sources == ("a", "api", "b")
    assert len(batch.metas) == 2  # equal metadata is stored once
    expected = [
        (
            d.page_id, d.offset, d.shape, d.payload.tobytes(),
            None if d.mask is None else d.mask.tobytes(), d.source, d.metadata,
        )
        for d in deltas
    ]  # fmt: skip
    assert rows(batch) == expected


def test_from_deltas_empty_and_wrong_type() -> None:
    assert len(DeltaBatch.from_deltas([])) == 0
    with pytest.raises(InvalidDeltaError, match=r"row 1 is a bytes, not a Delta") as info:
        DeltaBatch.from_deltas([Delta.range(1, b"a"), b"b"])  # type: ignore[list-item]
    assert info.value.rows == [1]


def test_batch_indexing() -> None:
    batch = DeltaBatch.from_deltas(mixed_deltas())
    assert batch[-1].page_id == 3
    assert rows(DeltaBatch.from_deltas([batch[-4]])) == rows(DeltaBatch.from_deltas([batch[0]]))
    with pytest.raises(IndexError, match="row 4 out of range for a batch of 4"):
        batch[4]
    assert "4 deltas" in repr(batch)


def test_concat_keeps_rows_sources_and_metadata() -> None:
    a = DeltaBatch.from_ranges([1, 2], [0, 1], [b"ab", b"c"], source="left", metadata={"n": 1})
    b = DeltaBatch.from_deltas(mixed_deltas())
    c = DeltaBatch.from_ranges([4], [3], [b"q"], source="right")
    joined = DeltaBatch.concat([a, DeltaBatch.empty(), b, c])
    assert joined.structure_problem() is None
    assert rows(joined) == rows(a) + rows(b) + rows(c)
    assert len(set(joined.sources)) == len(joined.sources)
    assert len(set(joined.metas)) == len(joined.metas)


def test_concat_of_masked_batches_rebases_mask_pool() -> None:
    first = DeltaBatch.from_deltas([Delta.dense(1, [1, 0], b"ab"), Delta.sparse(1, [1], b"c")])
    second = DeltaBatch.from_deltas([Delta.sparse(2, [0, 1, 1], b"de")])
    joined = DeltaBatch.concat([first, second])
    assert rows(joined) == rows(first) + rows(second)


def test_concat_trivial_cases() -> None:
    assert len(DeltaBatch.concat([])) == 0
    only = DeltaBatch.from_ranges([1], [0], [b"a"])
    assert rows(DeltaBatch.concat([only])) == rows(only)


# -- structure checks -------------------------------------------------------------------


def test_structure_problem_finds_inconsistent_columns() -> None:
    good = DeltaBatch.from_deltas(mixed_deltas())
    assert good.structure_problem() is None

    short = DeltaBatch.from_deltas(mixed_deltas())
    short.offsets = short.offsets[:-1]
    assert short.structure_problem() == "batch columns have different lengths"

    outside = DeltaBatch.from_deltas(mixed_deltas())
    outside.pstarts = outside.pstarts.copy()
    outside.pstarts[3] = outside.payload.size
    assert outside.structure_problem() == "payload slice outside the pool in rows [3]"

    span = DeltaBatch.from_deltas(mixed_deltas())
    span.plens = span.plens.copy()
    span.plens[0] = 1
    assert span.structure_problem() == "payload length differs from the span in rows [0]"

    no_mask = DeltaBatch.from_deltas(mixed_deltas())
    no_mask.mstarts = no_mask.mstarts.copy()
    no_mask.mstarts[1] = -1
    assert no_mask.structure_problem() == "mask slice outside the pool in rows [1]"

    bits = DeltaBatch.from_deltas(mixed_deltas())
    bits.mask = bits.mask.copy()
    bits.mask[bits.mstarts[2]] = 1  # sparse row 2 now has 3 set bits for 2 payload bytes
    problem = bits.structure_problem()
    assert problem is not None
    assert "sparse payload length differs from the set mask bits in rows [2]" in problem
    assert "row 2: 2 bytes, 3 bits" in problem


# -- expand, coalesce and merge against the naive model -------------------------------


@st.composite
def deltas(draw: st.DrawFn, pages: int = 3) -> Delta:
    pid = draw(st.integers(1, pages))
    shape = draw(st.sampled_from([RANGE, DENSE, SPARSE]))
    length = draw(st.integers(1, 12))
    offset = draw(st.integers(0, PAGE_SIZE - length))
    source = draw(st.sampled_from(["api", "x", "y"]))
    metadata = draw(st.sampled_from([None, {"a": 1}, {"b": [1, 2]}]))
    if shape == RANGE:
        data = draw(st.binary(min_size=length, max_size=length))
        return Delta.range(pid, data, offset, source=source, metadata=metadata)
    mask = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    if shape == DENSE:
        data = draw(st.binary(min_size=length, max_size=length))
        return Delta.dense(pid, mask, data, offset, source=source, metadata=metadata)
    data = draw(st.binary(min_size=sum(mask), max_size=sum(mask)))
    return Delta.sparse(pid, mask, data, offset, source=source, metadata=metadata)


batches = st.lists(deltas(), min_size=1, max_size=12).map(DeltaBatch.from_deltas)


@settings(max_examples=50, deadline=None)
@given(batches)
def test_coalesce_has_the_same_effect_as_the_batch(batch: DeltaBatch) -> None:
    original = model_with_pages(3)
    original.apply_batch(batch)
    coalesced = batch.coalesce()
    assert coalesced.structure_problem() is None
    ids = coalesced.page_ids.tolist()
    assert ids == sorted(set(ids))  # one row per page, in page order
    folded = model_with_pages(3)
    folded.apply_batch(coalesced)
    assert folded.pages == original.pages
    for d in coalesced:
        # each row starts and ends on a byte the batch really writes
        written = d.mask if d.mask is not None else np.ones(d.length, np.uint8)
        assert written[0] and written[-1]
        if d.shape == RANGE:
            continue
        assert d.shape == DENSE


@settings(max_examples=50, deadline=None)
@given(batches)
def test_coalesce_takes_source_and_metadata_of_each_pages_last_row(batch: DeltaBatch) -> None:
    last: dict[int, Delta] = {}
    for d in batch:
        last[d.page_id] = d
    for d in batch.coalesce():
        assert d.source == last[d.page_id].source
        assert d.metadata == last[d.page_id].metadata


@settings(max_examples=50, deadline=None)
@given(batches)
def test_expand_lists_every_written_byte_in_order(batch: DeltaBatch) -> None:
    expected = model_with_pages(3)
    expected.apply_batch(batch)
    got = model_with_pages(3)
    pages, pos, vals = batch.expand()
    for p, i, v in zip(pages.tolist(), pos.tolist(), vals.tolist(), strict=True):
        got.pages[p][i] = v
    assert got.pages == expected.pages
    masked_out = sum(int((d.mask == 0).sum()) for d in batch if d.mask is not None)
    assert pages.size == int(batch.lengths.sum()) - masked_out


def test_coalesce_contiguous_writes_become_one_range() -> None:
    batch = DeltaBatch.from_deltas(
        [Delta.range(5, b"aaaa", 0), Delta.range(5, b"bb", 3), Delta.range(2, b"c", 9)]
    )
    assert rows(batch.coalesce()) == [
        (2, 9, RANGE, b"c", None, "api", None),
        (5, 0, RANGE, b"aaabb", None, "api", None),
    ]


def test_coalesce_with_a_hole_becomes_dense() -> None:
    batch = DeltaBatch.from_deltas([Delta.range(1, b"ab", 0), Delta.sparse(1, [0, 1], b"z", 2)])
    assert rows(batch.coalesce()) == [
        (1, 0, DENSE, b"ab\x00z", bytes([1, 1, 0, 1]), "api", None),
    ]


def test_coalesce_of_batch_that_writes_nothing() -> None:
    batch = DeltaBatch.from_deltas([Delta.dense(1, [0, 0], b"ab"), Delta.sparse(2, [0], b"")])
    assert len(batch.coalesce()) == 0
    mixed = DeltaBatch.from_deltas([Delta.dense(1, [0, 0], b"ab"), Delta.range(2, b"x", 1)])
    assert rows(mixed.coalesce()) == [(2, 1, RANGE, b"x", None, "api", None)]


def test_coalesce_empty_batch() -> None:
    assert len(DeltaBatch.empty().coalesce()) == 0


@settings(max_examples=50, deadline=None)
@given(deltas(pages=1), deltas(pages=1))
def test_merge_equals_applying_both(first: Delta, later: Delta) -> None:
    expected = model_with_pages(1)
    expected.apply_delta(first)
    expected.apply_delta(later)
    merged = first.merge(later)
    got = model_with_pages(1)
    got.apply_delta(merged)
    assert got.pages == expected.pages
    assert merged.page_id == 1
    assert merged.source == later.source
    assert merged.metadata == later.metadata


def test_merge_ors_masks_and_later_bytes_win() -> None:
    a = Delta.dense(1, [1, 1, 0, 0], b"aaaa", 0)
    b = Delta.dense(1, [0, 1, 1, 0], b"bbbb", 0, source="later")
    m = a.merge(b)
    assert m.offset == 0
    assert m.shape == RANGE  # bytes 0..2 written: one contiguous run
    assert m.payload.tobytes() == b"abb"
    assert m.source == "later"


def test_merge_of_deltas_that_write_nothing() -> None:
    a = Delta.dense(1, [0, 0], b"ab")
    m = a.merge(Delta.sparse(1, [0], b""))
    got = model_with_pages(1)
    got.apply_delta(m)
    assert got.pages[1] == bytearray(PAGE_SIZE)


def test_merge_rejects_different_pages() -> None:
    with pytest.raises(InvalidDeltaError, match=r"different pages \(1 and 2\)"):
        Delta.range(1, b"a").merge(Delta.range(2, b"b"))
