"""Output helpers shared by the commands: JSON for machines, rich tables for people, and the
error type that maps expected failures to exit code 2 with a one-line message."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from mmsb.errors import BusNotFoundError
from mmsb.storage.manifest import Manifest, read_manifest

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and found a problem (verify not ok, a target missed)
EXIT_ERROR = 2  # the command could not run (bad usage, not a bus, locked, corrupt)


class CommandError(click.ClickException):
    """An expected failure: printed as one line on stderr, exit code 2, no traceback."""

    exit_code = EXIT_ERROR


def console() -> Console:
    """A console on the current stdout (created per call, so test runners capture it)."""
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
    if not os.path.isdir(path):
        raise BusNotFoundError(f"no bus at {path}")
    return read_manifest(path)


def iso_ns(ns: int) -> str:
    """A nanosecond timestamp as ISO 8601 UTC with microseconds."""
    if ns <= 0:
        return "-"
    dt = datetime.fromtimestamp(ns // 1000 / 1e6, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def short_time(ns: int) -> str:
    """A nanosecond timestamp for table cells: UTC date and time to the millisecond."""
    return "-" if ns <= 0 else iso_ns(ns)[:23].replace("T", " ")


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
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def grid(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table
