"""Events: subscribers per event type, called synchronously after the change is published.

Rules:

* A handler runs after the commit it reports is durable per the sync mode and visible; it
  can never undo or break that commit.
* A handler that raises is counted (``stats()``), its exception logged on the ``mmsb``
  logger with the traceback, and the remaining handlers still run.
* Handlers must not write to the bus: while events are being dispatched, a write raises
  :class:`~mmsb.errors.ReentrantWriteError` (which the handler sees, and which is counted if
  it escapes). Queue the work and do it after the call that raised the event returns (for
  example in your next tick). This bounds recursion by construction.
* Events are only built when someone subscribed to that event type: an idle hub costs one
  dictionary lookup per commit.

Live readers (``readonly=True``) raise the same commit events (``page_created``,
``page_deleted``, ``delta_applied``, ``page_changed``) from the log frames they follow
(:meth:`EventHub.follow`): for each commit the reader observes (by a read, ``refresh``,
``wait_for`` or the automatic catch-up), once, in commit order, with the commit's LSN. A
commit made while the reader was not looking is reported when it next catches up. What a
reader rebuilds by replay rather than tails frame by frame is not reported: the commits
before it opened or subscribed, and those skipped when it re-attaches (a new writer process,
or log segments compacted away while it lagged); ``page_stale``, ``page_invalidated``,
``gpu_sync_needed`` and ``tick_done`` are the writer's own. Handlers run once the reader's
table has taken the commit; what they read is the reader's newest view, which may already
be past the event's LSN.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsb.errors import InvalidArgumentError
from mmsb.storage import codec
from mmsb.storage.codec import BATCH, CREATE, DELETE
from mmsb.storage.log import Frame
from mmsb.storage.logtail import batch_rows

if TYPE_CHECKING:
    from mmsb.writer.committer import Change

EVENTS: tuple[str, ...] = (
    "page_created",
    "page_deleted",
    "page_changed",
    "delta_applied",
    "page_stale",
    "page_invalidated",
    "gpu_sync_needed",
    "tick_done",
)
log = logging.getLogger("mmsb")


@dataclass(frozen=True)
class Event:
    """One event: its type, the page it is about (None for whole-commit events), the LSN of
    the commit that caused it and a small detail mapping."""

    name: str
    page_id: int | None
    lsn: int
    detail: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Event], object]
Filter = Callable[[Event], bool]


@dataclass(frozen=True)
class Subscription:
    id: int
    event: str
    handler: Handler
    filter: Filter | None


class EventHub:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self._ids = itertools.count(1)
        self.delivered = 0
        self.failed = 0
        self.last_error: str | None = None
        self.dispatching = False
        # a live reader's events waiting for delivery, in commit order (see ``followed``)
        self._pending: deque[tuple[str, int, Any, dict[str, Any]]] = deque()
        self._draining = False

    def subscribe(
        self, event: str, handler: Handler, filter: Filter | Iterable[int] | None = None
    ) -> Subscription:
        if event not in EVENTS:
            raise InvalidArgumentError(
                f"unknown event {event!r}; expected one of {', '.join(EVENTS)}"
            )
        if not callable(handler):
            raise InvalidArgumentError("handler must be callable")
        flt: Filter | None
        if filter is None or callable(filter):
            flt = filter
        else:
            try:
                pages = frozenset(int(p) for p in filter)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    "filter must be a predicate on the event or a set of page ids"
                ) from None

            def flt(ev: Event) -> bool:
                return ev.page_id in pages

        sub = Subscription(next(self._ids), event, handler, flt)
        self._subs.setdefault(event, []).append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> bool:
        subs = self._subs.get(sub.event, [])
        if sub in subs:
            subs.remove(sub)
            return True
        return False

    def wants(self, event: str) -> bool:
        return bool(self._subs.get(event))

    def emit(self, event: str, lsn: int, pages: Any = None, **detail: Any) -> None:
        """Deliver one event per page of ``pages`` (or one event when ``pages`` is None)."""
        subs = self._subs.get(event)
        if not subs:
            return
        if pages is None:
            events = [Event(event, None, lsn, detail)]
        else:
            events = [Event(event, int(p), lsn, detail) for p in np.asarray(pages).tolist()]
        self.dispatching = True
        try:
            for ev in events:
                for sub in list(subs):
                    try:
                        if sub.filter is not None and not sub.filter(ev):
                            continue
                        sub.handler(ev)
                        self.delivered += 1
                    except Exception as exc:
                        self.failed += 1
                        self.last_error = f"{event} handler {sub.id}: {type(exc).__name__}: {exc}"
                        log.error("event handler failed: %s", self.last_error, exc_info=exc)
        finally:
            self.dispatching = False

    def committed(self, change: Change) -> None:
        """Committer listener: the events a published commit raises."""
        if change.ftype == CREATE:
            if self.wants("page_created"):
                self.emit("page_created", change.lsn, change.pages)
        elif change.ftype == DELETE:
            if self.wants("page_deleted"):
                self.emit("page_deleted", change.lsn, change.pages)
        elif change.ftype == BATCH:
            if self.wants("delta_applied"):
                self.emit("delta_applied", change.lsn, None,
                          first_delta_id=change.first_delta_id, count=change.count)  # fmt: skip
            if self.wants("page_changed") and change.pages is not None:
                self.emit("page_changed", change.lsn, np.unique(change.pages))

    def follow(self, then: Callable[[Frame], None]) -> Callable[[Frame], None]:
        """A ``Follower(on_frame=...)`` hook for a read-only bus: ``then(frame)`` (say, the
        history index), then this hub's events for the frame (:meth:`followed`)."""

        def on_frame(frame: Frame) -> None:
            then(frame)
            self.followed(frame)

        return on_frame

    def followed(self, frame: Frame) -> None:
        """Follower hook: raise the events a writable bus raises for this commit (see
        :meth:`committed`), built from its log frame, which the reader has applied.

        The events are queued and delivered in order; a handler that reads the bus may make
        the reader catch up with later frames, whose events join the queue behind the
        current ones rather than run inside it, so every commit is reported once, in
        commit order."""
        ftype, lsn = frame.type, frame.lsn
        queue = self._pending
        if ftype == CREATE:
            if self.wants("page_created"):
                rec = codec.decode_create(frame.payload)
                queue.append(("page_created", lsn, np.arange(rec.first, rec.first + rec.n), {}))
        elif ftype == DELETE:
            if self.wants("page_deleted"):
                queue.append(("page_deleted", lsn, codec.decode_delete(frame.payload), {}))
        elif ftype == BATCH and (self.wants("delta_applied") or self.wants("page_changed")):
            first, pids, _, _ = batch_rows(frame.payload)
            if self.wants("delta_applied"):
                queue.append(("delta_applied", lsn, None,
                              {"first_delta_id": first, "count": int(pids.size)}))  # fmt: skip
            if self.wants("page_changed"):
                queue.append(("page_changed", lsn, np.unique(pids), {}))
        if queue and not self._draining:
            self._draining = True
            try:
                while queue:
                    event, at, pages, detail = queue.popleft()
                    self.emit(event, at, pages, **detail)
            finally:
                self._draining = False

    def stats(self) -> dict[str, Any]:
        return {
            "subscriptions": sum(len(v) for v in self._subs.values()),
            "delivered": self.delivered,
            "failed": self.failed,
            "last_error": self.last_error,
        }
