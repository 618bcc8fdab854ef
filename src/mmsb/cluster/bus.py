"""``ClusterBus``: the sharded bus, driven from one process (the driver).

The driver is the only writer. It checks each commit against the global page table, has
the sequencer log it (the global LSN), then sends it to the shards that hold its pages and
waits for them: a call returns once the commit is in the global log (fsynced first under
``sync="always"``) and applied by every shard it touches. Calls that change or read
several shards hold one lock, so every shard has applied the same global commits when a
snapshot is pinned or a ``read_many`` gathers. When Ray loses an actor (its process or
node died), the call waits for Ray to restart it and tries again; every step is
idempotent (the sequencer returns a frame it already logged, a shard skips a commit it
already applied), so a retried commit is logged and applied exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.cluster import partition as part
from mmsb.cluster import runtime
from mmsb.cluster.sequencer import Sequencer
from mmsb.cluster.shard import Shard
from mmsb.cluster.snapshot import ClusterSnapshot
from mmsb.cluster.ticks import Derivations, make_derivation, propagate
from mmsb.errors import (
    BusClosedError,
    BusNotFoundError,
    ClusterError,
    ClusterUnavailableError,
    FormatVersionError,
    InvalidArgumentError,
)
from mmsb.graph.tick import TickReport
from mmsb.semiring import Semiring
from mmsb.storage import layout
from mmsb.types import Commit

MANIFEST = "CLUSTER.json"
FORMAT, VERSION = "mmsb-cluster", 1


class ClusterBus:
    """A bus whose pages are spread over ``shards`` Ray actors (see docs/cluster.md).
    Make one with :meth:`create` or :meth:`open`; use it as a context manager."""

    def __init__(self, path: str, manifest: dict[str, Any], address: str | None,
                 local_dir: str | None, object_store_memory: int) -> None:  # fmt: skip
        self.path = os.path.abspath(path)
        self.shards: int = int(manifest["shards"])
        self.sync: str = str(manifest["sync"])
        self._lock = threading.RLock()
        self._closed = False
        self._ray_tmp: str | None = None
        if address is None:
            self.address, self._ray_tmp = runtime.start_local(self.shards, object_store_memory)
        else:
            runtime.connect(address)
            self.address = address
        local = os.path.abspath(local_dir or os.path.join(self.path, "local"))
        shared = os.path.join(self.path, "checkpoints")
        try:
            seq_name = f"mmsb-sequencer-{uuid.uuid4().hex}"
            self._seq = runtime.make_actor(
                Sequencer, (os.path.join(self.path, "sequencer"), self.sync,
                            int(manifest["segment_size"]), float(manifest["sync_interval"])),
                resource=runtime.SEQUENCER_RESOURCE, spread=False, name=seq_name,
            )  # fmt: skip
            self._shards = [runtime.make_actor(Shard, (i, self.shards, local, shared, seq_name),
                                               resource=runtime.SHARD_RESOURCE, spread=True)
                            for i in range(self.shards)]  # fmt: skip
            state = runtime.retrying(lambda: runtime.get(self._seq.state.remote(),
                                                         timeout=runtime.RESTART_TIMEOUT),
                                     self._actors)  # fmt: skip
            self._table = part.PageTable(state["sizes"], state["dtypes"])
            self._lsn: int = int(state["lsn"])
            self._ts: int = int(state["timestamp"])
            # each shard applies its part of the whole global log before the first call
            done = runtime.retrying(lambda: runtime.get([s.catch_up.remote(None)
                                                         for s in self._shards],
                                                        timeout=runtime.RESTART_TIMEOUT),
                                    self._actors)  # fmt: skip
            self._sent: list[int] = [int(x) for x in done]
        except BaseException:
            self._shutdown()
            raise
        self._derivs = Derivations()
        self._unsure: tuple[int, list[int], Any] | None = None  # a commit that may be logged
        self._ticks = 0
        self.tick_budget_ms = 16.0

    # -- making and opening ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        shards: int = 3,
        address: str | None = None,
        *,
        sync: str = "normal",
        local_dir: str | os.PathLike[str] | None = None,
        segment_size: int = 64 << 20,
        sync_interval: float = 1.0,
        object_store_memory: int = 256 << 20,
    ) -> ClusterBus:
        """A new cluster in directory ``path`` with ``shards`` shards. ``address=None``
        starts a Ray instance on this machine (127.0.0.1 only), else joins the cluster
        at ``address`` (``"auto"``: the one this machine belongs to)."""
        p = os.fspath(path)
        if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= 4096:
            raise InvalidArgumentError(f"shards must be an integer in [1, 4096], got {shards!r}")
        if sync not in ("always", "normal", "off"):
            raise InvalidArgumentError(f"sync must be always, normal or off, got {sync!r}")
        if os.path.exists(os.path.join(p, MANIFEST)):
            raise ClusterError(f"{p} already holds a cluster: use ClusterBus.open")
        os.makedirs(p, mode=layout.DIR_MODE, exist_ok=True)
        manifest = {"format": FORMAT, "version": VERSION, "shards": shards, "sync": sync,
                    "segment_size": int(segment_size), "sync_interval": float(sync_interval),
                    "created_ns": time.time_ns()}  # fmt: skip
        _write_json(os.path.join(p, MANIFEST), manifest)
        ld = None if local_dir is None else os.fspath(local_dir)
        return cls(p, manifest, address, ld, object_store_memory)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        address: str | None = None,
        *,
        local_dir: str | os.PathLike[str] | None = None,
        object_store_memory: int = 256 << 20,
    ) -> ClusterBus:
        """Open the cluster in ``path``: the sequencer recovers the global log and every
        shard recovers its bus (or restores its last exported checkpoint) and applies the
        global commits after it. Raises :class:`BusNotFoundError` when ``path`` holds no
        cluster, :class:`FormatVersionError` for another format."""
        p = os.fspath(path)
        try:
            with open(os.path.join(p, MANIFEST), encoding="utf-8") as f:
                manifest = json.load(f)
        except FileNotFoundError:
            raise BusNotFoundError(f"{p} holds no cluster ({MANIFEST} is missing)") from None
        except ValueError as exc:
            raise FormatVersionError(f"{p}/{MANIFEST} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise FormatVersionError(f"{p} does not hold an MMSB cluster")
        if manifest.get("version") != VERSION:
            raise FormatVersionError(f"cluster format version {manifest.get('version')} in "
                                     f"{p}; this build reads {VERSION}")  # fmt: skip
        ld = None if local_dir is None else os.fspath(local_dir)
        return cls(p, manifest, address, ld, object_store_memory)

    # -- state ----------------------------------------------------------------------------

    @property
    def lsn(self) -> int:
        """The global LSN of the last acknowledged commit (0: none)."""
        return self._lsn

    @property
    def closed(self) -> bool:
        return self._closed

    def shard_of(self, page_id: int) -> int:
        """The shard holding ``page_id``: ``(page_id - 1) % shards`` (fixed at creation)."""
        return int(part.shard_of(int(self._table.require([page_id])[0]), self.shards))

    def __len__(self) -> int:
        return self._table.next_page_id - 1

    def _check_open(self) -> None:
        if self._closed:
            raise BusClosedError("ClusterBus is closed")

    def _actors(self) -> list[tuple[Any, str]]:
        return [(self._seq, "the sequencer"),
                *((s, f"shard {i}") for i, s in enumerate(self._shards))]  # fmt: skip

    # -- writing --------------------------------------------------------------------------

    def create_pages(self, n: int, size: int, dtype: Any = "uint8") -> npt.NDArray[np.int64]:
        """Create ``n`` zero-filled pages of one size and dtype in one global commit,
        spread over the shards; return their global ids."""
        self._check_open()
        n, size, code = self._table.check_shape(n, size, dtype)
        with self._lock:
            expect, first = self._lsn + 1, self._table.next_page_id
            ids = np.arange(first, first + n, dtype=np.int64)
            touched = part.shards_touched(ids, self.shards)

            def run() -> Any:
                info = runtime.get(self._seq.append_create.remote(expect, n, size, code))
                sent = self._sent
                calls = [self._shards[s].create.remote(info.lsn, first, n, size, code, sent[s])
                         for s in touched]  # fmt: skip
                runtime.get(calls)
                return info

            info = self._logged(expect, run, touched, lambda: self._table.add(n, size, code))
            self._published(info.lsn, info.timestamp, touched)
            self._table.add(n, size, code)
            self._derivs.note_written(np.zeros(0, np.int64), info.lsn, self._table.next_page_id)
            return ids

    def apply_batch(self, batch: DeltaBatch) -> Commit:
        """Commit ``batch`` (global page ids) atomically as one global commit: logged, then
        applied by every shard it touches, before this returns. An empty batch commits
        nothing. Raises as a bus's ``apply_batch`` for a bad batch (nothing logged)."""
        self._check_open()
        self._table.check(batch)
        with self._lock:
            if len(batch) == 0:
                return Commit(self._lsn, 0, -1, 0, self._ts)
            commit = self._commit(batch)
            self._derivs.note_written(batch.page_ids, commit.lsn, self._table.next_page_id)
            return commit

    def _commit(self, batch: DeltaBatch, ref: Any = None) -> Commit:
        ref = runtime.ray_module().put(batch) if ref is None else ref
        expect = self._lsn + 1
        touched = part.shards_touched(batch.page_ids, self.shards)

        def run() -> Any:
            info = runtime.get(self._seq.append_batch.remote(expect, ref))
            runtime.get([self._shards[s].apply.remote(info.lsn, ref, self._sent[s])
                         for s in touched])  # fmt: skip
            return info

        info = self._logged(expect, run, touched)
        self._published(info.lsn, info.timestamp, touched)
        last = info.first_delta_id + info.count - 1
        return Commit(info.lsn, info.first_delta_id, last, info.count, info.timestamp)

    def _logged(self, expect: int, run: Any, touched: list[int], on_logged: Any = None) -> Any:
        """Run a commit's steps (:func:`runtime.retrying`). When the cluster stays
        unavailable, find out whether the commit reached the global log: if it did, it
        counts as committed (a shard that missed it applies it from the log when it answers
        again) and the error's ``lsn`` names it; if that cannot be known now, the next
        change asks first, so a later commit is never mistaken for this one."""
        self._resync()
        try:
            return runtime.retrying(run, self._actors)
        except ClusterUnavailableError as exc:
            self._unsure = (expect, touched, on_logged)
            with contextlib.suppress(Exception):
                self._resync()
            exc.lsn = expect if self._unsure is None and self._lsn == expect else None
            raise

    def _resync(self) -> None:
        if self._unsure is None:
            return
        expect, touched, on_logged = self._unsure
        end = runtime.retrying(lambda: runtime.get(self._seq.end.remote(), timeout=10),
                               [(self._seq, "the sequencer")].copy)  # fmt: skip
        if end >= expect:
            self._published(expect, self._ts, touched)
            if on_logged is not None:
                on_logged()
        self._unsure = None

    def _published(self, lsn: int, ts: int, touched: list[int]) -> None:
        self._lsn, self._ts = lsn, ts
        for s in touched:
            self._sent[s] = lsn

    # -- reading --------------------------------------------------------------------------

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """A copy of the page's contents as a 1-D array of its dtype."""
        self._check_open()
        g = int(self._table.require([page_id])[0])
        shard = self._shards[part.shard_of(g, self.shards)]
        local = int(part.to_local(g, self.shards))
        got: npt.NDArray[Any] = runtime.retrying(
            lambda: runtime.get(shard.read.remote(local)), self._actors
        )
        return got

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Copies of several pages of one size and dtype as a 2-D array, a row per id in
        the order given, all from the same global commit."""
        self._check_open()
        ids = self._table.require(page_ids)
        with self._lock:
            return gather(ids, self.shards, self._table,
                          lambda s, loc: self._shards[s].read_many.remote(loc),
                          self._actors)  # fmt: skip

    def snapshot(self) -> ClusterSnapshot:
        """Pin the current global commit on every shard: every read through the snapshot
        sees global LSN ``snapshot.lsn``, whatever is committed meanwhile. Close it soon
        (each shard keeps old page images for it)."""
        self._check_open()
        with self._lock:
            pins = runtime.retrying(
                lambda: runtime.get([s.pin.remote() for s in self._shards]), self._actors
            )
            handles = [int(h) for h, _ in pins]
            behind = [i for i, (_, a) in enumerate(pins) if int(a) != self._sent[i]]
            snap = ClusterSnapshot(self._lsn, self._shards, handles, self._table)
            if behind:
                snap.close()
                raise ClusterError(f"shards {behind} have not applied every acknowledged commit")
            return snap

    # -- derived pages and ticks ----------------------------------------------------------

    def derive(self, child: int, fn: Any, parents: list[int], name: str | None = None) -> None:
        """Compute ``child`` from ``parents`` (on any shards) with ``fn`` at each tick where
        a parent changed, as ``Bus.derive`` does. Not persisted: register again after
        reopening."""
        self._check_open()
        with self._lock:
            self._derivs.register(make_derivation(child, parents, self._table, fn=fn,
                                                  name=name), self._table)  # fmt: skip

    def derive_semiring(self, child: int, parents: list[int], semiring: Semiring,
                        weights: Any = None, name: str | None = None) -> None:  # fmt: skip
        """``child = ⊕_p (weights[p] ⊗ parents[p])`` element-wise, as ``Bus.derive_semiring``."""
        self._check_open()
        with self._lock:
            d = make_derivation(child, parents, self._table, semiring=semiring,
                                weights=weights, name=name)  # fmt: skip
            self._derivs.register(d, self._table)

    def derivations(self) -> dict[int, str]:
        return {c: d.name for c, d in sorted(self._derivs.by_child.items())}

    def tick(self, batch: DeltaBatch | None = None) -> TickReport:
        """Commit ``batch`` (if any) together with every derived page it and the commits
        since the last tick change, as one global commit, glitch-free, with the results a
        single bus gives. A failing derivation raises :class:`PropagationError` and
        nothing of the tick is committed."""
        self._check_open()
        t0 = time.perf_counter_ns()
        if batch is not None:
            self._table.check(batch)
        n_in = 0 if batch is None else len(batch)
        with self._lock:
            ref = runtime.ray_module().put(batch) if n_in else None
            cause = self._lsn + 1 if n_in else (self._derivs.pending_lsn or self._lsn)
            inputs = batch if n_in else None
            res = runtime.retrying(lambda: propagate(self._derivs, self._shards, self._table,
                                                     inputs, ref, cause), self._actors)  # fmt: skip
            t1 = time.perf_counter_ns()
            parts = [b for b in (inputs, res.batch) if b is not None]
            lsn = self._lsn
            if parts:
                whole = DeltaBatch.concat(parts)
                lsn = self._commit(whole, ref if res.batch is None else None).lsn
            self._derivs.clear_pending()
            self._ticks += 1
        t2 = time.perf_counter_ns()
        budget = int(self.tick_budget_ms * 1e6)
        return TickReport(
            tick=self._ticks, lsn=lsn, input_deltas=n_in,
            derived_deltas=0 if res.batch is None else len(res.batch),
            pages_recomputed=res.recomputed, pages_changed=res.changed, flagged=0,
            phases_ns={"propagate": t1 - t0, "commit": t2 - t1}, total_ns=t2 - t0,
            budget_ns=budget, overrun=t2 - t0 > budget,
        )  # fmt: skip

    # -- durability and shutdown ------------------------------------------------------------

    def checkpoint(self) -> int:
        """Sync the global log, checkpoint every shard and export each checkpoint to the
        shared checkpoint directory; return the global LSN they hold."""
        self._check_open()
        with self._lock:
            runtime.retrying(lambda: runtime.get(self._seq.sync.remote()), self._actors)
            runtime.retrying(lambda: runtime.get([s.checkpoint.remote() for s in self._shards],
                                                 timeout=300), self._actors)  # fmt: skip
            return self._lsn

    def status(self) -> list[dict[str, Any]]:
        """Each shard's applied global LSN, local LSN, page count, process and what it
        started from (``local``, ``checkpoint`` or ``empty``)."""
        self._check_open()
        return list(
            runtime.retrying(
                lambda: runtime.get([s.status.remote() for s in self._shards]), self._actors
            )
        )

    def placement(self) -> list[str]:
        """The Ray node id each shard runs on now."""
        self._check_open()
        return list(
            runtime.retrying(
                lambda: runtime.get([s.node.remote() for s in self._shards]), self._actors
            )
        )

    def actors(self) -> tuple[Any, list[Any]]:
        """The sequencer's and the shards' actor handles (for operations and tests)."""
        return self._seq, list(self._shards)

    def close(self) -> None:
        """Close every shard's bus and the global log, end the actors and, when this bus
        started Ray itself, stop it. Idempotent."""
        if self._closed:
            return
        with self._lock:
            self._closed = True
            try:
                runtime.get([s.close.remote() for s in self._shards])
                runtime.get(self._seq.close.remote())
            except Exception as exc:
                if not runtime.lost(exc):
                    raise  # a lost actor closes as after a crash: the next open recovers
            finally:
                self._shutdown()

    def _shutdown(self) -> None:
        for actor in [*getattr(self, "_shards", []), getattr(self, "_seq", None)]:
            if actor is not None:
                runtime.kill(actor)
        if self._ray_tmp is not None:
            runtime.shutdown()
            import shutil

            shutil.rmtree(self._ray_tmp, ignore_errors=True)
            self._ray_tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"lsn={self._lsn}, pages={len(self)}"
        return f"ClusterBus({self.path!r}, shards={self.shards}, {state})"


def gather(ids: npt.NDArray[np.int64], shards: int, table: part.PageTable, call: Any,
           actors: Any) -> npt.NDArray[Any]:  # fmt: skip
    """Rows of pages ``ids`` (one size and dtype) from their shards, in the order given."""
    if ids.size == 0:
        raise InvalidArgumentError("read_many needs at least one page id")
    sizes, codes = table.size[ids], table.dtype[ids]
    if (sizes != sizes[0]).any() or (codes != codes[0]).any():
        raise InvalidArgumentError("read_many needs pages of one size and dtype")
    owner = part.shard_of(ids, shards)
    groups = [(int(s), np.flatnonzero(owner == s)) for s in np.unique(owner)]

    def run() -> list[Any]:
        return list(runtime.get([call(s, part.to_local(ids[rows], shards))
                                 for s, rows in groups]))  # fmt: skip

    parts = runtime.retrying(run, actors)
    out = np.empty((ids.size, parts[0].shape[1]), parts[0].dtype)
    for (_, rows), got in zip(groups, parts, strict=True):
        out[rows] = got
    return out


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = path + layout.TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, layout.FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
