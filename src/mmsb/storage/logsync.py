"""The ``normal`` sync mode's background fsync of the log: :class:`PeriodicSync`."""

from __future__ import annotations

import threading

from mmsb.storage.bgthread import Helper
from mmsb.storage.logwriter import LogWriter


class PeriodicSync:
    """A daemon thread that fsyncs the log every ``interval`` seconds while anything is
    unsynced (the ``normal`` sync mode): durability lags commits by at most about
    ``interval``, even when the writer goes idle, and commits never wait for the disk.

    It also syncs early once ``backlog`` bytes are unsynced: a fast writer then never piles
    up hundreds of megabytes of dirty log for the next checkpoint (which must sync the log
    before it writes its image) to wait on; the disk works while the writer computes.
    """

    def __init__(self, writer: LogWriter, interval: float, backlog: int = 16 << 20) -> None:
        self.writer = writer
        self.interval = interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        writer.backlog_limit = backlog
        writer.on_backlog = self._wake.set
        # the thread starts with the first frame appended (nothing to sync before it): a
        # clean open that only reads never pays for it (0.05-0.09 ms of the open)
        self._thread: Helper | None = None
        writer.on_first_append = self._start

    def _start(self) -> None:
        if self._thread is None and not self._stop.is_set():
            self._thread = Helper(self._run)

    @property
    def started(self) -> bool:
        """Whether the thread was started (by the first frame appended)."""
        return self._thread is not None

    def run_once(self) -> None:
        """One sync step (what the thread does each interval). A failure stops the thread;
        the writer keeps it, and its owner's next commit, sync or close raises it."""
        try:
            self.writer.sync(background=True)
        except OSError:
            self._stop.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.stop()
        self.writer.on_backlog = None
        self.writer.on_first_append = None
