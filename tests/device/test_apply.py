"""Device apply against the host kernels: 0 differing bytes, and the kernel choice."""

from __future__ import annotations

import numpy as np
import pytest
from devcases import (
    columns,
    device_apply,
    disjoint_batch,
    host_apply,
    overlapping_batch,
    random_bytes,
    random_pages,
    rows_overlap,
)

from mmsb.device import Backend
from mmsb.device.apply import HostCopy
from mmsb.device.arena import DeviceArena
from mmsb.device.plan import plan_rows
from mmsb.errors import InvalidArgumentError


def arenas(rng: np.random.Generator, end: int, threads: int = 4) -> tuple[np.ndarray, DeviceArena]:
    """A host arena with random bytes and a device arena holding the same."""
    dev = DeviceArena(end, min_capacity=1024, threads=threads)
    host = random_bytes(rng, dev.capacity)
    dev.from_host(0, host)
    return host, dev


def same(host: np.ndarray, dev: DeviceArena) -> int:
    """Bytes that differ between the host arena and the device arena."""
    return int(np.count_nonzero(dev.to_host(0, dev.capacity) != host))


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_batches_match_the_host(dev: Backend, scale: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    slots, sizes, end = random_pages(rng, 6 * scale, 120)
    host, darena = arenas(rng, end, threads=int(rng.choice([1, 3, 8])))
    for _ in range(3):
        b = overlapping_batch(rng, sizes, 30 * scale)
        host_apply(host, slots, b)
        used = device_apply(darena, slots, b)
        assert used == ("ordered" if rows_overlap(b) else "disjoint")
        assert same(host, darena) == 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_disjoint_batches_take_the_fast_kernel_and_match(
    dev: Backend, scale: int, shuffle: bool
) -> None:
    rng = np.random.default_rng(7)
    slots, sizes, end = random_pages(rng, 5 * scale, 64)
    host, darena = arenas(rng, end)
    b = disjoint_batch(rng, sizes, 4, shuffle=shuffle)
    assert not rows_overlap(b)
    host_apply(host, slots, b)
    assert device_apply(darena, slots, b) == "disjoint"
    assert same(host, darena) == 0
    # the ordered kernel gives the same bytes on the same batch
    b2 = disjoint_batch(rng, sizes, 4, shuffle=shuffle)
    host_apply(host, slots, b2)
    assert device_apply(darena, slots, b2, kernel="ordered") == "ordered"
    assert same(host, darena) == 0


def test_overlapping_rows_never_take_the_disjoint_kernel(dev: Backend) -> None:
    rng = np.random.default_rng(3)
    slots, sizes, end = random_pages(rng, 3, 64)
    _, darena = arenas(rng, end)
    b = disjoint_batch(rng, sizes, 3, shuffle=True)
    from mmsb.batch import DeltaBatch
    from mmsb.delta import Delta

    # one extra row inside another row's bytes, last in the batch
    extra = Delta.range(int(b.page_ids[0]), b"\x01", int(b.offsets[0]))
    both = DeltaBatch.concat([b, DeltaBatch.from_deltas([extra])])
    assert not plan_rows(slots, both.page_ids, both.offsets, both.lengths).disjoint
    with pytest.raises(InvalidArgumentError, match="disjoint kernel"):
        device_apply(darena, slots, both, kernel="disjoint")
    assert device_apply(darena, slots, both) == "ordered"
    assert darena.to_host(int(slots[both.page_ids[0]] + both.offsets[0]), 1)[0] == 1


@pytest.mark.parametrize("threads", [1, 5, 32])
def test_long_sparse_and_dense_rows(dev: Backend, threads: int) -> None:
    """Rows longer than a block, so every thread's chunk and the mask prefix are used."""
    rng = np.random.default_rng(threads)
    slots, sizes, end = random_pages(rng, 3, 400)
    host, darena = arenas(rng, end, threads=threads)
    for kinds in ((2,), (1,), (0, 1, 2)):
        b = overlapping_batch(rng, sizes, 12, kinds=kinds, max_len=400)
        host_apply(host, slots, b)
        device_apply(darena, slots, b)
        assert same(host, darena) == 0


def test_device_columns_are_used_in_place(dev: Backend) -> None:
    rng = np.random.default_rng(11)
    slots, sizes, end = random_pages(rng, 4, 80)
    host, darena = arenas(rng, end)
    b = overlapping_batch(rng, sizes, 25)
    host_apply(host, slots, b)
    cols = [dev.cuda.to_device(np.ascontiguousarray(c)) for c in columns(b)]
    from mmsb.device.apply import apply_rows_device

    apply_rows_device(darena, slots, *cols)
    assert same(host, darena) == 0
    with pytest.raises(InvalidArgumentError, match="lengths"):
        bad = list(cols)
        bad[2] = dev.cuda.to_device(b.lengths.astype(np.int32))
        apply_rows_device(darena, slots, *bad)


def test_rows_past_the_arena_are_refused(dev: Backend) -> None:
    darena = DeviceArena(64, min_capacity=64)
    slots = np.array([0, 60], np.int64)
    z = np.zeros(1, np.int64)
    with pytest.raises(InvalidArgumentError, match="device arena"):
        from mmsb.device.apply import apply_rows_device

        apply_rows_device(darena, slots, np.array([1]), z, np.array([8]), np.zeros(1, np.uint8),
                          z, z - 1, np.zeros(8, np.uint8), np.zeros(0, np.uint8))  # fmt: skip


def test_crash_replay_from_a_checkpoint_copy(dev: Backend, scale: int) -> None:
    """A checkpoint is the device bytes copied to the host; a replay loads it into a new
    device arena and applies the later batches again: the result is the host's."""
    rng = np.random.default_rng(5)
    slots, sizes, end = random_pages(rng, 4 * scale, 96)
    host, darena = arenas(rng, end)
    log = [overlapping_batch(rng, sizes, 20 * scale) for _ in range(4)]
    checkpoint = None
    for i, b in enumerate(log):
        device_apply(darena, slots, b)
        host_apply(host, slots, b)
        if i == 1:
            checkpoint = darena.to_host(0, darena.capacity)
    assert checkpoint is not None
    darena.close()  # the crash: device memory is gone
    again = DeviceArena(end, min_capacity=1024, threads=4)
    again.from_host(0, checkpoint)
    for b in log[2:]:
        device_apply(again, slots, b)
    assert same(host, again) == 0


def test_payload_copies_back_while_applying(dev: Backend) -> None:
    rng = np.random.default_rng(2)
    darena = DeviceArena(256, min_capacity=256)
    payload = random_bytes(rng, 100)
    copy = HostCopy(darena, dev.cuda.to_device(payload))
    assert np.array_equal(copy.wait(), payload)


def test_empty_batch(dev: Backend) -> None:
    darena = DeviceArena(64, min_capacity=64)
    z = np.zeros(0, np.int64)
    from mmsb.device.apply import apply_rows_device

    u8 = np.zeros(0, np.uint8)
    assert apply_rows_device(darena, np.zeros(2, np.int64), z, z, z, u8, z, z, u8, u8) == "none"
