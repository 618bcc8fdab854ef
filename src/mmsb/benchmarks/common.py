"""Shared helpers for benchmark scenarios."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """One measured figure with its conditions."""

    name: str
    value: float
    unit: str
    conditions: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "conditions": self.conditions,
            "extra": self.extra,
        }


@contextmanager
def scratch_dir(base: str | None = None) -> Iterator[str]:
    """A temporary directory on local disk, removed afterwards."""
    d = tempfile.mkdtemp(prefix="mmsb-bench-", dir=base)
    try:
        yield os.path.join(d, "bus")
    finally:
        shutil.rmtree(d, ignore_errors=True)
