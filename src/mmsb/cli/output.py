"""Output helpers shared by the commands: JSON for machines, rich tables for people, and the
error type that maps expected failures to exit code 2 with a one-line message."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from mmsb.errors import BusNotFoundError

if TYPE_CHECKING:  # rich and numpy load when a command runs, not when ``mmsb --help`` starts
    from rich.console import Console
    from rich.table import Table

    from mmsb.storage.manifest import Manifest

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (verify not ok, a target missed)
EXIT_ERROR = 2  # the command could not run (bad usage, not a bus, locked, corrupt)


class CommandError(click.ClickException):
    """An expected failure: printed as one line on stderr, exit code 2, no traceback."""

    exit_code = EXIT_ERROR


def console() -> Console:
    """A console on the current stdout (created per call, so test runners capture it)."""
    from rich.console import Console

    # piped output keeps whole table rows (rich would otherwise fold them at 80 columns)
    width = None if sys.stdout.isatty() else 200
    return Console(file=sys.stdout, highlight=False, soft_wrap=True, width=width)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def require_bus(path: str) -> Manifest:
    """The manifest of the bus at ``path``; a typed error when there is none."""
    from mmsb.storage.manifest import read_manifest

    if not os.path.isdir(path):
        raise BusNotFoundError(f"no bus at {path}")
    return read_manifest(path)


def _local(ns: int) -> datetime:
    seconds, rest = divmod(ns, 1_000_000_000)
    dt = datetime.fromtimestamp(seconds).astimezone()  # the local zone, with its offset
    return dt.replace(microsecond=rest // 1000)


def iso_ns(ns: int) -> str:
    """A nanosecond timestamp (since the epoch) as ISO 8601 in the local time zone, to the
    microsecond, with the zone's UTC offset: ``2026-12-06T03:41:07.123456+00:00``; ``-``
    for 0 (no commit). JSON output keeps the raw integer beside it."""
    if ns <= 0:
        return "-"
    return _local(ns).isoformat(timespec="microseconds")


def short_time(ns: int) -> str:
    """A nanosecond timestamp for table cells: ISO 8601, local time zone, to the
    millisecond, with the UTC offset (``2026-12-06T03:41:07.123+00:00``)."""
    return "-" if ns <= 0 else _local(ns).isoformat(timespec="milliseconds")


def replace_ns_times(text: str) -> str:
    """``time <nanoseconds>`` in a library explanation, rewritten as ISO 8601 local time."""
    return _NS_TIME.sub(lambda m: f"{m[1]}time {iso_ns(int(m[2]))},", text)


_NS_TIME = re.compile(r"(: delta \d+ at LSN \d+, epoch -?\d+, )time (\d+),")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n:,} B"  # pragma: no cover - loop always returns


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def grid(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table
