"""Provenance: which delta wrote a value, and for derived pages, what fed it.

Resolution uses the history index (page -> delta ids, delta id -> frame), never a log scan:
each step is a binary search plus one decoded frame (decoded frames are cached). For a
derived page, the parents are its data parents at the delta's commit
(:mod:`mmsb.history.lineage`; deltas of older logs name them in their metadata); each
parent's step is the last delta
that wrote that parent *before* the derived delta (by delta id), which is exactly the value
the derivation read, whether the parent was an input committed earlier or a derived page
recomputed earlier in the same propagation commit.

Results are cached per (page, byte, depth) and dropped when the page is written again;
older steps never change, because history is immutable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmsb.delta import DENSE, SPARSE
from mmsb.errors import InvalidArgumentError, PageNotFoundError
from mmsb.storage.log import list_segments
from mmsb.storage.state import State
from mmsb.types import DeltaRecord


@dataclass(frozen=True)
class ProvenanceStep:
    """One page (or byte) and the delta that last wrote it, with the steps that fed it.

    ``record`` is None when no write was found: the page (or byte) was never written since
    creation (it holds the zeros it was created with) when ``history_from`` is 1; when
    compaction dropped the log before LSN ``history_from`` > 1, only the retained part was
    searched and an older write cannot be ruled out. ``truncated`` is set when the depth
    limit cut the recursion here.
    """

    page_id: int
    byte: int | None
    record: DeltaRecord | None
    parents: tuple[ProvenanceStep, ...] = ()
    truncated: bool = False
    history_from: int = 1

    @property
    def derived(self) -> bool:
        return self.record is not None and self.record.source == "propagation"


@dataclass(frozen=True)
class Provenance:
    """The explanation of a page's value (``root``) as of commit ``lsn``."""

    root: ProvenanceStep
    lsn: int
    depth: int  # the deepest level reached (0: only the root)
    steps: int
    lookup_ns: int = 0
    cached: bool = field(default=False, compare=False)

    @property
    def record(self) -> DeltaRecord | None:
        return self.root.record

    def explain(self) -> str:
        """A readable, indented account of the chain."""
        lines: list[str] = []

        def walk(step: ProvenanceStep, level: int) -> None:
            pad = "  " * level
            where = f"page {step.page_id}" + (f" byte {step.byte}" if step.byte is not None else "")
            r = step.record
            if r is None and step.history_from > 1:
                lines.append(
                    f"{pad}{where}: not written since LSN {step.history_from} (the log "
                    "before it was compacted away)"
                )
            elif r is None:
                lines.append(f"{pad}{where}: never written (zero-filled at creation)")
            else:
                meta = r.metadata or {}
                how = f"derived by {meta.get('derive', '?')}" if step.derived else r.source
                lines.append(
                    f"{pad}{where}: delta {r.delta_id} at LSN {r.lsn}, epoch {r.epoch}, "
                    f"time {r.timestamp}, {how}, bytes [{r.offset}, {r.offset + r.length})"
                )
                if r.metadata and not step.derived:
                    lines.append(f"{pad}  metadata: {r.metadata}")
            if step.truncated:
                lines.append(f"{pad}  ... (depth limit reached)")
            for p in step.parents:
                walk(p, level + 1)

        walk(self.root, 0)
        lines.insert(0, f"provenance as of LSN {self.lsn} ({self.steps} steps, depth {self.depth})")
        return "\n".join(lines)


def _covers(dec: Any, row: int, byte: int) -> bool:
    b = dec.batch
    off = int(b.offsets[row])
    if not off <= byte < off + int(b.lengths[row]):
        return False
    kind = int(b.kinds[row])
    if kind in (DENSE, SPARSE):
        m = int(b.mstarts[row])
        return bool(b.mask[m + byte - off])
    return True


class ProvenanceIndex:
    """Resolves provenance through the bus's history index, with a per-page cache."""

    def __init__(self, log_dir: str, index_of: Callable[[], Any]) -> None:
        self.log_dir = log_dir
        self._index_of = index_of
        # page -> (byte, depth) -> answer; an answer stays true until the page is written
        # again (older steps never change), so it is keyed without the LSN
        self._cache: dict[int, dict[tuple[int | None, int], Provenance]] = {}

    def invalidate(self, pages: Any) -> None:
        if not self._cache:
            return
        for p in np.unique(np.asarray(pages)).tolist():
            self._cache.pop(p, None)

    def resolve(
        self, state: State, page_id: int, byte: int | None, depth: int, lsn: int,
        upto_did: int | None = None, cache: bool = True,
    ) -> Provenance:  # fmt: skip
        import time

        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 0:
            raise InvalidArgumentError(f"depth must be a non-negative integer, got {depth!r}")
        pid = state.require(page_id)
        size = int(state.size[pid])
        if byte is not None:
            if isinstance(byte, bool) or not isinstance(byte, (int, np.integer)):
                raise InvalidArgumentError(f"byte must be an integer, got {byte!r}")
            if not 0 <= byte < size:
                raise InvalidArgumentError(f"byte {byte} is outside page {pid} ({size} bytes)")
            byte = int(byte)
        key = (byte, int(depth))
        if cache:
            hit = self._cache.get(pid, {}).get(key)
            if hit is not None:
                return Provenance(hit.root, lsn, hit.depth, hit.steps, 0, cached=True)
        t0 = time.perf_counter_ns()
        index = self._index_of()
        bound = index.next_delta_id if upto_did is None else upto_did + 1
        counter = [0, 0]
        root = self._step(index, pid, byte, bound, int(depth), 0, counter)
        out = Provenance(root, lsn, counter[1], counter[0], time.perf_counter_ns() - t0)
        if cache:
            self._cache.setdefault(pid, {})[key] = out
        return out

    def _step(
        self, index: Any, page: int, byte: int | None, bound: int, depth: int, level: int,
        counter: list[int],
    ) -> ProvenanceStep:  # fmt: skip
        counter[0] += 1
        counter[1] = max(counter[1], level)
        dids = index.delta_ids(page)
        dids = dids[: int(np.searchsorted(dids, bound, side="left"))]
        rec = None
        for did in dids[::-1].tolist():
            r, dec, row = index.record(self.log_dir, page, did)
            if byte is None or _covers(dec, row, byte):
                rec = r
                break
        if rec is None:
            segs = list_segments(self.log_dir)  # a directory listing, not a log scan
            return ProvenanceStep(page, byte, None, history_from=segs[0][0] if segs else 1)
        if rec.source != "propagation":
            return ProvenanceStep(page, byte, rec)
        meta = rec.metadata or {}
        # older logs (and the cluster's shards) name the parents in the delta's metadata;
        # otherwise they are the page's data parents at the delta's commit
        fed = meta.get("parents")
        if fed is None:
            fed = index.parents_at(self.log_dir, page, rec.lsn)
        if not fed:
            return ProvenanceStep(page, byte, rec)
        if level >= depth:
            return ProvenanceStep(page, byte, rec, (), truncated=True)
        parents = tuple(
            self._step(index, int(p), None, rec.delta_id, depth, level + 1, counter) for p in fed
        )
        return ProvenanceStep(page, byte, rec, parents)


def missing_page(page_id: int) -> PageNotFoundError:
    return PageNotFoundError(f"page {page_id} does not exist")
