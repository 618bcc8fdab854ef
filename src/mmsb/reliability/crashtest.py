"""The crash campaign behind ``mmsb crashtest``: real writer processes killed with SIGKILL.

Each iteration starts :mod:`mmsb.reliability.writer` on the campaign's bus, kills it at a
random moment (mostly while it commits; sometimes while it is still opening and
recovering), then checks what is on disk against the writer's report of the commits it
started and the commits that returned (acknowledged):

* ``verify`` (read-only, before anything is repaired) finds no damage beyond a torn tail;
* a read-only open and a writer open both succeed and agree;
* no acknowledged commit is lost, and nothing the writer never started appears (a process
  kill keeps the page cache, so this holds in every sync mode);
* every group of pages holds one value with the epochs its batches gave (no half-applied
  batch), and the state hash equals the one the writer reported for that LSN;
* the snapshot at the last acknowledged LSN matches too, and ``verify`` after reopening is
  clean with no torn tail left;
* the writer lock names the killed writer as a stale holder and is taken over;
* no temporary file is left in the bus directory, and no shared-memory segment or temporary
  file the writer had open or mapped when it was killed survives it.

The parent then leaves the bus either closed cleanly or dropped without a clean shutdown
(alternating), so the next writer opens by the fast path or by replay.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import mmsb
from mmsb.errors import InvalidArgumentError
from mmsb.history import Snapshot

GROUPS = 4
PAGE_KINDS = ((16, "uint8"), (200, "float64"), (1024, "int32"))
EARLY_KILL_P = 0.1  # fraction of kills aimed at the writer's open/recovery
MAX_DELAY = 0.4  # seconds a writer commits before it is killed, at most
SHM_DIR = "/dev/shm"


@dataclass
class Expected:
    """The state at ``lsn`` as one (value, batches) per group, and its hash if known."""

    lsn: int
    digest: str
    values: list[int] = field(default_factory=lambda: [0] * GROUPS)
    batches: list[int] = field(default_factory=lambda: [0] * GROUPS)


@dataclass
class Report:
    """What one writer reported before it died."""

    pid: int | None = None
    ready: tuple[int, str] | None = None
    intents: dict[int, tuple[int, int]] = field(default_factory=dict)
    acks: dict[int, str] = field(default_factory=dict)


def parse_report(text: str) -> Report:
    rep = Report()
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut off by the kill
        kind, *rest = line.split()
        if kind == "P":
            rep.pid = int(rest[0])
        elif kind == "R":
            rep.ready = (int(rest[0]), rest[1])
        elif kind == "I":
            rep.intents[int(rest[0])] = (int(rest[1]), int(rest[2]))
        elif kind == "A":
            rep.acks[int(rest[0])] = rest[1]
    return rep


@dataclass
class ModeFigures:
    """Figures for one sync mode. Every ``*_failures``-like count must be zero."""

    sync: str
    iterations: int = 0
    kills: int = 0
    early_kills: int = 0  # killed before the writer reported its bus open
    commits_started: int = 0
    acknowledged: int = 0  # commits acknowledged to the writer over the campaign
    recovered_unacknowledged: int = 0  # started, not acknowledged, yet found committed
    lost_acknowledged: int = 0
    phantom_commits: int = 0  # commits found that the writer never started
    half_applied: int = 0
    wrong_state: int = 0  # hash differs from the writer's report for that LSN
    failed_reopens: int = 0
    verify_failures: int = 0
    stale_locks_taken_over: int = 0
    stale_lock_misses: int = 0  # a killed lock holder not reported as stale
    leaked_temporaries: int = 0
    leaked_shm_segments: int = 0
    writer_errors: int = 0  # a writer that exited by itself (an exception) before the kill
    writers_holding_scratch: int = 0  # killed while holding a shm segment or temporary file
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    CHECKS = (
        "lost_acknowledged", "phantom_commits", "half_applied", "wrong_state",
        "failed_reopens", "verify_failures", "stale_lock_misses", "leaked_temporaries",
        "leaked_shm_segments", "writer_errors",
    )  # fmt: skip

    @property
    def ok(self) -> bool:
        return not self.failures and all(getattr(self, c) == 0 for c in self.CHECKS)

    def fail(self, counter: str, message: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        if len(self.failures) < 20:
            self.failures.append(f"iteration {self.iterations}: {message}")


@dataclass
class CampaignResult:
    modes: list[ModeFigures]
    seed: int
    seconds: float

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.modes)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seed": self.seed,
            "seconds": self.seconds,
            "modes": [{**asdict(m), "ok": m.ok} for m in self.modes],
        }


class WriterDied(RuntimeError):
    """The writer process ended before the campaign killed it."""


def make_bus(path: Path) -> Expected:
    """A new bus with ``GROUPS`` groups of one page of each kind, all zeros."""
    with mmsb.open(path, sync="always") as bus:
        for g in range(GROUPS):
            for size, dtype in PAGE_KINDS:
                bus.create_page(size, dtype=dtype, metadata={"group": g})
        return Expected(bus.lsn, bus.state_hash())


def advance(exp: Expected, rep: Report, lsn: int) -> Expected:
    """The expected state at ``lsn`` from the state at ``exp.lsn`` and the writer's intents."""
    values, batches = list(exp.values), list(exp.batches)
    for n in range(exp.lsn + 1, lsn + 1):
        g, v = rep.intents[n]
        values[g] = v
        batches[g] += 1
    return Expected(lsn, rep.acks.get(lsn, ""), values, batches)


def page_problem(view: mmsb.Bus | Snapshot, exp: Expected) -> str | None:
    """Why the pages do not show exactly the batches of ``exp`` (``None`` if they do)."""
    ids = view.page_ids()
    if len(ids) != GROUPS * len(PAGE_KINDS):
        return f"{len(ids)} pages, expected {GROUPS * len(PAGE_KINDS)}"
    for pid in ids.tolist():
        info = view.page(pid)
        g = int(info.metadata["group"])
        got = np.unique(view.read(pid).view(np.uint8))
        if got.tolist() != [exp.values[g]]:
            return f"page {pid} of group {g} holds {got[:8].tolist()}, expected {exp.values[g]}"
        if info.epoch != 2 * exp.batches[g]:
            return f"page {pid} has epoch {info.epoch}, expected {2 * exp.batches[g]}"
    return None


def open_paths(pid: int) -> set[str]:
    """Files process ``pid`` has open or mapped (from ``/proc``; empty where unreadable)."""
    out: set[str] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return out
    for fd in fds:
        try:
            out.add(os.readlink(os.path.join(fd_dir, fd)))
        except OSError:
            continue
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    out.add(parts[5].strip())
    except OSError:
        pass
    return out


def scratch_paths(paths: set[str], workdir: Path, since: float) -> set[str]:
    """Of ``paths``, those a dead writer must not leave behind: shared-memory segments,
    ``*.tmp`` files anywhere, and files in the system temporary directory — counting only
    files created or changed since ``since`` (a wall-clock time), outside the campaign's own
    ``workdir``, and not the package's own files (its source and the compiled-kernel cache
    next to it are read at import, wherever the package is installed)."""
    tmp = tempfile.gettempdir().rstrip("/") + "/"
    own = str(workdir.resolve()) + "/"
    package = str(Path(mmsb.__file__).resolve().parent) + "/"
    out = set()
    for p in paths:
        p = p.removesuffix(" (deleted)")
        if p.startswith(package) or "/__pycache__/" in p:
            continue
        shared = p.startswith(SHM_DIR + "/") or p.endswith(".tmp")
        if not (shared or (p.startswith(tmp) and not p.startswith(own))):
            continue
        try:
            # file times come from a coarse kernel clock: allow it to lag a little
            if os.stat(p).st_ctime < since - 0.05:
                continue  # existed unchanged before the writer started: not its leftover
        except OSError:
            pass  # already gone (or unreadable): keep it, the caller checks existence
        out.add(p)
    return out


def temporaries(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*.tmp"))


def run_and_kill(
    path: Path, report: Path, sync: str, seed: int, delay: float, early: bool
) -> tuple[Report, int, set[str]]:
    """Start a writer, kill it ``delay`` seconds after it reported ready (``early``: after
    it started, ready or not); return its report, its pid, and the scratch files (shared
    memory, temporary files) it had open or mapped when it was killed.

    The writer is stopped (SIGSTOP) while its open files are listed, then killed."""
    report.write_bytes(b"")
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmsb.reliability.writer", str(path), sync, str(seed),
         str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        if early:
            time.sleep(delay)
        else:
            deadline = time.monotonic() + 120
            while b"\nR " not in report.read_bytes():
                if proc.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            time.sleep(delay)
    finally:
        held: set[str] = set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGSTOP)
            held = scratch_paths(open_paths(proc.pid), path.parent, started)
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        raise WriterDied(
            f"writer exited with status {proc.returncode} before it was killed: "
            f"{err.decode(errors='replace')[-2000:]}"
        )
    return parse_report(report.read_text()), proc.pid, held


def _iteration(
    fig: ModeFigures,
    bus_path: Path,
    report_path: Path,
    exp: Expected,
    rng: random.Random,
    seed: int,
    startup: float,
    tamper: Callable[[Path], None] | None,
) -> tuple[Expected, float]:
    early = rng.random() < EARLY_KILL_P
    delay = rng.uniform(0.0, startup if early else MAX_DELAY)
    t0 = time.monotonic()
    rep, pid, held = run_and_kill(bus_path, report_path, fig.sync, seed, delay, early)
    if rep.ready is not None:
        startup = 0.8 * startup + 0.2 * (time.monotonic() - t0 - delay)
    fig.kills += 1
    fig.early_kills += rep.ready is None
    if tamper is not None:
        tamper(bus_path)
    if rep.ready is not None and rep.ready != (exp.lsn, exp.digest):
        fig.fail("wrong_state", f"writer opened at {rep.ready}, expected {exp.lsn}")
    last_ack = max(rep.acks, default=exp.lsn)
    last_try = max(rep.intents, default=exp.lsn)
    fig.commits_started += len(rep.intents)
    fig.acknowledged += len(rep.acks)

    report = mmsb.verify(bus_path)  # read-only: the tail may still be torn
    if not report.ok:
        fig.fail("verify_failures", f"verify before reopening: {report.summary()}")
    try:
        with mmsb.open(bus_path, readonly=True) as ro:
            ro_seen: tuple[int, str] | None = (ro.lsn, ro.state_hash())
    except mmsb.MMSBError as exc:
        fig.fail("failed_reopens", f"read-only open: {type(exc).__name__}: {exc}")
        ro_seen = None
    try:
        bus = mmsb.open(bus_path, sync="off")
    except mmsb.MMSBError as exc:
        fig.fail("failed_reopens", f"writer open: {type(exc).__name__}: {exc}")
        raise
    try:
        lock = None if bus._session is None else bus._session.lock
        stale = None if lock is None else lock.stale_pid
        if rep.ready is not None and stale != pid:
            fig.fail("stale_lock_misses", f"killed writer {pid} not reported (got {stale})")
        fig.stale_locks_taken_over += stale == pid
        fig.writers_holding_scratch += bool(held)
        leftovers = temporaries(bus_path)
        if leftovers:
            fig.fail("leaked_temporaries", f"temporary files after reopening: {leftovers}")
        shm = sorted(p for p in held if p.startswith(SHM_DIR + "/") and os.path.exists(p))
        if shm:
            fig.fail("leaked_shm_segments", f"shared memory left by the killed writer: {shm}")
        tmp = sorted(p for p in held if not p.startswith(SHM_DIR) and os.path.exists(p))
        if tmp:
            fig.fail("leaked_temporaries", f"temporary files left by the writer: {tmp}")
        lsn = bus.lsn
        digest = bus.state_hash()
        if ro_seen is not None and ro_seen != (lsn, digest):
            fig.fail("wrong_state", f"read-only open saw {ro_seen}, writer open {lsn}")
        if lsn < last_ack:
            fig.fail("lost_acknowledged", f"LSN {lsn} after acknowledging {last_ack}")
            fig.lost_acknowledged += last_ack - lsn - 1  # count every lost commit
            lsn_ok = False
        elif lsn > last_try:
            fig.fail("phantom_commits", f"LSN {lsn} but the writer started only {last_try}")
            lsn_ok = False
        else:
            lsn_ok = True
            fig.recovered_unacknowledged += lsn - last_ack
        now = Expected(lsn, digest)
        if lsn_ok:
            now = advance(exp, rep, lsn)
            problem = page_problem(bus, now)
            if problem:
                fig.fail("half_applied", f"at LSN {lsn}: {problem}")
            if now.digest and digest != now.digest:
                fig.fail("wrong_state", f"state hash at LSN {lsn} differs from the writer's")
            if last_ack > exp.lsn:
                with bus.at(last_ack) as snap:
                    problem = page_problem(snap, advance(exp, rep, last_ack))
                    if problem or snap.state_hash() != rep.acks[last_ack]:
                        fig.fail("wrong_state", f"snapshot at {last_ack}: {problem or 'hash'}")
        after = bus.verify()
        if not after.ok or after.torn_tail_bytes:
            fig.fail("verify_failures", f"verify after reopening: {after.summary()}")
        nxt = Expected(lsn, digest, now.values, now.batches)
    finally:
        # alternate how the parent leaves the bus: the next writer then opens via the
        # fast path or by replay
        if fig.iterations % 2:
            bus.close()
        else:
            bus.abandon()
    return nxt, startup


def run_mode(
    workdir: Path,
    sync: str,
    iterations: int,
    seed: int,
    progress: Callable[[ModeFigures], None] | None = None,
    tamper: Callable[[Path], None] | None = None,
) -> ModeFigures:
    """Run ``iterations`` kill/reopen rounds on a new bus in ``workdir/sync``."""
    fig = ModeFigures(sync)
    base = workdir / sync
    base.mkdir(mode=0o700, parents=True, exist_ok=False)
    bus_path = base / "bus"
    report_path = base / "writer.txt"
    exp = make_bus(bus_path)
    rng = random.Random(seed)
    startup = 1.0
    t0 = time.perf_counter()
    for i in range(iterations):
        try:
            exp, startup = _iteration(
                fig, bus_path, report_path, exp, rng, seed * 100_003 + i, startup, tamper
            )
        except mmsb.MMSBError:
            break  # the bus cannot be reopened: counted, and the campaign cannot go on
        except WriterDied as exc:
            fig.fail("writer_errors", str(exc))  # the writer failed by itself: a real bug
        finally:
            fig.iterations += 1
            if progress is not None:
                progress(fig)
    fig.seconds = time.perf_counter() - t0
    return fig


def run_campaign(
    workdir: str | os.PathLike[str],
    iterations: int,
    modes: Iterable[str] = ("always", "normal", "off"),
    seed: int = 0,
    progress: Callable[[ModeFigures], None] | None = None,
    tamper: Callable[[Path], None] | None = None,
) -> CampaignResult:
    """Run ``iterations`` kills per sync mode under ``workdir`` (created; must be new or
    empty). ``tamper`` is called on the bus directory after each kill (tests use it to
    plant damage the checks must catch)."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InvalidArgumentError(f"iterations must be a positive integer, got {iterations!r}")
    modes = list(modes)
    for m in modes:
        if m not in ("always", "normal", "off"):
            raise InvalidArgumentError(f"unknown sync mode {m!r}")
    root = Path(workdir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise InvalidArgumentError(f"{root} exists and is not an empty directory")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # every reopen takes over a killed writer's lock; the figures count those takeovers
    lock_log = logging.getLogger("mmsb.storage.lock")
    level = lock_log.level
    lock_log.setLevel(logging.ERROR)
    try:
        figs = [
            run_mode(root, m, iterations, seed * 10 + k, progress, tamper)
            for k, m in enumerate(modes)
        ]
    finally:
        lock_log.setLevel(level)
    return CampaignResult(figs, seed, time.perf_counter() - t0)
