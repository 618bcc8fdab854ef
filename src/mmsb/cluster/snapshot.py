"""A snapshot of a sharded bus: one pinned local snapshot per shard, all taken while every
shard had applied exactly the same global commits, so every read sees one global LSN."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import numpy.typing as npt

from mmsb.cluster import partition as part
from mmsb.cluster import runtime
from mmsb.errors import BusClosedError, InvalidArgumentError, SnapshotTooOldError


class ClusterSnapshot:
    """Reads at global LSN :attr:`lsn`. A shard that restarted since the snapshot was taken
    has lost its pin: reading from it raises :class:`SnapshotTooOldError`."""

    def __init__(self, lsn: int, shards: list[Any], handles: list[int],
                 table: part.PageTable) -> None:  # fmt: skip
        self.lsn = lsn
        self._shards = shards
        self._handles = handles
        self._table = table
        self._next = table.next_page_id  # pages created later are not in the snapshot
        self.closed = False

    def _ids(self, page_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        if self.closed:
            raise BusClosedError("the snapshot is closed")
        ids = self._table.require(page_ids)
        if (ids >= self._next).any():
            raise InvalidArgumentError(f"pages created after LSN {self.lsn} are not in the "
                                       "snapshot")  # fmt: skip
        return ids

    def _get(self, refs: Any) -> Any:
        try:
            return runtime.get(refs)
        except Exception as exc:
            if runtime.lost(exc):
                raise SnapshotTooOldError(
                    "a shard was lost while the snapshot was open; take a new one"
                ) from exc
            raise

    def read(self, page_id: int) -> npt.NDArray[Any]:
        """The page as it was at :attr:`lsn`."""
        g = int(self._ids([page_id])[0])
        s = int(part.shard_of(g, len(self._shards)))
        local = int(part.to_local(g, len(self._shards)))
        return self._get(self._shards[s].snap_read.remote(self._handles[s], local))  # type: ignore[no-any-return]

    def read_many(self, page_ids: npt.ArrayLike) -> npt.NDArray[Any]:
        """Several pages of one size and dtype as they were at :attr:`lsn`, a row each."""
        ids = self._ids(page_ids)
        n = len(self._shards)
        if ids.size == 0:
            raise InvalidArgumentError("read_many needs at least one page id")
        sizes, codes = self._table.size[ids], self._table.dtype[ids]
        if (sizes != sizes[0]).any() or (codes != codes[0]).any():
            raise InvalidArgumentError("read_many needs pages of one size and dtype")
        owner = part.shard_of(ids, n)
        groups = [(int(s), np.flatnonzero(owner == s)) for s in np.unique(owner)]
        refs = [self._shards[s].snap_read_many.remote(self._handles[s],
                                                      part.to_local(ids[rows], n))
                for s, rows in groups]  # fmt: skip
        got = self._get(refs)
        out = np.empty((ids.size, got[0].shape[1]), got[0].dtype)
        for (_, rows), arr in zip(groups, got, strict=True):
            out[rows] = arr
        return out

    def close(self) -> None:
        """Release the pins (best effort: a lost shard has no pin left). Idempotent."""
        if self.closed:
            return
        self.closed = True
        refs = [s.unpin.remote(h) for s, h in zip(self._shards, self._handles, strict=True)]
        try:
            runtime.get(refs, timeout=30)
        except Exception as exc:
            if not runtime.lost(exc):
                raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClusterSnapshot(lsn={self.lsn}{', closed' if self.closed else ''})"
