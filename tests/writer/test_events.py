"""Events: every event type, filters, unsubscribing, failing handlers (counted, logged,
harmless to the commit) and handlers that try to write (ReentrantWriteError)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import DeltaBatch
from mmsb.errors import InvalidArgumentError, ReentrantWriteError
from mmsb.graph import EVENTS, Event, Subscription, TickReport


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[mmsb.Bus]:
    """An on-disk bus with ``sync="off"`` and the default (wall) clock: unlike the shared
    ``bus`` in ``conftest.py``, no deterministic clock."""
    with mmsb.open(tmp_path / "bus", sync="off") as b:
        yield b


def collect(bus: mmsb.Bus, name: str, **kw) -> list[Event]:
    out: list[Event] = []
    bus.subscribe(name, out.append, **kw)
    return out


def test_event_names() -> None:
    assert set(EVENTS) >= {
        "page_created", "page_deleted", "page_changed", "delta_applied", "page_stale",
        "page_invalidated", "gpu_sync_needed", "tick_done",
    }  # fmt: skip


def test_page_lifecycle_events(bus: mmsb.Bus) -> None:
    created = collect(bus, "page_created")
    deleted = collect(bus, "page_deleted")
    changed = collect(bus, "page_changed")
    applied = collect(bus, "delta_applied")
    ids = bus.create_pages(3, 8).tolist()
    assert [(e.name, e.page_id, e.lsn) for e in created] == [
        ("page_created", i, bus.lsn) for i in ids
    ]
    c = bus.apply_batch(
        DeltaBatch.from_deltas(
            [
                mmsb.Delta.range(ids[0], b"\x01"),
                mmsb.Delta.range(ids[0], b"\x02", 1),
                mmsb.Delta.range(ids[2], b"\x03"),
            ]
        )
    )
    assert [(e.page_id, e.lsn) for e in changed] == [(ids[0], c.lsn), (ids[2], c.lsn)]
    assert len(applied) == 1 and applied[0].page_id is None
    assert applied[0].detail == {"first_delta_id": c.first_delta_id, "count": 3}
    did = bus.write(ids[1], b"\x09")
    assert changed[-1].page_id == ids[1] and applied[-1].detail["first_delta_id"] == did
    bus.delete_pages([ids[0], ids[1]])
    assert [e.page_id for e in deleted] == [ids[0], ids[1]]
    assert deleted[0].lsn == bus.lsn


def test_handlers_run_after_the_commit_is_visible(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 4).tolist()
    seen: list[tuple[int, list[int]]] = []
    bus.subscribe("page_changed", lambda e: seen.append((bus.lsn, bus.read(p).tolist())))
    bus.write(p, b"\x01\x02\x03\x04")
    assert seen == [(bus.lsn, [1, 2, 3, 4])]


def test_filters_and_unsubscribe(bus: mmsb.Bus) -> None:
    a, b, c = bus.create_pages(3, 8).tolist()
    only_b = collect(bus, "page_changed", filter={b})
    pred = collect(bus, "page_changed", filter=lambda e: e.page_id != b)
    every: list[Event] = []
    sub = bus.subscribe("page_changed", every.append)
    assert isinstance(sub, Subscription) and sub.event == "page_changed"
    for p in (a, b, c):
        bus.write(p, b"\x01")
    assert [e.page_id for e in only_b] == [b]
    assert [e.page_id for e in pred] == [a, c]
    assert [e.page_id for e in every] == [a, b, c]
    assert bus.unsubscribe(sub) is True
    assert bus.unsubscribe(sub) is False
    bus.write(a, b"\x02")
    assert len(every) == 3 and len(pred) == 3
    stats = bus.event_stats()
    assert stats["subscriptions"] == 2 and stats["failed"] == 0
    assert stats["delivered"] == 1 + 2 + 3 + 1  # filtered-out calls are not deliveries


def test_subscribe_errors(bus: mmsb.Bus) -> None:
    with pytest.raises(InvalidArgumentError, match=r"unknown event 'page_moved'"):
        bus.subscribe("page_moved", print)
    with pytest.raises(InvalidArgumentError, match="handler must be callable"):
        bus.subscribe("page_changed", 42)  # type: ignore[arg-type]
    for bad in (5, {"x"}, [None]):
        with pytest.raises(InvalidArgumentError, match="filter must be a predicate"):
            bus.subscribe("page_changed", print, filter=bad)
    assert bus.event_stats()["subscriptions"] == 0


def test_propagation_flag_and_tick_events(bus: mmsb.Bus) -> None:
    a, b, s, g, v = bus.create_pages(5, 8).tolist()
    bus.derive(b, lambda x: x + 1, [a])
    bus.graph.add_edge(b, s, "control")
    bus.graph.add_edge(a, g, "gpu")
    bus.graph.add_edge(b, v, "compiler")
    bus.tick()
    for p in (s, v):
        bus.write(p, b"\x00")
    bus.mark_gpu_synced(g)
    changed = collect(bus, "page_changed")
    stale = collect(bus, "page_stale")
    gpu = collect(bus, "gpu_sync_needed")
    inval = collect(bus, "page_invalidated")
    done = collect(bus, "tick_done")
    rep = bus.tick(DeltaBatch.from_deltas([mmsb.Delta.range(a, b"\x05")]))
    assert [e.page_id for e in changed] == [a, b]  # the input, then the derived write
    assert changed[1].lsn == rep.lsn == changed[0].lsn  # one commit per tick
    assert [e.page_id for e in stale] == [s]
    assert [e.page_id for e in gpu] == [g]
    assert [e.page_id for e in inval] == [v]
    assert stale[0].lsn == rep.lsn
    assert len(done) == 1 and done[0].page_id is None and done[0].lsn == rep.lsn
    assert isinstance(done[0].detail["report"], TickReport) and done[0].detail["report"] is rep
    # an already flagged page raises no second event
    bus.tick(DeltaBatch.from_deltas([mmsb.Delta.range(a, b"\x06")]))
    assert len(stale) == 1 and len(gpu) == 1 and len(inval) == 1 and len(done) == 2


def test_raising_handler_is_counted_logged_and_harmless(
    bus: mmsb.Bus, caplog: pytest.LogCaptureFixture
) -> None:
    (p,) = bus.create_pages(1, 8).tolist()
    after: list[int] = []

    def bad(e: Event) -> None:
        raise KeyError("no such thing")

    bus.subscribe("page_changed", bad)
    bus.subscribe("page_changed", lambda e: after.append(e.page_id))
    with caplog.at_level(logging.ERROR, logger="mmsb"):
        did = bus.write(p, b"\x07")
    assert bus.read(p)[0] == 7 and bus.history(p)[0].delta_id == did  # committed
    assert after == [p]  # later handlers still ran
    stats = bus.event_stats()
    assert stats["failed"] == 1 and stats["delivered"] == 1
    assert stats["last_error"] == "page_changed handler 1: KeyError: 'no such thing'"
    [rec] = [r for r in caplog.records if r.name == "mmsb"]
    assert rec.levelno == logging.ERROR and "event handler failed" in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[0] is KeyError
    bus.write(p, b"\x08")
    assert bus.event_stats()["failed"] == 2


def test_handler_that_writes_gets_reentrant_error(bus: mmsb.Bus) -> None:
    a, b = bus.create_pages(2, 8).tolist()
    errors: list[BaseException] = []

    def echo(e: Event) -> None:
        for attempt in (
            lambda: bus.write(b, b"\x01"),
            lambda: bus.tick(),
            lambda: bus.create_page(8),
            lambda: bus.delete_page(b),
            lambda: bus.graph.add_edge(a, b),
            lambda: bus.derive(b, lambda x: x, [a]),
            lambda: bus.checkpoint(),
        ):
            try:
                attempt()
            except ReentrantWriteError as exc:
                errors.append(exc)

    sub = bus.subscribe("page_changed", echo, filter={a})
    lsn = bus.lsn
    bus.write(a, b"\x01")
    assert len(errors) == 7
    assert "an event handler cannot write to the bus" in str(errors[0])
    assert bus.lsn == lsn + 1 and bus.read(b).tolist() == [0] * 8
    assert len(bus.graph) == 0 and len(bus) == 2
    bus.unsubscribe(sub)
    # an escaping ReentrantWriteError is counted like any failure, and the bus still works
    bus.subscribe("page_changed", lambda e: bus.write(b, b"\x02"), filter={a})
    bus.write(a, b"\x02")
    assert bus.event_stats()["failed"] == 1
    assert "ReentrantWriteError" in bus.event_stats()["last_error"]
    bus.write(b, b"\x03")
    assert bus.read(b)[0] == 3


def test_queued_writes_go_to_the_next_tick(bus: mmsb.Bus) -> None:
    """The documented pattern: a handler queues work, the caller applies it next tick."""
    a, mirror = bus.create_pages(2, 8).tolist()
    queue: list[mmsb.Delta] = []
    bus.subscribe(
        "page_changed",
        lambda e: queue.append(mmsb.Delta.range(mirror, bus.read(a).tobytes())),
        filter={a},
    )
    bus.tick(DeltaBatch.from_deltas([mmsb.Delta.range(a, b"\x04" * 8)]))
    assert len(queue) == 1 and bus.read(mirror).tolist() == [0] * 8
    pending, queue[:] = list(queue), []
    bus.tick(DeltaBatch.from_deltas(pending))
    assert bus.read(mirror).tolist() == [4] * 8
    assert queue == []  # the mirror's own change does not re-trigger the filtered handler


def test_no_subscribers_no_events(bus: mmsb.Bus) -> None:
    (p,) = bus.create_pages(1, 8).tolist()
    bus.write(p, np.zeros(8, np.uint8))
    bus.tick()
    assert bus.event_stats() == {
        "subscriptions": 0, "delivered": 0, "failed": 0, "last_error": None
    }  # fmt: skip
