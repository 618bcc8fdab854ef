"""The global input log of a cluster: ordinary MMSB log segments (``storage/log.py``,
``storage/logwriter.py``) holding ordinary frames (``storage/codec.py``). No Ray here.

Every global commit is one frame with its global LSN: a ``CREATE`` frame (global page ids,
one shape) or a ``BATCH`` frame (global page ids; the epoch column is 0, since epochs are
per shard, and the delta ids are global). A tick's frame holds its input rows followed by
the derived rows it caused (source ``"propagation"``; the frame header's flags stay 0: they
belong to the log format, which uses them for compression), so a shard
is rebuilt by applying frames and never runs a derivation. The sync modes are the bus's:
``always`` fsyncs each frame before the commit is acknowledged, ``normal`` fsyncs from a
background thread every ``sync_interval`` seconds, ``off`` never.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.batch import DeltaBatch
from mmsb.errors import ClusterError, CorruptLogError, InvalidArgumentError
from mmsb.storage import codec, layout
from mmsb.storage.log import LogReader, truncate_segment
from mmsb.storage.logsync import PeriodicSync
from mmsb.storage.logwriter import LogWriter

SYNC_MODES = ("always", "normal", "off")


@dataclass(frozen=True)
class Appended:
    """What the log says about one global commit."""

    lsn: int
    first_delta_id: int
    count: int
    timestamp: int


class GlobalLog:
    """Owns ``<directory>/log``: recovers it on open (a torn tail is cut off, any other
    damage raises :class:`CorruptLogError`), then appends frames with consecutive LSNs.
    Also keeps what a new driver needs to know: the page table (size and dtype of every
    global page) and the delta id counter."""

    def __init__(
        self, directory: str, *, sync: str, segment_size: int = 64 << 20, interval: float = 1.0
    ) -> None:
        if sync not in SYNC_MODES:
            raise InvalidArgumentError(f"sync must be one of {SYNC_MODES}, got {sync!r}")
        self.log_dir = os.path.join(directory, layout.LOG_DIR)
        os.makedirs(self.log_dir, mode=layout.DIR_MODE, exist_ok=True)
        self.lsn = 0
        self.timestamp = 0
        self.next_delta_id = 1
        self.last = Appended(0, 1, 0, 0)
        self.sizes: list[npt.NDArray[np.int64]] = [np.zeros(1, np.int64)]
        self.dtypes: list[npt.NDArray[np.uint8]] = [np.zeros(1, np.uint8)]
        self.next_page_id = 1
        self.torn_bytes = 0
        self._scan()
        self.writer = LogWriter(self.log_dir, self.lsn + 1, segment_size=segment_size,
                                fsync_enabled=sync != "off")  # fmt: skip
        self.sync_always = sync == "always"
        self._syncer: PeriodicSync | None = None
        if sync == "normal":
            self.writer.defer_roll_sync = True
            self._syncer = PeriodicSync(self.writer, interval)

    def _scan(self) -> None:
        reader = LogReader(self.log_dir)
        for frame in reader.frames():
            self._note(
                frame.type, frame.lsn, frame.timestamp, codec.decode(frame.type, frame.payload)
            )
        if reader.torn is not None:  # an append that never completed: never acknowledged
            truncate_segment(os.path.join(self.log_dir, reader.torn.segment), reader.torn.offset)
            self.torn_bytes = reader.torn.bytes

    def _note(self, ftype: int, lsn: int, ts: int, rec: Any) -> None:
        if ftype == codec.BATCH:
            count = len(rec.batch)
            if count and rec.first_delta_id != self.next_delta_id:
                raise CorruptLogError(
                    f"global frame {lsn} starts at delta id "
                    f"{rec.first_delta_id}, expected {self.next_delta_id}"
                )
            self.last = Appended(lsn, self.next_delta_id, count, ts)
            self.next_delta_id += count
        elif ftype == codec.CREATE:
            if rec.first != self.next_page_id:
                raise CorruptLogError(f"global frame {lsn} creates page {rec.first}, "
                                      f"expected {self.next_page_id}")  # fmt: skip
            self.sizes.append(np.full(rec.n, rec.size, np.int64))
            self.dtypes.append(np.full(rec.n, rec.dtype, np.uint8))
            self.next_page_id += rec.n
            self.last = Appended(lsn, self.next_delta_id, 0, ts)
        else:
            raise CorruptLogError(f"global frame {lsn} has type {ftype}, not batch or create")
        self.lsn, self.timestamp = lsn, ts

    def table(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
        """The sizes and dtype codes of every global page, by id (index 0 unused)."""
        self.sizes = [np.concatenate(self.sizes)]
        self.dtypes = [np.concatenate(self.dtypes)]
        return self.sizes[0], self.dtypes[0]

    def _append(self, ftype: int, pieces: list[Any], rec: Any) -> Appended:
        lsn = self.lsn + 1
        ts = max(time.time_ns(), self.timestamp)
        off = self.writer.append(ftype, lsn, ts, pieces)
        if self.sync_always:
            try:
                self.writer.sync()
            except BaseException:
                self.writer.cut(off)  # never acknowledged: no reader may find it
                raise
        self._note(ftype, lsn, ts, rec)
        return self.last

    def append_batch(self, batch: DeltaBatch) -> Appended:
        """Log ``batch`` (global page ids) as the next global commit."""
        epochs = np.zeros(len(batch), np.int64)
        pieces = codec.encode_batch(batch, epochs, self.next_delta_id)
        rec = codec.DecodedBatch(batch, epochs, self.next_delta_id)
        return self._append(codec.BATCH, pieces, rec)

    def append_create(self, n: int, size: int, dtype: int) -> Appended:
        """Log the creation of ``n`` pages of one shape, global ids from the next free one."""
        rec = codec.CreateRecord(self.next_page_id, n, size, dtype, 0, None)
        return self._append(codec.CREATE, codec.encode_create(rec), rec)

    def frames(self, after: int, upto: int, max_bytes: int = 64 << 20) -> list[tuple[int, ...]]:
        """The frames with ``after < lsn <= upto`` as (lsn, type, flags, payload bytes),
        in order, stopping after about ``max_bytes`` of payload (ask again from the last)."""
        if upto > self.lsn:
            raise ClusterError(f"the global log ends at LSN {self.lsn}, not {upto}")
        out: list[tuple[Any, ...]] = []
        total = 0
        for frame in LogReader(self.log_dir).frames(after_lsn=after):
            if frame.lsn > upto or total >= max_bytes:
                break
            out.append((frame.lsn, frame.type, frame.flags, bytes(frame.payload)))
            total += frame.payload.nbytes
        return out

    def sync(self) -> None:
        self.writer.sync(force=True)

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
        self.writer.close()
