"""History as tables (``Bus.history_table``, the ``mmsb[analysis]`` extra).

Every column of the delta table is checked against ``Bus.history`` and against the deltas
as they were written (the slow oracles), on a bus with random batches of range, dense and
sparse deltas, several pages, sources and metadata, metadata changes, renames, deletes and
a reopen; the commit table against the log read frame by frame. Also: LSN ranges, what
compaction leaves, the Arrow and pandas forms, a read-only bus beside a live writer, a
damaged frame, and the error paths (a missing extra among them)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import Delta, DeltaBatch
from mmsb.errors import (
    BusClosedError,
    CorruptLogError,
    HistoryUnavailableError,
    InvalidArgumentError,
    PageNotFoundError,
)
from mmsb.storage import codec, layout
from mmsb.storage.log import FRAME_HEADER_SIZE, LogReader
from support import Clock

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")

HINT = "pip install 'mmsb[analysis]'"
SOURCES = ("api", "sensor", "model", "replay")
DELTA_COLUMNS = ["lsn", "time", "delta_id", "page_id", "epoch", "offset", "length", "kind",
                 "source", "metadata"]  # fmt: skip
COMMIT_COLUMNS = ["lsn", "time", "type", "deltas", "pages", "payload_bytes", "log_bytes"]

# what each delta id wrote, as the test wrote it: (payload bytes, mask bytes or None)
Written = dict[int, tuple[bytes, bytes | None]]


# -- a random history -----------------------------------------------------------------------


def random_delta(rng: np.random.Generator, page: int, size: int) -> Delta:
    shape = int(rng.integers(0, 3))
    span = int(rng.integers(1, size + 1))
    offset = int(rng.integers(0, size - span + 1))
    source = SOURCES[int(rng.integers(0, len(SOURCES)))]
    metadata = None if rng.random() < 0.5 else {"step": int(rng.integers(0, 4))}
    data = rng.integers(0, 256, span, dtype=np.uint8)
    if shape == 0:
        return Delta.range(page, data.tobytes(), offset, source=source, metadata=metadata)
    mask = (rng.random(span) < 0.5).astype(np.uint8)
    mask[int(rng.integers(0, span))] = 1
    if shape == 1:
        return Delta.dense(page, mask, data.tobytes(), offset, source=source, metadata=metadata)
    bits = int(mask.sum())
    return Delta.sparse(page, mask, data[:bits].tobytes(), offset, source=source,
                        metadata=metadata)  # fmt: skip


def random_history(bus: mmsb.Bus, rng: np.random.Generator, rounds: int, written: Written) -> None:
    """Commits of every kind the delta and commit tables show, in a random order."""
    sizes = {int(p): int(bus.page(p).size) for p in bus.page_ids()}
    for step in range(rounds):
        if len(sizes) < 4:
            for p in bus.create_pages(3, int(rng.integers(8, 48))).tolist():
                sizes[p] = int(bus.page(p).size)
        live = sorted(sizes)
        r = rng.random()
        if r < 0.55:  # a batch: several pages, shapes, sources, per-row metadata
            pages = [live[int(i)] for i in rng.integers(0, len(live), int(rng.integers(1, 12)))]
            deltas = [random_delta(rng, p, sizes[p]) for p in pages]
            commit = bus.apply_batch(DeltaBatch.from_deltas(deltas))
            for i, d in enumerate(deltas):
                mask = None if d.mask is None else d.mask.tobytes()
                written[commit.first_delta_id + i] = (d.payload.tobytes(), mask)
        elif r < 0.7:  # a single write
            p = live[int(rng.integers(0, len(live)))]
            data = rng.integers(0, 256, int(rng.integers(1, sizes[p] + 1)), dtype=np.uint8)
            did = bus.write(p, data.tobytes(), source="single", metadata={"n": step})
            written[did] = (data.tobytes(), None)
        elif r < 0.8:
            p = live[int(rng.integers(0, len(live)))]
            bus.set_metadata(p, None if rng.random() < 0.3 else {"tag": f"t{step}"})
        elif r < 0.86:
            p = live[int(rng.integers(0, len(live)))]
            rename = getattr(bus, "rename_page", None)
            if rename is not None:
                rename(p, None if rng.random() < 0.3 else f"page{step}")
        elif r < 0.93:
            gone = live[int(rng.integers(0, len(live)))]
            bus.delete_page(gone)
            del sizes[gone]
        else:
            for p in bus.create_pages(2, int(rng.integers(8, 48))).tolist():
                sizes[p] = int(bus.page(p).size)


@pytest.fixture
def written_bus(tmp_path: Path) -> Iterator[tuple[mmsb.Bus, Written]]:
    """A bus with a random history written across a reopen (the second half is indexed
    as it is committed, the first half from the log on first use)."""
    rng = np.random.default_rng(14)
    written: Written = {}
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", clock=Clock()) as bus:
        bus.create_pages(4, 32)
        random_history(bus, rng, 120, written)
    later = Clock()
    later.now = 10**12
    with mmsb.open(path, sync="off", clock=later) as bus:
        bus.history_table()  # index built here, then kept current by the commits below
        random_history(bus, rng, 120, written)
        yield bus, written


def every_page(bus: mmsb.Bus) -> list[int]:
    table = bus.history_table()
    return sorted(set(table.column("page_id").to_pylist()))


def same(a: Any, b: Any) -> bool:
    """Two tables hold the same rows and columns (a dictionary column's dictionary may
    differ: it holds only the values its table has, in the order met)."""
    return bool(a.column_names == b.column_names and a.to_pylist() == b.to_pylist())


def as_records(table: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def commit_rows(table: Any) -> list[dict[str, Any]]:
    """The commit table's rows, times as nanoseconds."""
    return [{**r, "time": int(pd.Timestamp(r["time"]).value)} for r in as_records(table)]


def record_row(rec: mmsb.DeltaRecord) -> dict[str, Any]:
    """What a delta table row holds for a history record."""
    return {
        "lsn": rec.lsn, "time": rec.timestamp, "delta_id": rec.delta_id, "page_id": rec.page_id,
        "epoch": rec.epoch, "offset": rec.offset, "length": rec.length, "kind": rec.shape,
        "source": rec.source, "metadata": rec.metadata,
    }  # fmt: skip


def table_row(row: dict[str, Any]) -> dict[str, Any]:
    """A table row made comparable with :func:`record_row`: time as nanoseconds, metadata
    parsed."""
    out = {k: row[k] for k in DELTA_COLUMNS}
    out["time"] = int(pd.Timestamp(row["time"]).value)
    out["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    return out


# -- the delta table against the oracles ------------------------------------------------------


def test_every_column_matches_history_page_by_page(
    written_bus: tuple[mmsb.Bus, Written],
) -> None:
    bus, _ = written_bus
    whole = bus.history_table()
    assert whole.column_names == DELTA_COLUMNS
    rows = [table_row(r) for r in as_records(whole)]
    pages = every_page(bus)
    assert len(pages) > 8
    total = 0
    for p in range(1, max(pages) + 1):
        want = [record_row(r) for r in reversed(bus.history(p))]  # oldest first
        assert [r for r in rows if r["page_id"] == p] == want, p
        assert [table_row(r) for r in as_records(bus.history_table(p))] == want, p
        total += len(want)
    assert total == len(rows)
    kinds = {r["kind"] for r in rows}
    assert {"range", "dense", "sparse", "metadata"} <= kinds
    assert {"api", "sensor", "single", "metadata"} <= {r["source"] for r in rows}
    # log order: by LSN, and by delta id within a commit
    keys = [(r["lsn"], r["delta_id"]) for r in rows]
    assert keys == sorted(keys)


def test_payload_and_mask_are_the_bytes_written(written_bus: tuple[mmsb.Bus, Written]) -> None:
    bus, written = written_bus
    table = bus.history_table(payload=True)
    assert table.column_names == [*DELTA_COLUMNS, "payload", "mask"]
    assert table.schema.field("payload").type == pa.large_binary()
    dids = table.column("delta_id").to_pylist()
    kinds = table.column("kind").to_pylist()
    payloads = table.column("payload").to_pylist()
    masks = table.column("mask").to_pylist()
    lengths = table.column("length").to_pylist()
    deltas = 0
    for did, kind, data, mask, length in zip(dids, kinds, payloads, masks, lengths, strict=True):
        if kind in ("metadata", "name"):
            assert did == 0 and data is None and mask is None
            continue
        deltas += 1
        assert (data, mask) == written[did], did
        assert (mask is None) == (kind == "range")
        assert length == (len(data) if mask is None else len(mask))
    assert deltas == len(written)
    # the same rows and columns as without payload
    assert same(table.select(DELTA_COLUMNS), bus.history_table())
    # one page: its rows of the whole table, payloads gathered out of their frames
    p = max(every_page(bus), key=lambda q: len(bus.history(q)))
    one = bus.history_table(p, payload=True)
    mine = table.filter(pa.compute.equal(table.column("page_id"), p))
    assert same(one, mine) and one.num_rows > 5


def test_metadata_and_name_changes_are_rows(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off", clock=Clock()) as bus:
        a, b = bus.create_pages(2, 8).tolist()
        bus.set_metadata(a, {"unit": "K", "x": [1, 2]})
        bus.write(a, b"\x01", metadata={"why": "calibration"})
        bus.set_metadata(a, None)
        rows = as_records(bus.history_table(a))
        assert [r["kind"] for r in rows] == ["metadata", "range", "metadata"]
        assert [r["source"] for r in rows] == ["metadata", "api", "metadata"]
        assert [r["metadata"] for r in rows] == ['{"unit":"K","x":[1,2]}',
                                                 '{"why":"calibration"}', None]  # fmt: skip
        assert [r["delta_id"] for r in rows] == [0, 1, 0]
        if hasattr(bus, "rename_page"):
            bus.rename_page(b, "temperature")
            bus.rename_page(b, None)
            rows = as_records(bus.history_table(b))
            assert [r["kind"] for r in rows] == ["name", "name"]
            assert [json.loads(r["metadata"]) for r in rows] == [{"name": "temperature"},
                                                                 {"name": None}]  # fmt: skip
            want = [record_row(r) for r in reversed(bus.history(b))]
            assert [table_row(r) for r in rows] == want


def test_a_deleted_page_keeps_its_rows(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    bus.write(a, b"\x01\x02")
    bus.write(b, b"\x03")
    bus.delete_page(a)
    rows = as_records(bus.history_table(a))
    assert [(r["page_id"], r["length"]) for r in rows] == [(a, 2)]
    with pytest.raises(PageNotFoundError):
        bus.history_table(99)
    with pytest.raises(PageNotFoundError):
        bus.history_table(0)


def test_an_empty_history_has_the_schema(bus: mmsb.Bus) -> None:
    table = bus.history_table(payload=True)
    assert table.num_rows == 0 and table.column_names == [*DELTA_COLUMNS, "payload", "mask"]
    assert table.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert bus.history_table(level="commit").num_rows == 0
    (p,) = bus.create_pages(1, 8).tolist()
    assert bus.history_table(p).num_rows == 0
    assert bus.history_table(level="commit").column("type").to_pylist() == ["create"]


# -- LSN ranges and retention -------------------------------------------------------------


def test_lsn_ranges_are_inclusive_slices_of_the_whole(
    written_bus: tuple[mmsb.Bus, Written],
) -> None:
    bus, _ = written_bus
    whole = bus.history_table()
    lsn = np.asarray(whole.column("lsn"))
    rng = np.random.default_rng(3)
    for lo, hi in [(0, bus.lsn), (1, 1), (5, 60), (bus.lsn, bus.lsn), (40, 39),
                   *rng.integers(0, bus.lsn + 1, (6, 2)).tolist()]:  # fmt: skip
        part = bus.history_table(start_lsn=lo, end_lsn=hi)
        assert same(part, whole.filter(pa.array((lsn >= lo) & (lsn <= hi)))), (lo, hi)
        commits = bus.history_table(start_lsn=lo, end_lsn=hi, level="commit")
        assert commits.column("lsn").to_pylist() == list(range(max(lo, 1), hi + 1))
    assert same(
        bus.history_table(start_lsn=bus.lsn - 10), whole.filter(pa.array(lsn >= bus.lsn - 10))
    )
    for bad in (-1, bus.lsn + 1):
        with pytest.raises(HistoryUnavailableError, match="outside"):
            bus.history_table(start_lsn=bad)
        with pytest.raises(HistoryUnavailableError, match="outside"):
            bus.history_table(end_lsn=bad)
    with pytest.raises(InvalidArgumentError):
        bus.history_table(start_lsn="3")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        bus.history_table(end_lsn=2.0)  # type: ignore[arg-type]


def test_compacted_history_starts_where_the_log_starts(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "bus", sync="off", keep_checkpoints=1) as bus:
        a, b = bus.create_pages(2, 8).tolist()
        bus.write(a, b"\x05" * 8)
        bus.checkpoint()
        bus.write(b, b"\x01")
        bus.checkpoint()
        bus.write(b, b"\x02")
        bus.set_metadata(a, {"after": 1})
        info = bus.compact()
        assert info.segments_removed >= 1
        first = info.oldest_lsn + 1
        table = bus.history_table()
        assert min(table.column("lsn").to_pylist()) >= first
        for p in (a, b):  # the rows history() still has, no more
            want = [record_row(r) for r in reversed(bus.history(p))]
            assert [table_row(r) for r in as_records(bus.history_table(p))] == want
        assert [table_row(r)["kind"] for r in as_records(bus.history_table(a))] == ["metadata"]
        commits = bus.history_table(level="commit")
        assert commits.column("lsn").to_pylist()[0] >= first
        with pytest.raises(HistoryUnavailableError, match=f"the log starts at LSN {first}"):
            bus.history_table(start_lsn=first - 1)
        with pytest.raises(HistoryUnavailableError, match="retained"):
            bus.history_table(start_lsn=0, level="commit")
        assert same(bus.history_table(start_lsn=first), table)


# -- the commit table ------------------------------------------------------------------------


def log_commits(path: Path) -> list[dict[str, Any]]:
    """The commit table's rows, from a plain scan of the log (the slow oracle)."""
    out = []
    for frame in LogReader(str(path / layout.LOG_DIR)).frames():
        rec = codec.decode(frame.type, frame.payload)
        deltas, nbytes = 0, 0
        if isinstance(rec, codec.DecodedBatch):
            deltas, nbytes = len(rec.batch), int(rec.batch.plens.sum())
            pages = len(set(rec.batch.page_ids.tolist()))
        elif isinstance(rec, codec.CreateRecord):
            pages = rec.n
        elif isinstance(rec, codec.DeleteRecord | codec.RelayoutRecord):
            pages = len(rec.ids)
        elif isinstance(rec, codec.GraphRecord):
            pages = len(set(rec.parents.tolist()) | set(rec.children.tolist()))
        else:
            pages = 1
        out.append({"lsn": frame.lsn, "time": frame.timestamp,
                    "type": codec.FRAME_TYPES[frame.type], "deltas": deltas, "pages": pages,
                    "payload_bytes": nbytes, "log_bytes": frame.size})  # fmt: skip
    return out


def test_the_commit_table_matches_the_log(written_bus: tuple[mmsb.Bus, Written]) -> None:
    bus, _ = written_bus
    bus.graph.add_edge(*bus.page_ids()[:2].tolist())  # a graph frame too
    table = bus.history_table(level="commit")
    assert table.column_names == COMMIT_COLUMNS
    rows = commit_rows(table)
    want = log_commits(Path(bus.path))
    assert rows == want and len(rows) == bus.lsn
    assert {"batch", "create", "delete", "metadata", "graph"} <= {r["type"] for r in rows}
    # the deltas agree with the delta table
    deltas = bus.history_table()
    ranges = deltas.filter(pa.compute.not_equal(deltas.column("delta_id"), 0))
    assert sum(r["deltas"] for r in rows) == ranges.num_rows
    # one page: the commits that wrote it or changed its metadata, described whole
    p = every_page(bus)[0]
    mine = bus.history_table(p, level="commit")
    lsns = sorted(set(bus.history_table(p).column("lsn").to_pylist()))
    assert mine.column("lsn").to_pylist() == lsns
    assert commit_rows(mine) == [r for r in want if r["lsn"] in lsns]


# -- the two forms ---------------------------------------------------------------------------


def test_pandas_and_arrow_agree(written_bus: tuple[mmsb.Bus, Written]) -> None:
    bus, _ = written_bus
    for level, payload in (("delta", False), ("delta", True), ("commit", False)):
        table = bus.history_table(level=level, payload=payload)  # type: ignore[arg-type]
        frame = bus.history_table(level=level, payload=payload, format="pandas")  # type: ignore[arg-type]
        assert isinstance(table, pa.Table) and isinstance(frame, pd.DataFrame)
        pd.testing.assert_frame_equal(frame, table.to_pandas())
        assert list(frame.columns) == table.column_names and len(frame) == table.num_rows
        assert str(frame["time"].dtype) == "datetime64[ns, UTC]"
        assert frame["lsn"].tolist() == table.column("lsn").to_pylist()
        assert (frame["time"].astype("int64").tolist()
                == table.column("time").cast(pa.int64()).to_pylist())  # fmt: skip
    frame = bus.history_table(format="pandas")
    assert isinstance(frame["kind"].dtype, pd.CategoricalDtype)
    assert frame["source"].tolist() == bus.history_table().column("source").to_pylist()
    # the commit times of the delta rows, read back as nanoseconds, are the records' times
    p = every_page(bus)[1]
    times = bus.history_table(p, format="pandas")["time"].astype("int64").tolist()
    assert times == [r.timestamp for r in reversed(bus.history(p))]


# -- beside a live writer, and bad input -------------------------------------------------------


def test_a_read_only_bus_beside_a_live_writer(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    rng = np.random.default_rng(5)
    written: Written = {}
    with mmsb.open(path, sync="off", clock=Clock()) as writer:
        writer.create_pages(4, 16)
        random_history(writer, rng, 30, written)
        with mmsb.open(path, readonly=True) as reader:
            assert same(reader.history_table(), writer.history_table())
            before = reader.lsn
            random_history(writer, rng, 30, written)
            assert reader.wait_for(writer.lsn, timeout=10)
            table = reader.history_table(payload=True)
            assert same(table, writer.history_table(payload=True))
            assert max(table.column("lsn").to_pylist()) > before
            assert same(reader.history_table(level="commit"), writer.history_table(level="commit"))
            for p in every_page(writer):
                want = [record_row(r) for r in reversed(writer.history(p))]
                assert [table_row(r) for r in as_records(reader.history_table(p))] == want


def test_a_damaged_frame_is_reported(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 64).tolist()
    for i in range(4):
        bus.write(p, bytes([i]) * 64)
    bus.history_table()  # the index, built before the damage
    frames = [f for f in LogReader(str(Path(bus.path) / layout.LOG_DIR)).frames()
              if f.type == codec.BATCH]  # fmt: skip
    seg = Path(bus.path) / layout.LOG_DIR / frames[2].segment
    raw = bytearray(seg.read_bytes())
    raw[frames[2].offset + FRAME_HEADER_SIZE + frames[2].payload.nbytes - 1] ^= 0xFF
    seg.write_bytes(bytes(raw))
    with pytest.raises(CorruptLogError, match="checksum"):
        bus.history_table()
    with pytest.raises(CorruptLogError):
        bus.history_table(level="commit")
    assert bus.history_table(end_lsn=frames[1].lsn).num_rows == 2  # the frames before it


def test_bad_arguments(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 8).tolist()
    bus.write(p, b"\x01")
    for kwargs in ({"level": "frame"}, {"format": "polars"}, {"payload": 1},
                   {"level": "commit", "payload": True}):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            bus.history_table(**kwargs)
    with pytest.raises(PageNotFoundError):
        bus.history_table(True)  # type: ignore[arg-type]
    bus.close()
    with pytest.raises(BusClosedError):
        bus.history_table()


def test_a_missing_extra_names_it(bus: mmsb.Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    (p,) = bus.create_pages(1, 8).tolist()
    bus.write(p, b"\x01")
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if it were not installed
    assert bus.history_table().num_rows == 1  # an Arrow table needs no pandas
    with pytest.raises(ImportError, match=r"pandas .*pip install 'mmsb\[analysis\]'"):
        bus.history_table(format="pandas")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    for kwargs in ({}, {"level": "commit"}, {"format": "pandas"}):
        with pytest.raises(ImportError, match=r"pyarrow .*pip install 'mmsb\[analysis\]'"):
            bus.history_table(**kwargs)


def test_import_mmsb_loads_neither_pyarrow_nor_pandas(tmp_path: Path) -> None:
    code = (
        "import sys, mmsb\n"
        "with mmsb.open(None) as bus:\n"
        "    (p,) = bus.create_pages(1, 8).tolist(); bus.write(p, b'x'); bus.history(p)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'pandas')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120, cwd=tmp_path).stdout  # fmt: skip
    assert out.strip() == "[]"
