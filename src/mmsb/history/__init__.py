"""Time travel: snapshots at past LSNs, the per-page history index, diffs, and the bus's
history component (:class:`History`)."""

from mmsb.history.component import History
from mmsb.history.timeline import (
    LogIndex,
    Snapshot,
    byte_ranges,
    diff_states,
    export_prefix,
    touched_pages,
)
from mmsb.storage.replay import copy_state, state_at

__all__ = [
    "History",
    "LogIndex",
    "Snapshot",
    "byte_ranges",
    "copy_state",
    "diff_states",
    "export_prefix",
    "state_at",
    "touched_pages",
]
