"""The systems ``mmsb bench --compare`` runs side by side (:mod:`mmsb.benchmarks.compare`):
MMSB, LMDB (optional), SQLite and the numpy floor, each behind one :class:`Store` interface,
and the shared workload they all receive.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Progress = Callable[[str, int, int], None]

PAGE = 4096
PAYLOAD = 64
READ_MANY_CHUNK = 1_000  # ids per Bus.read_many call in (c)'s batched MMSB figure
FULL = {"pages": 65_536, "updates": 1_000_000, "batches": 100, "reads": 200_000, "durable": 200}
WORKLOADS = {
    "a": "(a) batched 64 B updates",
    "b": "(b) durable commits",
    "c": "(c) random page reads",
    "d": "(d) reopen",
    "e": "(e) agent simulation",
}
INSTALL_HINT = "install mmsb[compare] (pip install 'mmsb[compare]') to include LMDB"
# SQLite's update: a splice of the blob in SQL (|| yields text holding the raw bytes, which
# CAST turns back into a blob unchanged)
SPLICE = (
    "UPDATE pages SET page = CAST(substr(page, 1, ?) || ? || substr(page, ?) AS BLOB) WHERE id = ?"
)
SELECT = "SELECT page FROM pages WHERE id = ?"


class MismatchError(RuntimeError):
    """A system's pages differ from the floor's after the same writes.

    This is the benchmark's own correctness check failing (a broken peer setup or a wrong
    engine), not a user error, so it is not part of :mod:`mmsb.errors`.
    """


def load_lmdb() -> tuple[Any, str]:
    """The ``lmdb`` module, or None and why it is missing."""
    try:
        return importlib.import_module("lmdb"), ""
    except ImportError as e:
        return None, f"lmdb is not importable ({e}); {INSTALL_HINT}"


def sizes(scale: float) -> dict[str, int]:
    """The workload sizes at ``scale`` x the full ones (with small floors for tests)."""
    if not scale > 0:
        raise mmsb.InvalidArgumentError(f"scale must be positive, got {scale!r}")
    s = {k: max(int(v * scale), lo) for (k, v), lo in
         zip(FULL.items(), (64, 1_000, 1, 1_000, 10), strict=True)}  # fmt: skip
    s["batches"] = FULL["batches"]
    s["batch"] = -(-s["updates"] // s["batches"])
    return s


@dataclass(frozen=True)
class Workload:
    """The bytes every system writes and the pages every system reads."""

    pages: int
    batch: int
    pids: I64  # page index 0..pages-1 of each (a) update
    offs: I64  # byte offset of each update in its page
    data: U8  # (updates, 64) payloads
    read_ids: I64  # page indices for (c)
    dur_pids: I64  # (b): one update per commit
    dur_offs: I64
    dur_data: U8

    def batches(self) -> Iterator[tuple[I64, I64, U8]]:
        for s in range(0, self.pids.size, self.batch):
            e = s + self.batch
            yield self.pids[s:e], self.offs[s:e], self.data[s:e]


def make_workload(sz: dict[str, int], seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    pages, n, d = sz["pages"], sz["updates"], sz["durable"]
    return Workload(
        pages, sz["batch"],
        rng.integers(0, pages, n), rng.integers(0, PAGE - PAYLOAD + 1, n),
        rng.integers(0, 256, (n, PAYLOAD), dtype=np.uint8),
        rng.integers(0, pages, sz["reads"]),
        rng.integers(0, pages, d), rng.integers(0, PAGE - PAYLOAD + 1, d),
        rng.integers(0, 256, (d, PAYLOAD), dtype=np.uint8),
    )  # fmt: skip


def _rows(data: U8) -> list[bytes]:
    flat = data.tobytes()
    return [flat[i : i + PAYLOAD] for i in range(0, len(flat), PAYLOAD)]


# -- the systems ---------------------------------------------------------------------------


class Store:
    """One system under test. ``apply``/``read_loop``/``reopen``/``durable`` return the
    seconds of their timed part; inputs are converted to the system's form outside it."""

    name = ""
    conditions: dict[str, str]

    def setup(self, root: str, pages: int) -> None:
        raise NotImplementedError

    def apply(self, pids: I64, offs: I64, data: U8) -> float:
        raise NotImplementedError

    def pages(self) -> Iterator[tuple[int, Any]]:
        """(page index, bytes) of every page, in index order."""
        raise NotImplementedError

    def page(self, i: int) -> Any:
        raise NotImplementedError

    def read_loop(self, ids: list[int]) -> float:
        raise NotImplementedError

    def reopen(self) -> float:
        """Close, then time opening again and reading one page; leaves it open."""
        raise NotImplementedError

    def durable(self, pids: I64, offs: I64, data: U8) -> float:
        """Reopen in the durable mode, then time one fsynced commit per update."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NumpyFloor(Store):
    name = "numpy shm"

    def __init__(self) -> None:
        self.conditions = {
            "a": "2-D uint8 array over multiprocessing.shared_memory; one fancy-index "
            "assignment per batch; no log, no checks, nothing durable",
            "c": "arr[i].copy() per read",
        }
        self.shm: shared_memory.SharedMemory | None = None
        self.arr: U8 | None = None

    def setup(self, root: str, pages: int) -> None:
        self.shm = shared_memory.SharedMemory(create=True, size=pages * PAGE)
        self.arr = np.ndarray((pages, PAGE), np.uint8, buffer=self.shm.buf)
        self.within = np.arange(PAYLOAD, dtype=np.int64)

    def apply(self, pids: I64, offs: I64, data: U8) -> float:
        assert self.arr is not None
        flat = self.arr.reshape(-1)
        t = time.perf_counter()
        flat[((pids * PAGE + offs)[:, None] + self.within).reshape(-1)] = data.reshape(-1)
        return time.perf_counter() - t

    def read_loop(self, ids: list[int]) -> float:
        arr = self.arr
        assert arr is not None
        t = time.perf_counter()
        for i in ids:
            arr[i].copy()
        return time.perf_counter() - t

    def read_many_loop(self, ids: list[int], chunk: int = READ_MANY_CHUNK) -> float:
        """The same reads, ``chunk`` rows per fancy-index gather ``arr[ids]``: the floor
        for ``Bus.read_many`` (memory bandwidth, once pages are large)."""
        arr = self.arr
        assert arr is not None
        idx = np.asarray(ids, np.int64)
        t = time.perf_counter()
        for s in range(0, idx.size, chunk):
            arr[idx[s : s + chunk]]
        return time.perf_counter() - t

    def close(self) -> None:
        self.arr = None  # no view of the buffer may outlive it
        if self.shm is not None:
            try:
                self.shm.close()
            finally:
                self.shm.unlink()
                self.shm = None


class MMSBStore(Store):
    name = "MMSB"

    def __init__(self, batch: int) -> None:
        self.conditions = {
            "a": f"DeltaBatch.from_ranges + Bus.apply_batch per batch of {batch:,} (built "
            "inside the timing), 1 worker, log on, sync=normal: no fsync per commit, the "
            "log is fsynced by a background thread every 1 s and on close",
            "b": "Bus.write of one 64 B range delta per commit, sync=always (log fsynced "
            "before each commit returns)",
            "c": "Bus.read(page) per read: a copy of the page as a numpy array",
            "d": "clean close, then mmsb.open + Bus.read of one page (clean-shutdown "
            "fast path; median of 3)",
        }

    def setup(self, root: str, pages: int) -> None:
        with mmsb.open(None) as warm:  # compile the kernels outside the timings
            ids = warm.create_pages(2, PAGE)
            warm.apply_batch(mmsb.DeltaBatch.from_ranges(ids, [0, 64], np.ones((2, 64), "u1")))
            warm.read(int(ids[0]))
            warm.read_many(ids)
        self.path = os.path.join(root, "mmsb")
        self.bus = mmsb.open(self.path, sync="normal")
        self.ids = self.bus.create_pages(pages, PAGE)

    def apply(self, pids: I64, offs: I64, data: U8) -> float:
        bus, ids = self.bus, self.ids
        t = time.perf_counter()
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids[pids], offs, data))
        return time.perf_counter() - t

    def pages(self) -> Iterator[tuple[int, Any]]:
        for i, pid in enumerate(self.ids.tolist()):
            yield i, self.bus.read(pid)

    def page(self, i: int) -> Any:
        return self.bus.read(int(self.ids[i]))

    def read_loop(self, ids: list[int]) -> float:
        pids = self.ids[np.asarray(ids, np.int64)].tolist()
        read = self.bus.read
        t = time.perf_counter()
        for p in pids:
            read(p)
        return time.perf_counter() - t

    def read_many_loop(self, ids: list[int], chunk: int = READ_MANY_CHUNK) -> tuple[float, U8]:
        """The same reads as ``read_loop``, ``chunk`` ids per ``Bus.read_many`` call;
        returns the time and the rows, gathered again after the timing for the byte check
        (storing them inside it would time first-touch faults on a fresh output array)."""
        pids = self.ids[np.asarray(ids, np.int64)]
        read_many = self.bus.read_many
        t = time.perf_counter()
        for s in range(0, pids.size, chunk):
            read_many(pids[s : s + chunk])
        dt = time.perf_counter() - t
        out = np.empty((pids.size, PAGE), np.uint8)
        for s in range(0, pids.size, chunk):
            out[s : s + chunk] = read_many(pids[s : s + chunk])
        return dt, out

    def reopen(self) -> float:
        self.bus.close()
        first = int(self.ids[0])
        t = time.perf_counter()
        self.bus = mmsb.open(self.path, sync="normal")
        self.bus.read(first)
        dt = time.perf_counter() - t
        if self.bus.recovery.mode != "clean":  # the figure is stated as the fast path
            raise RuntimeError(f"MMSB reopened by {self.bus.recovery.mode}, not clean")
        return dt

    def durable(self, pids: I64, offs: I64, data: U8) -> float:
        self.bus.close()
        self.bus = bus = mmsb.open(self.path, sync="always")
        items = list(zip(self.ids[pids].tolist(), offs.tolist(), list(data), strict=True))
        t = time.perf_counter()
        for p, o, d in items:
            bus.write(p, d, offset=o)
        return time.perf_counter() - t

    def close(self) -> None:
        self.bus.close()


class LMDBStore(Store):
    name = "LMDB"

    def __init__(self, lmdb: Any, batch: int) -> None:
        self.lmdb = lmdb
        v = getattr(lmdb, "__version__", "?")
        self.conditions = {
            "a": f"py-lmdb {v}; one write txn per batch of {batch:,}; per update get the "
            "page, splice 64 B, put the whole 4 KiB page; sync=False (no fsync per "
            "commit: the OS writes back)",
            "b": "one write txn (get, splice, put) per commit; sync=True",
            "c": "txn.get per read inside one read txn (returns bytes)",
            "d": "clean close, then lmdb.open + txn.get of one page (median of 3)",
        }

    def _open(self, sync: bool) -> None:
        self.env = self.lmdb.open(self.path, map_size=self.map_size, sync=sync)

    def setup(self, root: str, pages: int) -> None:
        self.path = os.path.join(root, "lmdb")
        # a 4 KiB value takes two LMDB pages, and copy-on-write needs room for a batch more
        self.map_size = max(1 << 30, pages * PAGE * 8)
        self._open(False)
        self.keys = [i.to_bytes(8, "big") for i in range(pages)]
        zero = bytes(PAGE)
        with self.env.begin(write=True) as txn:
            for k in self.keys:
                txn.put(k, zero, append=True)

    def apply(self, pids: I64, offs: I64, data: U8) -> float:
        keys = self.keys
        items = list(zip([keys[i] for i in pids.tolist()], offs.tolist(), _rows(data),
                         strict=True))  # fmt: skip
        t = time.perf_counter()
        with self.env.begin(write=True) as txn:
            get, put = txn.get, txn.put
            for k, o, d in items:
                page = bytearray(get(k))
                page[o : o + PAYLOAD] = d
                put(k, page)
        return time.perf_counter() - t

    def pages(self) -> Iterator[tuple[int, Any]]:
        with self.env.begin() as txn:
            for k, v in txn.cursor():
                yield int.from_bytes(k, "big"), v

    def page(self, i: int) -> Any:
        with self.env.begin() as txn:
            return txn.get(self.keys[i])

    def read_loop(self, ids: list[int]) -> float:
        keys = [self.keys[i] for i in ids]
        t = time.perf_counter()
        with self.env.begin() as txn:
            get = txn.get
            for k in keys:
                get(k)
        return time.perf_counter() - t

    def reopen(self) -> float:
        self.env.close()
        t = time.perf_counter()
        self._open(False)
        with self.env.begin() as txn:
            txn.get(self.keys[0])
        return time.perf_counter() - t

    def durable(self, pids: I64, offs: I64, data: U8) -> float:
        self.env.close()
        self._open(True)
        items = list(zip([self.keys[i] for i in pids.tolist()], offs.tolist(), _rows(data),
                         strict=True))  # fmt: skip
        t = time.perf_counter()
        for k, o, d in items:
            with self.env.begin(write=True) as txn:
                page = bytearray(txn.get(k))
                page[o : o + PAYLOAD] = d
                txn.put(k, page)
        return time.perf_counter() - t

    def close(self) -> None:
        self.env.close()


class SQLiteStore(Store):
    name = "SQLite"

    def __init__(self, batch: int) -> None:
        v = sqlite3.sqlite_version
        self.conditions = {
            "a": f"SQLite {v}; table (id INTEGER PRIMARY KEY, page BLOB), WAL, "
            f"synchronous=NORMAL, default 4 KiB page and cache; one transaction per batch of "
            f"{batch:,} holding executemany of an UPDATE that splices the 64 B into the "
            "blob in SQL (CAST(substr || ? || substr AS BLOB))",
            "b": "the same UPDATE, one autocommit transaction per commit; WAL, "
            "synchronous=FULL (WAL fsynced at each commit)",
            "c": "SELECT page WHERE id = ? per read (returns bytes)",
            "d": "clean close, then sqlite3.connect + SELECT of one page (median of 3)",
        }

    def _connect(self) -> None:
        self.con = sqlite3.connect(self.path, isolation_level=None)

    def setup(self, root: str, pages: int) -> None:
        self.path = os.path.join(root, "sqlite.db")
        self._connect()
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("CREATE TABLE pages (id INTEGER PRIMARY KEY, page BLOB NOT NULL)")
        self.con.execute("BEGIN")
        self.con.executemany(
            f"INSERT INTO pages (id, page) VALUES (?, zeroblob({PAGE}))",
            ((i,) for i in range(pages)),
        )
        self.con.execute("COMMIT")

    def _params(self, pids: I64, offs: I64, data: U8) -> list[tuple[int, bytes, int, int]]:
        return list(zip(offs.tolist(), _rows(data), (offs + PAYLOAD + 1).tolist(),
                        pids.tolist(), strict=True))  # fmt: skip

    def apply(self, pids: I64, offs: I64, data: U8) -> float:
        rows = self._params(pids, offs, data)
        con = self.con
        t = time.perf_counter()
        con.execute("BEGIN")
        cur = con.executemany(SPLICE, rows)
        con.execute("COMMIT")
        dt = time.perf_counter() - t
        if cur.rowcount != len(rows):
            raise MismatchError(f"SQLite updated {cur.rowcount} rows of {len(rows)}")
        return dt

    def pages(self) -> Iterator[tuple[int, Any]]:
        yield from self.con.execute("SELECT id, page FROM pages ORDER BY id")

    def page(self, i: int) -> Any:
        return self.con.execute(SELECT, (i,)).fetchone()[0]

    def read_loop(self, ids: list[int]) -> float:
        ex = self.con.cursor().execute
        t = time.perf_counter()
        for i in ids:
            ex(SELECT, (i,)).fetchone()
        return time.perf_counter() - t

    def reopen(self) -> float:
        self.con.close()
        t = time.perf_counter()
        self._connect()
        self.con.execute(SELECT, (0,)).fetchone()
        return time.perf_counter() - t

    def durable(self, pids: I64, offs: I64, data: U8) -> float:
        self.con.execute("PRAGMA synchronous=FULL")
        rows = self._params(pids, offs, data)
        ex = self.con.execute
        t = time.perf_counter()
        for r in rows:
            ex(SPLICE, r)
        return time.perf_counter() - t

    def close(self) -> None:
        self.con.close()


# -- the run -------------------------------------------------------------------------------
