"""DeviceArena: growth keeps bytes and adds zeros, host copies, views, fills, gathers."""

from __future__ import annotations

import numpy as np
import pytest
from devcases import random_bytes

from mmsb.device import Backend
from mmsb.device.arena import DeviceArena, grown_capacity
from mmsb.errors import InvalidArgumentError


@pytest.fixture(params=["gpu", "unified"])
def arena(request: pytest.FixtureRequest, dev: Backend) -> DeviceArena:
    return DeviceArena(100, location=request.param, min_capacity=128)


def test_new_arena_is_zero_and_grows_keeping_its_bytes(arena: DeviceArena) -> None:
    assert arena.capacity == 128
    assert not arena.to_host(0, arena.capacity).any()
    data = random_bytes(np.random.default_rng(0), 128)
    arena.from_host(0, data)
    arena.ensure(129)
    assert arena.capacity == grown_capacity(128, 129, 128) == 256
    host = arena.to_host(0, arena.capacity)
    assert np.array_equal(host[:128], data) and not host[128:].any()
    arena.ensure(100)  # room already: nothing changes
    assert arena.capacity == 256
    arena.shrink(128)
    assert arena.capacity == 128
    assert np.array_equal(arena.to_host(0, 128), data)
    arena.clear(10)
    assert arena.capacity == 128 and not arena.to_host(0, 128).any()


def test_views_fills_and_gathers(arena: DeviceArena) -> None:
    rng = np.random.default_rng(1)
    vals = rng.normal(size=4)
    arena.from_host(16, vals)
    view = arena.view(16, 32, np.float64)
    assert view.shape == (4,) and np.dtype(view.dtype) == np.float64
    assert np.array_equal(view.copy_to_host(), vals)
    with pytest.raises(InvalidArgumentError, match="whole float64"):
        arena.view(12, 32, np.float64)
    with pytest.raises(InvalidArgumentError, match="outside"):
        arena.to_host(120, 16)
    data = random_bytes(rng, arena.capacity)
    arena.from_host(0, data)
    starts = np.array([3, 40, 90], np.int64)
    lengths = np.array([10, 0, 30], np.int64)
    want = np.concatenate([data[s : s + n] for s, n in zip(starts, lengths, strict=True)])
    assert np.array_equal(arena.gather(starts, lengths), want)
    arena.fill(starts, lengths, 0)
    for s, n in zip(starts, lengths, strict=True):
        data[s : s + n] = 0
    assert np.array_equal(arena.to_host(0, arena.capacity), data)
    assert arena.gather(np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0


def test_a_unified_arena_reads_in_place(dev: Backend) -> None:
    arena = DeviceArena(64, location="unified", min_capacity=64)
    arena.from_host(8, np.arange(8, dtype=np.uint8))
    assert np.asarray(arena.host_view())[8:16].tolist() == list(range(8))
    with pytest.raises(InvalidArgumentError, match="unified"):
        DeviceArena(64, min_capacity=64).host_view()
