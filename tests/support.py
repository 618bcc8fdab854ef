"""Small helpers shared by the graph, propagation and provenance tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mmsb


class Clock:
    """A deterministic commit clock: 1,010, 1,020, 1,030, ... nanoseconds."""

    def __init__(self) -> None:
        self.now = 1_000

    def __call__(self) -> int:
        self.now += 10
        return self.now


def clocked_bus(tmp_path: Path) -> Iterator[mmsb.Bus]:
    """An on-disk bus with ``sync="off"`` and a :class:`Clock` (for a ``bus`` fixture)."""
    with mmsb.open(tmp_path / "bus", sync="off", clock=Clock()) as b:
        yield b
