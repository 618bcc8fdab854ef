"""The state as of any commit: one place that rebuilds it (the nearest checkpoint at or
before the LSN, then the log frames in between), and a deep copy of a live state.

History (``at``, ``diff``), invariants and verification all call :func:`state_at`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mmsb.errors import HistoryUnavailableError
from mmsb.storage.arena import MemoryArena
from mmsb.storage.recovery import replay
from mmsb.storage.state import State


def state_at(directory: str, lsn: int) -> tuple[State, int]:
    """The state as of ``lsn`` in process memory, and that commit's timestamp."""
    done = replay(directory, MemoryArena(), upto=lsn)
    if done.state is None:
        raise HistoryUnavailableError(
            f"LSN {lsn} is older than the retained history (the log starts at LSN "
            f"{done.base.first_log_lsn} and no checkpoint at or before {lsn} is left)"
        )
    if done.lsn != lsn:
        raise HistoryUnavailableError(f"LSN {lsn} is not in the log")
    return done.state, done.timestamp


def copy_state(src: State, buf: npt.NDArray[np.uint8] | None = None) -> State:
    """A deep copy of ``src`` into process memory (arena trimmed to the used end). ``buf``:
    memory to copy the arena into when it is large enough (reused by the checkpointer:
    fresh memory costs a page fault per page, and for a large allocation possibly a
    huge-page compaction, on the commit path)."""
    need = max(src.end, 1)
    arena = MemoryArena(need) if buf is None or buf.size < need else MemoryArena.over(buf[:need])
    # device pages' bytes at their host slots (src.dev: mmsb.storage.devicepages)
    arena.buf[: src.end] = src.arena.buf[: src.end] if src.dev is None else src.dev.image(src.end)
    st = State(arena, capacity=max(src.next_page_id, 1024))
    n = src.next_page_id
    for name in ("slot", "size", "epoch", "dtype", "loc", "live"):
        getattr(st, name)[:n] = getattr(src, name)[:n]
    st.metadata = dict(src.metadata)
    st.names, st.by_name, st.records = dict(src.names), dict(src.by_name), dict(src.records)
    st.edges = src.edges.copy()
    st.next_page_id, st.next_delta_id = src.next_page_id, src.next_delta_id
    st.live_count, st.end = src.live_count, src.end
    st.gap_start, st.gap_len = src.gap_start.copy(), src.gap_len.copy()
    return st
