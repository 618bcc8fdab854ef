"""The one failure rule of the write path (:mod:`mmsb.writer.committer`), kind by kind.

Every mutation of a writable bus is one ``Committer.commit``: stamp -> log append (+ fsync
with ``sync="always"``) -> seq odd -> apply -> publish -> listeners. The rule:

(a) a failure before the frame is durable (the append, or its fsync) changes nothing and
    surfaces as ``LogWriteError``; a failed append leaves the bus open, a failed fsync
    closes it and cuts the frame, so reopening shows the state before that commit;
(b) a failure after it (in the state change) closes the bus as a crash would and
    reopening replays the logged frame in full.

Each kind of change (page creation and deletion, a single write, a delta, batches on one
and two workers, edges, derivations, a GC relayout, the input and derived commits of a
tick) is driven into each failure on a real on-disk bus. A last test keeps the committer
the only place that appends to the log.
"""

from __future__ import annotations

import ast
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
import mmsb.graph.propagator as propagator
from mmsb.engine import kernels
from mmsb.engine.driver import effective_workers
from mmsb.storage import codec, layout, relayout
from mmsb.storage.log import LogReader, list_segments
from mmsb.storage.logwriter import LogWriter
from mmsb.storage.seqlock import SeqPublisher
from mmsb.storage.state import State
from mmsb.writer import stages

SRC = Path(mmsb.__file__).resolve().parent
Ctx = dict[str, Any]


class Injected(RuntimeError):
    """The failure a (b) test raises inside the state change."""


def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def fail_nth(
    real: Callable[..., Any],
    nth: int,
    exc: BaseException,
    when: Callable[..., bool] | None = None,
) -> Callable[..., Any]:
    """``real``, except that its ``nth`` call for which ``when(*args)`` holds raises
    ``exc`` (every other call goes through)."""
    seen = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        if when is None or when(*args, **kwargs):
            seen += 1
            if seen == nth:
                raise exc
        return real(*args, **kwargs)

    return wrapper


def of_type(ftype: int) -> Callable[..., bool]:
    """``LogWriter.append(self, ftype, lsn, ts, pieces, ...)`` appends a frame of ``ftype``."""
    return lambda _self, frame_type, *args, **kwargs: frame_type == ftype


# -- observing a bus -------------------------------------------------------------------------


def log_frames(path: Path) -> list[tuple[int, int]]:
    """(type, lsn) of every frame in the bus's log."""
    return [(f.type, f.lsn) for f in LogReader(str(path / layout.LOG_DIR)).frames()]


def log_bytes(path: Path) -> int:
    # (segments only: a file renamed for removal leaves on the unlinker's thread)
    return sum(os.path.getsize(p) for _, p in list_segments(str(path / layout.LOG_DIR)))


@dataclass(frozen=True)
class Seen:
    lsn: int
    digest: str
    frames: list[tuple[int, int]]
    log_bytes: int
    edges: list[tuple[int, ...]]
    has_edges: list[bool]
    derivations: dict[int, str]
    contents: dict[int, bytes]


def observe(bus: mmsb.Bus, ctx: Ctx) -> Seen:
    path = Path(bus.path)
    return Seen(
        lsn=bus.lsn,
        digest=bus.state_hash(),
        frames=log_frames(path),
        log_bytes=log_bytes(path),
        edges=[tuple(int(x) for x in e) for e in bus.graph.edges().tolist()],
        has_edges=[bus.graph.has_edge(p, c) for p, c in ctx.get("pairs", [])],
        derivations=bus.derivations(),
        contents={int(p): bus.read(int(p)).tobytes() for p in bus.page_ids()},
    )


# -- the kinds of change -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    ftype: int  # the frame type of the commit made to fail
    setup: Callable[[mmsb.Bus], Ctx]
    act: Callable[[mmsb.Bus, Ctx], object]
    target: tuple[object, str]  # (b): what raises inside the state change
    done: Callable[[mmsb.Bus, Ctx], None]  # (b): the change is fully there after reopen
    nth: int = 1  # the failing commit is the act's nth commit of ``ftype``
    # commits the act makes (and keeps) before the failing one, and what they leave
    earlier: int = 0
    partial: Callable[[mmsb.Bus, Ctx], None] | None = None
    after: Callable[[mmsb.Bus, Ctx], None] | None = None  # (a): more proof the bus goes on
    apply_nth: int | None = None  # (b): the target's failing call, when not ``nth``


def small(bus: mmsb.Bus) -> Ctx:
    ids = [int(i) for i in bus.create_pages(4, 64, dtype="float64")]
    bus.write(ids[0], np.arange(8, dtype=np.float64))
    return {"ids": ids, "probe": ids[3]}


def create_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    new = list(range(5, 8))  # ids are never reused: 1..4 exist, the commit made 5..7
    assert all(p in bus and bus.page(p).size == 256 for p in new)
    assert all(not bus.read(p).any() for p in new)
    assert 8 not in bus


def delete_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    assert ctx["ids"][1] not in bus and ctx["ids"][2] not in bus
    assert ctx["ids"][0] in bus and ctx["ids"][3] in bus


WRITE = np.linspace(-1.0, 1.0, 8)


def write_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    assert bus.read(ctx["ids"][1]).tolist() == WRITE.tolist()
    assert bus.page(ctx["ids"][1]).epoch == 1


def delta_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    row = bus.read(ctx["ids"][2]).view(np.uint8)
    assert row[8:16].tolist() == [9] * 8 and not row[:8].any() and not row[16:].any()


# a batch big enough to be cut into two shares on two workers
WIDE_PAGES, WIDE_SIZE, ROW = 16, 8192, 8
WIDE_ROWS = WIDE_PAGES * WIDE_SIZE // ROW  # 16384


def wide(bus: mmsb.Bus) -> Ctx:
    ids = [int(i) for i in bus.create_pages(WIDE_PAGES, WIDE_SIZE)]
    bus.write(ids[0], b"\xff" * 16)
    payload = ((np.arange(WIDE_ROWS) % 250) + 1).astype(np.uint8)
    rows = np.repeat(payload[:, None], ROW, axis=1)
    batch = mmsb.DeltaBatch.from_ranges(
        np.repeat(np.array(ids, np.int64), WIDE_SIZE // ROW),
        np.tile(np.arange(WIDE_SIZE // ROW, dtype=np.int64) * ROW, WIDE_PAGES),
        rows,
    )
    assert effective_workers(2, len(batch)) == 2
    return {"ids": ids, "probe": ids[-1], "batch": batch, "rows": rows}


def batch_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    per_page = ctx["rows"].reshape(WIDE_PAGES, WIDE_SIZE)
    for i, pid in enumerate(ctx["ids"]):
        assert bus.read(pid).tobytes() == per_page[i].tobytes()
        assert bus.page(pid).epoch == WIDE_SIZE // ROW + (1 if i == 0 else 0)


def with_pairs(pairs: list[tuple[int, int]], edges: bool = False) -> Callable[[mmsb.Bus], Ctx]:
    """``small`` with ``pairs`` (positions in its page list) watched; ``edges``: made too."""

    def setup(bus: mmsb.Bus) -> Ctx:
        ctx = small(bus)
        ids = ctx["ids"]
        ctx["pairs"] = [(ids[p], ids[c]) for p, c in pairs]
        if edges:
            bus.graph.add_edges(ctx["pairs"])
        return ctx

    return setup


def edges_are(present: bool) -> Callable[[mmsb.Bus, Ctx], None]:
    def check(bus: mmsb.Bus, ctx: Ctx) -> None:
        assert [bus.graph.has_edge(p, c) for p, c in ctx["pairs"]] == [present] * len(ctx["pairs"])

    return check


def plus_one(*xs: np.ndarray) -> np.ndarray:
    return np.asarray(sum(xs)) + 1


def derive_act(bus: mmsb.Bus, ctx: Ctx) -> None:
    ids = ctx["ids"]
    bus.derive(ids[3], plus_one, [ids[0], ids[1]], name="plus_one")


def derive_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    edges_are(True)(bus, ctx)
    assert bus.graph.parents(ctx["ids"][3], "data").tolist() == ctx["ids"][:2]


# GC relayout: 2048 pages of 4 KiB, every other one deleted, leave 4 MiB of holes
GC_PAGES = 2048


def holes(bus: mmsb.Bus) -> Ctx:
    ids = bus.create_pages(GC_PAGES, 4096)
    marks = np.tile(ids.astype("<u8").view(np.uint8).reshape(-1, 8), (1, 4))  # id x4
    bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids, np.zeros(GC_PAGES, np.int64), marks))
    bus.delete_pages(ids[::2].tolist())
    bus.gc(budget_ms=1.0, cold_after_s=3600)
    bus._collector.min_free_bytes = 0
    kept = [int(p) for p in ids[1::2]]
    return {"ids": kept, "probe": kept[0], "digest": bus.state_hash()}


def compact(bus: mmsb.Bus, ctx: Ctx) -> int:
    """GC steps until one moves pages; return how many it moved."""
    for _ in range(100):
        moved = bus.gc(budget_ms=50.0, cold_after_s=3600).pages_moved
        if moved:
            return moved
    raise AssertionError("no GC step moved a page")


def relayout_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    assert bus.state_hash() == ctx["digest"]  # a relayout never changes the logical state
    for pid in ctx["ids"][:: len(ctx["ids"]) // 16]:
        assert bus.read(pid)[:32].view("<u8").tolist() == [pid] * 4


def relayout_after(bus: mmsb.Bus, ctx: Ctx) -> None:
    digest = bus.state_hash()
    assert compact(bus, ctx) > 0  # compaction goes on after the refused relayout
    assert bus.state_hash() == digest


def tick_setup(bus: mmsb.Bus) -> Ctx:
    ctx = small(bus)
    a, b = ctx["ids"][:2]
    bus.derive(b, lambda x: x * 2, [a], name="double")
    bus.tick()
    assert bus.read(b).tolist() == (2 * np.arange(8.0)).tolist()
    return ctx


TICK_INPUT = np.full(8, 3.0)


def tick_act(bus: mmsb.Bus, ctx: Ctx) -> object:
    a = ctx["ids"][0]
    return bus.tick(mmsb.DeltaBatch.from_ranges([a], [0], TICK_INPUT.view(np.uint8)[None, :]))


def tick_input_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    assert bus.read(ctx["ids"][0]).tolist() == TICK_INPUT.tolist()


def tick_input_only(bus: mmsb.Bus, ctx: Ctx) -> None:
    """The input commit is there, the derived one is not: the child still holds 2 * old a."""
    tick_input_done(bus, ctx)
    assert bus.read(ctx["ids"][1]).tolist() == (2 * np.arange(8.0)).tolist()
    assert [bus.page(p).epoch for p in ctx["ids"][:2]] == [2, 1]  # no epoch left staged


def tick_derived_done(bus: mmsb.Bus, ctx: Ctx) -> None:
    a, b = ctx["ids"][:2]
    tick_input_done(bus, ctx)
    assert bus.read(b).tolist() == (bus.read(a) * 2).tolist()  # equals its recomputation


CASES = [
    Case("create_pages", codec.CREATE, small, lambda bus, ctx: bus.create_pages(3, 256),
         (State, "create"), create_done),
    Case("delete_pages", codec.DELETE, small,
         lambda bus, ctx: bus.delete_pages(ctx["ids"][1:3]), (State, "delete"), delete_done),
    # write() has its own apply closure (it writes state.arena.buf directly, nothing to
    # patch there): SeqPublisher.begin raises instead. It runs after the append, inside
    # the post-durable section, so it is a failure after the frame is durable all the same.
    Case("write", codec.BATCH, small, lambda bus, ctx: bus.write(ctx["ids"][1], WRITE),
         (SeqPublisher, "begin"), write_done),
    Case("apply_delta", codec.BATCH, small,
         lambda bus, ctx: bus.apply(mmsb.Delta.range(ctx["ids"][2], b"\x09" * 8, offset=8)),
         (stages, "apply"), delta_done),
    Case("apply_batch_1_worker", codec.BATCH, wide,
         lambda bus, ctx: bus.apply_batch(ctx["batch"], workers=1), (stages, "apply"),
         batch_done),
    Case("apply_batch_2_workers", codec.BATCH, wide,
         lambda bus, ctx: bus.apply_batch(ctx["batch"], workers=2), (stages, "apply"),
         batch_done),
    Case("add_edge", codec.GRAPH, with_pairs([(0, 1)]),
         lambda bus, ctx: bus.graph.add_edge(*ctx["pairs"][0]),
         (propagator, "apply_edges"), edges_are(True)),
    Case("add_edges", codec.GRAPH, with_pairs([(0, 1), (1, 2), (0, 3), (2, 3)]),
         lambda bus, ctx: bus.graph.add_edges(ctx["pairs"]),
         (propagator, "apply_edges"), edges_are(True)),
    Case("remove_edge", codec.GRAPH, with_pairs([(0, 1)], edges=True),
         lambda bus, ctx: bus.graph.remove_edge(*ctx["pairs"][0]),
         (propagator, "apply_edges"), edges_are(False)),
    Case("derive", codec.GRAPH, with_pairs([(0, 3), (1, 3)]), derive_act,
         (propagator, "apply_edges"), derive_done),
    Case("gc_relayout", codec.RELAYOUT, holes, compact, (relayout, "move_bytes"),
         relayout_done, after=relayout_after),
    # a tick is one BATCH commit: its input rows are applied (staged) before the frame,
    # the derived rows after it, by the second apply_rows_in call of the tick
    Case("tick", codec.BATCH, tick_setup, tick_act, (kernels, "apply_rows_in"),
         tick_derived_done, apply_nth=2),
]  # fmt: skip
BY_NAME = {c.name: c for c in CASES}


def by_name(case: Case) -> str:
    return case.name


# -- (a): the append fails ---------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=by_name)
def test_failed_append_changes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=None) as bus:
        ctx = case.setup(bus)
        before = observe(bus, ctx)
        with monkeypatch.context() as m:
            failing = fail_nth(LogWriter.append, case.nth, no_space(), of_type(case.ftype))
            m.setattr(LogWriter, "append", failing)
            with pytest.raises(mmsb.LogWriteError, match="could not append commit") as info:
                case.act(bus, ctx)
        assert isinstance(info.value, OSError) and isinstance(info.value, mmsb.MMSBError)
        assert isinstance(info.value.__cause__, OSError)
        assert info.value.__cause__.errno == errno.ENOSPC
        assert not bus.closed
        now = observe(bus, ctx)
        if case.partial is None:
            assert now == before
        else:  # the commits before the failing one stay; the failing one left nothing
            assert now.lsn == before.lsn + case.earlier
            assert now.frames[: len(before.frames)] == before.frames
            assert len(now.frames) == len(before.frames) + case.earlier
            assert (now.edges, now.derivations) == (before.edges, before.derivations)
            case.partial(bus, ctx)
        if case.after is not None:
            case.after(bus, ctx)
        lsn = bus.lsn
        bus.write(ctx["probe"], b"\x01\x02")  # the bus takes the next commit
        assert bus.lsn == lsn + 1
        live = bus.state_hash()
    with mmsb.open(path, sync="off") as again:
        assert again.lsn == lsn + 1
        assert again.state_hash() == live


# -- (a): the fsync fails (sync="always") ------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=by_name)
def test_failed_fsync_closes_the_bus_and_drops_the_frame(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    ctx = case.setup(bus)
    before = observe(bus, ctx)
    with monkeypatch.context() as m:
        eio = OSError(errno.EIO, "Input/output error")
        # with sync="always" each commit fsyncs once, right after its append
        m.setattr(LogWriter, "sync", fail_nth(LogWriter.sync, case.nth, eio))
        with pytest.raises(mmsb.LogWriteError, match="fsync of commit") as info:
            case.act(bus, ctx)
    assert info.value.__cause__ is eio
    assert bus.closed
    with pytest.raises(mmsb.BusClosedError, match="closed itself after a failed commit"):
        bus.read(ctx["probe"])
    with pytest.raises(mmsb.BusClosedError):
        bus.write(ctx["probe"], b"\x01")
    assert not (path / layout.CLEAN_FILE).exists()
    with mmsb.open(path, sync="off") as again:
        now = observe(again, ctx)
        assert now.lsn == before.lsn + case.earlier
        assert now.frames == log_frames(path)
        assert now.frames[: len(before.frames)] == before.frames
        assert len(now.frames) == len(before.frames) + case.earlier  # the frame is absent
        assert now.edges == before.edges
        if case.partial is None:
            assert (now.digest, now.contents) == (before.digest, before.contents)
        else:
            case.partial(again, ctx)


# -- (b): the state change fails ---------------------------------------------------------------


@pytest.mark.parametrize("exc_type", [Injected, KeyboardInterrupt])
@pytest.mark.parametrize("case", CASES, ids=by_name)
def test_failure_after_logging_fail_stops_and_reopen_replays(
    case: Case, exc_type: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    ctx = case.setup(bus)
    lsn = bus.lsn
    frames = log_frames(path)
    owner, attr = case.target
    with monkeypatch.context() as m:
        m.setattr(
            owner,
            attr,
            fail_nth(getattr(owner, attr), case.apply_nth or case.nth, exc_type("injected")),
        )
        with pytest.raises(exc_type, match="injected"):
            case.act(bus, ctx)
    assert bus.closed
    with pytest.raises(mmsb.BusClosedError, match="closed itself after a failed commit"):
        bus.read(ctx["probe"])
    with pytest.raises(mmsb.BusClosedError, match="closed itself after a failed commit"):
        bus.write(ctx["probe"], b"\x01")
    bus.close()  # closing a bus that closed itself writes nothing
    assert not (path / layout.CLEAN_FILE).exists()
    logged = log_frames(path)
    assert logged[: len(frames)] == frames
    assert [t for t, _ in logged[len(frames) :]][-1] == case.ftype  # the frame is logged
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay"
        assert again.lsn == lsn + case.earlier + 1
        case.done(again, ctx)
        assert again.verify().ok


# -- more of (a) --------------------------------------------------------------------------------


def test_failed_add_of_a_rederive_puts_the_old_parents_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """derive() over an existing derivation swaps the parents in one GRAPH commit (drop
    the old ones, add the new ones); when it cannot be logged, the old ones stay."""
    with mmsb.open(tmp_path / "b", sync="off", checkpoint_every=None) as bus:
        a, b, c, d = small(bus)["ids"]
        bus.derive(d, plus_one, [a, b], name="old")
        before = (bus.graph.edges().tolist(), bus.derivations())
        with monkeypatch.context() as m:
            m.setattr(LogWriter, "append", fail_nth(LogWriter.append, 1, no_space(),
                                                    of_type(codec.GRAPH)))  # fmt: skip
            with pytest.raises(mmsb.LogWriteError):
                bus.derive(d, plus_one, [c], name="new")
        assert (bus.graph.edges().tolist(), bus.derivations()) == before
        assert bus.graph.parents(d, "data").tolist() == [a, b]
        bus.write(a, np.zeros(8))
        bus.tick()
        assert bus.read(d).tolist() == (bus.read(a) + bus.read(b) + 1).tolist()  # old one


def test_a_tick_the_log_refuses_commits_nothing_and_earlier_changes_stay_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick's one frame cannot be logged: its input rows (already staged in the arena
    for the derivations) are taken back, and a change committed before the tick is still
    propagated by the next one."""
    with mmsb.open(tmp_path / "b", sync="off", checkpoint_every=None) as bus:
        ctx = tick_setup(bus)
        a, b = ctx["ids"][:2]
        bus.write(a, np.full(8, 5.0))  # committed, pending for the next tick
        digest, lsn = bus.state_hash(), bus.lsn
        with monkeypatch.context() as m:
            m.setattr(LogWriter, "append", fail_nth(LogWriter.append, 1, no_space(),
                                                    of_type(codec.BATCH)))  # fmt: skip
            with pytest.raises(mmsb.LogWriteError):
                tick_act(bus, ctx)
        assert (bus.state_hash(), bus.lsn) == (digest, lsn)
        assert bus.read(a).tolist() == [5.0] * 8
        bus.tick()
        assert bus.read(b).tolist() == [10.0] * 8


def test_a_tick_that_fails_after_its_frame_was_prepared_takes_its_epochs_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frame of input and derived rows is prepared (every row's epoch assigned), then
    its checksum raises: the epochs are taken back with the input bytes, and the next tick
    runs as if the failed one never did."""
    import mmsb.writer.writer as writer

    with mmsb.open(tmp_path / "b", sync="off", checkpoint_every=None) as bus:
        ctx = tick_setup(bus)
        state = bus._state
        assert state is not None
        digest, lsn, epochs = bus.state_hash(), bus.lsn, state.epoch.copy()
        with monkeypatch.context() as m:
            m.setattr(writer.checksum, "crc32", fail_nth(writer.checksum.crc32, 1,
                                                         RuntimeError("checksum")))  # fmt: skip
            with pytest.raises(RuntimeError, match="checksum"):
                tick_act(bus, ctx)
        assert (bus.state_hash(), bus.lsn) == (digest, lsn)
        assert np.array_equal(state.epoch, epochs)
        tick_act(bus, ctx)
        assert bus.lsn == lsn + 1


def test_a_torn_append_is_cut_from_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real partial write: half the frame reaches the file before ENOSPC."""
    import mmsb.storage.logwriter as logwriter

    path = tmp_path / "b"
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    ctx = small(bus)
    before = observe(bus, ctx)
    real = logwriter._write_all

    def torn(fd: int, parts: Any, total: int) -> None:
        data = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
        os.write(fd, data[: total // 2])
        raise no_space()

    with monkeypatch.context() as m:
        m.setattr(logwriter, "_write_all", torn)
        with pytest.raises(mmsb.LogWriteError):
            bus.write(ctx["ids"][1], WRITE)
    assert logwriter._write_all is real
    assert observe(bus, ctx) == before  # log bytes included: the half frame is gone
    bus.write(ctx["ids"][1], WRITE)
    live, lsn = bus.state_hash(), bus.lsn
    bus.abandon()  # a crash now: the reopen replays the whole log, torn frame or not
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay" and again.recovery.torn_tail_bytes == 0
        assert (again.lsn, again.state_hash()) == (lsn, live)
        write_done(again, ctx)


# -- nothing but the committer appends to the log -----------------------------------------------


def log_appends(source: str) -> list[int]:
    """Line numbers of calls ``<expr>.append(...)`` where ``<expr>``'s source text ends
    with ``log`` (``log.append(``, ``self.log.append(``, ``self._log.append(``...)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "append"
        and ast.unparse(node.func.value).endswith("log")
    ]


def test_the_log_append_scanner_finds_what_it_must() -> None:
    source = "\n".join([
        "log.append(1)",
        "self.log.append(1, 2)",
        "self._log.append(x, crc=3)",
        "bus._committer.log.append(1)",
        "rows.append(1)",
        "log.extend([1])",
        "logs.append(1)",
        "'log.append(1)'",
        "# log.append(1)",
    ])  # fmt: skip
    assert log_appends(source) == [1, 2, 3, 4]


def test_only_the_committer_appends_to_the_log() -> None:
    found = {
        path.relative_to(SRC).as_posix(): lines
        for path in sorted(SRC.rglob("*.py"))
        if (lines := log_appends(path.read_text(encoding="utf-8")))
    }
    assert list(found) == ["writer/committer.py"], found
    assert len(found["writer/committer.py"]) == 1
