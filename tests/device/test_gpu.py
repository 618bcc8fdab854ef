"""Checks that need a real GPU (``pytest -m gpu`` with ``MMSB_DEVICE_TESTS=real``; run by
``tools/gpu_check.py``): races the simulator cannot show, zero-copy interop, managed
memory."""

from __future__ import annotations

import numpy as np
import pytest

import gpu_check
from mmsb.device import Backend
from mmsb.device.arena import DeviceArena

pytestmark = pytest.mark.gpu


def test_overlapping_rows_of_many_pages_race_free(real_dev: Backend) -> None:
    r = gpu_check.race(reps=10, pages=2048, rows=20_000, seed=1)
    assert r["differing_bytes"] == 0
    assert r["kernels"] == {"ordered": 10}


def test_a_page_view_is_zero_copy_device_memory(real_dev: Backend) -> None:
    arena = DeviceArena(1 << 12)
    vals = np.arange(8, dtype=np.float64)
    arena.from_host(64, vals)
    view = arena.view(64, 64, np.float64)
    cai = view.__cuda_array_interface__
    assert cai["shape"] == (8,) and cai["typestr"] == "<f8"
    assert cai["data"][0] == arena.buf.__cuda_array_interface__["data"][0] + 64
    view[3] = -1.0  # through the view: the arena's own bytes change
    got = arena.to_host(64, 64).view(np.float64)
    assert got[3] == -1.0 and got[2] == 2.0


def test_unified_arena_is_managed_memory_the_host_can_read(real_dev: Backend) -> None:
    arena = DeviceArena(1 << 12, location="unified")
    arena.from_host(8, np.full(8, 7, np.uint8))
    host = arena.host_view()  # managed memory: a host array over the same bytes
    assert host[8:16].tolist() == [7] * 8 and not host[:8].any()
    arena.ensure(arena.capacity + 1)  # growth moves the bytes to a new managed buffer
    host = arena.host_view()
    assert host[8:16].tolist() == [7] * 8 and not host[16:].any()
