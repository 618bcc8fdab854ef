"""How much history a bus keeps: which checkpoints compaction keeps, and so from which
commit on the log must stay.

Compaction (``Bus.compact``, and the collector's segment drops with ``auto_compact=True``)
keeps the newest ``keep_checkpoints`` checkpoints and drops the log segments wholly covered
by the oldest of them; history before it is gone. ``retain_bytes`` and ``retain_seconds``
ask for more: older checkpoints are kept as well until the log after the oldest kept one
holds at least ``retain_bytes`` bytes, and until that checkpoint is at least
``retain_seconds`` older than the newest commit (each rule alone, or both). With neither,
``keep_checkpoints`` alone decides, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mmsb.errors import MMSBError
from mmsb.storage import layout
from mmsb.storage.checkpoint import list_checkpoints, read_header
from mmsb.storage.log import SEG_HEADER_SIZE, list_segments


@dataclass(frozen=True)
class Retention:
    keep: int  # at least this many checkpoints
    retain_bytes: int | None = None  # log bytes after the oldest kept checkpoint, at least
    retain_seconds: float | None = None  # its age against the newest commit, at least

    def kept(self, directory: str, now_ns: int) -> list[tuple[int, str]]:
        """The checkpoints to keep, newest first: (LSN, path) as ``list_checkpoints``."""
        ckpts = list_checkpoints(os.path.join(directory, layout.CKPT_DIR))
        k = min(self.keep, len(ckpts))
        if self.retain_bytes is None and self.retain_seconds is None:
            return ckpts[:k]
        segs = list_segments(os.path.join(directory, layout.LOG_DIR))
        sizes = [(first, os.path.getsize(p) - SEG_HEADER_SIZE) for first, p in segs]
        while 0 < k < len(ckpts) and not self._covers(ckpts[k - 1], sizes, now_ns):
            k += 1
        return ckpts[:k]

    def _covers(self, ckpt: tuple[int, str], sizes: list[tuple[int, int]], now: int) -> bool:
        lsn, path = ckpt
        if self.retain_bytes is not None:
            # the segments a compaction at this checkpoint keeps: the one holding LSN + 1
            # and every later one (a checkpoint rolls the log, so they start after it)
            after = sum(n for first, n in sizes if first > lsn)
            if after < self.retain_bytes:
                return False
        if self.retain_seconds is not None:
            try:
                with open(path, "rb") as f:
                    ts = read_header(f, path)[0].timestamp
            except (OSError, MMSBError):  # unreadable: it proves nothing, keep looking
                return False
            if now - ts < self.retain_seconds * 1e9:
                return False
        return True
