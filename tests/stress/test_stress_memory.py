"""Full-size memory stress: a million pages of 1 KiB, written, read back, half deleted,
compacted, shrunk and evicted by GC steps (see ``mmsb.benchmarks.memory``).

Correctness is asserted (every page reads back as written; GC leaves live pages unchanged)
and so is the stated footprint (RSS growth at most 1 GiB); pause and speed figures are
printed, not asserted.
"""

from __future__ import annotations

import pytest

from mmsb.benchmarks.memory import million_pages

pytestmark = pytest.mark.stress_memory


def test_million_pages() -> None:
    r = million_pages(1_000_000, 1024)
    print()
    for k, v in r.extra.items():
        print(f"  {k}: {v:,.3f}" if isinstance(v, float) else f"  {k}: {v}")
    x = r.extra
    assert x["mismatched_pages"] == 0
    assert x["live_pages_unchanged_by_gc"]
    assert x["rss_growth_bytes"] <= 1 << 30
    assert x["arena_file_after_bytes"] < x["arena_file_before_bytes"]
