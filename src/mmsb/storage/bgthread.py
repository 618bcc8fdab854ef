"""Helper threads that the starter never waits for.

``threading.Thread.start()`` blocks until the new thread has run far enough to report in.
That costs a scheduler slot (up to milliseconds on a busy two-core machine, on the open or
commit path that starts the thread) and, where the new thread cannot allocate its start-up
state (seen under injected ``mmap`` failures), forever. :class:`Helper` starts a bare
``_thread`` thread instead and returns at once.

Its contract is for optional work (a periodic sync, memory warmed ahead of time): a helper
cancelled before it began never runs its function; :meth:`Helper.stop` waits only for one
that began. Work that must run once started (a checkpoint's image) does not use it.
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable


class Helper:
    """Run ``fn()`` in a new daemon thread without waiting for it to start."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._began = False
        self._cancelled = False
        self._done = threading.Event()
        self.error: BaseException | None = None  # what ``fn`` raised, if it raised
        _thread.start_new_thread(self._run, ())  # RuntimeError where no thread can start

    def _run(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self._began = True
        try:
            self._fn()
        except BaseException as exc:  # kept for the owner, not printed by the thread
            self.error = exc
        finally:
            self._done.set()

    def done(self) -> bool:
        """``fn`` has returned or raised (then :attr:`error` holds the exception)."""
        return self._done.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel the helper if it has not begun, else wait for ``fn`` to return (up to
        ``timeout`` seconds). True when nothing of it runs any more."""
        with self._lock:
            self._cancelled = True
            began = self._began
        return self._done.wait(timeout) if began else True
