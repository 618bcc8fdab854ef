"""Fault injection with libfiu: real writer processes whose OS calls fail at random.

Each run starts ``tests/reliability/fiu_writer.py`` under ``fiu-run -x`` (libfiu's POSIX
preload: the named libc functions can be made to fail from outside), waits until the
writer has set up its bus, enables one failure point with ``fiu-ctrl`` (``enable_random``),
lets the writer commit, checkpoint, grow its arena and reopen its bus until the first
error, and then reopens the bus here, with no fault, and checks:

* it opens, and ``verify()`` passes;
* no acknowledged commit is lost: the recovered LSN is at least the last acknowledged one,
  and at most one more (the commit in flight when the error came, wholly there or wholly
  absent); the counter page holds the last acknowledged value (or the in-flight one) and
  every acknowledged page exists;
* the log holds each LSN once, in order;
* every error the writer saw was an ``MMSBError`` that is also an ``OSError``, chaining
  the original ``OSError``; and no writer died of a signal.

The figures per point (runs, runs in which a fault surfaced, acknowledged commits, errors
by type, reopen failures, commits lost) are printed, and written as JSON lines to
``$MMSB_FIU_REPORT`` when it is set. libfiu does not count the failures it injects: a
fault that a caller absorbs (an ``EINTR`` that Python retries, a failed anonymous ``mmap``
that ``malloc`` replaces with ``brk``) leaves no trace, so "faults surfaced" counts runs.

Needs ``fiu-run`` and ``fiu-ctrl`` (Debian package ``fiu-utils``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import mmsb
from mmsb.storage import layout
from mmsb.storage.log import LogReader

WRITER = Path(__file__).with_name("fiu_writer.py")
RUNS = 20  # per point
PARALLEL = 4  # writers at once (they mostly wait on fsync)
READY_TIMEOUT = 60.0
RUN_TIMEOUT = 60.0

# failure point -> probability per call, sized so a run of about a hundred steps meets a
# fault most of the time (the write-path calls of each step: see fiu_writer.py)
POINTS = {
    "posix/io/rw/writev": 0.03,  # every append and segment header
    "posix/io/sync/fdatasync": 0.03,  # every commit's log sync
    "posix/io/sync/fsync": 0.1,  # checkpoint file and directory, new segments
    "posix/io/rw/ftruncate": 0.2,  # arena growth, segment rolls, recovery on reopen
    "posix/io/dir/rename": 0.15,  # checkpoints, the clean-shutdown file
    "posix/mm/mmap": 0.2,  # opening (arena, publication header), allocations
}

FIU = shutil.which("fiu-run") and shutil.which("fiu-ctrl")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not FIU, reason="libfiu's fiu-run/fiu-ctrl are not installed (apt-get install fiu-utils)"
    ),
]


@dataclass
class Outcome:
    """One writer run, as the writer reported it and as the reopened bus shows it."""

    point: str
    acked: list[tuple[int, int]] = field(default_factory=list)  # (lsn, counter value)
    created: list[tuple[int, int]] = field(default_factory=list)  # (lsn, page id)
    tried: int = 0  # the step in flight at the end
    error: dict[str, Any] | None = None
    done: bool = False
    returncode: int | None = None
    problems: list[str] = field(default_factory=list)  # anything that breaks a promise
    lost: int = 0  # acknowledged commits missing after the reopen
    reopen_failed: bool = False

    @property
    def last_ack(self) -> int:
        return max([lsn for lsn, _ in self.acked] + [lsn for lsn, _ in self.created] + [0])


def drain(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def run_writer(point: str, probability: float, directory: Path) -> Outcome:
    out = Outcome(point)
    errors: list[str] = []
    fifos = f"{directory}-fiu"  # libfiu's control pipes, kept beside the bus (the writer
    # leaves with os._exit, so libfiu never removes them)
    with subprocess.Popen(
        ["fiu-run", "-x", "-f", fifos, sys.executable, str(WRITER), str(directory)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        lines: queue.Queue[str | None] = queue.Queue()
        readers = [
            threading.Thread(target=drain, args=(proc.stdout, lines), daemon=True),
            threading.Thread(target=lambda: errors.extend(proc.stderr or ()), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            drive(proc, lines, out, point, probability, errors, fifos)
        except (queue.Empty, subprocess.TimeoutExpired):
            out.problems.append("the writer hung")
        except subprocess.CalledProcessError as exc:
            out.problems.append(f"fiu-ctrl failed: {exc.stderr!r}")
        finally:
            if proc.poll() is None:
                proc.kill()
            out.returncode = proc.wait(timeout=30)
            for t in readers:
                t.join(timeout=30)
    if out.returncode not in (0, None) and not out.problems:
        out.problems.append(f"the writer exited with {out.returncode}: {''.join(errors)[-500:]}")
    if out.error is not None:
        err = out.error
        original = any(c["original"] and not c["mmsb"] for c in err["chain"])
        if not err["mmsb"]:
            out.problems.append(f"untyped error {err['type']}: {err['message']} at {err['where']}")
        elif err["type"] != "BusClosedError" and not original:
            out.problems.append(f"{err['type']} chains no original error: {err['message']}")
    elif not out.done and not out.problems:
        out.problems.append("the writer stopped without an error or DONE")
    return out


def drive(
    proc: subprocess.Popen[str],
    lines: queue.Queue[str | None],
    out: Outcome,
    point: str,
    probability: float,
    errors: list[str],
    fifos: str,
) -> None:
    """Wait for READY, enable the fault, say GO, read the writer's report to its end."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        if line is None:
            out.problems.append(f"the writer never got ready: {''.join(errors)[-500:]}")
            return
        if line.startswith("READY "):
            break
        parse(out, line)
    pid = int(line.split()[1])
    enable = f"enable_random name={point},probability={probability}"
    subprocess.run(["fiu-ctrl", "-f", fifos, "-c", enable, str(pid)], check=True, timeout=30,
                   capture_output=True)  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write("GO\n")
    proc.stdin.flush()
    deadline = time.monotonic() + RUN_TIMEOUT
    while (line := lines.get(timeout=max(deadline - time.monotonic(), 0.01))) is not None:
        parse(out, line)
    proc.wait(timeout=RUN_TIMEOUT)


def parse(out: Outcome, line: str) -> None:
    kind, _, rest = line.partition(" ")
    if kind == "ACK":
        lsn, _page, value = (int(x) for x in rest.split())
        out.acked.append((lsn, value))
    elif kind == "NEW":
        lsn, page = (int(x) for x in rest.split())
        out.created.append((lsn, page))
    elif kind == "TRY":
        out.tried = int(rest)
    elif kind == "ERR":
        out.error = json.loads(rest)
    elif kind == "DONE":
        out.done = True


def check_reopened(out: Outcome, directory: Path, counter: int) -> None:
    """Reopen the bus the writer left (no faults here) and hold it to its promises."""
    last = out.last_ack
    try:
        bus = mmsb.open(directory, sync="off", checkpoint_every=None)
    except Exception as exc:  # counted and reported
        out.reopen_failed = True
        out.problems.append(f"the bus does not reopen: {type(exc).__name__}: {exc}")
        return
    with bus:
        lsn = bus.lsn
        if lsn < last:
            out.lost = last - lsn
            out.problems.append(f"recovered LSN {lsn} < acknowledged LSN {last}")
        elif lsn > last + 1:
            out.problems.append(f"recovered LSN {lsn}, more than one past acknowledged {last}")
        in_flight = lsn == last + 1
        value = int(bus.read(counter)[0])
        acked_value = max(((at, v) for at, v in out.acked if at <= lsn), default=(0, 0))[1]
        if value != acked_value and not (in_flight and value == out.tried):
            out.problems.append(f"counter holds {value}, acknowledged {acked_value}")
        pages = {int(p) for p in bus.page_ids()}
        missing = [p for at, p in out.created if at <= lsn and p not in pages]
        if missing:
            out.lost += len(missing)
            out.problems.append(f"acknowledged pages {missing} are missing")
        extra = pages - {counter} - {p for _, p in out.created}
        if len(extra) > (1 if in_flight else 0):
            out.problems.append(f"pages {sorted(extra)} were never created")
        report = bus.verify()
        if not report.ok:
            out.problems.append(f"verify() fails: {report}")
    lsns = [f.lsn for f in LogReader(str(directory / layout.LOG_DIR)).frames(headers_only=True)]
    if lsns != list(range(1, len(lsns) + 1)):
        out.problems.append("the log does not hold each LSN once, in order")


def campaign(base: Path, point: str, probability: float) -> list[Outcome]:
    def one(i: int) -> Outcome:
        directory = base / f"{point.replace('/', '_')}-{i}"
        out = run_writer(point, probability, directory)
        counter = 1  # the writer's first page
        if (directory / layout.MANIFEST_FILE).exists():
            check_reopened(out, directory, counter)
        shutil.rmtree(directory, ignore_errors=True)
        for fifo in base.glob(f"{directory.name}-fiu-*"):
            fifo.unlink()
        return out

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(RUNS)))


def figures(point: str, outcomes: list[Outcome]) -> dict[str, Any]:
    types = Counter(o.error["type"] for o in outcomes if o.error is not None)
    return {
        "point": point,
        "runs": len(outcomes),
        "faults_surfaced": sum(o.error is not None for o in outcomes),
        "acknowledged_commits": sum(len(o.acked) + len(o.created) for o in outcomes),
        "errors": dict(sorted(types.items())),
        "reopen_failures": sum(o.reopen_failed for o in outcomes),
        "commits_lost": sum(o.lost for o in outcomes),
        "problems": [p for o in outcomes for p in o.problems],
    }


@pytest.mark.parametrize("point", sorted(POINTS))
def test_writer_survives_injected_faults(tmp_path: Path, point: str) -> None:
    outcomes = campaign(tmp_path, point, POINTS[point])
    fig = figures(point, outcomes)
    print(json.dumps(fig))
    report = os.environ.get("MMSB_FIU_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(json.dumps(fig) + "\n")
    assert fig["problems"] == [], fig
    assert fig["runs"] >= 20
    assert fig["commits_lost"] == 0 and fig["reopen_failures"] == 0
    assert fig["faults_surfaced"] >= RUNS // 4, f"{point} was rarely hit: {fig}"
