"""Checks of a checkpoint's page table as it is loaded (:func:`mmsb.storage.checkpoint.load_state`).

Every check raises :class:`~mmsb.errors.CorruptCheckpointError` naming the file: a page
table whose rows point outside the arena, overlap or name impossible dtypes, names or
record specs for pages that are not live, free-space lists that are not sorted and
coalesced. Nothing here reads the arena's bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mmsb.errors import CorruptCheckpointError, InvalidArgumentError
from mmsb.storage.rowcheck import aligned
from mmsb.storage.state import State
from mmsb.types import (
    DTYPE_ITEMSIZE,
    DTYPE_NAMES,
    LOCATIONS,
    MAX_PAGE_SIZE,
    check_name,
    record_dtype,
)


def check_table(state: State, end: int, name: str, *, overlaps: bool = True) -> None:
    n = state.next_page_id
    if not overlaps:  # the lazy check: every live page a valid slot inside the arena, no sort
        live, size, slot = state.live[1:n], state.size[1:n], state.slot[1:n]
        if not live.all():  # pages were deleted: look at the live ones only
            size, slot = size[live], slot[live]
        if not size.size:
            return
        big = int(size.max())
        outside = int(size.min()) <= 0 or big > MAX_PAGE_SIZE or int(slot.min()) < 0
        # every page ends inside the arena: the largest slot plus the largest size bounds
        # every end, without a temporary column of ends (which cost more than the other
        # reductions together); only where that bound is past the end are ends summed
        if not outside and int(slot.max()) + big > end:
            outside = int((slot + size).max()) > end
        if outside:
            raise CorruptCheckpointError(f"checkpoint {name} has pages outside its arena")
        return
    ids = np.nonzero(state.live[:n])[0]
    size, slot, dt, loc = state.size[ids], state.slot[ids], state.dtype[ids], state.loc[ids]
    bad = (
        (size <= 0) | (size > MAX_PAGE_SIZE) | (slot < 0) | (dt >= len(DTYPE_NAMES))
        | (loc >= len(LOCATIONS)) | (state.epoch[ids] < 0)
    )  # fmt: skip
    if bad.any():
        raise CorruptCheckpointError(
            f"checkpoint {name} has invalid page table rows for pages {ids[bad][:10].tolist()}"
        )
    if (size % DTYPE_ITEMSIZE[dt]).any():
        raise CorruptCheckpointError(f"checkpoint {name} has page sizes that do not fit dtypes")
    order = np.argsort(slot, kind="stable")
    starts = slot[order]
    ends = starts + aligned(size[order])
    if ends.size and int(ends[-1]) > end:
        raise CorruptCheckpointError(f"checkpoint {name} has pages outside its arena")
    if ends.size > 1 and (ends[:-1] > starts[1:]).any():
        raise CorruptCheckpointError(f"checkpoint {name} has overlapping page slots")


def load_attrs(state: State, sections: Any, read_section: Any, name: str) -> None:
    """Load the optional ``names`` and ``records`` sections into ``state``, checked: live
    pages for names (deleted pages keep their record spec), valid unique names, canonical
    record specs that divide the page size."""
    for sname in ("names", "records"):
        if sname not in sections:
            continue
        try:
            raw = json.loads(read_section(sname))
            table = {int(k): str(v) for k, v in raw.items()}
            live = state.is_live if sname == "names" else (lambda k: 0 < k < state.next_page_id)
            if any(not live(k) for k in table):
                raise ValueError("an entry for a page that is not live")
            for pid, value in table.items():
                if sname == "names":
                    state.set_name(pid, check_name(value))
                elif int(state.size[pid]) % record_dtype(value).itemsize:
                    raise ValueError(f"page {pid} is not a whole number of records")
                else:
                    state.records[pid] = value
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError,
                InvalidArgumentError) as exc:  # fmt: skip
            raise CorruptCheckpointError(f"checkpoint {name} {sname} are invalid: {exc}") from None


def load_gaps(state: State, read_section: Any, end: int, name: str) -> None:
    """The free-space lists a clean shutdown recorded, checked in O(gaps): sorted, inside
    the arena, non-empty, not touching (coalesced)."""
    starts = np.frombuffer(read_section("gap_start"), "<i8").astype(np.int64)
    lengths = np.frombuffer(read_section("gap_len"), "<i8").astype(np.int64)
    ends = starts + lengths
    if (
        starts.size != lengths.size
        or (lengths <= 0).any()
        or (starts < 0).any()
        or (starts.size and int(ends[-1]) >= end)
        or (ends[:-1] >= starts[1:]).any()
    ):
        raise CorruptCheckpointError(f"checkpoint {name} has invalid free-space lists")
    state.gap_start, state.gap_len = starts, lengths
