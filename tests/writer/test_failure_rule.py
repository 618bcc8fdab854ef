"""One write path, one failure rule, for every kind of change (``writer/committer.py``).

(a) A failure before the frame is durable (the log append, or its fsync with
    ``sync="always"``) leaves state and log as they were and raises ``LogWriteError``.
(b) A failure after it (in the state change) closes the bus as a crash would; reopening
    replays the logged frame in full.

Each kind of change (page creation and deletion, a single write, a delta, batches on one and
two workers, edges, derivations, GC relayouts, the derived commit of a tick) is driven into
both failures on a real on-disk bus.
"""

from __future__ import annotations

import ast
import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb.storage import codec
from mmsb.storage.log import LogReader
from mmsb.storage.logwriter import LogWriter
from mmsb.storage.seqlock import SeqPublisher
from mmsb.storage.state import State
from mmsb.writer import stages

SRC = Path(__file__).resolve().parents[2] / "src" / "mmsb"


class Injected(RuntimeError):
    """The failure a test injects after the frame is logged."""


@dataclass
class Case:
    name: str
    ftype: int  # the frame type the change logs (its append is the one made to fail)
    setup: Callable[[mmsb.Bus], dict[str, Any]]
    act: Callable[[mmsb.Bus, dict[str, Any]], object]
    target: tuple[Any, str]  # what raises for (b): (owner, attribute)
    done: Callable[[mmsb.Bus, dict[str, Any]], None]  # the change is there after reopen


def holds(ok: object) -> None:
    assert ok


def pages(bus: mmsb.Bus) -> dict[str, Any]:
    ids = bus.create_pages(4, 64, dtype="float64")
    bus.write(int(ids[0]), np.arange(8, dtype=np.float64))
    return {"ids": [int(i) for i in ids]}


def batch(ctx: dict[str, Any]) -> mmsb.DeltaBatch:
    ids = np.array(ctx["ids"][:3], np.int64)
    payloads = np.full((3, 16), 7, np.uint8)
    return mmsb.DeltaBatch.from_ranges(ids, np.array([0, 8, 16], np.int64), payloads)


def batch_done(bus: mmsb.Bus, ctx: dict[str, Any]) -> None:
    for pid, off in zip(ctx["ids"][:3], (0, 8, 16), strict=True):
        assert bus.read(pid).view(np.uint8)[off : off + 16].tolist() == [7] * 16


def edge_setup(bus: mmsb.Bus) -> dict[str, Any]:
    ctx = pages(bus)
    bus.graph.add_edge(ctx["ids"][0], ctx["ids"][1])
    return ctx


def tick_setup(bus: mmsb.Bus) -> dict[str, Any]:
    ctx = pages(bus)
    a, b = ctx["ids"][:2]
    bus.derive(b, lambda x: x * 2, [a], name="double")
    bus.tick()
    return ctx


def tick_act(bus: mmsb.Bus, ctx: dict[str, Any]) -> object:
    a = ctx["ids"][0]
    values = np.full(8, 3.0)
    return bus.tick(mmsb.DeltaBatch.from_ranges([a], [0], values.view(np.uint8)[None, :]))


def tick_done(bus: mmsb.Bus, ctx: dict[str, Any]) -> None:
    a, b = ctx["ids"][:2]
    assert bus.read(a).tolist() == [3.0] * 8
    assert bus.read(b).tolist() == [6.0] * 8  # the derived commit was replayed too


CASES = [
    Case("create_pages", codec.CREATE, pages,
         lambda bus, ctx: ctx.setdefault("new", bus.create_pages(2, 128)),
         (State, "create"),
         lambda bus, ctx: holds(5 in bus and 6 in bus and bus.page(6).size == 128)),
    Case("delete_pages", codec.DELETE, pages,
         lambda bus, ctx: bus.delete_pages(ctx["ids"][2:]), (State, "delete"),
         lambda bus, ctx: holds(all(p not in bus for p in ctx["ids"][2:]))),
    Case("write", codec.BATCH, pages,
         lambda bus, ctx: bus.write(ctx["ids"][1], np.full(8, 5.0)), (SeqPublisher, "begin"),
         lambda bus, ctx: holds(bus.read(ctx["ids"][1]).tolist() == [5.0] * 8)),
    Case("apply", codec.BATCH, pages,
         lambda bus, ctx: bus.apply(mmsb.Delta.range(ctx["ids"][2], b"\x09" * 8, offset=8)),
         (stages, "apply"),
         lambda bus, ctx: holds(bus.read(ctx["ids"][2]).view(np.uint8)[8:16].tolist()
                                == [9] * 8)),
    Case("apply_batch", codec.BATCH, pages, lambda bus, ctx: bus.apply_batch(batch(ctx)),
         (stages, "apply"), batch_done),
    Case("apply_batch_2_workers", codec.BATCH, pages,
         lambda bus, ctx: bus.apply_batch(batch(ctx), workers=2), (stages, "apply"),
         batch_done),
    Case("add_edges", codec.GRAPH, pages,
         lambda bus, ctx: bus.graph.add_edges([(ctx["ids"][0], ctx["ids"][1]),
                                               (ctx["ids"][1], ctx["ids"][2])]),
         (mmsb.graph.propagator, "apply_edges"),
         lambda bus, ctx: holds(len(bus.graph) == 2)),
    Case("remove_edge", codec.GRAPH, edge_setup,
         lambda bus, ctx: bus.graph.remove_edge(ctx["ids"][0], ctx["ids"][1]),
         (mmsb.graph.propagator, "apply_edges"),
         lambda bus, ctx: holds(len(bus.graph) == 0)),
    Case("derive", codec.GRAPH, pages,
         lambda bus, ctx: bus.derive(ctx["ids"][3], lambda x: x + 1, [ctx["ids"][0]]),
         (mmsb.graph.propagator, "apply_edges"),
         lambda bus, ctx: holds(bus.graph.has_edge(ctx["ids"][0], ctx["ids"][3]))),
    Case("tick_derived_commit", codec.BATCH, tick_setup, tick_act, (stages, "apply"),
         tick_done),
]  # fmt: skip

# the tick's derived batch is its second commit: (a) and (b) aim at that one
SECOND_COMMIT = {"tick_derived_commit"}


def observe(bus: mmsb.Bus) -> tuple[int, str, list[tuple[int, int, int]], dict[int, str], int]:
    frames = sum(1 for _ in LogReader(str(Path(bus.path) / "log")).frames())
    edges = [tuple(int(x) for x in e) for e in bus.graph.edges().tolist()]
    return bus.lsn, bus.state_hash(), edges, bus.derivations(), frames  # type: ignore[return-value]


def fail_on_nth(
    n: int,
    exc: BaseException,
    real: Callable[..., Any],
    when: Callable[..., bool] = lambda *a, **k: True,
) -> Callable[..., Any]:
    """``real`` that raises ``exc`` on its ``n``-th call for which ``when`` holds."""
    seen = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            seen[0] += 1
            if seen[0] == n:
                raise exc
        return real(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_failed_append_changes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off", checkpoint_every=None) as bus:
        ctx = case.setup(bus)
        before = observe(bus)
        full = OSError(errno.ENOSPC, "No space left on device")
        nth = 2 if case.name in SECOND_COMMIT else 1
        with monkeypatch.context() as m:
            m.setattr(LogWriter, "append", fail_on_nth(nth, full, LogWriter.append,
                      lambda self, ftype, *a, **k: ftype == case.ftype))  # fmt: skip
            with pytest.raises(mmsb.LogWriteError, match="could not append commit"):
                case.act(bus, ctx)
        if case.name in SECOND_COMMIT:
            # the input batch was committed before the derived one failed: nothing derived
            assert bus.lsn == before[0] + 1
            assert bus.read(ctx["ids"][1]).tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0,
                                                          14.0]  # fmt: skip
        else:
            assert observe(bus) == before
        assert not bus.closed
        bus.write(ctx["ids"][3], b"\x01\x02")  # the bus goes on
        live = bus.state_hash()
    with mmsb.open(path, sync="off") as again:
        assert again.state_hash() == live


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_failure_after_logging_closes_the_bus_and_recovery_replays(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    ctx = case.setup(bus)
    lsn = bus.lsn
    owner, attr = case.target
    nth = 2 if case.name in SECOND_COMMIT else 1
    with monkeypatch.context() as m:
        m.setattr(owner, attr, fail_on_nth(nth, Injected("injected"), getattr(owner, attr)))
        with pytest.raises(Injected):
            case.act(bus, ctx)
    assert bus.closed
    with pytest.raises(mmsb.BusClosedError, match="closed itself after a failed commit"):
        bus.read(ctx["ids"][0])
    assert not (path / "state.clean").exists()
    with mmsb.open(path, sync="off") as again:
        assert again.recovery.mode == "replay"
        assert again.lsn == lsn + (2 if case.name in SECOND_COMMIT else 1)
        case.done(again, ctx)
        assert again.verify().ok


def test_a_failed_fsync_closes_the_bus_and_the_commit_is_not_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "b"
    bus = mmsb.open(path, sync="always", checkpoint_every=None)
    ctx = pages(bus)
    lsn, digest = bus.lsn, bus.state_hash()
    with monkeypatch.context() as m:
        m.setattr(LogWriter, "sync", fail_on_nth(1, OSError(errno.EIO, "I/O error"),
                                                 LogWriter.sync))  # fmt: skip
        with pytest.raises(mmsb.LogWriteError, match="fsync of commit"):
            bus.write(ctx["ids"][1], np.full(8, 5.0))
    assert bus.closed
    with mmsb.open(path, sync="off") as again:
        assert (again.lsn, again.state_hash()) == (lsn, digest)


def _relayout_bus(path: Path) -> tuple[mmsb.Bus, str]:
    bus = mmsb.open(path, sync="off", checkpoint_every=None)
    ids = bus.create_pages(512, 4096)
    rng = np.random.default_rng(3)
    for pid in ids[::7].tolist():
        bus.write(pid, rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
    bus.delete_pages(ids[::2].tolist())
    bus._collector.min_free_bytes = 0
    return bus, bus.state_hash()


def test_a_failed_relayout_append_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, digest = _relayout_bus(tmp_path / "b")
    lsn = bus.lsn
    full = OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(LogWriter, "append", fail_on_nth(1, full, LogWriter.append,
                  lambda self, ftype, *a, **k: ftype == codec.RELAYOUT))  # fmt: skip
        with pytest.raises(mmsb.LogWriteError):
            for _ in range(200):
                bus.gc(budget_ms=50.0)
    assert (bus.lsn, bus.state_hash()) == (lsn, digest)
    moved = sum(bus.gc(budget_ms=50.0).pages_moved for _ in range(200))
    assert moved > 0 and bus.state_hash() == digest  # compaction goes on afterwards
    bus.close()


def test_a_failed_relayout_move_is_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus, digest = _relayout_bus(tmp_path / "b")
    with monkeypatch.context() as m:
        m.setattr(State, "move_bytes", fail_on_nth(1, Injected("injected"), State.move_bytes))
        with pytest.raises(Injected):
            for _ in range(200):
                bus.gc(budget_ms=50.0)
    assert bus.closed
    with mmsb.open(tmp_path / "b", sync="off") as again:
        assert again.state_hash() == digest  # a relayout never changes the logical state
        assert again.verify().ok


# -- nothing else appends to the log ---------------------------------------------------------


def log_appends(source: str) -> list[int]:
    """Lines of ``source`` calling ``append`` on something whose name ends in ``log``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "append"
            and ast.unparse(node.func.value).endswith("log")
        ):
            lines.append(node.lineno)
    return lines


def test_the_scanner_finds_a_log_append() -> None:
    assert log_appends("x = 1\nself._log.append(1, 2)\nitems.append(3)\n") == [2]


def test_only_the_committer_appends_to_the_log() -> None:
    found = {p.relative_to(SRC).as_posix(): log_appends(p.read_text())
             for p in SRC.rglob("*.py")}  # fmt: skip
    assert {f: lines for f, lines in found.items() if lines} == {
        "writer/committer.py": log_appends((SRC / "writer" / "committer.py").read_text())
    }
    assert found["writer/committer.py"]
