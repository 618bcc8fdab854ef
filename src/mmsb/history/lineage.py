"""Which pages fed a derived page at a given commit: the data parents, through the log.

A derived delta does not carry its parents: every tick would otherwise log the whole
parent list of every recomputed page (for thousands of derived pages, as many bytes of
text as of data). The parents are what the dependency graph said when the delta was
written, and the graph's history is in the log already: GRAPH frames add and remove
edges, DELETE frames drop the edges of the deleted pages. A derivation's registration
makes its child's data parents exactly its parents (one GRAPH frame), so the data parents
at a commit are the parents the derivation read.

:class:`Lineage` replays those frames forward from the start of the retained log, whose
graph is empty (a log that starts at LSN 1) or the edges of the checkpoint the log
resumes from, and keeps, per child, the LSNs at which its data parents changed. A query
is a binary search. Where compaction removed the log and no checkpoint at its start is
left, the parents before the first recorded change are unknown (``None``), never
guessed.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from mmsb.errors import CorruptCheckpointError
from mmsb.storage import layout
from mmsb.storage.checkpoint import Sections, list_checkpoints, read_header
from mmsb.storage.codec import EDGE_ADD
from mmsb.storage.edges import DATA, EdgeTable

I64 = npt.NDArray[np.int64]
Parents = tuple[int, ...]


class Lineage:
    """Data parents per child page over the LSNs of the retained log, each child's in the
    order their edges were added (a checkpoint's edges, the base of a compacted log, come
    in page-id order)."""

    def __init__(self, base: Iterable[tuple[int, int]] | None) -> None:
        """``base``: the (parent, child) data edges before the retained log's first frame,
        or None when they are unknown."""
        self.known = base is not None
        # child -> its data parents now, in the order their edges were added (a dict as an
        # ordered set: a derivation's parents keep the order it listed them in)
        self._parents: dict[int, dict[int, None]] = {}
        self._children: dict[int, set[int]] = {}  # parent -> children it feeds now
        self._lsns: dict[int, list[int]] = {}  # child -> LSNs where its parents changed
        self._sets: dict[int, list[Parents]] = {}  # ... and the parents from then on
        self.rows_done = 0  # index rows already replayed
        for p, c in base or ():
            self._link(p, c)
        for c in self._parents:
            self._record(0, c)

    def _link(self, p: int, c: int) -> None:
        self._parents.setdefault(c, {})[p] = None
        self._children.setdefault(p, set()).add(c)

    def _unlink(self, p: int, c: int) -> None:
        self._parents.get(c, {}).pop(p, None)
        self._children.get(p, set()).discard(c)

    def _record(self, lsn: int, child: int) -> None:
        lsns = self._lsns.setdefault(child, [])
        sets = self._sets.setdefault(child, [])
        now = tuple(self._parents.get(child, ()))
        if lsns and lsns[-1] == lsn:
            sets[-1] = now
        else:
            lsns.append(lsn)
            sets.append(now)

    def graph(self, lsn: int, ops: npt.NDArray[np.uint8], kinds: npt.NDArray[np.uint8],
              parents: I64, children: I64) -> None:  # fmt: skip
        """Replay one GRAPH frame."""
        touched: set[int] = set()
        for op, kind, p, c in zip(ops.tolist(), kinds.tolist(), parents.tolist(),
                                  children.tolist(), strict=True):  # fmt: skip
            if kind != DATA:
                continue
            if op == EDGE_ADD:
                self._link(p, c)
            else:
                self._unlink(p, c)
            touched.add(c)
        for c in touched:
            self._record(lsn, c)

    def delete(self, lsn: int, pages: I64) -> None:
        """Replay one DELETE frame: the deleted pages' edges go with them."""
        touched: set[int] = set()
        for d in pages.tolist():
            for c in self._children.pop(d, set()):
                self._parents.get(c, {}).pop(d, None)
                touched.add(c)
            for p in self._parents.pop(d, {}):
                self._children.get(p, set()).discard(d)
            if d in self._lsns:
                touched.add(d)
        for c in touched:
            self._record(lsn, c)

    def at(self, child: int, lsn: int) -> Parents | None:
        """``child``'s data parents after commit ``lsn`` (empty: none), or None when the
        log that would say is gone."""
        lsns = self._lsns.get(child)
        i = 0 if lsns is None else bisect.bisect_right(lsns, lsn)
        if i:
            assert lsns is not None
            return self._sets[child][i - 1]
        return () if self.known else None


def base_edges(path: str, first_lsn: int) -> list[tuple[int, int]] | None:
    """The data edges before a retained log that starts at ``first_lsn``: none for a log
    that starts at 1, else those of the checkpoint at ``first_lsn - 1`` (None when that
    checkpoint is gone or unreadable)."""
    if first_lsn <= 1:
        return []
    ckpt_dir = os.path.join(path, layout.CKPT_DIR)
    for lsn, name in list_checkpoints(ckpt_dir):
        if lsn != first_lsn - 1:
            continue
        file = os.path.join(ckpt_dir, name)
        try:
            with open(file, "rb") as f:
                header, base = read_header(f, file)
                if "edges" not in header.sections:
                    return []
                sections = Sections(f, header, base, os.fstat(f.fileno()).st_size, name)
                p, c, k = EdgeTable.decode(sections.read("edges"))
        except (OSError, ValueError, CorruptCheckpointError):
            return None
        data = k == DATA
        return list(zip(p[data].tolist(), c[data].tolist(), strict=True))
    return None
