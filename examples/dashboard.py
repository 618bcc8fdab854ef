"""A live dashboard: one process writes, another follows it read-only.

The dashboard starts a writer process (this same file, ``writer`` mode) that counts events
at a dozen stations for a couple of seconds: one tick every few milliseconds, each
committing the stations' new counters, a clock page, and a derived ``total`` page (the
per-kind sum over all stations, recomputed by the tick in the same commit).

Meanwhile the dashboard opens the same bus with ``readonly=True`` (no lock: it never slows
the writer), subscribes to its commits, and ten times a second takes ``bus.snapshot()``: a
pinned view of one commit, so the stations, the clock and the derived total it reads all
belong to the same tick even while the writer goes on. Each frame checks exactly that (the
stations add up to the total and to the clock's event count) and prints an aggregate.

    python examples/dashboard.py                        # a bus in a temporary directory
    python examples/dashboard.py --dir /tmp/dash --seconds 5
"""

from __future__ import annotations

import argparse
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import mmsb
from mmsb import semiring

STATIONS = 12
KINDS = 64  # event kinds counted per station: one float64 counter each
START_TIMEOUT = 60.0  # seconds for the writer to start (importing mmsb, compiling kernels)


# -- the writer process ---------------------------------------------------------------------


def writer(path: Path, seconds: float) -> None:
    """Create the pages, then tick for ``seconds``; print ``ready`` and ``done`` lines."""
    rng = np.random.default_rng(0)
    with mmsb.open(path) as bus:
        stations = bus.create_pages(
            STATIONS, KINDS * 8, dtype="float64", metadata={"role": "station"}
        )
        total = bus.create_page(KINDS * 8, dtype="float64", metadata={"role": "total"})
        clock = bus.create_page(16, dtype="int64", metadata={"role": "clock"})
        bus.derive_semiring(total, [int(s) for s in stations], semiring.SUM_PRODUCT, name="total")
        counts = np.zeros((STATIONS, KINDS), dtype=np.float64)  # the writer's own copy
        events = ticks = 0
        print(f"ready {bus.lsn}", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            busy = np.flatnonzero(rng.random(STATIONS) < 0.5)  # stations with news
            new = rng.poisson(3.0, (len(busy), KINDS))
            counts[busy] += new
            events += int(new.sum())
            ticks += 1
            # one tick: the busy stations' rows and the clock, then the derived total, all
            # in one commit
            batch = mmsb.DeltaBatch.concat(
                [
                    mmsb.DeltaBatch.from_ranges(
                        stations[busy], np.zeros(len(busy), np.int64), counts[busy], source="count"
                    ),
                    mmsb.DeltaBatch.from_ranges(
                        [clock], [0], [np.array([ticks, events], np.int64)], source="clock"
                    ),
                ]
            )
            bus.tick(batch)
            time.sleep(0.005)
        print(f"done {bus.lsn} {ticks} {events}", flush=True)


# -- the dashboard --------------------------------------------------------------------------


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The writer's next line of output, or '' when none comes within ``timeout``."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def dashboard(path: Path, seconds: float) -> int:
    proc = subprocess.Popen(
        [sys.executable, __file__, "writer", str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = read_line(proc, START_TIMEOUT)
        if not line.startswith("ready"):
            print(f"the writer did not start (said {line!r})", file=sys.stderr)
            return 1
        return follow(path, proc, seconds)
    finally:
        if proc.poll() is None:  # only when something above went wrong
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def follow(path: Path, proc: subprocess.Popen[str], seconds: float) -> int:
    with mmsb.open(path, readonly=True) as bus:
        # find the pages by the metadata the writer gave them
        roles: dict[str, list[int]] = {}
        for pid in bus.page_ids().tolist():
            roles.setdefault(bus.page(pid).metadata["role"], []).append(pid)
        stations, (total,), (clock,) = roles["station"], roles["total"], roles["clock"]

        # events: on a read-only bus they fire for each commit the reader observes
        # (refresh, wait_for, reads), once and in commit order
        seen = {"commits": 0, "deltas": 0, "total_changed": 0}

        def on_commit(event: mmsb.Event) -> None:
            seen["commits"] += 1
            seen["deltas"] += int(event.detail["count"])

        def on_total(event: mmsb.Event) -> None:
            seen["total_changed"] += 1

        bus.subscribe("delta_applied", on_commit)
        bus.subscribe("page_changed", on_total, filter={total})
        opened_at = bus.lsn

        frames = inconsistent = 0
        t0 = time.monotonic()
        deadline = t0 + seconds + 30.0  # however the writer fares, the dashboard ends
        while proc.poll() is None and time.monotonic() < deadline:
            frame_end = time.monotonic() + 0.1
            bus.wait_for(bus.lsn + 1, timeout=0.1)  # the next commit, or 100 ms
            with bus.snapshot() as snap:  # one commit for every read below
                rows = snap.read_many(stations)  # (stations, kinds)
                per_kind = snap.read(total)
                tick, events = snap.read(clock).tolist()
                lsn = snap.lsn
            frames += 1
            ok = np.array_equal(rows.sum(axis=0), per_kind) and per_kind.sum() == events
            inconsistent += not ok
            if frames % 3 == 1:  # print every third frame
                busiest = int(np.argmax(rows.sum(axis=1)))
                kind = int(np.argmax(per_kind))
                print(
                    f"{time.monotonic() - t0:5.2f} s  LSN {lsn:5d}  tick {tick:4d}: "
                    f"{events:8,d} events, busiest station {busiest:2d}, top kind {kind:2d} "
                    f"({per_kind[kind]:,.0f}); {'consistent' if ok else 'TORN'}"
                )
            time.sleep(max(0.0, frame_end - time.monotonic()))

        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print("the writer did not finish in time", file=sys.stderr)
            return 1
        done = read_line(proc, 5.0).split()
        if proc.returncode != 0 or len(done) != 4 or done[0] != "done":
            print(f"the writer failed (exit {proc.returncode}, said {done})", file=sys.stderr)
            return 1
        final_lsn, ticks, events = (int(x) for x in done[1:])
        bus.refresh()  # the last commits, and their events
        with bus.snapshot() as snap:
            final_events = int(snap.read(clock)[1])
        print(f"writer: {ticks:,} ticks, {events:,} events, final LSN {final_lsn:,}")
        print(
            f"dashboard: {frames} frames, LSN {bus.lsn:,}, {final_events:,} events; "
            f"events delivered for {seen['commits']:,} commits ({seen['deltas']:,} deltas) "
            f"after LSN {opened_at}, total page changed {seen['total_changed']:,} times"
        )
        caught_up = bus.lsn == final_lsn and final_events == events
        print(
            f"caught up with the writer: {'yes' if caught_up else 'NO'}; "
            f"every frame consistent: {'yes' if inconsistent == 0 else 'NO'}"
        )
        return 0 if caught_up and inconsistent == 0 else 1


def main() -> None:
    if sys.argv[1:2] == ["writer"]:  # started by the dashboard: writer DIR SECONDS
        writer(Path(sys.argv[2]), float(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        help="a new directory for the bus (default: a temporary directory removed at exit)",
    )
    parser.add_argument(
        "--seconds", type=float, default=2.0, help="how long the writer runs (default 2)"
    )
    args = parser.parse_args()
    if args.dir is not None:
        sys.exit(dashboard(args.dir, args.seconds))
    with tempfile.TemporaryDirectory(prefix="mmsb-dashboard-") as tmp:
        code = dashboard(Path(tmp) / "bus", args.seconds)
    sys.exit(code)


if __name__ == "__main__":
    main()
