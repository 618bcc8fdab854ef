"""A bus's health in one cheap call: :meth:`Monitor.stats` returns a :class:`BusStats`.

Nothing here scans the log. The figures come from counters the components keep as they
work (the committer's commits and deltas, the log writer's appended bytes and fsync times,
the propagator's ticks through its ``after_tick`` hook, the collector's steps) and from a
few system calls: the log and checkpoint folders are listed again only when their
modification time moved, the pinned-snapshot count is one word of the ``SNAPSHOTS`` header,
and live readers are counted from the kernel's lock table (``/proc/locks``).

:meth:`Monitor.stats` never changes the bus and never catches a read-only bus up with its
writer, so another thread may call it (the metrics exporter's does) while the bus is in use.
"""

from __future__ import annotations

import bisect
import itertools
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from mmsb.graph.propagator import Propagator
from mmsb.graph.tick import TickReport
from mmsb.monitor.gc import Collector
from mmsb.monitor.memory import MemorySnapshot
from mmsb.monitor.memory import snapshot as memory_snapshot
from mmsb.storage import layout
from mmsb.storage.checkpoint import list_checkpoints
from mmsb.storage.follow import Follower
from mmsb.storage.log import list_segments
from mmsb.storage.readers import readers_attached
from mmsb.storage.snapstore import _ACTIVE, MAGIC
from mmsb.storage.state import State
from mmsb.writer.committer import Committer

__all__ = [
    "TICK_LE_MS",
    "BusStats",
    "Monitor",
    "pinned_snapshots",
    "reader_count",
]

# upper bounds (ms) of the tick latency histogram's buckets; a last bucket takes the rest
TICK_LE_MS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
# a folder whose modification time is this close to the listing may change again within
# the file system's timestamp granularity without its time moving: list it again next call
_RACY_NS = 50_000_000
T = TypeVar("T")


@dataclass(frozen=True)
class BusStats:
    """A bus's health at one moment (see :meth:`Bus.stats`). Counters marked *since open*
    count this process's work on this bus; on a read-only bus they stay 0 (or None)."""

    path: str
    readonly: bool
    sync: str | None  # the sync mode (None: a read-only bus, which writes nothing)
    lsn: int  # the last commit this bus reflects
    commits: int  # since open: commits published
    deltas: int  # since open: deltas those commits carried
    log_appended_bytes: int  # since open: bytes appended to the log
    log_write_ms: float  # since open: time spent in the log's write calls
    log_bytes: int  # log segment files on disk, all of them
    log_segments: int
    checkpoints: int  # checkpoint files on disk
    checkpoint_lsn: int | None  # the newest checkpoint's LSN (None: no checkpoint)
    checkpoint_bytes: int  # the newest checkpoint's size (0: none)
    checkpoint_age_s: float | None  # seconds since the newest checkpoint was written
    ticks: int  # since open
    tick_le_ms: tuple[float, ...]  # the histogram's bucket bounds, in ms
    tick_buckets: tuple[int, ...]  # cumulative: ticks <= each bound, then all ticks
    tick_total_ms: float  # the ticks' summed latency
    last_tick_ms: float | None  # the latest tick's latency (None: no tick yet)
    gc_steps: int  # since open: GC steps (by ticks or Bus.gc)
    gc_pause_ms: float  # their summed pause
    snapshots: int  # snapshot slots held now in the shared table, by any process
    readers: int  # live reader registrations now (read-only buses following a writer)
    fsyncs: int  # since open: log syncs that reached the disk
    fsync_mean_ms: float | None  # their mean and longest time (None: none yet)
    fsync_max_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Listing(Generic[T]):
    """Figures drawn from a folder's listing, drawn again only when the folder changed."""

    def __init__(self, path: str, scan: Callable[[str], T], empty: T) -> None:
        self.path, self.scan, self.empty = path, scan, empty
        self._mtime = -1
        self._racy = True
        self._value = empty

    def get(self) -> T:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:  # not there (an ephemeral bus removed at close)
            return self.empty
        if mtime != self._mtime or self._racy:
            self._racy = time.time_ns() - mtime < _RACY_NS
            self._value = self.scan(self.path)
            self._mtime = mtime
        return self._value


Segments = tuple[int, int, str]  # sealed segments' bytes and count, the newest one's path
Checkpoints = tuple[int, int | None, int, int]  # count; newest: LSN, bytes, mtime (ns)


def _scan_segments(log_dir: str) -> Segments:
    segs = list_segments(log_dir)
    if not segs:
        return 0, 0, ""
    return sum(_size(p) for _, p in segs[:-1]), len(segs) - 1, segs[-1][1]


def _scan_checkpoints(ckpt_dir: str) -> Checkpoints:
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts:
        return 0, None, 0, 0
    lsn, path = ckpts[0]
    try:
        st = os.stat(path)
    except OSError:
        return len(ckpts), lsn, 0, 0
    return len(ckpts), lsn, st.st_size, st.st_mtime_ns


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def pinned_snapshots(directory: str) -> int:
    """Snapshot slots held in the bus's shared table (the header word that
    ``SnapWriter.active`` reads); 0 when there is no table."""
    try:
        fd = os.open(os.path.join(directory, layout.SNAPSHOTS_FILE), os.O_RDONLY)
    except OSError:
        return 0
    try:
        head = os.pread(fd, 8 * (_ACTIVE + 1), 0)
    finally:
        os.close(fd)
    if len(head) < 8 * (_ACTIVE + 1):
        return 0
    words = struct.unpack(f"<{_ACTIVE + 1}Q", head)
    return int(words[_ACTIVE]) if words[0] == MAGIC else 0


def reader_count(directory: str) -> int:
    """Live reader registrations on the bus at ``directory``: the shared locks held on its
    ``READERS`` file, counted in ``/proc/locks``. Where that table cannot be read (not
    Linux), or names none although :func:`readers_attached` finds one (a file system that
    reports other device numbers), this says only whether there is any: 1 or 0."""
    path = os.path.join(directory, layout.READERS_FILE)
    try:
        st = os.stat(path)
    except OSError:
        return 0
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        table = ""
    n = 0
    for line in table.splitlines():
        t = line.split()  # "1: FLOCK ADVISORY READ <pid> <dev:ino> 0 EOF"; waiters have "->"
        if len(t) > 5 and t[1] == "FLOCK" and t[3] == "READ" and t[5] == key:
            n += 1
    return n if n else int(readers_attached(directory))


class Monitor:
    """The bus's stats component: tick latencies (an ``after_tick`` hook on the
    propagator) and :meth:`stats`, which gathers the other components' counters.

    ``committer`` and ``collector`` are the writable bus's (None when read-only);
    ``follower`` is the read-only bus's.
    """

    def __init__(
        self,
        path: str,
        state_of: Callable[[], State],
        propagator: Propagator,
        committer: Committer | None,
        follower: Follower | None,
        collector: Collector | None,
    ) -> None:
        self.path = path
        self._state_of = state_of
        self._committer = committer
        self._follower = follower
        self._collector = collector
        self._lock = threading.Lock()  # the listings, for callers in several threads
        self._segments = _Listing(os.path.join(path, layout.LOG_DIR), _scan_segments,
                                  (0, 0, ""))  # fmt: skip
        self._checkpoints: _Listing[Checkpoints] = _Listing(
            os.path.join(path, layout.CKPT_DIR), _scan_checkpoints, (0, None, 0, 0)
        )
        self._tick_counts = [0] * (len(TICK_LE_MS) + 1)
        self._tick_ns = 0
        self._last_tick_ns: int | None = None
        propagator.after_tick.append(self._ticked)

    def _ticked(self, report: TickReport) -> None:
        ns = report.total_ns
        self._tick_counts[bisect.bisect_left(TICK_LE_MS, ns / 1e6)] += 1
        self._tick_ns += ns
        self._last_tick_ns = ns

    def memory(self) -> MemorySnapshot:
        """Where this bus's memory goes: pages, bookkeeping, log, arena, free lists, and the
        measured resident memory (see :mod:`mmsb.monitor.memory`)."""
        return memory_snapshot(self._state_of(), self.path)

    def stats(self) -> BusStats:
        """The bus's health now, from counters kept as it works (commits, deltas, log
        bytes, checkpoints, ticks, GC, snapshots, readers, fsyncs; see
        :class:`BusStats`). Cheap (no log scan) and safe to call from another thread: it
        never changes the bus, and a read-only bus reports the commit it reflects without
        catching up first. Works on a closed bus too (its counters as it closed)."""
        c, f, gc = self._committer, self._follower, self._collector
        with self._lock:
            sealed, n_sealed, newest = self._segments.get()
            n_ckpt, ckpt_lsn, ckpt_bytes, ckpt_mtime = self._checkpoints.get()
        log_bytes = sealed
        if newest:
            mine = c is not None and os.path.basename(newest) == c.log.name
            log_bytes += c.log.pos if c is not None and mine else _size(newest)
        counts = list(self._tick_counts)
        ticks = sum(counts)
        last = self._last_tick_ns
        fsyncs = 0 if c is None else c.log.fsyncs
        fsync_ns = 0 if c is None else c.log.fsync_ns
        return BusStats(
            path=self.path,
            readonly=c is None,
            sync=None if c is None else _sync_mode(c),
            lsn=c.lsn if c is not None else f.lsn if f is not None else 0,
            commits=0 if c is None else c.commits,
            deltas=0 if c is None else c.deltas,
            log_appended_bytes=0 if c is None else c.log.appended,
            log_write_ms=0.0 if c is None else c.log.write_ns / 1e6,
            log_bytes=log_bytes,
            log_segments=n_sealed + bool(newest),
            checkpoints=n_ckpt,
            checkpoint_lsn=ckpt_lsn,
            checkpoint_bytes=ckpt_bytes,
            checkpoint_age_s=None if ckpt_lsn is None
            else max(0.0, (time.time_ns() - ckpt_mtime) / 1e9),
            ticks=ticks,
            tick_le_ms=TICK_LE_MS,
            tick_buckets=tuple(itertools.accumulate(counts)),
            tick_total_ms=self._tick_ns / 1e6,
            last_tick_ms=None if last is None else last / 1e6,
            gc_steps=0 if gc is None else gc.steps,
            gc_pause_ms=0.0 if gc is None else gc.pause_ns / 1e6,
            snapshots=pinned_snapshots(self.path),
            readers=reader_count(self.path),
            fsyncs=fsyncs,
            fsync_mean_ms=fsync_ns / fsyncs / 1e6 if fsyncs else None,
            fsync_max_ms=c.log.fsync_max_ns / 1e6 if c is not None and fsyncs else None,
        )  # fmt: skip


def _sync_mode(c: Committer) -> str:
    return "always" if c.sync_always else "normal" if c.log.fsync_enabled else "off"
