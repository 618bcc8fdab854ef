"""The bad-input matrix: every public entry point with invalid arguments, table-driven.

Each row names a call, the bus it runs against (a live writer, a read-only open, a closed
bus, a bus another process holds for writing, or none), the exact error type and a pattern
its message must match. Around every rejected call the test snapshots the bytes of every
file in the bus directory and the bus's visible state (LSN, state hash, every page's bytes)
and requires them identical afterwards; a live bus must then still take a good write.

Rows marked ``KNOWN`` document calls that today raise an untyped builtin error instead of an
``MMSBError``; they are strict xfails, so fixing one makes the matrix say so.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import (
    BusClosedError,
    BusLockedError,
    BusNotFoundError,
    Delta,
    DeltaBatch,
    DeviceUnavailableError,
    FormatVersionError,
    HistoryUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    PageNotFoundError,
    ReadOnlyError,
)

RAW, F64, GONE = 1, 2, 3  # page ids made by ``make_bus``


def make_bus(path: Path) -> None:
    """An 8-byte uint8 page, a 32-byte float64 page, a deleted page, a checkpoint and a
    commit after it."""
    with mmsb.open(path, sync="off") as bus:
        assert bus.create_page(8) == RAW
        assert bus.create_page(32, dtype="float64") == F64
        assert bus.create_page(8) == GONE
        bus.write(RAW, b"original")
        bus.write(F64, np.array([1.0, 2.0, 3.0, 4.0]))
        bus.delete_page(GONE)
        bus.checkpoint()
        bus.write(RAW, b"O")


@dataclass
class Ctx:
    path: Path
    bus: Any  # the bus (or snapshot) the row's call runs against; None for "none"
    tmp: Path


@dataclass(frozen=True)
class Row:
    name: str
    on: str  # "live", "readonly", "closed", "snapshot", "held" (locked by another process), "none"
    call: Callable[[Ctx], object]
    exc: type[BaseException]
    match: str
    known: str = ""  # why this row fails today (strict xfail)


def forged(**cols: Any) -> DeltaBatch:
    batch = DeltaBatch.from_deltas([Delta.range(RAW, b"ab"), Delta.dense(RAW, [1, 1], b"cd", 2)])
    for name, value in cols.items():
        setattr(batch, name, value)
    return batch


def one_row() -> DeltaBatch:
    return DeltaBatch.from_ranges([RAW], [0], [b"x"])


L, RO, C, N = "live", "readonly", "closed", "none"
ROWS: list[Row] = [
    # -- page ids ---------------------------------------------------------------------------
    Row("write unknown page", L, lambda c: c.bus.write(99, b"x"), PageNotFoundError,
        r"^page 99 does not exist$"),
    Row("write deleted page", L, lambda c: c.bus.write(GONE, b"x"), PageNotFoundError,
        rf"^page {GONE} was deleted$"),
    Row("write str page id", L, lambda c: c.bus.write("1", b"x"), PageNotFoundError,
        r"page id must be an integer or a page name, got '1'"),
    Row("write float page id", L, lambda c: c.bus.write(1.0, b"x"), PageNotFoundError,
        r"page id must be an integer or a page name, got 1.0"),
    Row("write bool page id", L, lambda c: c.bus.write(True, b"x"), PageNotFoundError,
        r"page id must be an integer or a page name, got True"),
    Row("read unknown page", L, lambda c: c.bus.read(99), PageNotFoundError, r"page 99 does not"),
    Row("page() deleted page", L, lambda c: c.bus.page(GONE), PageNotFoundError, "was deleted"),
    Row("read None page id", L, lambda c: c.bus.read(None), PageNotFoundError,
        "must be an integer or a page name, got None"),
    Row("delete unknown page", L, lambda c: c.bus.delete_page(99), PageNotFoundError,
        r"page 99 does not exist"),
    Row("delete deleted page", L, lambda c: c.bus.delete_page(GONE), PageNotFoundError,
        "was deleted"),
    Row("delete a page twice in one call", L, lambda c: c.bus.delete_pages([RAW, RAW]),
        InvalidArgumentError, "the same page id twice"),
    Row("delete live + unknown (neither goes)", L, lambda c: c.bus.delete_pages([RAW, 99]),
        PageNotFoundError, "page 99 does not exist"),
    Row("delete_pages of an int", L, lambda c: c.bus.delete_pages(5), InvalidArgumentError,
        "page ids"),
    # -- payloads, offsets, shapes, dtypes ------------------------------------------------
    Row("empty payload", L, lambda c: c.bus.write(RAW, b""), InvalidDeltaError,
        rf"^empty payload for page {RAW}$"),
    Row("payload past page end", L, lambda c: c.bus.write(RAW, b"123456789"), InvalidDeltaError,
        r"offset 0 \+ length 9 > page size 8"),
    Row("offset at page end", L, lambda c: c.bus.write(RAW, b"x", offset=8), InvalidDeltaError,
        r"offset 8 \+ length 1 > page size 8"),
    Row("negative offset", L, lambda c: c.bus.write(RAW, b"x", offset=-1), InvalidDeltaError,
        r"offset -1 is out of range"),
    Row("huge offset", L, lambda c: c.bus.write(RAW, b"x", offset=2**40), InvalidDeltaError,
        r"offset 1099511627776 is out of range"),
    Row("str offset", L, lambda c: c.bus.write(RAW, b"x", offset="a"), InvalidDeltaError,
        r"offset must be an integer, got 'a'"),
    Row("str payload", L, lambda c: c.bus.write(RAW, "text"), InvalidDeltaError,
        "payload must be bytes-like or a numpy array, got str"),
    Row("list payload", L, lambda c: c.bus.write(RAW, [1, 2]), InvalidDeltaError,
        "got list"),
    Row("2-D payload", L, lambda c: c.bus.write(F64, np.zeros((2, 2))), InvalidDeltaError,
        r"payload must be 1-D, got an array of shape \(2, 2\)"),
    Row("object payload", L, lambda c: c.bus.write(RAW, np.array([object()])),
        InvalidDeltaError, "object dtype"),
    Row("payload dtype differs from page", L,
        lambda c: c.bus.write(F64, np.ones(2, np.float32)), InvalidDeltaError,
        f"payload dtype float32 does not match page {F64} dtype float64"),
    Row("typed payload misaligned", L, lambda c: c.bus.write(F64, np.ones(1), offset=4),
        InvalidDeltaError, f"offset 4 is not a multiple of page {F64}'s float64 itemsize 8"),
    Row("source not a str", L, lambda c: c.bus.write(RAW, b"x", source=None), InvalidDeltaError,
        "source must be a str, got NoneType"),
    Row("source too long", L, lambda c: c.bus.write(RAW, b"x", source="s" * 256),
        InvalidDeltaError, "source must be at most 255 bytes"),
    Row("delta metadata not JSON", L, lambda c: c.bus.write(RAW, b"x", metadata={"s": {1}}),
        InvalidArgumentError, "delta metadata is not JSON-serialisable"),
    Row("delta metadata NaN", L,
        lambda c: c.bus.write(RAW, b"x", metadata={"v": float("nan")}), InvalidArgumentError,
        "delta metadata is not JSON-serialisable"),
    Row("delta metadata not a dict", L, lambda c: c.bus.write(RAW, b"x", metadata=[1]),
        InvalidArgumentError, "delta metadata must be a dict with str keys"),
    # -- apply / apply_batch ----------------------------------------------------------------
    Row("apply a non-Delta", L, lambda c: c.bus.apply(b"x"), InvalidDeltaError,
        "expected a Delta, got bytes"),
    Row("apply to unknown page", L, lambda c: c.bus.apply(Delta.range(99, b"x")),
        PageNotFoundError, r"batch rows \[0\] target unknown or deleted pages \[99\]"),
    Row("apply past page end", L, lambda c: c.bus.apply(Delta.range(RAW, b"ab", 7)),
        InvalidDeltaError, r"rows \[0\] reach past the end of their page"),
    Row("apply masked span past end", L,
        lambda c: c.bus.apply(Delta.dense(RAW, [1, 0, 0], b"abc", 6)), InvalidDeltaError,
        r"offset 6 \+ length 3 > page"),
    Row("apply typed dtype mismatch", L,
        lambda c: c.bus.apply(Delta.range(F64, np.ones(1, np.float32))), InvalidDeltaError,
        "payload dtype float32 does not match"),
    Row("apply_batch of a list", L, lambda c: c.bus.apply_batch([Delta.range(RAW, b"x")]),
        InvalidDeltaError, "expected a DeltaBatch, got list"),
    Row("batch with one bad row", L,
        lambda c: c.bus.apply_batch(DeltaBatch.from_ranges([RAW, F64, 77], [0, 0, 0], [b"AA"] * 3)),
        PageNotFoundError, r"batch rows \[2\] target unknown or deleted pages \[77\]"),
    Row("batch rows past the end", L,
        lambda c: c.bus.apply_batch(DeltaBatch.from_ranges([RAW, RAW], [0, 7], [b"AA"] * 2)),
        InvalidDeltaError, r"batch rows \[1\] reach past the end"),
    Row("forged: column lengths differ", L,
        lambda c: c.bus.apply_batch(forged(offsets=np.zeros(1, np.int64))), InvalidDeltaError,
        "batch columns have different lengths"),
    Row("forged: payload slice outside pool", L,
        lambda c: c.bus.apply_batch(forged(pstarts=np.array([0, 99], np.int64))),
        InvalidDeltaError, r"payload slice outside the pool in rows \[1\]"),
    Row("forged: unknown shape", L,
        lambda c: c.bus.apply_batch(forged(kinds=np.array([0, 7], np.uint8))),
        InvalidDeltaError, r"unknown delta shape in rows \[1\]"),
    Row("forged: mask slice outside pool", L,
        lambda c: c.bus.apply_batch(forged(mstarts=np.array([-1, 5], np.int64))),
        InvalidDeltaError, r"mask slice outside the pool in rows \[1\]"),
    Row("forged: negative offset", L,
        lambda c: c.bus.apply_batch(forged(offsets=np.array([0, -2], np.int64))),
        InvalidDeltaError, r"negative offset in rows \[1\]"),
    Row("forged: zero page id", L,
        lambda c: c.bus.apply_batch(forged(page_ids=np.array([0, RAW], np.int64))),
        InvalidDeltaError, r"invalid page id in rows \[0\]"),
    Row("forged: every row's source index out of range", L,
        lambda c: c.bus.apply_batch(forged(source_idx=np.array([5, 5], np.uint16),
                                           sources=("api", "x"))),
        InvalidDeltaError, r"source index out of range in rows \[0, 1\]"),
    Row("forged: every row's metadata index out of range", L,
        lambda c: c.bus.apply_batch(forged(meta_idx=np.array([7, 7], np.int32),
                                           metas=('{"a":1}', '{"b":2}'))),
        InvalidDeltaError, r"metadata index out of range in rows \[0, 1\]"),
    Row("forged tick input: every row's source index out of range", L,
        lambda c: c.bus.tick(forged(source_idx=np.array([5, 5], np.uint16),
                                    sources=("api", "x"))),
        InvalidDeltaError, r"source index out of range in rows \[0, 1\]"),
    # -- creating pages ---------------------------------------------------------------------
    Row("page size 0", L, lambda c: c.bus.create_page(0), InvalidArgumentError,
        r"page size must be in \[1, 4294967295\], got 0"),
    Row("page size too big", L, lambda c: c.bus.create_page(2**33), InvalidArgumentError,
        r"page size must be in \[1, 4294967295\], got 8589934592"),
    Row("page size a str", L, lambda c: c.bus.create_page("8"), InvalidArgumentError,
        "page size must be an integer, got '8'"),
    Row("page size not a multiple of itemsize", L,
        lambda c: c.bus.create_page(12, dtype="float64"), InvalidArgumentError,
        "page size 12 is not a multiple of the float64 itemsize 8"),
    Row("unknown dtype", L, lambda c: c.bus.create_page(8, dtype="nope"), InvalidArgumentError,
        "unknown dtype 'nope'"),
    Row("big-endian dtype", L, lambda c: c.bus.create_page(8, dtype=">f8"),
        InvalidArgumentError, "non-native byte order"),
    Row("unsupported dtype", L, lambda c: c.bus.create_page(8, dtype=object),
        InvalidArgumentError, "unsupported page dtype 'object'"),
    Row("unknown location", L, lambda c: c.bus.create_page(8, location="tpu"),
        InvalidArgumentError, "unknown location 'tpu'; expected one of cpu, gpu, unified"),
    Row("device location without backend", L, lambda c: c.bus.create_page(8, location="gpu"),
        DeviceUnavailableError, "needs a device backend"),
    Row("page metadata with int keys", L, lambda c: c.bus.create_page(8, metadata={1: 2}),
        InvalidArgumentError, "page metadata must be a dict with str keys"),
    Row("page metadata not JSON", L, lambda c: c.bus.create_page(8, metadata={"f": object()}),
        InvalidArgumentError, "page metadata is not JSON-serialisable"),
    Row("page count 0", L, lambda c: c.bus.create_pages(0, 8), InvalidArgumentError,
        "page count must be a positive integer, got 0"),
    Row("page count float", L, lambda c: c.bus.create_pages(2.0, 8), InvalidArgumentError,
        "page count must be a positive integer, got 2.0"),
    # -- history, snapshots, export -----------------------------------------------------
    Row("at() beyond the end", L, lambda c: c.bus.at(99), HistoryUnavailableError,
        r"LSN 99 is outside \[0, 7\]"),
    Row("at() negative", L, lambda c: c.bus.at(-1), HistoryUnavailableError,
        r"LSN -1 is outside"),
    Row("at() str lsn", L, lambda c: c.bus.at("x"), InvalidArgumentError,
        "lsn must be an integer, got 'x'"),
    Row("at() lsn and time", L, lambda c: c.bus.at(1, time=5), InvalidArgumentError,
        "give either lsn or time, not both"),
    Row("at() str time", L, lambda c: c.bus.at(time="x"), InvalidArgumentError, "time"),
    Row("history of unknown page", L, lambda c: c.bus.history(99), PageNotFoundError,
        "page 99 does not exist"),
    Row("history negative limit", L, lambda c: c.bus.history(RAW, limit=-1),
        InvalidArgumentError, "limit must be >= 0"),
    Row("history str page id", L, lambda c: c.bus.history("x"), PageNotFoundError,
        "no live page is named 'x'"),
    Row("history str limit", L, lambda c: c.bus.history(RAW, limit="x"), InvalidArgumentError,
        "limit"),
    Row("diff beyond the end", L, lambda c: c.bus.diff(0, 99), HistoryUnavailableError,
        r"LSN 99 is outside"),
    Row("diff str lsn", L, lambda c: c.bus.diff("a", 1), InvalidArgumentError, "lsn"),
    Row("export into a non-empty dir", L, lambda c: c.bus.export(c.path / "log"),
        InvalidArgumentError, "already exists and is not empty"),
    Row("export beyond the end", L, lambda c: c.bus.export(c.tmp / "out", lsn=99),
        HistoryUnavailableError, r"LSN 99 is outside \[0, 7\]"),
    Row("export str lsn", L, lambda c: c.bus.export(c.tmp / "out", lsn="x"),
        InvalidArgumentError, "lsn"),
    Row("read a closed snapshot", "snapshot", lambda c: c.bus.read(RAW), BusClosedError,
        "^Snapshot is closed$"),
    Row("state_hash of a closed snapshot", "snapshot", lambda c: c.bus.state_hash(),
        BusClosedError, "^Snapshot is closed$"),
    # -- opening --------------------------------------------------------------------------------
    Row("open with unknown sync mode", C, lambda c: mmsb.open(c.path, sync="sometimes"),
        InvalidArgumentError, "unknown sync mode 'sometimes'; expected one of always"),
    Row("open with keep_checkpoints 0", C, lambda c: mmsb.open(c.path, keep_checkpoints=0),
        InvalidArgumentError, "keep_checkpoints must be at least 1"),
    Row("open with tiny segment_size", C, lambda c: mmsb.open(c.path, segment_size=10),
        InvalidArgumentError, "segment_size must be at least 4096 bytes"),
    Row("open with str segment_size", C, lambda c: mmsb.open(c.path, segment_size="x"),
        InvalidArgumentError, "segment_size"),
    Row("open with unknown option", C, lambda c: mmsb.open(c.path, bogus=1),
        InvalidArgumentError, "unknown option bogus"),
    Row("ephemeral read-only", N, lambda c: mmsb.open(None, readonly=True),
        InvalidArgumentError, "an ephemeral bus cannot be read-only"),
    Row("open a bus subdirectory", C, lambda c: mmsb.open(c.path / "log"), FormatVersionError,
        "non-empty directory without an MMSB manifest"),
    Row("open a file as a bus", C, lambda c: mmsb.open(c.path / "MANIFEST.json"),
        FormatVersionError, "exists and is not a directory"),
    Row("open missing, create=False", C, lambda c: mmsb.open(c.tmp / "absent", create=False),
        BusNotFoundError, "no bus at"),
    Row("read-only open of nothing", C, lambda c: mmsb.open(c.tmp / "absent", readonly=True),
        BusNotFoundError, "no bus at"),
    Row("second writer, same process", L, lambda c: mmsb.open(c.path), BusLockedError,
        r"is already open for writing \(by pid \d+\)$"),
    Row("second writer, other process", "held", lambda c: mmsb.open(c.path), BusLockedError,
        r"is already open for writing \(by pid \d+\)$"),
    Row("open create=False while another process writes", "held",
        lambda c: mmsb.open(c.path, create=False), BusLockedError, "already open for writing"),
    # -- read-only and closed buses ---------------------------------------------------------
    *[
        Row(f"{name} on a read-only bus", RO, call, ReadOnlyError, r"is open read-only$")
        for name, call in (
            ("write", lambda c: c.bus.write(RAW, b"x")),
            ("apply", lambda c: c.bus.apply(Delta.range(RAW, b"x"))),
            ("apply_batch", lambda c: c.bus.apply_batch(one_row())),
            ("create_page", lambda c: c.bus.create_page(8)),
            ("create_pages", lambda c: c.bus.create_pages(2, 8)),
            ("delete_page", lambda c: c.bus.delete_page(RAW)),
            ("delete_pages", lambda c: c.bus.delete_pages([RAW])),
            ("checkpoint", lambda c: c.bus.checkpoint()),
            ("compact", lambda c: c.bus.compact()),
            ("sync_now", lambda c: c.bus.sync_now()),
        )
    ],
    *[
        Row(f"{name} on a closed bus", C, call, BusClosedError, r"^Bus is closed$")
        for name, call in (
            ("write", lambda c: c.bus.write(RAW, b"x")),
            ("apply", lambda c: c.bus.apply(Delta.range(RAW, b"x"))),
            ("apply_batch", lambda c: c.bus.apply_batch(one_row())),
            ("create_page", lambda c: c.bus.create_page(8)),
            ("delete_page", lambda c: c.bus.delete_page(RAW)),
            ("checkpoint", lambda c: c.bus.checkpoint()),
            ("compact", lambda c: c.bus.compact()),
            ("sync_now", lambda c: c.bus.sync_now()),
            ("read", lambda c: c.bus.read(RAW)),
            ("page", lambda c: c.bus.page(RAW)),
            ("page_ids", lambda c: c.bus.page_ids()),
            ("page_table", lambda c: c.bus.page_table()),
            ("state_hash", lambda c: c.bus.state_hash()),
            ("at", lambda c: c.bus.at(1)),
            ("history", lambda c: c.bus.history(RAW)),
            ("diff", lambda c: c.bus.diff(0, 1)),
            ("export", lambda c: c.bus.export(c.tmp / "out")),
            ("verify", lambda c: c.bus.verify()),
            ("len", lambda c: len(c.bus)),
        )
    ],
    # -- constructors (no bus) ----------------------------------------------------------------
    Row("Delta page id 0", N, lambda c: Delta.range(0, b"x"), InvalidDeltaError,
        "page id 0 is out of range"),
    Row("Delta page id str", N, lambda c: Delta.range("1", b"x"), InvalidDeltaError,
        "page id must be an integer, got '1'"),
    Row("Delta empty payload", N, lambda c: Delta.range(1, b""), InvalidDeltaError,
        "empty payload for page 1"),
    Row("Delta offset past the largest page", N, lambda c: Delta.range(1, b"xy", 2**32 - 1),
        InvalidDeltaError, "ends past the largest page size"),
    Row("dense mask/payload lengths differ", N, lambda c: Delta.dense(1, [1, 1], b"abc"),
        InvalidDeltaError, "mask has 2 entries but payload has 3 bytes"),
    Row("dense 2-D mask", N, lambda c: Delta.dense(1, [[1]], b"a"), InvalidDeltaError,
        r"mask must be 1-D, got shape \(1, 1\)"),
    Row("dense str mask", N, lambda c: Delta.dense(1, ["a"], b"a"), InvalidDeltaError,
        "mask must be boolean or integer"),
    Row("dense empty mask", N, lambda c: Delta.dense(1, np.zeros(0, bool), b""), InvalidDeltaError,
        "empty mask for page 1"),
    Row("sparse bits differ from payload", N, lambda c: Delta.sparse(1, [1, 0, 1], b"a"),
        InvalidDeltaError, "mask has 2 set bits but payload has 1 bytes"),
    Row("merge across pages", N, lambda c: Delta.range(1, b"a").merge(Delta.range(2, b"b")),
        InvalidDeltaError, r"cannot merge deltas on different pages \(1 and 2\)"),
    Row("from_ranges ids/offsets differ", N,
        lambda c: DeltaBatch.from_ranges([1, 2], [0], [b"a", b"b"]), InvalidDeltaError,
        "2 page ids but 1 offsets"),
    Row("from_ranges ids/payloads differ", N,
        lambda c: DeltaBatch.from_ranges([1, 2], [0, 0], [b"a"]), InvalidDeltaError,
        "2 page ids but 1 payloads"),
    Row("from_ranges 1-D array payloads", N,
        lambda c: DeltaBatch.from_ranges([1], [0], np.zeros(3, np.uint8)), InvalidDeltaError,
        r"payloads must be a 2-D array \(rows x bytes\)"),
    Row("from_ranges 2-D ids", N, lambda c: DeltaBatch.from_ranges([[1]], [0], [b"a"]),
        InvalidDeltaError, r"page_ids must be 1-D, got shape \(1, 1\)"),
    Row("from_ranges float ids", N, lambda c: DeltaBatch.from_ranges([1.5], [0], [b"a"]),
        InvalidDeltaError, "page_ids must be integers, got dtype float64"),
    Row("from_ranges payloads None", N, lambda c: DeltaBatch.from_ranges([1], [0], None),
        InvalidDeltaError, "payloads must be a 2-D array or a sequence of bytes-like"),
    Row("from_deltas with a non-Delta", N,
        lambda c: DeltaBatch.from_deltas([Delta.range(1, b"a"), "x"]), InvalidDeltaError,
        r"row 1 is a str, not a Delta"),
    Row("batch row out of range", N,
        lambda c: DeltaBatch.from_ranges([1], [0], [b"a"])[5], IndexError,
        "row 5 out of range for a batch of 1"),
]  # fmt: skip

HOLDER = textwrap.dedent(
    """
    import sys, time
    import mmsb
    bus = mmsb.open(sys.argv[1])
    print("ready", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bus made by ``make_bus``, copied for every row (cheaper than making each)."""
    path = tmp_path_factory.mktemp("template") / "bus"
    make_bus(path)
    return path


@pytest.fixture(scope="module")
def held_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A bus that another process holds open for writing for the whole module."""
    tmp = tmp_path_factory.mktemp("held")
    path = tmp / "bus"
    make_bus(path)
    script = tmp / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield path
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def disk_bytes(path: Path) -> dict[str, bytes | None]:
    """Every file and directory under ``path`` with its bytes (None for directories)."""
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


def visible(view: Any) -> tuple[Any, ...] | None:
    if view is None or getattr(view, "closed", False) or getattr(view, "_state", 1) is None:
        return None
    return (view.lsn, view.state_hash(),
            {int(p): view.read(p).tobytes() for p in view.page_ids()})  # fmt: skip


def params() -> list[Any]:
    out = []
    for row in ROWS:
        marks = [pytest.mark.xfail(strict=True, reason=row.known)] if row.known else []
        out.append(pytest.param(row, id=row.name, marks=marks))
    return out


def test_rows_have_unique_names() -> None:
    names = [r.name for r in ROWS]
    assert len(names) == len(set(names))
    assert len(ROWS) >= 100


@pytest.mark.parametrize("row", params())
def test_bad_input(row: Row, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    path = tmp_path / "bus"
    if row.on == "held":
        path = request.getfixturevalue("held_bus")
    else:
        shutil.copytree(request.getfixturevalue("template"), path)
    owner: Any = None
    target: Any = None
    if row.on in ("live", "snapshot", "none"):
        owner = mmsb.open(path, sync="off")
        target = owner
        if row.on == "snapshot":
            target = owner.at(owner.lsn - 1)
            target.close()
        elif row.on == "none":
            target = None
    elif row.on == "readonly":
        owner = target = mmsb.open(path, readonly=True)
    elif row.on == "closed":
        target = mmsb.open(path)
        target.close()
    try:
        before = disk_bytes(path)
        seen = visible(owner)
        with pytest.raises(row.exc, match=row.match) as info:
            row.call(Ctx(path, target, tmp_path))
        assert type(info.value) is row.exc, f"{type(info.value).__name__}: {info.value}"
        assert disk_bytes(path) == before
        assert visible(owner) == seen
        assert not (tmp_path / "out").exists()
        if owner is not None and not owner.readonly:  # still usable, nothing half-done
            assert owner.write(RAW, b"ok", offset=6) == 4
            assert owner.read(RAW).tobytes() == b"Originok"
            assert owner.verify().ok
    finally:
        if owner is not None:
            owner.close()


@pytest.mark.parametrize(
    "options",
    [{"sync_interval": 0}, {"sync_interval": -1.0}, {"sync_interval": "1"},
     {"checkpoint_every": 0}, {"checkpoint_every": -1}, {"checkpoint_every": 1.5},
     {"tick_budget_ms": -1}, {"tick_budget_ms": 0}, {"tick_budget_ms": "16"},
     {"tick_gc_budget_ms": -0.5}, {"invariant_every": -1}, {"invariant_every": 2.5}],
)  # fmt: skip
def test_invalid_open_options_are_refused(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(mmsb.InvalidArgumentError, match=next(iter(options))):
        mmsb.open(tmp_path / "bus", **options)
    assert not (tmp_path / "bus").exists()
