"""Compaction moves of page slots (relayout), planned, applied, taken back and replayed.

The garbage collector plans moves by the compaction rule of
:func:`mmsb.engine.gc_kernels.plan_moves` (:func:`plan` changes the page table only), logs
them, then moves the bytes (:func:`move_bytes`); recovery and ``verify`` replay a logged
relayout with :func:`replay`, which accepts it only if it is exactly what the rule does.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from mmsb.engine import gc_kernels
from mmsb.errors import InvalidArgumentError
from mmsb.storage.state import State

I64 = npt.NDArray[np.int64]


def plan(state: State, order: I64, max_moves: int, expected: I64 | None = None) -> I64:
    """Move page slots by the compaction rule (``mmsb.engine.gc_kernels``) for the
    pages of ``order``, at most ``max_moves``; update the free gaps and the end.

    Only the page table changes; :func:`move_bytes` then moves the bytes. Returns the
    moves as a (3, k) array: page ids, old slots, new slots. With ``expected``, stops
    where a computed slot differs from it (replay checks a logged relayout this way).
    """
    n = int(order.size)
    moves = np.empty((3, min(n, max_moves)), np.int64)
    gs, gl = state.gap_start, state.gap_len  # updated in place: no O(gaps) copy
    count, g0, g_end, end = gc_kernels.plan_moves(
        order, state.slot, state.size, gs, gl, 0, gs.size, state.end, max_moves,
        order if expected is None else expected, expected is not None,
        moves[0], moves[1], moves[2],
    )  # fmt: skip
    if count:
        gs, gl = gs[g0:g_end], gl[g0:g_end]
        if (gl == 0).any():
            gs, gl = gs[gl > 0], gl[gl > 0]
        state.gap_start, state.gap_len, state.end = gs, gl, int(end)
        state.layout_version += 1
    return moves[:, :count]


def move_bytes(state: State, moves: I64) -> None:
    """Move relocated pages' bytes, in order (device pages' stay at their device slots)."""
    if state.dev is not None:
        moves = state.dev.host_moves(moves)
    gc_kernels.move_bytes(state.arena.buf, moves[1], moves[2], state.size[moves[0]])


def undo(state: State, moves: I64) -> None:
    """Take back a :func:`plan` whose bytes have not moved yet."""
    for i in range(moves.shape[1] - 1, -1, -1):
        state.slot[moves[0, i]] = moves[1, i]
    state.rebuild_gaps()
    state.layout_version += 1


def replay(state: State, ids: I64, new_slots: I64) -> None:
    """Replay logged moves: each must be exactly what the compaction rule does."""
    if ids.size != new_slots.size:
        raise InvalidArgumentError("relayout ids and slots differ in length")
    known = (ids > 0) & (ids < state.next_page_id)
    if not known.all() or not state.live[ids].all():
        raise InvalidArgumentError("relayout moves a page that is not live")
    moves = plan(state, ids, int(ids.size), new_slots)
    if moves.shape[1] != ids.size:
        k = moves.shape[1]
        undo(state, moves)
        raise InvalidArgumentError(
            f"relayout move {k} (page {int(ids[k])} to slot {int(new_slots[k])}) does "
            "not follow the compaction rule"
        )
    move_bytes(state, moves)
