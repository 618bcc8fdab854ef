"""The bytes of a state's ``gpu`` and ``unified`` pages: in device memory, or hidden.

**Where the bytes are.** Every page, whatever its location, has a slot in the host arena's
address space (``State.slot``): allocation, relayout and replay follow one rule, a pure
function of the log, whatever hardware ran it. A state with a :class:`DevicePages`
(``State.dev``) keeps the bytes of its live device pages in one
:class:`~mmsb.device.arena.DeviceArena` per location (device memory for ``gpu``, managed
memory for ``unified``), at a *device slot* (``dslot``) given by that arena's own
allocator; their host slots hold zeros. Device slots are never logged: they are handed
out again, packed in page-id order, each time a state is attached (:func:`attach`), and a
relayout (GC compaction) moves only host slots, so a device page's bytes never move.

A state without one (``State.dev is None``: replayed states, snapshots, ``at()``, a
writer without a device or with ``cpu_fallback``) keeps every page's bytes in the host
arena at its slot, exactly as an all-host bus does: device pages replay into host memory
byte for byte, and the host kernels (the definition the device kernels are tested
against) rebuild them.

:class:`RemotePages` marks the page table of a live reader in another process. It maps
only the writer's host arena file, where a device page's slot holds zeros while the
writer runs it on a device, so its reads of ``gpu``/``unified`` pages raise
:class:`~mmsb.errors.DeviceUnavailableError` instead of returning those zeros (whether or
not the writer has a device: the rule must not depend on another process's hardware).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from mmsb.device.apply import apply_rows_device
from mmsb.device.arena import DeviceArena
from mmsb.engine import kernels
from mmsb.errors import DeviceUnavailableError
from mmsb.storage.rowcheck import aligned
from mmsb.types import LOCATIONS

if TYPE_CHECKING:
    from mmsb.batch import DeltaBatch

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]


class State(Protocol):
    """What this module uses of :class:`mmsb.storage.state.State` (which imports it)."""

    slot: I64
    size: I64
    loc: npt.NDArray[np.uint8]
    live: npt.NDArray[np.bool_]
    arena: Any
    next_page_id: int
    dev: Any

    def live_ids(self) -> I64: ...

    def np_dtype(self, pid: int) -> np.dtype[Any]: ...


_EMPTY = np.zeros(0, np.int64)
_NO_MASK = np.zeros(0, np.uint8)
DEVICE_CODES = (1, 2)  # LOCATIONS: cpu, gpu, unified
assert LOCATIONS[1:] == ("gpu", "unified")


def columns(batch: DeltaBatch) -> tuple[Any, ...]:
    """A batch's row columns and pools, in the apply kernels' order."""
    return (batch.page_ids, batch.offsets, batch.lengths, batch.kinds, batch.pstarts,
            batch.mstarts, batch.payload, batch.mask)  # fmt: skip


def _starts(lengths: I64) -> I64:
    out = np.zeros(lengths.size, np.int64)
    np.cumsum(lengths[:-1], out=out[1:])
    return out


def scatter(out: U8, at: I64, lengths: I64, part: U8) -> None:
    """Place the concatenated slices of ``part`` at ``out[at[i] : at[i] + lengths[i]]``
    (the host apply kernel, with one row per slice)."""
    k = int(lengths.size)
    kernels.apply_rows(out, at, np.arange(k, dtype=np.int64), np.zeros(k, np.int64), lengths,
                       np.zeros(k, np.uint8), _starts(lengths), np.zeros(k, np.int64), part,
                       _NO_MASK)  # fmt: skip


class _Slots:
    """First-fit allocator of one device arena (the host allocator's rule: gaps in
    address order, then the end). Volatile: rebuilt at each attach."""

    def __init__(self) -> None:
        self.end = 0
        self.gap_start = _EMPTY
        self.gap_len = _EMPTY

    def take(self, n: int, step: int) -> I64:
        out = np.empty(n, np.int64)
        filled = 0
        gs, gl = self.gap_start, self.gap_len
        usable = np.flatnonzero(gl // step) if gl.size else _EMPTY
        if usable.size:
            counts = gl[usable] // step
            cum = np.cumsum(counts)
            last = min(int(np.searchsorted(cum, n)), usable.size - 1)
            counts = counts[: last + 1].copy()
            counts[-1] -= max(int(cum[last]) - n, 0)
            used = usable[: last + 1]
            filled = int(counts.sum())
            within = np.arange(filled) - np.repeat(np.cumsum(counts) - counts, counts)
            out[:filled] = np.repeat(gs[used], counts) + within * step
            gs, gl = gs.copy(), gl.copy()
            gs[used] += counts * step
            gl[used] -= counts * step
            self.gap_start, self.gap_len = gs[gl > 0], gl[gl > 0]
        rest = n - filled
        out[filled:] = self.end + np.arange(rest, dtype=np.int64) * step
        self.end += rest * step
        return out

    def give(self, starts: I64, lengths: I64) -> None:
        s = np.concatenate((self.gap_start, starts))
        e = s + np.concatenate((self.gap_len, lengths))
        order = np.argsort(s, kind="stable")
        s, e = s[order], e[order]
        first = np.ones(s.size, bool)
        first[1:] = s[1:] != e[:-1]  # freed slots never overlap: touching runs coalesce
        idx = np.flatnonzero(first)
        s, e = s[idx], np.maximum.reduceat(e, idx)
        if s.size and int(e[-1]) == self.end:  # a gap that reaches the end moves the end
            self.end = int(s[-1])
            s, e = s[:-1], e[:-1]
        self.gap_start, self.gap_len = s, e - s


class DevicePages:
    """The device side of a :class:`~mmsb.storage.state.State` (see the module doc).
    ``count`` is the number of live device pages; ``arenas`` and their allocators are
    made on first use, one per location code."""

    remote = False

    def __init__(self, state: State) -> None:
        self.state = state
        self.arenas: dict[int, DeviceArena] = {}
        self.slots: dict[int, _Slots] = {}
        self.dslot = np.zeros(max(state.slot.size, 1), np.int64)
        self.count = 0

    def arena(self, loc: int) -> DeviceArena:
        a = self.arenas.get(loc)
        if a is None:
            a = DeviceArena(0, location=LOCATIONS[loc])
            self.arenas[loc], self.slots[loc] = a, _Slots()
        return a

    def _fit(self, n: int) -> None:
        if self.dslot.size < n:
            grown = np.zeros(max(n, 2 * self.dslot.size), np.int64)
            grown[: self.dslot.size] = self.dslot
            self.dslot = grown

    # -- allocation (called by State) -------------------------------------------------------

    def reserve(self, loc: int, n: int, size: int) -> None:
        """Room for ``n`` more pages of ``size`` bytes in ``loc``'s arena, made before the
        frame that creates them is logged (a failed growth must come before, never after)."""
        a = self.arena(loc)
        a.ensure(self.slots[loc].end + n * int(aligned(size)))

    def created(self, first: int, n: int, step: int, loc: int) -> None:
        if loc == 0:
            return
        a = self.arena(loc)
        slots = self.slots[loc]
        starts = slots.take(n, step)
        a.ensure(slots.end)
        self._fit(first + n)
        self.dslot[first : first + n] = starts
        self.count += n

    def deleted(self, ids: I64) -> None:
        locs = self.state.loc[ids]
        for code in DEVICE_CODES:
            rows = ids[locs == code]
            if rows.size:
                lens = aligned(self.state.size[rows]).astype(np.int64)
                self.arenas[code].fill(self.dslot[rows], lens)  # free bytes read as zeros
                self.slots[code].give(self.dslot[rows], lens)
                self.count -= int(rows.size)

    def host_moves(self, moves: I64) -> I64:
        """The relayout moves whose bytes are in the host arena (a device page's host slot
        holds zeros, and its bytes stay at their device slot)."""
        keep = self.state.loc[moves[0]] == 0
        return moves if keep.all() else moves[:, keep]

    # -- bytes ------------------------------------------------------------------------------

    def read(self, pid: int) -> U8:
        st = self.state
        return self.arenas[int(st.loc[pid])].to_host(int(self.dslot[pid]), int(st.size[pid]))

    def write(self, pid: int, offset: int, payload: U8) -> None:
        loc = int(self.state.loc[pid])
        self.arenas[loc].from_host(int(self.dslot[pid]) + offset, payload)

    def gather(self, ids: I64, offsets: I64 | None, lengths: I64, out: U8) -> None:
        """Bytes ``[offsets, offsets + lengths)`` of pages ``ids`` (from each page's start
        when ``offsets`` is None), concatenated into ``out`` in the order given."""
        st = self.state
        locs = st.loc[ids]
        off = 0 if offsets is None else offsets
        if not locs.any():
            kernels.gather_slots(st.arena.buf, st.slot[ids] + off, lengths, out)
            return
        at = _starts(lengths)
        for code in (0, *DEVICE_CODES):
            rows = np.flatnonzero(locs == code)
            if rows.size == 0:
                continue
            starts = (st.slot if code == 0 else self.dslot)[ids[rows]]
            if offsets is not None:
                starts = starts + offsets[rows]
            ln = np.ascontiguousarray(lengths[rows], np.int64)
            if code == 0:
                part = np.empty(int(ln.sum()), np.uint8)
                kernels.gather_slots(st.arena.buf, starts, ln, part)
            else:
                part = self.arenas[code].gather(starts, ln)
            scatter(out, at[rows], ln, part)

    def apply(self, cols: tuple[Any, ...], lo: int, hi: int) -> None:
        """Rows ``lo .. hi - 1`` of batch columns ``cols`` (page ids, offsets, lengths,
        kinds, pstarts, mstarts, payload, mask): host rows by the host kernel, each device
        arena's rows by :func:`~mmsb.device.apply.apply_rows_device`, in row order within
        each (rows of different locations touch different pages)."""
        st = self.state
        page_ids = cols[0]
        locs = st.loc[page_ids[lo:hi]]
        if not locs.any():
            kernels.apply_rows_in(_EMPTY, lo, hi, False, st.arena.buf, st.slot, *cols)
            return
        host = np.flatnonzero(locs == 0) + lo
        if host.size:
            kernels.apply_rows_in(host, 0, host.size, True, st.arena.buf, st.slot, *cols)
        for code in DEVICE_CODES:
            rows = np.flatnonzero(locs == code) + lo
            if rows.size:
                pid, off, ln, kind, ps, ms = (c[rows] for c in cols[:6])
                apply_rows_device(self.arenas[code], self.dslot, pid, off, ln, kind, ps, ms,
                                  cols[6], cols[7])  # fmt: skip

    def apply_batch(self, batch: DeltaBatch) -> None:
        self.apply(columns(batch), 0, len(batch))

    def device_rows(self, page_ids: I64) -> bool:
        """Whether any of ``page_ids`` is a device page."""
        return bool(self.state.loc[page_ids].any())

    def image(self, end: int) -> U8:
        """The host arena's bytes ``[0, end)`` with every device page's bytes at its host
        slot: what an all-host state holds (checkpoints, copies)."""
        out: U8 = np.array(self.state.arena.buf[:end])
        self.place(out)
        return out

    def place(self, out: U8) -> None:
        """Write every live device page's bytes at its host slot of ``out``."""
        st = self.state
        if not self.count:
            return
        ids = st.live_ids()
        ids = ids[st.loc[ids] != 0]
        lengths = st.size[ids]
        part = np.empty(int(lengths.sum()), np.uint8)
        self.gather(ids, None, lengths, part)
        scatter(out, st.slot[ids], lengths, part)

    def write_back(self) -> None:
        """Copy every device page's bytes to its host slot (clean shutdown: device memory
        is lost when the process ends, so the arena file must hold them)."""
        self.place(self.state.arena.buf)

    def view(self, pid: int) -> Any:
        st = self.state
        a = self.arenas[int(st.loc[pid])]
        return a.view(int(self.dslot[pid]), int(st.size[pid]), st.np_dtype(pid))

    def synchronize(self) -> None:
        for a in self.arenas.values():
            a.synchronize()


class RemotePages(DevicePages):
    """A live reader's table over another process's arena file (see the module doc):
    structural changes are the host's, byte reads of device pages raise."""

    remote = True

    def _refuse(self, pid: int) -> DeviceUnavailableError:
        loc = LOCATIONS[int(self.state.loc[pid])]
        return DeviceUnavailableError(
            f"page {pid} is a {loc} page: a live reader in another process cannot read its "
            "bytes (the writer keeps them in its device memory, not in the arena file); "
            "read it in the writer process, or from bus.at(lsn) of an earlier commit, or "
            "after the writer closed the bus"
        )

    def created(self, first: int, n: int, step: int, loc: int) -> None:
        pass

    def deleted(self, ids: I64) -> None:
        pass

    def host_moves(self, moves: I64) -> I64:
        return moves

    def read(self, pid: int) -> U8:
        raise self._refuse(pid)

    def gather(self, ids: I64, offsets: I64 | None, lengths: I64, out: U8) -> None:
        hit = np.flatnonzero(self.state.loc[ids] != 0)
        if hit.size:
            raise self._refuse(int(ids[hit[0]]))
        kernels.gather_slots(self.state.arena.buf, self.state.slot[ids] + (
            0 if offsets is None else offsets), lengths, out)  # fmt: skip

    def place(self, out: U8) -> None:
        ids = self.state.live_ids()
        hit = ids[self.state.loc[ids] != 0]
        if hit.size:
            raise self._refuse(int(hit[0]))

    def view(self, pid: int) -> Any:
        raise self._refuse(pid)


def device_pages(state: State) -> I64:
    """Ids of the live pages whose location is ``gpu`` or ``unified``."""
    n = state.next_page_id
    if not state.loc[:n].any():
        return _EMPTY
    return np.flatnonzero(state.live[:n] & (state.loc[:n] != 0)).astype(np.int64)


def attach(state: State) -> DevicePages:
    """Give ``state`` a :class:`DevicePages` (the device backend must be available), moving
    the bytes of its live device pages from their host slots to device slots packed in
    page-id order and zeroing the host slots. Idempotent."""
    dev = state.dev
    if isinstance(dev, DevicePages) and not dev.remote:
        return dev
    dev = DevicePages(state)
    ids = device_pages(state)
    buf = state.arena.buf
    for code in DEVICE_CODES:
        rows = ids[state.loc[ids] == code]
        if rows.size == 0:
            continue
        a = dev.arena(code)
        steps = aligned(state.size[rows]).astype(np.int64)
        starts = _starts(steps)
        dev.slots[code].end = int(steps.sum())
        a.ensure(dev.slots[code].end)
        packed = np.zeros(dev.slots[code].end, np.uint8)
        kernels.gather_slots(buf, state.slot[rows], steps, packed)
        a.from_host(0, packed)
        dev._fit(int(rows.max()) + 1)
        dev.dslot[rows] = starts
        dev.count += int(rows.size)
    state.dev = dev  # from here on the host slots are not read: zero them
    if ids.size:
        kernels.fill_slots(buf, state.slot[ids], aligned(state.size[ids]).astype(np.int64),
                           np.uint8(0))  # fmt: skip
    return dev


def hide(state: State) -> None:
    """Mark ``state`` as a live reader's table (see :class:`RemotePages`)."""
    state.dev = RemotePages(state)
