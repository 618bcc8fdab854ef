"""Memory snapshot figures, batch page creation, and object counts that do not grow with pages."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb.monitor.memory import mapping_resident_bytes, rss_bytes
from mmsb.storage.log import list_segments


def test_snapshot_fields_match_the_files_and_the_table(tmp_path: Path) -> None:
    path = tmp_path / "b"
    with mmsb.open(path, sync="off") as bus:
        ids = bus.create_pages(1000, 1000)
        bus.create_pages(10, 64, metadata={"kind": "small"})
        data = np.full((1000, 1000), 7, np.uint8)
        bus.apply_batch(mmsb.DeltaBatch.from_ranges(ids, np.zeros(1000, np.int64), data))
        bus.delete_pages(ids[100:300:2].tolist())
        m = bus.memory()
        assert m.pages == 910
        assert m.page_bytes == 900 * 1000 + 10 * 64
        assert m.metadata_bytes == 10 * len('{"kind":"small"}')
        state = bus._state
        assert state is not None
        assert m.free_list_bytes == int(state.gap_len.sum()) == 100 * 1000
        assert m.free_gaps == 100
        assert m.arena_end == state.end
        assert m.arena_file_bytes == os.path.getsize(path / "arena.bin")
        assert m.log_bytes == sum(os.path.getsize(p) for _, p in list_segments(str(path / "log")))
        assert m.log_segments >= 1
        assert m.rss_bytes > 0 and m.rss_bytes == pytest.approx(rss_bytes(), rel=0.2)
        # every written page is resident in this process's mapping of the arena
        assert m.arena_resident_bytes >= 800 * 1000
        assert m.arena_resident_bytes == pytest.approx(
            mapping_resident_bytes(str(path / "arena.bin")), rel=0.2
        )
        assert m.table_bytes >= 35 * 1010
        assert m.bytes_per_page == pytest.approx(
            (m.arena_resident_bytes + m.table_bytes + m.metadata_bytes) / m.pages
        )
        assert set(m.to_json()) >= {"pages", "rss_bytes", "free_list_bytes", "log_bytes"}


def test_ephemeral_bus_snapshot() -> None:
    with mmsb.open(None) as bus:
        bus.create_pages(10, 128)
        m = bus.memory()
        assert m.pages == 10 and m.page_bytes == 1280 and m.arena_resident_bytes >= 0


def test_create_pages_in_bulk_gives_consecutive_ids_and_disjoint_slots() -> None:
    with mmsb.open(None) as bus:
        first = bus.create_pages(3, 24)
        ids = bus.create_pages(200_000, 40, dtype="float64")
        assert ids.dtype == np.int64
        assert ids[0] == first[-1] + 1 and np.array_equal(np.diff(ids), np.ones(ids.size - 1))
        state = bus._state
        assert state is not None
        slots = np.sort(state.slot[ids])
        assert (np.diff(slots) >= 40).all()
        assert bus.page(int(ids[-1])).dtype == "float64"
        assert not bus.read(int(ids[12345])).any()


def _objects_after(n: int) -> tuple[int, int]:
    """GC-tracked objects and allocated blocks held while a bus of ``n`` pages is open,
    after creating, writing, reading back, snapshotting and a GC step."""
    with mmsb.open(None) as bus:
        ids = bus.create_pages(n, 64)
        data = np.arange(n * 64, dtype=np.int64).astype(np.uint8).reshape(n, 64)
        for lo in range(0, n, 10_000):
            hi = min(n, lo + 10_000)
            bus.apply_batch(
                mmsb.DeltaBatch.from_ranges(ids[lo:hi], np.zeros(hi - lo, np.int64), data[lo:hi]),
                workers=2,
            )
        bus.gc(budget_ms=1.0)
        bus.memory()
        assert bus.read(int(ids[-1])).tobytes() == data[-1].tobytes()
        gc.collect()
        return len(gc.get_objects()), sys.getallocatedblocks()


def test_object_count_does_not_grow_with_page_count() -> None:
    _objects_after(1000)  # warm caches (compiled kernels, imports)
    small = _objects_after(10_000)
    large = _objects_after(100_000)
    # ten times the pages: no more than a handful of extra objects (none per page)
    assert large[0] - small[0] < 100, (small, large)
    assert large[1] - small[1] < 1000, (small, large)


def test_memory_target_runner_measures_footprint_and_pauses(tmp_path: Path) -> None:
    from mmsb.validation import memory as target
    from mmsb.validation.runner import Context

    ctx = Context(str(tmp_path), seed=0, size="quick", progress=None)
    out = target.run(ctx, {"pages": 20_000, "page_size": 1024, "gc_budget_ms": 1.0})
    f = out.figures
    assert f["mismatched_pages"] == 0 and f["live_pages_unchanged_by_gc"] is True
    assert f["rss_growth_bytes"] > 20_000 * 1024 // 2  # the pages are really resident
    assert f["gc_steps"] > 10 and f["gc_pause_max_ms"] >= f["gc_pause_p99_ms"] > 0
    assert f["arena_file_after_bytes"] < f["arena_file_before_bytes"]
    assert f["evicted_bytes"] > 0
    assert "GiB" in out.summary
    assert out.correct is True  # a reduced run's footprint is advisory
