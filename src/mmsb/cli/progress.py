"""Progress bars on stderr for the commands that can run longer than a second.

A command gets a *sink* ``sink(what, done, total)`` from :func:`bars`: one rich bar per
``what``, drawn on stderr and removed when the command ends (stdout, tables and JSON, is
never touched). Bars are shown when stderr is a terminal and the command's result is not
JSON on stdout; ``--progress`` forces them, ``--no-progress`` turns them off. A step whose
length the library cannot report (one library call) is a bar of one step with its elapsed
time, so a long call still shows that the command is alive.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

Sink = Callable[[str, int, int], None]
F = TypeVar("F", bound=Callable[..., Any])


def option(fn: F) -> F:
    """The ``--progress/--no-progress`` option (parameter ``show_progress``: bool or None)."""
    return click.option(
        "--progress/--no-progress",
        "show_progress",
        default=None,
        help="Show progress bars on stderr (default: when stderr is a terminal and the "
        "output is not JSON on stdout).",
    )(fn)


def wanted(flag: bool | None, *, json_on_stdout: bool = False) -> bool:
    """Whether to draw bars: the flag when given, else a terminal on stderr and no JSON on
    stdout."""
    if flag is not None:
        return flag
    return not json_on_stdout and sys.stderr.isatty()


def _nothing(what: str, done: int, total: int) -> None:
    return None


@contextmanager
def bars(enabled: bool, console: Console | None = None) -> Iterator[Sink]:
    """A sink that draws one bar per ``what`` on stderr (``console`` for tests), or does
    nothing when not ``enabled``."""
    if not enabled:
        yield _nothing
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    drawn = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console or Console(stderr=True), transient=True,
    )  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def sink(what: str, done: int, total: int) -> None:
        task = tasks.get(what)
        if task is None:
            task = tasks[what] = drawn.add_task(what, total=total)
        drawn.update(task, completed=done, total=total)

    with drawn:
        yield sink


class Steps:
    """The phases of one command as one bar of ``total`` steps: :meth:`done` after each."""

    def __init__(self, sink: Sink, title: str, total: int) -> None:
        self._sink = sink
        self._title = title
        self._total = total
        self._done = 0
        sink(title, 0, total)

    def done(self) -> None:
        """One more phase is done."""
        self._done += 1
        self._sink(self._title, self._done, self._total)
