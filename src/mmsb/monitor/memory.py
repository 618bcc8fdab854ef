"""Memory snapshot of a bus (SPEC section 7), from measured process memory.

Resident figures come from the kernel: the process's RSS from ``/proc/self/statm`` and the
arena mapping's resident bytes from ``/proc/self/smaps``. Where ``/proc`` is missing (not
Linux) they read as ``-1`` rather than being estimated.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from mmsb.storage import layout
from mmsb.storage.log import list_segments
from mmsb.storage.state import State

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class MemorySnapshot:
    """Where a bus's memory goes, in bytes unless named otherwise."""

    pages: int  # live pages
    page_bytes: int  # sum of live page sizes
    table_bytes: int  # page-table columns (bookkeeping), all rows allocated
    metadata_bytes: int  # page metadata JSON text
    log_bytes: int  # log segment files on disk
    log_segments: int
    arena_file_bytes: int  # size of the arena file (or in-memory buffer)
    arena_end: int  # bytes in use, up to the end of the last page
    free_list_bytes: int  # free gaps below the end, reusable by new pages
    free_gaps: int
    arena_resident_bytes: int  # measured: resident bytes of the arena mapping (-1: unknown)
    rss_bytes: int  # measured: resident set of the whole process (-1: unknown)
    bytes_per_page: float  # measured: (arena resident + table + metadata) / pages
    rss_per_page: float  # measured: whole-process RSS / pages (an upper bound)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm`` (-1 if unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return -1


def mapping_resident_bytes(path: str) -> int:
    """Resident bytes of this process's mappings of ``path`` (-1 if unavailable)."""
    try:
        with open("/proc/self/smaps", "rb") as f:
            data = f.read()
    except OSError:
        return -1
    target = os.path.realpath(path).encode()
    total = 0
    inside = False
    for line in data.split(b"\n"):
        if not line:
            continue
        first = line.split(None, 1)[0]
        if not first.endswith(b":"):  # a mapping header line: "start-end perms ... path"
            inside = line.rstrip().endswith(b" " + target)
        elif inside and first == b"Rss:":
            total += int(line.split()[1]) * 1024
    return total


def table_bytes(state: State) -> int:
    cols = (state.slot, state.size, state.epoch, state.dtype, state.loc, state.live,
            state.last_access, state.seen_epoch)  # fmt: skip
    return int(sum(c.nbytes for c in cols) + state.gap_start.nbytes + state.gap_len.nbytes)


def snapshot(state: State, directory: str, arena_path: str | None = None) -> MemorySnapshot:
    """The memory of the bus at ``directory`` whose live state is ``state``; the arena
    file's residency is measured when the arena is one (``arena_path`` or its own)."""
    rss = rss_bytes()  # first, before this function's own temporaries exist
    if arena_path is None:
        own = getattr(state.arena, "path", None)
        arena_path = own if isinstance(own, str) else None
    if arena_path is not None:
        resident = mapping_resident_bytes(arena_path)
        file_bytes = os.path.getsize(arena_path)
    else:
        resident = int(state.arena.capacity)
        file_bytes = int(state.arena.capacity)
    ids = state.live_ids()
    pages = int(ids.size)
    page_bytes = int(state.size[ids].sum())
    meta = int(sum(len(v) for v in state.metadata.values()))
    segs = list_segments(os.path.join(directory, layout.LOG_DIR))
    log_bytes = 0
    for _, p in segs:
        try:
            log_bytes += os.path.getsize(p)
        except FileNotFoundError:  # dropped by compaction meanwhile
            continue
    table = table_bytes(state)
    per_page = (resident + table + meta) / pages if pages and resident >= 0 else 0.0
    return MemorySnapshot(
        pages=pages,
        page_bytes=page_bytes,
        table_bytes=table,
        metadata_bytes=meta,
        log_bytes=log_bytes,
        log_segments=len(segs),
        arena_file_bytes=file_bytes,
        arena_end=int(state.end),
        free_list_bytes=int(state.gap_len.sum()),
        free_gaps=int(state.gap_len.size),
        arena_resident_bytes=resident,
        rss_bytes=rss,
        bytes_per_page=per_page,
        rss_per_page=rss / pages if pages and rss >= 0 else 0.0,
    )
