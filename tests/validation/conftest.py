"""Fixtures of the validation tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mmsb.validation.runner import Context


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    """A quick-size validation context in ``tmp_path`` (seed 3)."""
    c = Context(str(tmp_path), seed=3, size="quick", progress=None)
    yield c
    c.close()
