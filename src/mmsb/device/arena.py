"""Page bytes in device memory: :class:`DeviceArena`, the device twin of the host arena.

Like :class:`mmsb.storage.arena.MemoryArena` it is one flat byte buffer addressed by byte
slot (the page table's ``slot`` column), with ``buf``, ``capacity``, ``ensure``, ``clear``,
``shrink``, ``flush`` and ``close``, and the same invariant: every byte that belongs to no
live page is zero (growth adds zeros, :meth:`fill` zeroes a deleted page's slot). Growth
allocates the larger buffer and copies the old bytes device to device.

``location="gpu"`` is ordinary device memory; ``location="unified"`` is CUDA managed
memory, which the host may also read once the arena's stream is idle (under the simulator,
which has no managed memory, it is a host-mapped array). All work on an arena is queued on
its one stream, so applies, copies and gathers happen in the order they were asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.device.probe import Backend, backend
from mmsb.errors import InvalidArgumentError, StorageFullError

MIN_CAPACITY = 1 << 20
MAX_STEP = 1 << 30  # as the host arena: double, but by at most 1 GiB at a time
U8 = npt.NDArray[np.uint8]


def grown_capacity(current: int, needed: int, minimum: int = MIN_CAPACITY) -> int:
    """The host arena's growth rule (``mmsb.storage.arena.grown_capacity``), in 8-byte
    units so float views of the whole buffer stay possible."""
    cap = max(current, minimum, 8)
    while cap < needed:
        cap += min(cap, MAX_STEP)
    return (cap + 7) // 8 * 8


def kernels() -> Any:
    """The kernels module (imports numba.cuda: call only with a backend in hand)."""
    from mmsb.device import kernels as k

    return k


def is_device_array(a: Any) -> bool:
    """Whether ``a`` is device memory a kernel can take as it is (a numba device array,
    a CuPy array or anything else exposing ``__cuda_array_interface__``)."""
    if hasattr(a, "__cuda_array_interface__"):
        return True
    return type(a).__name__ == "FakeCUDAArray"  # the simulator's device arrays


class DeviceArena:
    """Arena bytes in device (``gpu``) or managed (``unified``) memory."""

    def __init__(
        self,
        capacity: int = 0,
        *,
        location: str = "gpu",
        min_capacity: int = MIN_CAPACITY,
        threads: int | None = None,
    ) -> None:
        if location not in ("gpu", "unified"):
            raise InvalidArgumentError(f"a device arena is 'gpu' or 'unified', not {location!r}")
        self.backend: Backend = backend()
        self.cuda = self.backend.cuda
        self.location = location
        self.min_capacity = min_capacity
        default = 8 if self.backend.simulator else 128
        self.threads = threads if threads is not None else default
        if not 1 <= self.threads <= 256:
            raise InvalidArgumentError(f"threads per block must be 1..256, got {self.threads}")
        self.stream = self.cuda.stream()
        self._host: Any = None  # unified: the managed allocation, host side
        self.buf: Any = self._alloc(grown_capacity(0, capacity, min_capacity))
        self._zero(self.buf, 0, self.capacity)

    @property
    def capacity(self) -> int:
        return int(self.buf.size)

    @property
    def simulator(self) -> bool:
        return self.backend.simulator

    # -- memory ------------------------------------------------------------------------------

    def _alloc(self, size: int) -> Any:
        """A device array of ``size`` bytes (not zeroed). For ``unified``, a device array
        over managed memory (numba's managed arrays are numpy arrays whose slices lose
        their device side, so kernels get the device view); ``_host`` keeps the managed
        allocation, which is what the host reads."""
        cuda = self.cuda
        try:
            if self.location == "gpu":
                return cuda.device_array(size, np.uint8, stream=self.stream)
            if self.simulator:  # no managed memory: a mapped array stands in
                self._host = cuda.mapped_array(size, np.uint8)
                return self._host
            self._host = cuda.managed_array(size, np.uint8)  # pragma: no cover
            return cuda.as_cuda_array(self._host)  # pragma: no cover
        except Exception as exc:  # CudaAPIError (out of memory) and the like
            raise StorageFullError(
                f"cannot allocate {size} bytes of {self.location} memory on "
                f"{self.backend.describe()}: {exc}"
            ) from exc

    def _zero(self, buf: Any, lo: int, hi: int) -> None:
        if hi <= lo:
            return
        if self.simulator:
            buf[lo:hi].copy_to_device(np.zeros(hi - lo, np.uint8), stream=self.stream)
            return
        driver: Any = importlib.import_module("numba.cuda.cudadrv.driver")  # pragma: no cover
        driver.device_memset(buf[lo:hi], 0, hi - lo, self.stream)  # pragma: no cover

    def _replace(self, size: int, keep: int) -> None:
        """A new buffer of ``size`` bytes holding this one's first ``keep``, zeros after."""
        new = self._alloc(size)
        if keep:
            new[:keep].copy_to_device(self.buf[:keep], stream=self.stream)
        self._zero(new, keep, size)
        self.buf = new

    def ensure(self, needed: int) -> None:
        """Room for ``needed`` bytes (a failed growth leaves the arena as it was)."""
        if needed > self.capacity:
            self._replace(grown_capacity(self.capacity, needed, self.min_capacity), self.capacity)

    def clear(self, needed: int) -> None:
        """All zeros with room for ``needed`` bytes (recovery rebuilds from here)."""
        self.buf = self._alloc(grown_capacity(0, max(needed, 1), self.min_capacity))
        self._zero(self.buf, 0, self.capacity)

    def shrink(self, capacity: int) -> None:
        """Keep only the first ``capacity`` bytes (callers checked the rest is free)."""
        size = grown_capacity(0, capacity, self.min_capacity)
        if size < self.capacity:
            self._replace(size, size)

    def host_view(self) -> Any:
        """``unified`` only: the arena's bytes as a host array, no copy (waits for the
        stream first; the host must not read while device work is queued)."""
        if self.location != "unified":
            raise InvalidArgumentError("only a unified arena's bytes can be read in place")
        self.synchronize()
        host = self._host
        return getattr(host, "_ary", host)  # the simulator's stand-in wraps a numpy array

    def synchronize(self) -> None:
        """Wait until everything queued on the arena's stream is done."""
        self.stream.synchronize()

    def flush(self) -> None:
        self.synchronize()

    def close(self) -> None:
        self.synchronize()
        self.buf = self.cuda.device_array(0, np.uint8)

    # -- copies between host and device ------------------------------------------------------

    def _span(self, start: int, length: int) -> tuple[int, int]:
        start, length = int(start), int(length)
        if start < 0 or length < 0 or start + length > self.capacity:
            raise InvalidArgumentError(
                f"bytes [{start}, {start + length}) are outside the device arena "
                f"({self.capacity} bytes)"
            )
        return start, start + length

    def to_host(self, start: int, length: int, out: U8 | None = None) -> U8:
        """A host copy of ``[start, start + length)`` (into ``out`` when given)."""
        lo, hi = self._span(start, length)
        host = np.empty(hi - lo, np.uint8) if out is None else out
        if hi > lo:
            self.buf[lo:hi].copy_to_host(host, stream=self.stream)
        self.synchronize()
        return host

    def from_host(self, start: int, data: Any) -> None:
        """Write host bytes at ``start`` (checkpoint load, recovery, tests)."""
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        lo, hi = self._span(start, raw.size)
        if hi > lo:
            self.buf[lo:hi].copy_to_device(raw, stream=self.stream)
        self.synchronize()

    def view(self, start: int, nbytes: int, dtype: Any = np.uint8) -> Any:
        """A zero-copy device array over ``[start, start + nbytes)`` with ``dtype`` (one
        page's bytes: ``bus.device_view``). On a device it exposes
        ``__cuda_array_interface__``; writes through it bypass the log."""
        dt = np.dtype(dtype)
        lo, hi = self._span(start, nbytes)
        if lo % dt.itemsize or (hi - lo) % dt.itemsize:
            raise InvalidArgumentError(
                f"bytes [{lo}, {hi}) are not whole {dt.name} items at an aligned address"
            )
        self.synchronize()
        return self.buf[lo:hi].view(dt)

    # -- kernels over slots ------------------------------------------------------------------

    def _blocks(self, n: int) -> int:
        return max(1, min(int(n), 1 << 16))

    def fill(self, starts: Any, lengths: Any, value: int = 0) -> None:
        """Set the bytes of every slice ``[starts[g], starts[g] + lengths[g])`` to
        ``value`` (zeroing deleted pages' slots)."""
        st = np.ascontiguousarray(starts, np.int64)
        ln = np.ascontiguousarray(lengths, np.int64)
        if st.size == 0:
            return
        self._span(int(st.min()), 0)
        self._span(0, int((st + ln).max()))
        cuda, s = self.cuda, self.stream
        kernels().fill_k[self._blocks(st.size), self.threads, s](
            self.buf, cuda.to_device(st, stream=s), cuda.to_device(ln, stream=s), np.uint8(value)
        )
        self.synchronize()

    def gather(self, starts: Any, lengths: Any) -> U8:
        """The slices ``[starts[g], starts[g] + lengths[g])`` concatenated, on the host
        (``read_many``): one kernel into a device buffer, then one copy."""
        st = np.ascontiguousarray(starts, np.int64)
        ln = np.ascontiguousarray(lengths, np.int64)
        total = int(ln.sum())
        if st.size == 0 or total == 0:
            return np.zeros(total, np.uint8)
        self._span(int(st.min()), 0)
        self._span(0, int((st + ln).max()))
        ost = np.zeros(st.size, np.int64)
        np.cumsum(ln[:-1], out=ost[1:])
        cuda, s = self.cuda, self.stream
        out = cuda.device_array(total, np.uint8, stream=s)
        kernels().gather_k[self._blocks(st.size), self.threads, s](
            self.buf, cuda.to_device(st, stream=s), cuda.to_device(ln, stream=s),
            cuda.to_device(ost, stream=s), out,
        )  # fmt: skip
        host = np.empty(total, np.uint8)
        out.copy_to_host(host, stream=s)
        self.synchronize()
        return host
