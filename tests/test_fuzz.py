"""Fuzzing the decoders and constructors that take untrusted or arbitrary input.

Targets: log segments (frame scanner), frame payloads replayed into a state (batch, create,
delete, graph), the checkpoint loader, the manifest parser, and the ``Delta``/``DeltaBatch``
constructors (including raw columns, as the bus receives them). For every input the only
exceptions allowed are :class:`mmsb.MMSBError` subclasses; whatever is applied to a state
writes only inside the pages the input targets (every other byte of the arena — guard pages
filled with a pattern, free space and the space past the end — is compared after each
input); a rejected input changes nothing (bytes and epochs); and no input hangs (a watchdog
aborts the run with a traceback).

The default run tries ``DEFAULT_EXAMPLES`` inputs per target; the ``slow`` suite tries
``LONG_EXAMPLES`` per target (over 10,000 in all).
"""

from __future__ import annotations

import faulthandler
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmsb
from mmsb import Delta, DeltaBatch, MMSBError
from mmsb.delta import DENSE, RANGE, SPARSE
from mmsb.storage import codec
from mmsb.storage.arena import MemoryArena
from mmsb.storage.checkpoint import load_state, write_state
from mmsb.storage.codec import BATCH, CREATE, DELETE, GRAPH
from mmsb.storage.log import (
    SEG_HEADER_SIZE,
    Frame,
    LogReader,
    encode_frame_header,
    encode_segment_header,
)
from mmsb.storage.manifest import MANIFEST, read_manifest
from mmsb.storage.recovery import apply_frame
from mmsb.storage.state import State

DEFAULT_EXAMPLES = 60
LONG_EXAMPLES = 2000
WATCHDOG_S = 600  # a run that takes longer than this is treated as a hang

GUARD, TARGET = 0xA5, 0x5A
# page layout of the canary state: guards around every target page, and one deleted page
# whose (zero) free slot sits between live pages
LAYOUT = ((64, GUARD), (8, TARGET), (64, GUARD), (100, TARGET), (24, None), (64, GUARD),
          (1, TARGET), (64, GUARD))  # fmt: skip
TARGETS = (2, 4, 7)
DELETED = 5


def canary_state() -> State:
    """A state whose pages are filled with known patterns (see ``LAYOUT``)."""
    state = State(MemoryArena())
    for size, fill in LAYOUT:
        pid = state.create(1, size, 0, 0, None)
        if fill is not None:
            state.raw(pid)[:] = fill
    state.delete(np.array([DELETED], np.int64))
    return state


def snapshot(state: State) -> tuple[np.ndarray, np.ndarray, int, int]:
    return (state.arena.buf.copy(), state.epoch.copy(), state.next_page_id,
            state.next_delta_id)  # fmt: skip


def page_ranges(state: State, pids: Any) -> np.ndarray:
    """A bool mask over the arena: the bytes of the given live pages."""
    allowed = np.zeros(state.arena.buf.size, bool)
    for pid in np.unique(np.asarray(pids, np.int64)).tolist():
        if state.is_live(pid):
            s = int(state.slot[pid])
            allowed[s : s + int(state.size[pid])] = True
    return allowed


def assert_only_written(state: State, before: np.ndarray, allowed: np.ndarray) -> None:
    after = state.arena.buf
    n = before.size
    assert after.size >= n
    changed = before != after[:n]
    outside = np.nonzero(changed & ~allowed[:n])[0]
    assert outside.size == 0, f"bytes outside the target pages changed at {outside[:10]}"
    assert not after[n:].any(), "the arena grew with non-zero bytes"


def assert_unchanged(state: State, snap: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    buf, epoch, npid, ndid = snap
    assert np.array_equal(state.arena.buf[: buf.size], buf), "a rejected input wrote bytes"
    assert np.array_equal(state.epoch[: epoch.size], epoch), "a rejected input moved epochs"
    assert (state.next_page_id, state.next_delta_id) == (npid, ndid)


def run_fuzz(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], n: int) -> int:
    """Run ``check`` on ``n`` generated inputs; return how many it saw."""
    seen = 0

    @settings(max_examples=n, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def each(case: Any) -> None:
        nonlocal seen
        seen += 1
        check(case)

    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        each()
    finally:
        faulthandler.cancel_dump_traceback_later()
    return seen


# -- frame payloads replayed into a state -------------------------------------------------


@st.composite
def batch_rows(draw: st.DrawFn) -> DeltaBatch:
    """A batch on the canary pages, mostly in bounds, sometimes not, in all three shapes."""
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        pid = draw(st.sampled_from((*TARGETS, DELETED, 1, 9)))
        size = LAYOUT[pid - 1][0] if pid <= len(LAYOUT) else 8
        off = draw(st.integers(0, size + 2))
        length = draw(st.integers(1, max(1, size - off + 2)))
        shape = draw(st.sampled_from((RANGE, DENSE, SPARSE)))
        data = draw(st.binary(min_size=length, max_size=length))
        if shape == RANGE:
            rows.append(Delta.range(pid, data, off))
            continue
        mask = np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
        if shape == DENSE:
            rows.append(Delta.dense(pid, mask, data, off))
        else:
            rows.append(Delta.sparse(pid, mask, data[: int(mask.sum())], off))
    return DeltaBatch.from_deltas(rows)


Mutation = tuple[int, int]


@st.composite
def batch_frames(draw: st.DrawFn) -> tuple[bytes, bool, list[Mutation], int | None]:
    """An encoded batch payload (with the epochs the canary state will assign, or not),
    then byte overwrites and an optional cut."""
    state = canary_state()
    batch = draw(batch_rows())
    ok_rows = (batch.page_ids > 0) & (batch.page_ids < state.next_page_id)
    good_epochs = draw(st.integers(0, 9)) > 0  # mostly right, so rows get applied
    epochs = np.zeros(len(batch), np.int64)
    if ok_rows.all():
        epochs = state.assign_epochs(batch.page_ids)
    if not good_epochs:
        epochs = epochs + 1
    payload = b"".join(bytes(p) for p in codec.encode_batch(batch, epochs, 1))
    muts = draw(st.lists(st.tuples(st.integers(0, len(payload) - 1), st.integers(0, 255)),
                         max_size=draw(st.sampled_from((0, 0, 1, 3, 8)))))  # fmt: skip
    cut = draw(st.none() | st.integers(0, len(payload)))
    return payload, good_epochs, muts, cut


def mutate(data: bytes, muts: list[Mutation], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in muts:
        if pos < len(out):
            out[pos] = value
    return bytes(out if cut is None else out[:cut])


def replay_payload(ftype: int, payload: bytes) -> None:
    """Replay one frame into a fresh canary state and check what it may have written."""
    state = canary_state()
    snap = snapshot(state)
    frame = Frame(ftype, 0, 1, 0, memoryview(payload), "fuzz.seg", 0)
    try:
        apply_frame(state, frame)
    except MMSBError:
        assert_unchanged(state, snap)
        return
    if ftype == BATCH:
        dec = codec.decode_batch(memoryview(payload))
        assert_only_written(state, snap[0], page_ranges(state, dec.batch.page_ids))
    elif ftype == DELETE:
        ids = codec.decode_delete(memoryview(payload))
        freed = np.zeros(snap[0].size, bool)
        for pid in ids.tolist():
            s = int(state.slot[pid])
            freed[s : s + int(state.size[pid])] = True
        assert_only_written(state, snap[0], freed)
    else:  # creating pages or edges writes no page byte
        assert_only_written(state, snap[0], np.zeros(snap[0].size, bool))


def check_batch_frame(case: tuple[bytes, bool, list[Mutation], int | None]) -> None:
    payload, _, muts, cut = case
    replay_payload(BATCH, mutate(payload, muts, cut))


def _create_payload(draw: st.DrawFn) -> bytes:
    body: Any = {
        "first": draw(st.sampled_from((len(LAYOUT) + 1, 1, -3, 2**64, "9", None))),
        "n": draw(st.integers(-2, 40) | st.sampled_from((-(2**40), 1.5, "x"))),
        "size": draw(st.integers(-1, 300) | st.sampled_from((2**33, 0.5, None))),
        "dtype": draw(st.sampled_from(("uint8", "float64", "bogus", 3, None))),
        "location": draw(st.sampled_from(("cpu", "gpu", "mars", 0))),
        "metadata": draw(st.sampled_from((None, '{"a":1}', "{bad", 5))),
    }
    if draw(st.booleans()):
        body = draw(st.sampled_from((body, [body], "x", 7, None, {})))
    raw = json.dumps(body).encode()
    return draw(st.sampled_from((raw, raw[: len(raw) // 2], b"[" * 5000, b"\xff\xfe")))


@st.composite
def other_frames(draw: st.DrawFn) -> tuple[int, bytes]:
    kind = draw(st.sampled_from((CREATE, DELETE, GRAPH, BATCH)))
    if kind == CREATE:
        return CREATE, _create_payload(draw)
    if kind == DELETE:
        ids = draw(st.lists(st.integers(-1, 12) | st.just(2**63 + 5), max_size=5))
        n = draw(st.sampled_from((len(ids), len(ids), len(ids) + 1, 2**31)))
        body = struct.pack("<II", n, 0) + b"".join(struct.pack("<Q", i % 2**64) for i in ids)
        return DELETE, body
    return kind, draw(st.binary(max_size=200))


def check_other_frame(case: tuple[int, bytes]) -> None:
    replay_payload(*case)


# -- raw log segments ---------------------------------------------------------------------


def _segment_bytes() -> bytes:
    state = canary_state()
    out = [encode_segment_header(1)]
    lsn = 1
    rng = np.random.default_rng(3)
    for _ in range(6):
        pid = int(rng.choice(TARGETS))
        size = int(state.size[pid])
        batch = DeltaBatch.from_ranges([pid], [0], [rng.bytes(size)])
        epochs = state.assign_epochs(batch.page_ids)
        pieces = codec.encode_batch(batch, epochs, state.next_delta_id)
        state.next_delta_id += 1
        head, _, pad = encode_frame_header(BATCH, 0, lsn, lsn * 10, pieces)
        out += [head, *(bytes(p) for p in pieces), b"\0" * pad]
        lsn += 1
    return b"".join(out)


SEGMENT = _segment_bytes()


@st.composite
def segments(draw: st.DrawFn) -> tuple[list[Mutation], int | None, bool]:
    n = len(SEGMENT)
    muts = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), max_size=6))
    cut = draw(st.none() | st.integers(0, n + 64))
    return muts, cut, draw(st.booleans())


def check_segment(case: tuple[list[Mutation], int | None, bool], log_dir: Path) -> None:
    muts, cut, older = case
    data = mutate(SEGMENT, muts, cut)
    if cut is not None and cut > len(SEGMENT):
        data += bytes(cut - len(SEGMENT))  # zeros past the end, as preallocation leaves
    for p in log_dir.iterdir():
        p.unlink()
    (log_dir / f"{1:020d}.seg").write_bytes(data)
    if older:  # the same bytes, no longer the newest segment: no torn tail is allowed
        (log_dir / f"{99:020d}.seg").write_bytes(encode_segment_header(99))
    state = canary_state()
    snap0 = state.arena.buf.copy()
    reader = LogReader(str(log_dir))
    written = np.zeros(snap0.size, bool)
    try:
        for frame in reader.frames():
            if frame.lsn >= 99:
                break
            snap = snapshot(state)
            try:
                apply_frame(state, frame)
            except MMSBError:
                assert_unchanged(state, snap)
                raise
            written |= page_ranges(state, TARGETS)
    except MMSBError:
        pass
    if older and reader.torn is not None:
        assert reader.torn.segment != f"{1:020d}.seg", "torn tail accepted in an old segment"
    assert_only_written(state, snap0, written)


# -- checkpoints ----------------------------------------------------------------------------


def _checkpoint_bytes(tmp: Path) -> bytes:
    state = canary_state()
    path = tmp / "base.ckpt"
    write_state(str(path), state, 7, 70, with_arena=True, sync=False)
    return path.read_bytes()


CKPT_FIELDS = ("lsn", "timestamp", "next_page_id", "next_delta_id", "end")
CKPT_SECTIONS = ("slot", "size", "epoch", "dtype", "loc", "live", "metadata", "arena")


@st.composite
def checkpoint_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Edits that keep the checksums right (so the checks behind them run) and raw flips."""
    return {
        "fields": draw(
            st.dictionaries(
                st.sampled_from(CKPT_FIELDS),
                st.integers(-5, 2**40) | st.sampled_from(("x", None, 1.5)),
                max_size=2,
            )
        ),
        "sections": draw(
            st.dictionaries(
                st.sampled_from(CKPT_SECTIONS),
                st.tuples(st.integers(-16, 4096), st.integers(-8, 8192)),
                max_size=2,
            )
        ),
        "columns": draw(
            st.dictionaries(
                st.sampled_from(("slot", "size", "live", "dtype", "loc", "epoch")),
                st.tuples(st.integers(0, 8), st.integers(-(2**62), 2**62)),
                max_size=3,
            )
        ),
        "metadata": draw(
            st.sampled_from(
                (
                    None,
                    b"{}",
                    b'{"2":"{}"}',
                    b'{"5":"{}"}',
                    b"[1]",
                    b'{"x":"y"}',
                    b"[" * 3000,
                    b'{"2":"{bad"}',
                )
            )
        ),
        "flips": draw(
            st.lists(
                st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                max_size=draw(st.sampled_from((0, 0, 2))),
            )
        ),
    }


def build_checkpoint(base: bytes, case: dict[str, Any]) -> bytes:
    pre = struct.Struct("<8sIII4x")
    magic, version, hlen, _ = pre.unpack_from(base, 0)
    header = json.loads(base[pre.size : pre.size + hlen])
    body = bytearray(base[pre.size + hlen :])
    # column edits: rewrite one entry of a page-table column, then fix its CRC
    dtypes = {"slot": "<i8", "size": "<i8", "epoch": "<i8", "dtype": "u1", "loc": "u1",
              "live": "u1"}  # fmt: skip
    for name, (row, value) in case["columns"].items():
        off, length, _ = header["sections"][name]
        col = np.frombuffer(bytes(body[off : off + length]), dtypes[name]).copy()
        if row < col.size:
            info = np.iinfo(col.dtype)
            col[row] = min(max(value, info.min), info.max)
        body[off : off + length] = col.tobytes()
        header["sections"][name][2] = zlib.crc32(col.tobytes())
    if case["metadata"] is not None:
        off, length, _ = header["sections"]["metadata"]
        raw = case["metadata"]
        body[off : off + length] = b""
        body[off:off] = raw + b"\0" * ((-len(raw)) % 8)
        delta = len(raw) + (-len(raw)) % 8 - (length + (-length) % 8)
        header["sections"]["metadata"] = [off, len(raw), zlib.crc32(raw)]
        for name, sec in header["sections"].items():
            if name != "metadata" and sec[0] > off:
                sec[0] += delta
    for name, (off, length) in case["sections"].items():
        header["sections"][name][0] = off
        header["sections"][name][1] = length
    header.update(case["fields"])
    raw_header = json.dumps(header).encode()
    raw_header += b" " * ((-len(raw_header)) % 8)
    out = bytearray(pre.pack(magic, version, len(raw_header), zlib.crc32(raw_header)))
    out += raw_header + body
    for pos, value in case["flips"]:
        if pos < len(out):
            out[pos] = value
    return bytes(out)


def check_checkpoint(case: dict[str, Any], base: bytes, path: Path) -> None:
    path.write_bytes(build_checkpoint(base, case))
    arena = MemoryArena()
    try:
        state, _, _ = load_state(str(path), arena)
    except MMSBError:
        return
    # a loaded table is self-consistent: every live page lies inside the arena and reads
    ids = state.live_ids()
    ends = state.slot[ids] + state.size[ids]
    assert (state.slot[ids] >= 0).all() and (ends <= arena.buf.size).all()
    for pid in ids.tolist():
        state.read(pid)
        state.info(pid)
    state.state_hash()


# -- manifests ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    base: dict[str, Any] = {"format": "mmsb", "version": 1, "created_ns": 5,
                            "segment_size": 1 << 20}  # fmt: skip
    for key in draw(st.lists(st.sampled_from(sorted(base)), max_size=2)):
        base[key] = draw(json_values)
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return json.dumps(draw(json_values)).encode()
    if choice == 2:
        return draw(st.sampled_from((b"[" * 70000, b"{" * 5000, b'{"a":' * 3000)))
    return json.dumps(base).encode()


def check_manifest(data: bytes, bus_dir: Path) -> None:
    (bus_dir / MANIFEST).write_bytes(data)
    try:
        m = read_manifest(str(bus_dir))
    except MMSBError:
        return
    assert m.version == 1 and m.segment_size >= 4096


# -- Delta and DeltaBatch constructors -------------------------------------------------------

anything = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
    | st.binary(max_size=40) | st.lists(st.integers(-300, 300), max_size=6)
    | st.sampled_from((np.zeros((2, 2)), np.arange(5, dtype=np.float32), np.array(["a", "b"]),
                       np.array([object()]), np.ones(3, bool), np.array(7), np.uint64(2**63 + 1),
                       np.int64(-1), np.array([1, 2], np.uint64), np.zeros(0, np.uint8)))
)  # fmt: skip
small_ids = st.sampled_from((*TARGETS, DELETED, 1, 0, -1, 99))
payloads = st.binary(min_size=0, max_size=120) | anything


@st.composite
def constructor_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    kind = draw(st.sampled_from(("range", "dense", "sparse", "from_ranges", "from_deltas",
                                 "raw")))  # fmt: skip
    pid = draw(small_ids | anything)
    off = draw(st.integers(-2, 120) | anything)
    kwargs: dict[str, Any] = {}
    if draw(st.booleans()):
        kwargs["source"] = draw(st.text(max_size=300) | anything)
    if draw(st.booleans()):
        kwargs["metadata"] = draw(json_values | anything)
    if kind == "range":
        return kind, (pid, draw(payloads), off), kwargs
    if kind in ("dense", "sparse"):
        mask = draw(st.lists(st.integers(0, 2), max_size=120).map(np.array) | anything)
        return kind, (pid, mask, draw(payloads), off), kwargs
    if kind == "from_ranges":
        n = draw(st.integers(0, 4))
        pids = draw(st.lists(small_ids, min_size=n, max_size=n) | anything)
        offs = draw(st.lists(st.integers(-1, 120), min_size=n, max_size=n) | anything)
        pay = draw(st.lists(st.binary(max_size=30), min_size=n, max_size=n) | anything)
        return kind, (pids, offs, pay), kwargs
    if kind == "from_deltas":
        items = draw(st.lists(st.sampled_from((Delta.range(2, b"ab"), Delta.range(4, b"x", 99),
                                               Delta.dense(7, [1], b"q"), "nope", None)),
                              max_size=4))  # fmt: skip
        return kind, (items,), {}
    # raw columns, as a caller may build a DeltaBatch directly
    n = draw(st.integers(0, 4))

    def col(dtype: Any, lo: int, hi: int, size: int = n) -> np.ndarray:
        extra = draw(st.integers(-1, 1)) if draw(st.integers(0, 9)) == 0 else 0
        vals = draw(st.lists(st.integers(lo, hi), min_size=max(0, size + extra),
                             max_size=max(0, size + extra)))  # fmt: skip
        return np.array(vals, dtype)

    pool = np.frombuffer(draw(st.binary(max_size=200)), np.uint8)
    mask = np.array(draw(st.lists(st.integers(0, 1), max_size=200)), np.uint8)
    cols = (col(np.int64, -1, 9), col(np.int64, -5, 300), col(np.int64, -2, 300),
            col(np.uint8, 0, 3), col(np.int64, -5, 300), col(np.int64, -2, 300),
            col(np.int64, -2, 300), pool, mask, col(np.uint16, 0, 2), ("api",),
            col(np.int32, -2, 1), ())  # fmt: skip
    return kind, cols, {}


def check_constructor(case: tuple[str, tuple[Any, ...], dict[str, Any]]) -> None:
    kind, args, kwargs = case
    try:
        if kind == "range":
            batch = DeltaBatch.from_deltas([Delta.range(*args, **kwargs)])
        elif kind == "dense":
            batch = DeltaBatch.from_deltas([Delta.dense(*args, **kwargs)])
        elif kind == "sparse":
            batch = DeltaBatch.from_deltas([Delta.sparse(*args, **kwargs)])
        elif kind == "from_ranges":
            batch = DeltaBatch.from_ranges(*args, **kwargs)
        elif kind == "from_deltas":
            batch = DeltaBatch.from_deltas(*args)
        else:
            batch = DeltaBatch(*args)
            batch._check_structure()  # what Bus.apply_batch does first
    except MMSBError:
        return
    assert batch.structure_problem() is None
    # commit it the way the bus does (validate, then apply) into a canary state
    state = canary_state()
    snap = snapshot(state)
    try:
        state.validate(batch)
    except MMSBError:
        assert_unchanged(state, snap)
        return
    state.apply(batch)
    assert_only_written(state, snap[0], page_ranges(state, batch.page_ids))
    # the effect equals the oracle: bytes expanded row by row, later rows winning
    pages, pos, vals = batch.expand()
    expect = snap[0].copy()
    for p, i, v in zip(pages.tolist(), pos.tolist(), vals.tolist(), strict=True):
        expect[int(state.slot[p]) + i] = v
    assert np.array_equal(state.arena.buf[: expect.size], expect)


# -- the tests --------------------------------------------------------------------------------


def fuzz_targets(tmp: Path) -> dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]]:
    log_dir = tmp / "log"
    log_dir.mkdir()
    bus_dir = tmp / "bus"
    bus_dir.mkdir()
    base = _checkpoint_bytes(tmp)
    ckpt = tmp / "fuzz.ckpt"
    return {
        "batch_frame": (batch_frames(), check_batch_frame),
        "other_frames": (other_frames(), check_other_frame),
        "segment": (segments(), lambda c: check_segment(c, log_dir)),
        "checkpoint": (checkpoint_cases(), lambda c: check_checkpoint(c, base, ckpt)),
        "manifest": (manifests(), lambda c: check_manifest(c, bus_dir)),
        "constructors": (constructor_calls(), check_constructor),
    }


NAMES = ("batch_frame", "other_frames", "segment", "checkpoint", "manifest", "constructors")


@pytest.mark.parametrize("name", NAMES)
def test_fuzz(tmp_path: Path, name: str) -> None:
    strategy, check = fuzz_targets(tmp_path)[name]
    assert run_fuzz(strategy, check, DEFAULT_EXAMPLES) >= DEFAULT_EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_fuzz_long(tmp_path: Path, name: str) -> None:
    strategy, check = fuzz_targets(tmp_path)[name]
    seen = run_fuzz(strategy, check, LONG_EXAMPLES)
    assert seen >= LONG_EXAMPLES
    report = os.environ.get("MMSB_FUZZ_REPORT")
    if report:  # one line per target, for the record of a long run
        with open(report, "a", encoding="utf-8") as f:
            f.write(f"{name} {seen}\n")


def test_canary_catches_a_stray_write() -> None:
    """The canary check itself can fail: a write one byte past a target page is caught."""
    state = canary_state()
    before = state.arena.buf.copy()
    s = int(state.slot[2]) + int(state.size[2])
    state.arena.buf[s] = 1  # the padding after page 2
    with pytest.raises(AssertionError, match="outside the target pages"):
        assert_only_written(state, before, page_ranges(state, [2]))


def test_fuzzed_bus_still_opens(tmp_path: Path) -> None:
    """The shared fixtures are real formats: the segment replays and the checkpoint loads."""
    state = canary_state()
    for frame in read_frames(SEGMENT, tmp_path):
        apply_frame(state, frame)
    assert state.next_delta_id == 7
    loaded, lsn, _ = load_state_from(_checkpoint_bytes(tmp_path), tmp_path)
    assert lsn == 7 and loaded.state_hash() == canary_state().state_hash()
    assert mmsb.MMSBError is MMSBError


def read_frames(data: bytes, tmp: Path) -> list[Frame]:
    d = tmp / "seglog"
    d.mkdir()
    (d / f"{1:020d}.seg").write_bytes(data)
    reader = LogReader(str(d))
    frames = list(reader.frames())
    assert reader.torn is None and len(frames) == 6
    assert frames[0].offset == SEG_HEADER_SIZE
    return frames


def load_state_from(data: bytes, tmp: Path) -> tuple[State, int, int]:
    p = tmp / "again.ckpt"
    p.write_bytes(data)
    return load_state(str(p), MemoryArena())


def test_create_frame_claiming_an_impossible_page_count() -> None:
    """A CRC-valid create frame claiming more pages than the format allows is a typed
    error, not a MemoryError from allocating the page table."""
    body = {"first": len(LAYOUT) + 1, "n": 2**40, "size": 8, "dtype": "uint8",
            "location": "cpu", "metadata": None}  # fmt: skip
    replay_payload(CREATE, json.dumps(body).encode())
