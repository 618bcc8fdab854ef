"""The sequencer: owns the global log (:class:`~mmsb.cluster.globallog.GlobalLog`) and gives
every global commit its LSN. Run as a Ray actor (one at a time: Ray restarts it after its
process or node dies, and the restarted one recovers the log from disk). Not replicated.

Every append names the LSN the caller expects it to get, which makes a retried append
safe: if the frame with that LSN is already the last one (the answer to an earlier try
was lost with the process), its record is returned instead of logging it twice.
"""

from __future__ import annotations

import os
from typing import Any

from mmsb.batch import DeltaBatch
from mmsb.cluster.globallog import Appended, GlobalLog
from mmsb.errors import ClusterError


class Sequencer:
    def __init__(self, directory: str, sync: str, segment_size: int, interval: float) -> None:
        self.log = GlobalLog(directory, sync=sync, segment_size=segment_size, interval=interval)

    def ping(self) -> int:
        return os.getpid()

    def state(self) -> dict[str, Any]:
        """What a driver needs on open: the end of the log and the global page table."""
        sizes, dtypes = self.log.table()
        return {"lsn": self.log.lsn, "sizes": sizes, "dtypes": dtypes,
                "timestamp": self.log.timestamp, "torn_bytes": self.log.torn_bytes}  # fmt: skip

    def end(self) -> int:
        return self.log.lsn

    def _retry(self, expect: int) -> Appended | None:
        if expect == self.log.lsn and self.log.last.lsn == expect:
            return self.log.last
        if expect != self.log.lsn + 1:
            raise ClusterError(f"the driver expects global LSN {expect} but the global log "
                               f"ends at {self.log.lsn}")  # fmt: skip
        return None

    def append_batch(self, expect: int, batch: DeltaBatch) -> Appended:
        return self._retry(expect) or self.log.append_batch(batch)

    def append_create(self, expect: int, n: int, size: int, dtype: int) -> Appended:
        return self._retry(expect) or self.log.append_create(n, size, dtype)

    def frames(self, after: int, upto: int | None, max_bytes: int = 64 << 20) -> list[Any]:
        return self.log.frames(after, self.log.lsn if upto is None else upto, max_bytes)

    def sync(self) -> int:
        self.log.sync()
        return self.log.lsn

    def close(self) -> None:
        self.log.close()
