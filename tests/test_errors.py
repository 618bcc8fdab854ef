"""Bad input: each invalid call raises its typed error, logs and applies nothing, and leaves
the bus usable. Damaged or foreign files are refused with a clear error."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import (
    BusClosedError,
    BusLockedError,
    BusNotFoundError,
    CorruptCheckpointError,
    CorruptLogError,
    CorruptStateError,
    Delta,
    DeltaBatch,
    DeviceUnavailableError,
    FormatVersionError,
    HistoryUnavailableError,
    InvalidArgumentError,
    InvalidDeltaError,
    MMSBError,
    PageNotFoundError,
    ReadOnlyError,
)


def disk_files(path: str) -> dict[str, bytes]:
    """Every log segment and checkpoint file, by relative path, with its bytes."""
    out = {}
    for sub in ("log", "ckpt"):
        d = os.path.join(path, sub)
        for name in sorted(os.listdir(d)):
            with open(os.path.join(d, name), "rb") as f:
                out[f"{sub}/{name}"] = f.read()
    return out


@contextmanager
def nothing_changes(bus: mmsb.Bus) -> Iterator[None]:
    lsn, digest, files = bus.lsn, bus.state_hash(), disk_files(bus.path)
    pages = {int(p): bus.read(p).tobytes() for p in bus.page_ids()}
    yield
    assert bus.lsn == lsn
    assert bus.state_hash() == digest
    assert disk_files(bus.path) == files
    assert {int(p): bus.read(p).tobytes() for p in bus.page_ids()} == pages


def rejected(
    bus: mmsb.Bus, exc: type[BaseException], match: str, call: Callable[[], object]
) -> BaseException:
    """``call`` raises exactly ``exc`` with a message matching ``match``; nothing changes."""
    with nothing_changes(bus), pytest.raises(exc, match=match) as info:
        call()
    assert type(info.value) is exc
    return info.value


class Setup:
    """A bus with an 8-byte uint8 page, a 32-byte float64 page and a deleted page."""

    def __init__(self, path: Path) -> None:
        self.bus = mmsb.open(path, sync="off")
        self.raw = self.bus.create_page(8)
        self.f64 = self.bus.create_page(32, dtype="float64")
        self.gone = self.bus.create_page(8)
        self.bus.write(self.raw, b"original")
        self.bus.write(self.f64, np.array([1.0, 2.0, 3.0, 4.0]))
        self.bus.delete_page(self.gone)
        self.bus.checkpoint()
        self.bus.write(self.raw, b"O")
        self.next_delta = 4

    def still_usable(self) -> None:
        """A good write after the rejected calls gets the next delta id and lands."""
        bus = self.bus
        lsn = bus.lsn
        assert bus.write(self.raw, b"ok", offset=6) == self.next_delta
        assert bus.lsn == lsn + 1
        assert bus.read(self.raw).tobytes() == b"Originok"
        assert bus.verify().ok


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path / "bus")
    yield s
    s.still_usable()
    s.bus.close()


# -- pages that do not exist ---------------------------------------------------------------


def test_unknown_page(setup: Setup) -> None:
    bus = setup.bus
    rejected(bus, PageNotFoundError, "page 99 does not exist", lambda: bus.write(99, b"x"))
    rejected(bus, PageNotFoundError, "page 99 does not exist", lambda: bus.read(99))
    rejected(bus, PageNotFoundError, "page 99 does not exist", lambda: bus.page(99))
    rejected(bus, PageNotFoundError, "page 99 does not exist", lambda: bus.delete_page(99))
    err = rejected(
        bus, PageNotFoundError, r"batch rows \[0\] target unknown or deleted pages \[99\]",
        lambda: bus.apply(Delta.range(99, b"x")),
    )  # fmt: skip
    assert err.page_ids == [99]  # type: ignore[attr-defined]
    rejected(
        bus, PageNotFoundError, "page id must be an integer or a page name, got '1'",
        lambda: bus.write("1", b"x"),  # type: ignore[arg-type]
    )  # fmt: skip


def test_deleted_page(setup: Setup) -> None:
    bus, gone = setup.bus, setup.gone
    rejected(bus, PageNotFoundError, f"page {gone} was deleted", lambda: bus.write(gone, b"x"))
    rejected(bus, PageNotFoundError, f"page {gone} was deleted", lambda: bus.read(gone))
    rejected(bus, PageNotFoundError, f"page {gone} was deleted", lambda: bus.delete_page(gone))
    rejected(
        bus, PageNotFoundError, rf"rows \[0\] target unknown or deleted pages \[{gone}\]",
        lambda: bus.apply(Delta.dense(gone, [1], b"x")),
    )  # fmt: skip


def test_deleting_a_page_twice_in_one_call(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidArgumentError, "the same page id twice",
        lambda: bus.delete_pages([setup.raw, setup.raw]),
    )  # fmt: skip
    rejected(
        bus, PageNotFoundError, f"page {setup.gone} was deleted",
        lambda: bus.delete_pages([setup.raw, setup.gone]),  # the live one is not deleted either
    )  # fmt: skip


# -- deltas that do not fit ------------------------------------------------------------------


def test_delta_past_page_end(setup: Setup) -> None:
    bus, raw = setup.bus, setup.raw
    rejected(
        bus, InvalidDeltaError,
        rf"page {raw} reaches past the end of the page \(offset 0 \+ length 9 > page size 8\)",
        lambda: bus.write(raw, b"123456789"),
    )  # fmt: skip
    rejected(
        bus, InvalidDeltaError, r"offset 8 \+ length 1 > page size 8",
        lambda: bus.write(raw, b"x", offset=8),
    )  # fmt: skip
    err = rejected(
        bus, InvalidDeltaError,
        rf"batch rows \[0\] reach past the end of their page \(row 0: offset 7 \+ length 2 > "
        rf"page {raw} size 8\)",
        lambda: bus.apply(Delta.range(raw, b"ab", 7)),
    )  # fmt: skip
    assert err.rows == [0]  # type: ignore[attr-defined]
    # a masked delta spans its mask, even where the mask is clear
    rejected(
        bus, InvalidDeltaError, r"offset 6 \+ length 3 > page",
        lambda: bus.apply(Delta.dense(raw, [1, 0, 0], b"abc", 6)),
    )  # fmt: skip
    rejected(
        bus, InvalidDeltaError, r"offset 4 \+ length 5 > page",
        lambda: bus.apply(Delta.sparse(raw, [1, 0, 0, 0, 0], b"a", 4)),
    )  # fmt: skip


def test_negative_offset(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidDeltaError, "offset -1 is out of range",
        lambda: bus.write(setup.raw, b"x", offset=-1),
    )  # fmt: skip


def test_empty_write(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidDeltaError, f"empty payload for page {setup.raw}",
        lambda: bus.write(setup.raw, b""),
    )  # fmt: skip


def test_dense_mask_payload_mismatch(setup: Setup) -> None:
    bus, raw = setup.bus, setup.raw
    rejected(
        bus, InvalidDeltaError, rf"page {raw}: mask has 2 entries but payload has 3 bytes",
        lambda: bus.apply(Delta.dense(raw, [1, 1], b"abc")),
    )  # fmt: skip
    forged = DeltaBatch.from_deltas([Delta.dense(raw, [1, 1, 1], b"abc")])
    forged.plens = np.array([2], np.int64)  # columns no constructor would produce
    rejected(
        bus, InvalidDeltaError, r"payload length differs from the span in rows \[0\]",
        lambda: bus.apply_batch(forged),
    )  # fmt: skip


def test_sparse_payload_differs_from_set_bits(setup: Setup) -> None:
    bus, raw = setup.bus, setup.raw
    rejected(
        bus, InvalidDeltaError, rf"page {raw}: mask has 2 set bits but payload has 1 bytes",
        lambda: bus.apply(Delta.sparse(raw, [1, 0, 1], b"a")),
    )  # fmt: skip
    good = Delta.range(raw, b"zz")
    forged = DeltaBatch.from_deltas([good, Delta.sparse(raw, [1, 0, 1], b"ab")])
    forged.mask = np.array([1, 1, 1], np.uint8)  # now three set bits for two bytes
    rejected(
        bus, InvalidDeltaError,
        r"sparse payload length differs from the set mask bits in rows \[1\] "
        r"\(row 1: 2 bytes, 3 bits\)",
        lambda: bus.apply_batch(forged),
    )  # fmt: skip


def test_batch_with_one_bad_row_applies_nothing(setup: Setup) -> None:
    bus, raw, f64 = setup.bus, setup.raw, setup.f64
    rows = [raw, f64, 77, raw]
    err = rejected(
        bus, PageNotFoundError, r"batch rows \[2\] target unknown or deleted pages \[77\]",
        lambda: bus.apply_batch(DeltaBatch.from_ranges(rows, [0, 0, 0, 4], [b"AAAA"] * 4)),
    )  # fmt: skip
    assert err.page_ids == [77]  # type: ignore[attr-defined]
    err = rejected(
        bus, InvalidDeltaError, r"batch rows \[1, 3\] reach past the end .*row 1: offset 6",
        lambda: bus.apply_batch(
            DeltaBatch.from_ranges([raw, raw, f64, raw], [0, 6, 0, 5], [b"AAAA"] * 4)
        ),
    )  # fmt: skip
    assert err.rows == [1, 3]  # type: ignore[attr-defined]
    mixed = DeltaBatch.from_deltas(
        [
            Delta.range(raw, b"AA"),
            Delta.dense(f64, [1] * 8, b"B" * 8),
            Delta.range(setup.gone, b"C"),
        ]
    )
    rejected(
        bus, PageNotFoundError, rf"rows \[2\] target unknown or deleted pages \[{setup.gone}\]",
        lambda: bus.apply_batch(mixed),
    )  # fmt: skip


# -- page shapes, dtypes and locations -----------------------------------------------------


@pytest.mark.parametrize("size", [0, -8])
def test_page_size_not_positive(setup: Setup, size: int) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidArgumentError, rf"page size must be in \[1, 4294967295\], got {size}",
        lambda: bus.create_page(size),
    )  # fmt: skip


def test_page_count_not_positive(setup: Setup) -> None:
    bus = setup.bus
    for n in (0, -1, True, 2.0):
        rejected(
            bus, InvalidArgumentError, "page count must be a positive integer",
            lambda n=n: bus.create_pages(n, 8),
        )  # fmt: skip


@pytest.mark.parametrize(("size", "dtype", "item"), [(12, "float64", 8), (3, "int16", 2)])
def test_page_size_not_a_multiple_of_itemsize(setup: Setup, size, dtype, item) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidArgumentError,
        f"page size {size} is not a multiple of the {dtype} itemsize {item}",
        lambda: bus.create_page(size, dtype=dtype),
    )  # fmt: skip


def test_unknown_dtype(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidArgumentError, "unknown dtype 'float128x'",
        lambda: bus.create_page(16, dtype="float128x"),
    )  # fmt: skip
    for dtype, name in (("U4", "str128"), ("datetime64", "datetime64"), (object, "object")):
        rejected(
            bus, InvalidArgumentError, f"unsupported page dtype '{name}'; supported: uint8",
            lambda dtype=dtype: bus.create_page(16, dtype=dtype),
        )  # fmt: skip


def test_payload_of_the_wrong_dtype(setup: Setup) -> None:
    bus, f64, raw = setup.bus, setup.f64, setup.raw
    wrong = np.array([1.0, 2.0], np.float32)
    message = f"payload dtype float32 does not match page {f64} dtype float64"
    rejected(bus, InvalidDeltaError, message, lambda: bus.write(f64, wrong))
    rejected(bus, InvalidDeltaError, message, lambda: bus.apply(Delta.range(f64, wrong)))
    rejected(
        bus, InvalidDeltaError, f"payload dtype int64 does not match page {raw} dtype uint8",
        lambda: bus.write(raw, np.array([1], np.int64)),
    )  # fmt: skip


def test_two_dimensional_payload(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidDeltaError, r"payload must be 1-D, got an array of shape \(2, 2\)",
        lambda: bus.write(setup.f64, np.zeros((2, 2))),
    )  # fmt: skip


def test_typed_payload_at_an_unaligned_offset(setup: Setup) -> None:
    bus, f64 = setup.bus, setup.f64
    message = f"offset 4 is not a multiple of page {f64}'s float64 itemsize 8"
    rejected(bus, InvalidDeltaError, message, lambda: bus.write(f64, np.ones(1), offset=4))
    rejected(bus, InvalidDeltaError, message, lambda: bus.apply(Delta.range(f64, np.ones(1), 4)))
    # raw bytes carry no dtype: they may go anywhere in the page
    bus.write(f64, b"\x00" * 4, offset=4)
    setup.next_delta += 1


def test_unknown_location(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidArgumentError, "unknown location 'tpu'; expected one of cpu, gpu, unified",
        lambda: bus.create_page(8, location="tpu"),
    )  # fmt: skip


@pytest.mark.parametrize("location", ["gpu", "unified"])
def test_device_location_without_a_backend(setup: Setup, location: str) -> None:
    bus = setup.bus
    rejected(
        bus, DeviceUnavailableError,
        f"location '{location}' needs a device backend .* cpu_fallback=True",
        lambda: bus.create_page(8, location=location),
    )  # fmt: skip


@pytest.mark.parametrize("location", ["gpu", "unified"])
def test_device_location_with_cpu_fallback(tmp_path: Path, location: str) -> None:
    with mmsb.open(tmp_path / "b", cpu_fallback=True) as bus:
        pid = bus.create_page(16, dtype="float32", location=location)
        bus.write(pid, np.array([1.5, 2.5, 3.5, 4.5], np.float32))
        assert bus.page(pid).location == location
        assert bus.read(pid).tolist() == [1.5, 2.5, 3.5, 4.5]
    with mmsb.open(tmp_path / "b") as bus:  # the page survives; no device needed to read it
        assert bus.page(pid).location == location
        assert bus.read(pid).tolist() == [1.5, 2.5, 3.5, 4.5]


def test_non_json_metadata(setup: Setup) -> None:
    bus, raw = setup.bus, setup.raw
    rejected(
        bus, InvalidArgumentError, "page metadata is not JSON-serialisable",
        lambda: bus.create_page(8, metadata={"f": object()}),
    )  # fmt: skip
    rejected(
        bus, InvalidArgumentError, "page metadata must be a dict with str keys",
        lambda: bus.create_page(8, metadata={1: "x"}),  # type: ignore[dict-item]
    )  # fmt: skip
    rejected(
        bus, InvalidArgumentError, "delta metadata is not JSON-serialisable",
        lambda: bus.write(raw, b"x", metadata={"s": {1, 2}}),
    )  # fmt: skip
    rejected(
        bus, InvalidArgumentError, "delta metadata is not JSON-serialisable",
        lambda: bus.write(raw, b"x", metadata={"nan": float("inf")}),
    )  # fmt: skip


def test_bad_source(setup: Setup) -> None:
    bus = setup.bus
    rejected(
        bus, InvalidDeltaError, "source must be a str",
        lambda: bus.write(setup.raw, b"x", source=None),  # type: ignore[arg-type]
    )  # fmt: skip


def test_wrong_argument_types(setup: Setup) -> None:
    bus = setup.bus
    rejected(bus, InvalidDeltaError, "expected a Delta, got bytes", lambda: bus.apply(b"x"))
    rejected(
        bus, InvalidDeltaError, "expected a DeltaBatch, got list",
        lambda: bus.apply_batch([Delta.range(setup.raw, b"x")]),  # type: ignore[arg-type]
    )  # fmt: skip
    rejected(
        bus, InvalidDeltaError, "payload must be bytes-like or a numpy array, got str",
        lambda: bus.write(setup.raw, "text"),
    )  # fmt: skip


def test_history_out_of_range(setup: Setup) -> None:
    bus = setup.bus
    rejected(bus, HistoryUnavailableError, r"LSN 99 is outside \[0, 7\]", lambda: bus.at(99))


# -- modes of the bus ------------------------------------------------------------------------


def test_writes_on_a_read_only_bus(setup: Setup) -> None:
    path = setup.bus.path
    ro = mmsb.open(path, readonly=True)
    try:
        for call in (
            lambda: ro.write(setup.raw, b"x"),
            lambda: ro.apply(Delta.range(setup.raw, b"x")),
            lambda: ro.apply_batch(DeltaBatch.from_ranges([setup.raw], [0], [b"x"])),
            lambda: ro.create_page(8),
            lambda: ro.create_pages(2, 8),
            lambda: ro.delete_page(setup.raw),
            lambda: ro.checkpoint(),
            lambda: ro.compact(),
            lambda: ro.sync_now(),
        ):
            rejected(ro, ReadOnlyError, f"bus at {path} is open read-only", call)
    finally:
        ro.close()


def test_writes_on_a_closed_bus(tmp_path: Path) -> None:
    bus = mmsb.open(tmp_path / "b")
    pid = bus.create_page(8)
    bus.close()
    files = disk_files(bus.path)
    for call in (
        lambda: bus.write(pid, b"x"),
        lambda: bus.apply(Delta.range(pid, b"x")),
        lambda: bus.apply_batch(DeltaBatch.from_ranges([pid], [0], [b"x"])),
        lambda: bus.create_page(8),
        lambda: bus.delete_page(pid),
        lambda: bus.checkpoint(),
        lambda: bus.compact(),
        lambda: bus.read(pid),
        lambda: bus.state_hash(),
    ):
        with pytest.raises(BusClosedError, match="Bus is closed") as info:
            call()
        assert type(info.value) is BusClosedError
    assert disk_files(bus.path) == files


def test_second_writer(setup: Setup) -> None:
    bus = setup.bus
    with nothing_changes(bus), pytest.raises(BusLockedError, match="already open for writing"):
        mmsb.open(bus.path)


# -- damaged and foreign files ---------------------------------------------------------------


def make_bus(path: Path) -> None:
    with mmsb.open(path) as bus:
        pid = bus.create_page(8)
        bus.write(pid, b"payload!")


def test_non_empty_directory_that_is_not_a_bus(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FormatVersionError, match="non-empty directory without an MMSB manifest"):
        mmsb.open(tmp_path)
    with pytest.raises(FormatVersionError, match=r"is not an MMSB bus \(no MANIFEST.json\)"):
        mmsb.open(tmp_path, create=False)
    with pytest.raises(FormatVersionError, match=r"is not an MMSB bus \(no MANIFEST.json\)"):
        mmsb.open(tmp_path, readonly=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # left untouched


def test_a_plain_file_is_not_a_bus(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"data")
    with pytest.raises(FormatVersionError, match="exists and is not a directory"):
        mmsb.open(target)
    assert target.read_bytes() == b"data"


@pytest.mark.parametrize(
    "content",
    [b"\x00\xffgarbage", b"", b"[1, 2]", b'{"format": "sqlite", "version": 1}',
     b'{"format": "mmsb", "version": 1', b'{"format": "mmsb"}'],
)  # fmt: skip
def test_garbage_manifest(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "b"
    make_bus(path)
    (path / "MANIFEST.json").write_bytes(content)
    with pytest.raises(FormatVersionError, match="is not a valid MMSB manifest"):
        mmsb.open(path)
    with pytest.raises(FormatVersionError, match="is not a valid MMSB manifest"):
        mmsb.open(path, readonly=True)


def test_manifest_from_a_future_version(tmp_path: Path) -> None:
    path = tmp_path / "b"
    make_bus(path)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["version"] = 99
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match="uses MMSB format version 99; this build reads"):
        mmsb.open(path)
    # the refused open took no lock and wrote nothing: fixing the manifest makes it usable
    manifest["version"] = 1
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with mmsb.open(path) as bus:
        assert bus.read(1).tobytes() == b"payload!"


def test_manifest_with_a_bad_segment_size(tmp_path: Path) -> None:
    path = tmp_path / "b"
    make_bus(path)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["segment_size"] = 10
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatVersionError, match="invalid segment size 10"):
        mmsb.open(path)


def test_missing_bus_with_create_false(tmp_path: Path) -> None:
    with pytest.raises(BusNotFoundError, match="no bus at"):
        mmsb.open(tmp_path / "absent", create=False)
    with pytest.raises(BusNotFoundError, match="no bus at"):
        mmsb.open(tmp_path / "absent", readonly=True)
    assert not (tmp_path / "absent").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(BusNotFoundError, match="no bus at"):
        mmsb.open(tmp_path / "empty", create=False)


def test_foreign_log_segment(tmp_path: Path) -> None:
    path = tmp_path / "b"
    make_bus(path)
    (seg,) = (path / "log").iterdir()
    seg.write_bytes(b"this is not a log segment at all, just some text" * 3)
    os.unlink(path / "state.clean")
    with pytest.raises(CorruptLogError, match="bad segment header") as info:
        mmsb.open(path)
    assert info.value.segment == seg.name
    assert info.value.offset == 0
    assert seg.exists()  # never truncated or deleted


def test_truncated_arena_after_a_clean_close_falls_back_to_replay(tmp_path: Path) -> None:
    path = tmp_path / "b"
    make_bus(path)
    os.truncate(path / "arena.bin", 0)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert bus.read(1).tobytes() == b"payload!"


def test_truncated_clean_shutdown_file_falls_back_to_replay(tmp_path: Path) -> None:
    path = tmp_path / "b"
    make_bus(path)
    os.truncate(path / "state.clean", 20)
    with mmsb.open(path) as bus:
        assert bus.recovery.mode == "replay"
        assert bus.read(1).tobytes() == b"payload!"


def test_truncated_only_checkpoint_after_compaction(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, keep_checkpoints=1) as bus:
        pid = bus.create_page(8)
        ck = bus.checkpoint()
        bus.write(pid, b"x")
        assert bus.compact().segments_removed == 1
    os.unlink(path / "state.clean")
    os.truncate(ck.path, 10)
    with pytest.raises(CorruptCheckpointError, match="no usable checkpoint"):
        mmsb.open(path)


# -- the exception hierarchy ---------------------------------------------------------------


@pytest.fixture
def error_calls(tmp_path: Path) -> Iterator[dict[type[MMSBError], Callable[[], object]]]:
    """One real call per error class that raises it."""
    bus = mmsb.open(tmp_path / "live", sync="off")
    pid = bus.create_page(8)
    closed = mmsb.open(None)
    closed.close()
    make_bus(tmp_path / "ro")
    ro = mmsb.open(tmp_path / "ro", readonly=True)
    yield {
        PageNotFoundError: lambda: bus.read(42),
        InvalidDeltaError: lambda: bus.write(pid, b"123456789"),
        InvalidArgumentError: lambda: bus.create_page(0),
        ReadOnlyError: lambda: ro.create_page(8),
        BusClosedError: lambda: closed.create_page(8),
        BusLockedError: lambda: mmsb.open(tmp_path / "live"),
        BusNotFoundError: lambda: mmsb.open(tmp_path / "nothing", create=False),
        FormatVersionError: lambda: mmsb.open(tmp_path / "ro" / "log"),
        HistoryUnavailableError: lambda: bus.at(1000),
        DeviceUnavailableError: lambda: bus.create_page(8, location="gpu"),
    }
    ro.close()
    bus.close()


@pytest.mark.parametrize(
    ("exc", "builtin"),
    [
        (PageNotFoundError, KeyError),
        (InvalidDeltaError, ValueError),
        (InvalidArgumentError, ValueError),
        (ReadOnlyError, PermissionError),
        (BusClosedError, ValueError),
        (BusLockedError, BlockingIOError),
        (BusNotFoundError, FileNotFoundError),
        (FormatVersionError, ValueError),
        (HistoryUnavailableError, LookupError),
        (DeviceUnavailableError, RuntimeError),
    ],
)
def test_each_error_is_also_the_matching_builtin(error_calls, exc, builtin) -> None:
    with pytest.raises(builtin) as info:
        error_calls[exc]()
    assert type(info.value) is exc
    assert isinstance(info.value, MMSBError)


def test_corruption_errors_are_os_errors() -> None:
    for exc in (CorruptLogError, CorruptCheckpointError):
        assert issubclass(exc, CorruptStateError)
        assert issubclass(exc, OSError)
        assert issubclass(exc, MMSBError)
    err = CorruptLogError("bad frame", "00000000000000000001.seg", 72)
    assert (str(err), err.segment, err.offset) == ("bad frame", "00000000000000000001.seg", 72)


def test_page_not_found_message_is_not_quoted(tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        try:
            bus.read(5)
        except KeyError as exc:
            assert str(exc) == "page 5 does not exist"
        else:
            pytest.fail("reading a missing page did not raise")
