"""A shard: one ordinary on-disk bus (``mmsb.open``) holding a partition of the pages, run
as a Ray actor. The class itself knows nothing of Ray but the sequencer handle it is given
(``fetch``: how to read global frames).

The shard's bus lives on the node's local disk (``<local_root>/shard-<i>``); its
checkpoints are exported to shared storage (``<shared_root>/shard-<i>``) by
:meth:`Shard.checkpoint`. When the shard starts (first start, a restart after its process
died, or on another node after its node was lost) it opens the local bus if it is there and
sound, else copies the exported checkpoint back, else starts empty; then
:meth:`Shard.catch_up` applies its part of every global commit after the one its control
page records. Applying is deterministic, so the result is the bytes it had.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.cluster import partition as part
from mmsb.errors import (
    BusLockedError,
    ClusterError,
    InvalidDeltaError,
    MMSBError,
    PropagationError,
    SnapshotTooOldError,
)
from mmsb.snapshot import LiveSnapshot
from mmsb.storage import codec
from mmsb.types import DTYPE_NAMES

Frames = list[tuple[Any, ...]]
# shard buses: the global log is what makes a commit durable; the local bus only has to
# recover quickly after a process crash, and a compact export for restores
BUS_OPTIONS: dict[str, Any] = {"sync": "normal", "keep_checkpoints": 1}


class Shard:
    """Shard ``index`` of ``shards``; ``sequencer`` is the name of the sequencer actor.
    ``fetch(after, upto)``, if given instead (tests), returns the global frames with
    ``after < lsn <= upto`` (``upto=None``: to the end) as (lsn, type, flags, payload)."""

    def __init__(
        self,
        index: int,
        shards: int,
        local_root: str,
        shared_root: str,
        sequencer: str | None = None,
        fetch: Callable[[int, int | None], Frames] | None = None,
    ) -> None:
        self.index, self.shards = index, shards
        self.local = os.path.join(local_root, f"shard-{index}")
        self.shared = os.path.join(shared_root, f"shard-{index}")
        self._sequencer = sequencer
        self._fetch = fetch
        self._snaps: dict[int, LiveSnapshot] = {}
        self._next_snap = 1
        self.started_from = "local"
        self.bus = self._open()
        self.applied = self._control()

    # -- opening and restoring ----------------------------------------------------------

    def _open(self) -> mmsb.Bus:
        if os.path.isdir(self.local) and os.listdir(self.local):
            try:
                return _open_bus(self.local)
            except BusLockedError:
                raise
            except MMSBError:  # damaged beyond what recovery repairs: keep it aside
                os.replace(self.local, f"{self.local}.damaged-{time.time_ns()}")
        if os.path.isdir(self.shared):
            tmp = f"{self.local}.restoring"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(os.path.dirname(self.local), mode=0o700, exist_ok=True)
            shutil.copytree(self.shared, tmp)
            shutil.rmtree(self.local, ignore_errors=True)
            os.replace(tmp, self.local)
            self.started_from = "checkpoint"
        else:
            self.started_from = "empty"
        return _open_bus(self.local)

    def _control(self) -> int:
        """Create or check the control page; return the global LSN it records."""
        bus = self.bus
        head = part.control_header(self.index, self.shards)
        if len(bus) == 0:
            bus.create_page(part.CONTROL_SIZE)
            bus.write(part.CONTROL_PAGE, head, offset=8, source=part.CONTROL_SOURCE)
        page = bus.read(part.CONTROL_PAGE)
        if not np.array_equal(page[8:32], head):
            raise ClusterError(f"{self.local} is not shard {self.index} of {self.shards}")
        return int(page[:8].view("<u8")[0])

    # -- applying global commits --------------------------------------------------------

    def ping(self) -> int:
        return os.getpid()

    def node(self) -> str:
        import ray  # only ever called inside a Ray worker

        return str(ray.get_runtime_context().get_node_id())

    def status(self) -> dict[str, Any]:
        return {"applied": self.applied, "lsn": self.bus.lsn, "pages": len(self.bus) - 1,
                "started_from": self.started_from, "pid": os.getpid()}  # fmt: skip

    def apply(self, lsn: int, batch: DeltaBatch, prev: int) -> int:
        """Apply this shard's rows of global commit ``lsn``. ``prev`` is the last global
        commit the caller sent here: if this shard has not applied it (it was restored from
        an older checkpoint), it first catches up from the global log. Idempotent."""
        if self.applied >= lsn:
            return self.applied
        if self.applied < prev:
            self.catch_up(lsn - 1)
        self._apply_rows(lsn, batch)
        return self.applied

    def create(self, lsn: int, first: int, n: int, size: int, dtype: int, prev: int) -> int:
        """Create this shard's part of the pages that global commit ``lsn`` creates."""
        if self.applied >= lsn:
            return self.applied
        if self.applied < prev:
            self.catch_up(lsn - 1)
        self._create(lsn, first, n, size, dtype)
        return self.applied

    def _apply_rows(self, lsn: int, batch: DeltaBatch) -> None:
        rows = part.rows_of(batch, self.index, self.shards)
        if rows is None:
            return
        self.bus.apply_batch(DeltaBatch.concat([rows, part.control_row(lsn)]))
        self.applied = lsn

    def _create(self, lsn: int, first: int, n: int, size: int, dtype: int) -> None:
        ids = np.arange(first, first + n, dtype=np.int64)
        mine = ids[part.shard_of(ids, self.shards) == self.index]
        if mine.size == 0:
            return
        want = int(part.to_local(mine[0], self.shards))
        have = len(self.bus) + 1  # the next local id: pages are never deleted
        if want == have:
            got = self.bus.create_pages(int(mine.size), size, dtype=DTYPE_NAMES[dtype])
            if int(got[0]) != want:
                raise ClusterError(f"shard {self.index} created page {got[0]}, not {want}")
        elif want + mine.size != have:  # == : made before a crash, the control row was not
            raise ClusterError(f"shard {self.index} has {have - 1} pages; global commit "
                               f"{lsn} creates local page {want}")  # fmt: skip
        self.bus.apply_batch(part.control_row(lsn))
        self.applied = lsn

    def catch_up(self, upto: int | None = None) -> int:
        """Apply this shard's part of every global commit after the last it applied, up to
        ``upto`` (None: the end of the global log); return the last applied LSN."""
        pos = self.applied
        while upto is None or pos < upto:
            frames = self._frames(pos, upto)
            if not frames:
                break
            for lsn, ftype, _flags, payload in frames:
                rec = codec.decode(ftype, memoryview(payload))
                if isinstance(rec, codec.DecodedBatch):
                    self._apply_rows(lsn, rec.batch)
                elif isinstance(rec, codec.CreateRecord):
                    self._create(lsn, rec.first, rec.n, rec.size, rec.dtype)
                pos = lsn
        return self.applied

    def _frames(self, after: int, upto: int | None) -> Frames:
        if self._fetch is not None:
            return self._fetch(after, upto)
        import ray  # inside a Ray worker: ask the sequencer actor, found by its name

        assert self._sequencer is not None, "a shard needs the sequencer's name or fetch"
        seq = ray.get_actor(self._sequencer)
        return list(ray.get(seq.frames.remote(after, upto), timeout=120))

    # -- reading --------------------------------------------------------------------------

    def read(self, local: int) -> npt.NDArray[Any]:
        return self.bus.read(local)

    def read_many(self, locals_: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
        return self.bus.read_many(locals_)

    def read_pages(self, locals_: Sequence[int]) -> list[npt.NDArray[np.uint8]]:
        """The pages' bytes, one array each (pages may differ in size)."""
        return [self.bus.read(int(p)).view(np.uint8) for p in locals_]

    def preview(self, batch: DeltaBatch, locals_: Sequence[int]) -> list[npt.NDArray[np.uint8]]:
        """The bytes the pages would have after this shard's rows of ``batch``, not
        committed (a tick's inputs, read by its derivations before the commit)."""
        pages = {int(p): self.bus.read(int(p)).view(np.uint8).copy() for p in locals_}
        rows = part.rows_of(batch, self.index, self.shards)
        if rows is not None:
            part.preview(pages, rows)
        return [pages[int(p)] for p in locals_]

    # -- snapshots --------------------------------------------------------------------------

    def pin(self) -> tuple[int, int]:
        """Open a snapshot of the bus now; return its handle and the global LSN it shows."""
        h = self._next_snap
        self._next_snap += 1
        self._snaps[h] = self.bus.snapshot()
        return h, self.applied

    def _snap(self, h: int) -> LiveSnapshot:
        snap = self._snaps.get(h)
        if snap is None:
            raise SnapshotTooOldError(f"shard {self.index} restarted since the snapshot "
                                      "was taken; take a new one")  # fmt: skip
        return snap

    def snap_read(self, h: int, local: int) -> npt.NDArray[Any]:
        return self._snap(h).read(local)

    def snap_read_many(self, h: int, locals_: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
        return self._snap(h).read_many(locals_)

    def unpin(self, h: int) -> None:
        snap = self._snaps.pop(h, None)
        if snap is not None:
            snap.close()

    # -- ticks ------------------------------------------------------------------------------

    def compute(self, nodes: list[dict[str, Any]], *lists: Any) -> list[Any]:
        """Recompute derived pages of this shard (one topological level of a tick). Each
        node names its parents as ``("local", id)`` (this bus) or ``("arg", k, i)`` (item
        ``i`` of ``lists[k]``: a page read or recomputed on another shard, passed through
        the object store). Returns, per node, None when its bytes did not change, else
        ``(lo, hi, new bytes)`` with the changed range rounded out to whole elements."""
        try:
            return [self._compute(node, lists) for node in nodes]
        except (PropagationError, InvalidDeltaError) as exc:  # raised again by the caller
            page = getattr(exc, "page", None)
            return [("error", type(exc).__name__, str(exc), page, getattr(exc, "function", ""))]

    def _compute(self, node: dict[str, Any], lists: Sequence[Any]) -> Any:
        inputs = []
        for src, dt in zip(node["parents"], node["pdtypes"], strict=True):
            view = _value(self.bus, src, lists).copy().view(dt)
            view.flags.writeable = False
            inputs.append(view)
        new = _run(node, inputs)
        diff = np.flatnonzero(new != _value(self.bus, node["current"], lists))
        if diff.size == 0:
            return None
        item = np.dtype(node["dtype"]).itemsize
        lo = int(diff[0]) // item * item
        hi = -(-(int(diff[-1]) + 1) // item) * item
        return (lo, hi, new)

    # -- durability -------------------------------------------------------------------------

    def checkpoint(self) -> int:
        """Checkpoint the bus and export it to shared storage (replacing the last export);
        return the global LSN the export holds."""
        bus = self.bus
        bus.checkpoint()
        bus.compact()
        tmp = f"{self.shared}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(self.shared), mode=0o700, exist_ok=True)
        bus.export(tmp)
        old = f"{self.shared}.old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.isdir(self.shared):
            os.replace(self.shared, old)
        os.replace(tmp, self.shared)
        shutil.rmtree(old, ignore_errors=True)
        return self.applied

    def close(self) -> None:
        for h in list(self._snaps):
            self.unpin(h)
        self.bus.close()


def _open_bus(path: str, wait: float = 15.0) -> mmsb.Bus:
    """Open the shard's bus; a lock still held by this shard's previous process (on its way
    out) is waited for."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return mmsb.open(path, **BUS_OPTIONS)
        except BusLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _value(bus: mmsb.Bus, src: tuple[Any, ...], lists: Sequence[Any]) -> npt.NDArray[np.uint8]:
    if src[0] == "local":
        return bus.read(int(src[1])).view(np.uint8)
    item = lists[src[1]][src[2]]
    return np.asarray(item[2] if isinstance(item, tuple) else item, np.uint8)


def _run(node: dict[str, Any], inputs: list[npt.NDArray[Any]]) -> npt.NDArray[np.uint8]:
    """One derivation, as a single bus computes it (``graph/propagate.py``)."""
    name, page, dtype = node["name"], node["page"], np.dtype(node["dtype"])
    try:
        if node["semiring"] is not None:
            out: Any = node["semiring"].fold(inputs, node["weights"], dtype=dtype)
        else:
            out = node["fn"](*inputs)
            if any(v.flags.writeable for v in inputs):
                raise ValueError("it made a read-only input writable")
    except Exception as exc:
        raise PropagationError(
            f"derivation {name!r} of page {page} raised {type(exc).__name__}: {exc}", page, name
        ) from exc
    if isinstance(out, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(out, np.uint8)
    elif isinstance(out, np.ndarray) and out.dtype == dtype:
        raw = np.ascontiguousarray(out).reshape(-1).view(np.uint8)
    else:
        got = out.dtype if isinstance(out, np.ndarray) else type(out).__name__
        raise InvalidDeltaError(f"derivation {name!r} returned {got} for page {page} of "
                                f"dtype {dtype}")  # fmt: skip
    if raw.size != node["size"]:
        raise InvalidDeltaError(f"derivation {name!r} returned {raw.size} bytes for page "
                                f"{page} of {node['size']} bytes")  # fmt: skip
    return raw
