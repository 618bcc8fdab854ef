"""Removing files off the writer's path: :class:`Unlinker`.

A file the bus no longer needs (a log segment the GC drops, a checkpoint or segment that
compaction removes) is renamed to ``<name>.drop`` on the caller's thread, which is atomic
and cheap: it leaves the bus's listings at once, and a crash leaves only a name that a
later :meth:`Unlinker.sweep` queues again. The unlink itself runs on one helper thread.

Why not unlink in place: freeing a file's blocks can take the file system a long time, and
that time is spent inside the ``unlink`` (or the last ``close``), and a directory fsync
after it waits for the same device. On a file system mounted
with online discard (ext4 ``-o discard``) every freed extent is discarded on the device
before the call returns: about 0.27 ms per MiB measured here, so 270 ms for a 1 GiB
checkpoint, which automatic compaction used to pay inside the commit that reaped a
background checkpoint. Other block frees queue behind it: an arena truncate by a GC step
waited 15-25 ms behind a segment's discard. :attr:`Unlinker.busy` lets such a step wait for
a later turn instead.

Unlinking (never truncating in place) keeps the old contract for readers: a process or
thread that still has the file open or mapped keeps reading its bytes until it lets go.
"""

from __future__ import annotations

import os
import queue
import threading

from mmsb.storage import layout
from mmsb.storage.bgthread import Helper
from mmsb.storage.log import fsync_dir

# how long a clean close waits for the removals still queued; what is left then stays as
# ``*.drop`` files, which the next writer's first GC step or compaction sweeps (see
# Unlinker.sweep_leftovers)
CLOSE_WAIT_S = 60.0


class Unlinker:
    """Renames files out of the bus's namespace and unlinks them on a helper thread, one
    at a time, in the order given. Its methods are for the writer's thread."""

    def __init__(self, *, sync: bool = True) -> None:
        self.sync = sync  # fsync the directory after each unlink (not for sync="off")
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._pending = 0  # queued or being unlinked
        self._helper: Helper | None = None
        self._closed = False
        self._swept = False  # the bus's leftovers queued (see sweep_leftovers)
        self.removed = 0  # files unlinked, and the last failure (the file stays as .drop)
        self.last_error: OSError | None = None

    @property
    def busy(self) -> bool:
        """Whether a removal is queued or running (its blocks are being freed)."""
        return self._pending > 0

    def drop(self, path: str) -> None:
        """Rename ``path`` to ``path + ".drop"`` (its ``OSError`` is raised; nothing is
        queued then) and queue the unlink of the new name."""
        doomed = path + layout.DROP_SUFFIX
        os.replace(path, doomed)
        self._put(doomed)

    def sweep(self, directory: str) -> int:
        """Queue the unlink of every ``*.drop`` file in ``directory`` (left by a crash or by
        a close that did not wait for them); returns how many."""
        try:
            names = [n for n in os.listdir(directory) if n.endswith(layout.DROP_SUFFIX)]
        except FileNotFoundError:
            return 0
        for name in sorted(names):
            self._put(os.path.join(directory, name))
        return len(names)

    def sweep_leftovers(self, bus_dir: str) -> None:
        """Once per unlinker (so per writer): :meth:`sweep` the log and checkpoint
        directories of the bus at ``bus_dir``. GC and compaction call it before they drop
        anything, so a bus that does either removes what an earlier writer left."""
        if not self._swept:
            self._swept = True
            self.sweep(os.path.join(bus_dir, layout.LOG_DIR))
            self.sweep(os.path.join(bus_dir, layout.CKPT_DIR))

    def _put(self, path: str) -> None:
        with self._cond:
            self._pending += 1
        if self._closed:
            self._remove(path)  # (after close: nothing runs in the background any more)
            return
        if self._helper is None:
            try:
                self._helper = Helper(self._run)
            except RuntimeError:  # no thread can start: unlink here
                self._remove(path)
                return
        self._queue.put(path)

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            if path is None:
                return
            self._remove(path)

    def _remove(self, path: str) -> None:
        try:
            os.unlink(path)
            self.removed += 1
            if self.sync:  # (off the writer too: it waits for the device as well)
                fsync_dir(os.path.dirname(path))
        except FileNotFoundError:
            pass
        except OSError as exc:  # kept for diagnostics; the .drop file is swept again later
            self.last_error = exc
        finally:
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running (up to ``timeout`` seconds); True when
        that is so."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, wait: bool = True, timeout: float = CLOSE_WAIT_S) -> None:
        """End the helper thread once the queued removals are done: waiting for them
        (``wait``, a clean close; up to ``timeout`` seconds) or not (a crash-like close:
        the thread finishes on its own, and what a process exit cuts short stays as
        ``.drop`` files for the next sweep). Later drops unlink on the caller's thread."""
        if self._closed:
            return
        self._closed = True
        helper, self._helper = self._helper, None
        if helper is None:
            return
        if wait:
            self.wait(timeout)
        self._queue.put(None)  # the thread ends after what is queued before it
