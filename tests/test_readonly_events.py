"""Subscriptions on a read-only bus that follows a writer in another process.

A live reader raises the commit events a writable bus raises (``page_created``,
``page_deleted``, ``delta_applied``, ``page_changed``) for each commit it observes, once and
in commit order, with the commit's LSN, whether it observes it through ``refresh``,
``wait_for`` or a read. Commits it rebuilds by replay instead of following frame by frame
(those before it attached, or before it re-attached to a new writer process) raise nothing.

The writer runs this file as a script and takes one command per line on stdin, answering
each with the LSN it published.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb import DeltaBatch

COMMIT_EVENTS = ("page_created", "page_deleted", "delta_applied", "page_changed")


class Writer:
    """A writer process driven over a pipe."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def __call__(self, *command: object) -> int:
        """Run one command; return the LSN the writer published after it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(c) for c in command) + "\n")
        self.proc.stdin.flush()
        answer = self.read()
        assert answer.isdigit(), answer
        return int(answer)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("close\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def writer_main(path: str) -> None:
    """The writer process: ``pages N``, ``write PID K`` (K one-row commits), ``batch
    PID...`` (one commit, a row per id), ``delete PID``; each answered with the LSN."""
    bus = mmsb.open(path, sync="off")
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "close":
            break
        ints = [int(a) for a in args]
        if cmd == "pages":
            bus.create_pages(ints[0], 64)
        elif cmd == "write":
            for k in range(ints[1]):
                bus.write(ints[0], bytes([k + 1]) * 4, offset=4 * (k % 16))
        elif cmd == "batch":
            rows = np.arange(len(ints) * 8, dtype=np.uint8).reshape(len(ints), 8)
            bus.apply_batch(DeltaBatch.from_ranges(ints, np.zeros(len(ints), np.int64), rows))
        elif cmd == "delete":
            bus.delete_page(ints[0])
        print(bus.lsn, flush=True)
    bus.close()


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "bus")
    try:
        yield w
    finally:
        w.close()


def listen(bus: mmsb.Bus, events: tuple[str, ...] = COMMIT_EVENTS) -> list[tuple[Any, ...]]:
    """Record every event of the given types as (name, lsn, page, detail items)."""
    seen: list[tuple[Any, ...]] = []
    for name in events:
        bus.subscribe(name, lambda e: seen.append(
            (e.name, e.lsn, e.page_id, tuple(sorted(e.detail.items())))))  # fmt: skip
    return seen


def test_a_reader_reports_each_followed_commit_once_in_order(
    writer: Writer, tmp_path: Path
) -> None:
    writer("pages", 3)
    with mmsb.open(tmp_path / "bus", readonly=True) as reader:
        seen = listen(reader)
        start = reader.refresh()
        first_delta = 1  # no delta committed yet
        lsn = writer("write", 1, 5)  # five commits, one delta each
        assert lsn == start + 5
        assert reader.wait_for(lsn, timeout=30)
        expected: list[tuple[Any, ...]] = []
        for k in range(5):
            at = start + 1 + k
            expected += [
                ("delta_applied", at, None, (("count", 1), ("first_delta_id", first_delta + k))),
                ("page_changed", at, 1, ()),
            ]
        assert seen == expected
        assert reader.refresh() == lsn
        assert seen == expected  # nothing twice
        # a commit made while the reader is not looking is reported at its next refresh
        lsn = writer("batch", 3, 2, 3)
        assert seen == expected
        assert reader.refresh() == lsn
        expected += [
            ("delta_applied", lsn, None, (("count", 3), ("first_delta_id", 6))),
            ("page_changed", lsn, 2, ()),
            ("page_changed", lsn, 3, ()),
        ]
        assert seen == expected
        # creates and deletes, seen through a read rather than a refresh
        lsn = writer("pages", 2)
        lsn = writer("delete", 2)
        assert reader.read(1).size == 64
        assert reader.lsn == lsn
        expected += [
            ("page_created", lsn - 1, 4, ()),
            ("page_created", lsn - 1, 5, ()),
            ("page_deleted", lsn, 2, ()),
        ]
        assert seen == expected
        assert reader.event_stats()["failed"] == 0


def test_handlers_that_read_the_bus_see_every_commit_once_in_order(
    writer: Writer, tmp_path: Path
) -> None:
    """A handler's read makes the reader catch up with commits published meanwhile; their
    events wait behind the current ones instead of running inside them."""
    writer("pages", 1)
    with mmsb.open(tmp_path / "bus", readonly=True) as reader:
        start = reader.refresh()
        order: list[tuple[str, int]] = []

        def on_applied(e: mmsb.Event) -> None:
            order.append(("delta_applied", e.lsn))
            reader.read(1)  # may pull in later frames
            if e.lsn == start + 1:
                writer("write", 1, 3)  # and now there certainly are some

        reader.subscribe("delta_applied", on_applied)
        reader.subscribe("page_changed", lambda e: order.append(("page_changed", e.lsn)))
        lsn = writer("write", 1, 2)
        assert reader.wait_for(lsn, timeout=30)
        final = reader.refresh()
        assert final == start + 5
        assert order == [(name, at) for at in range(start + 1, final + 1)
                         for name in ("delta_applied", "page_changed")]  # fmt: skip
        assert reader.event_stats()["failed"] == 0


def test_commits_replayed_when_the_reader_attaches_raise_no_events(
    writer: Writer, tmp_path: Path
) -> None:
    path = tmp_path / "bus"
    writer("pages", 2)
    writer("write", 1, 3)
    with mmsb.open(path, readonly=True) as reader:
        seen = listen(reader, ("delta_applied",))
        assert reader.refresh() == 4
        assert seen == []  # the commits before the reader opened were replayed, not followed
        assert writer("write", 2, 1) == 5
        writer.close()  # a clean close: the reader still follows that writer's log
        assert reader.refresh() == 5
        assert [s[1] for s in seen] == [5]
        with mmsb.open(path, sync="off") as second:  # a new writer process generation
            second.write(1, b"abcd")
            second.write(1, b"efgh")
            # the reader re-attaches at the new writer's published LSN by replay: the two
            # commits it never followed frame by frame are not reported ...
            assert reader.refresh() == 7
            assert [s[1] for s in seen] == [5]
            # ... and from there it follows, and reports, again
            second.write(2, b"ijkl")
            assert reader.refresh() == 8
            assert [s[1] for s in seen] == [5, 8]


if __name__ == "__main__":
    writer_main(sys.argv[1])
