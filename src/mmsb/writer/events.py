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
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsb.errors import InvalidArgumentError
from mmsb.storage.codec import BATCH, CREATE, DELETE

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

    def stats(self) -> dict[str, Any]:
        return {
            "subscriptions": sum(len(v) for v in self._subs.values()),
            "delivered": self.delivered,
            "failed": self.failed,
            "last_error": self.last_error,
        }
