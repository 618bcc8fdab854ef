"""Fixtures shared by the whole suite.

Test files are grouped as the source is (``tests/storage`` for ``mmsb/storage`` and so on);
cross-cutting ones (the public API, the model-based tests, bad input, docs) sit here at the
top. ``tests/naive.py`` holds the slow oracles (the dict-of-bytearrays model) and
``tests/support.py`` small helpers; both are importable from every folder
(``pythonpath`` in ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mmsb
from support import clocked_bus


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[mmsb.Bus]:
    """An on-disk bus in ``tmp_path`` with ``sync="off"`` and a deterministic clock
    (:class:`support.Clock`); closed cleanly after the test. A test that needs a crash
    calls ``bus.abandon()``."""
    yield from clocked_bus(tmp_path)
