"""The helper thread the starter never waits for (mmsb.storage.bgthread)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from mmsb.storage import bgthread
from mmsb.storage.bgthread import Helper


def test_a_helper_runs_its_function_and_stop_waits_for_it() -> None:
    release, ran = threading.Event(), threading.Event()

    def fn() -> None:
        ran.set()
        release.wait(10)

    h = Helper(fn)
    assert ran.wait(10)
    assert not h.done()
    assert h.stop(timeout=0.05) is False  # began and still running: stop waits for it
    release.set()
    assert h.stop(timeout=10) is True and h.done()


def test_a_helper_that_had_not_begun_is_cancelled_and_never_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The thread is held back (as a starved scheduler or a start-up that cannot allocate
    would hold it): stop returns at once, and a thread that begins late does nothing."""
    pending: list[Callable[[], None]] = []

    def hold(fn: Callable[..., None], args: tuple[Any, ...]) -> int:
        pending.append(lambda: fn(*args))
        return 0

    monkeypatch.setattr(bgthread._thread, "start_new_thread", hold)
    calls: list[int] = []
    h = Helper(lambda: calls.append(1))
    assert h.stop(timeout=0) is True  # nothing to wait for
    pending[0]()  # the thread runs after all
    assert calls == [] and not h.done()


def test_a_helper_whose_function_raises_is_done_and_keeps_the_error() -> None:
    began = threading.Event()

    def fail() -> None:
        began.set()
        raise ValueError("expected by the test")

    h = Helper(fail)
    assert began.wait(10)
    assert h.stop(timeout=10) is True
    assert h.done() and isinstance(h.error, ValueError)
