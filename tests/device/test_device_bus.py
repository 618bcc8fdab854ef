"""Device pages through the bus, against the host path as the oracle.

Every workload runs twice: on a bus whose ``gpu``/``unified`` pages live in device arenas
(the simulator), and on a bus opened with no device and ``cpu_fallback=True``, where the
same pages (same locations, so the same page table) live in host memory and are changed by
the host kernels. Page by page the two must agree: bytes, epochs, page info, history,
``at()``, ``state_hash``, through checkpoints, clean reopens, crashes and relayouts.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.delta import Delta
from mmsb.device import Backend
from mmsb.errors import BusClosedError, DeviceUnavailableError, InvalidArgumentError
from mmsb.semiring import MAX_PLUS, MIN_PLUS, SUM_PRODUCT
from mmsb.storage import devicepages
from mmsb.storage.devicepages import DevicePages
from mmsb.types import LOCATIONS

pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")
SIM = "NUMBA_ENABLE_CUDASIM"


@contextmanager
def no_device() -> Iterator[None]:
    """No device backend while inside (the simulator counts only while asked for)."""
    before = os.environ.pop(SIM, None)
    try:
        yield
    finally:
        if before is not None:
            os.environ[SIM] = before


def clock() -> Callable[[], int]:
    ticks = itertools.count(1_700_000_000_000_000_000, 1000)
    return lambda: next(ticks)


class Pair:
    """The same calls on a device bus (``d``) and on a host-only bus (``h``)."""

    def __init__(self, root: Path, **options: Any) -> None:
        self.root, self.options = root, options
        self.d: mmsb.Bus
        self.h: mmsb.Bus
        self.open()

    def open(self) -> None:
        self.d = mmsb.open(self.root / "dev", clock=clock(), **self.options)
        with no_device():
            self.h = mmsb.open(self.root / "host", cpu_fallback=True, clock=clock(),
                               **self.options)  # fmt: skip

    def both(self, fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
        """``fn(bus, *args)`` on each bus."""
        a = fn(self.d, *args)
        with no_device():
            b = fn(self.h, *args)
        return a, b

    def same(self, fn: Callable[..., Any], *args: Any) -> Any:
        a, b = self.both(fn, *args)
        assert _plain(a) == _plain(b)
        return a

    def close(self) -> None:
        self.d.close()
        self.h.close()


def _plain(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.tobytes())
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def check_same(p: Pair) -> None:
    """Page by page: ids, info (epoch, location, dtype, ...), bytes; the whole-state hash;
    and the device bus really holds its device pages on the device."""
    ids = p.same(lambda b: b.page_ids())
    for pid in ids.tolist():
        p.same(lambda b, q: (b.page(q), b.read(q)), pid)
    p.same(lambda b: b.state_hash())
    st = p.d._state
    assert st is not None
    live = devicepages.device_pages(st)
    if live.size:
        assert isinstance(st.dev, DevicePages) and not st.dev.remote
        assert st.dev.count == live.size
        for pid in live.tolist():  # the host slot of a device page holds zeros
            s, n = int(st.slot[pid]), int(st.size[pid])
            assert not st.arena.buf[s : s + n].any()
    hst = p.h._state
    assert hst is not None and hst.dev is None


def random_batch(rng: np.random.Generator, bus: mmsb.Bus, rows: int) -> DeltaBatch:
    """Rows over random live pages (host and device mixed), many overlapping, of all
    three kinds, some covering a whole page."""
    table = bus.page_table()
    deltas = []
    for _ in range(rows):
        r = table[int(rng.integers(0, table.size))]
        pid, size = int(r["id"]), int(r["size"])
        if rng.random() < 0.15:
            off, n = 0, size
        else:
            off = int(rng.integers(0, size))
            n = int(rng.integers(1, min(24, size - off) + 1))
        data = rng.integers(0, 256, n).astype(np.uint8)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            deltas.append(Delta.range(pid, data, off))
            continue
        mask = (rng.random(n) < 0.5).astype(np.uint8)
        mask[int(rng.integers(0, n))] = 1
        if kind == 1:
            deltas.append(Delta.dense(pid, mask, data, off))
        else:
            deltas.append(Delta.sparse(pid, mask, data[: int(mask.sum())], off))
    return DeltaBatch.from_deltas(deltas)


def step(rng: np.random.Generator, p: Pair, i: int) -> None:
    """One random change, made on both buses."""
    r = rng.random()
    if i < 3 or r < 0.2:
        n = int(rng.integers(1, 4))
        size = 8 * int(rng.integers(1, 9))
        dtype = str(rng.choice(["uint8", "float32", "float64", "int32"]))
        loc = str(rng.choice(LOCATIONS))
        p.same(lambda b: b.create_pages(n, size, dtype=dtype, location=loc))
    elif r < 0.55:
        batch = random_batch(rng, p.d, int(rng.integers(1, 12)))
        workers = int(rng.integers(1, 3))
        p.same(lambda b: b.apply_batch(batch, workers=workers).lsn)
    elif r < 0.7:
        ids = p.d.page_ids()
        pid = int(rng.choice(ids))
        size = p.d.page(pid).size
        off = int(rng.integers(0, size))
        data = rng.integers(0, 256, int(rng.integers(1, size - off + 1))).astype(np.uint8)
        p.same(lambda b: b.write(pid, data, offset=off))
    elif r < 0.8 and len(p.d) > 3:
        ids = p.d.page_ids()
        gone = rng.choice(ids, size=int(rng.integers(1, 3)), replace=False).tolist()
        p.same(lambda b: b.delete_pages(gone))
    elif r < 0.9:
        p.same(lambda b: b.checkpoint().lsn)
    else:
        p.same(lambda b: _compact(b))


def _compact(bus: mmsb.Bus) -> int:
    """GC steps with compaction forced (every free byte counts); pages moved."""
    bus._collector.min_free_bytes = 0
    bus._collector.min_free_fraction = 0.0
    return sum(bus.gc(50.0).pages_moved for _ in range(4))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_workload_matches_the_host_bus(dev: Backend, tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = Pair(tmp_path)
    lsns = []
    for i in range(30):
        step(rng, p, i)
        lsns.append(p.d.lsn)
        if i % 5 == 4:
            check_same(p)
    check_same(p)
    p.same(lambda b: b.read_many([int(x) for x in b.page_ids()[:1]] * 3))
    for lsn in rng.choice(lsns, size=4).tolist():  # replayed states: host-only, identical
        p.same(lambda b, at: _snapshot(b.at(at)), lsn)
    p.same(lambda b: _snapshot(b.at()))
    for pid in p.d.page_ids().tolist():
        p.same(lambda b, q: list(b.history(q)), pid)
    assert p.same(lambda b: b.verify().ok)
    p.close()
    p.open()  # clean reopen: device pages come back from the arena file
    check_same(p)
    step(rng, p, 100)
    step(rng, p, 101)
    batch = random_batch(rng, p.d, 8)
    p.same(lambda b: b.apply_batch(batch).lsn)
    p.both(lambda b: b.abandon())  # a crash: the next open replays into the device
    p.open()
    check_same(p)
    p.close()


def _snapshot(snap: Any) -> Any:
    with snap:
        return [(pid, snap.page(pid), snap.read(pid)) for pid in snap.page_ids().tolist()] + [
            snap.state_hash()
        ]


def test_relayout_moves_host_slots_only(dev: Backend, tmp_path: Path) -> None:
    p = Pair(tmp_path)
    ids = p.same(lambda b: b.create_pages(12, 64, location="gpu"))
    host = p.same(lambda b: b.create_pages(12, 64))
    for pid in itertools.chain(ids.tolist(), host.tolist()):
        p.same(lambda b, q: b.write(q, np.full(64, q, np.uint8)), pid)
    p.same(lambda b: b.delete_pages(ids[:6].tolist() + host[:6].tolist()))
    st = p.d._state
    assert st is not None and st.dev is not None
    before = st.dev.dslot[ids[6:]].copy()
    moved = p.same(_compact)
    assert moved > 0  # pages moved down, device ones among them (their host slots)
    assert np.array_equal(st.dev.dslot[ids[6:]], before)  # device bytes never moved
    check_same(p)
    p.both(lambda b: b.abandon())
    p.open()  # replay of the logged relayout
    check_same(p)
    p.close()


@pytest.mark.parametrize("location", ["gpu", "unified"])
def test_semiring_ticks_run_on_the_device(dev: Backend, tmp_path: Path, location: str) -> None:
    """A plan whose pages are all on one device arena runs on the device; the derived
    batch, logged and applied, matches the host pass tick after tick."""
    rng = np.random.default_rng(5)
    p = Pair(tmp_path)
    for dtype, sr in (("float32", MIN_PLUS), ("float64", SUM_PRODUCT), ("float32", MAX_PLUS)):
        xs = p.same(lambda b, t: b.create_pages(3, 32, dtype=t, location=location), dtype)
        ys = p.same(lambda b, t: b.create_pages(2, 32, dtype=t, location=location), dtype)
        w = rng.random(3).tolist()
        p.same(lambda b, c, ps, r, ws: b.derive_semiring(c, ps, r, weights=ws), int(ys[0]),
               xs.tolist(), sr, w)  # fmt: skip
        two = [int(ys[0]), int(xs[2])]
        p.same(lambda b, c, ps, r: b.derive_semiring(c, ps, r), int(ys[1]), two, sr)
    ran = []
    import mmsb.graph.devicepass as dp

    real = dp._device_pass

    def spy(*a: Any, **k: Any) -> Any:
        ran.append(1)
        return real(*a, **k)

    dp._device_pass = spy
    try:
        for t in range(5):
            batch = random_batch(rng, p.d, 6)
            p.same(_tick, batch)
            if t % 2:
                p.same(lambda b: _tick(b, None))
            check_same(p)
    finally:
        dp._device_pass = real
    assert ran  # the device pass ran
    p.both(lambda b: b.abandon())
    p.open()
    check_same(p)
    p.close()


def _tick(bus: mmsb.Bus, batch: DeltaBatch | None) -> Any:
    r = bus.tick(batch)
    return (r.lsn, r.input_deltas, r.derived_deltas, r.pages_recomputed, r.pages_changed)


def test_mixed_plans_and_python_derivations(dev: Backend, tmp_path: Path) -> None:
    """Python functions and plans over host and device pages run on the host over a copy
    of the plan's pages; the results are the host bus's."""
    rng = np.random.default_rng(9)
    p = Pair(tmp_path)
    g = p.same(lambda b: b.create_pages(2, 32, dtype="float32", location="gpu"))
    c = p.same(lambda b: b.create_pages(2, 32, dtype="float32"))
    u = p.same(lambda b: b.create_page(32, dtype="float32", location="unified"))
    p.same(lambda b: b.derive(int(c[1]), lambda x, y: x * 2 + y, [int(g[0]), int(c[0])]))
    p.same(lambda b: b.derive(u, lambda x: x - 1, [int(g[1])]))
    p.same(lambda b: b.derive_semiring(int(g[1]), [int(g[0]), int(c[1])], SUM_PRODUCT))
    for _ in range(4):
        batch = random_batch(rng, p.d, 5)
        p.same(_tick, batch)
        check_same(p)
    p.close()


def test_a_device_failure_after_the_frame_is_logged_closes_the_bus(
    dev: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Pair(tmp_path)
    pid = p.same(lambda b: b.create_page(64, location="gpu"))
    p.same(lambda b: b.write(pid, b"before"))
    batch = DeltaBatch.from_deltas([Delta.range(pid, b"logged", 8)])

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("device lost")

    monkeypatch.setattr(devicepages, "apply_rows_device", boom)
    with pytest.raises(RuntimeError, match="device lost"):
        p.d.apply_batch(batch)
    with pytest.raises(BusClosedError):
        p.d.read(pid)
    monkeypatch.undo()
    with no_device():
        p.h.apply_batch(batch)
    p.d = mmsb.open(tmp_path / "dev")  # the frame was logged: recovery applies it
    assert p.d.recovery.mode == "replay"
    check_same(p)
    p.close()


def test_device_view_and_reads(dev: Backend, tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        g = bus.create_page(32, dtype="float32", location="gpu")
        c = bus.create_page(32, dtype="float32")
        bus.write(g, np.arange(8, dtype=np.float32))
        view = bus.device_view(g)
        assert view.dtype == np.float32 and view.shape == (8,)
        assert np.array_equal(view.copy_to_host(), bus.read(g))
        if not dev.simulator:
            assert "data" in view.__cuda_array_interface__
        bus.write(g, np.array([7.5], np.float32), offset=4)
        assert view.copy_to_host()[1] == 7.5  # a view, not a copy
        assert bus.page(g).location == "gpu"
        with pytest.raises(InvalidArgumentError, match="cpu page"):
            bus.device_view(c)
        with bus.at() as snap, pytest.raises(DeviceUnavailableError, match="host memory"):
            snap.device_view(g)
        assert bus.read_many([g, g]).tolist() == [bus.read(g).tolist()] * 2


def test_snapshots_keep_device_pages(dev: Backend, tmp_path: Path) -> None:
    with mmsb.open(tmp_path / "b") as bus:
        g = bus.create_page(16, location="gpu")
        bus.write(g, b"pinned")
        with bus.snapshot() as snap:
            bus.write(g, b"later!")
            assert bytes(snap.read(g)[:6]) == b"pinned"  # its before-image came from the device
        assert bytes(bus.read(g)[:6]) == b"later!"


def test_without_a_device(tmp_path: Path) -> None:
    with (
        no_device(),
        mmsb.open(tmp_path / "b") as bus,
        pytest.raises(DeviceUnavailableError, match=r"pip install 'mmsb\[gpu\]'.*cpu_fallback"),
    ):
        bus.create_page(8, location="gpu")
    with no_device(), mmsb.open(tmp_path / "c", cpu_fallback=True) as bus:
        pid = bus.create_page(8, location="unified")
        assert bus._state is not None and bus._state.dev is None
        with pytest.raises(DeviceUnavailableError):
            bus.device_view(pid)


def test_a_live_reader_in_another_process_cannot_read_device_pages(
    dev: Backend, tmp_path: Path
) -> None:
    path = tmp_path / "b"
    with mmsb.open(path) as bus:
        g = bus.create_page(16, location="gpu")
        c = bus.create_page(16)
        bus.write(g, b"device bytes")
        bus.write(c, b"host bytes")
        code = f"""
            import mmsb
            from mmsb.errors import DeviceUnavailableError
            with mmsb.open({str(path)!r}, readonly=True) as r:
                print(bytes(r.read({c})[:10]).decode())
                for f in (lambda: r.read({g}), lambda: r.read_many([{g}]), r.state_hash,
                          lambda: r.at().read({c})):
                    try:
                        f()
                        print("READ")
                    except DeviceUnavailableError as exc:
                        print("refused", "live reader" in str(exc))
                print(bytes(r.at(r.lsn - 1).read({g})[:6]))
        """
        env = {k: v for k, v in os.environ.items() if k != SIM}
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                             text=True, env=env, timeout=300)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert out.stdout.split("\n")[:5] == ["host bytes", *["refused True"] * 4]
        assert out.stdout.split("\n")[5] == "b'device'"
    # after a clean close the arena file holds the device pages' bytes: a reader opened
    # with no writer replays in process memory and reads them
    with no_device(), mmsb.open(path, readonly=True) as r:
        assert bytes(r.read(g)[:12]) == b"device bytes"


def test_a_failed_tick_puts_device_bytes_back(dev: Backend, tmp_path: Path) -> None:
    """A tick applies its input batch ahead of its frame; when a derivation raises, the
    old bytes go back (to the device for device pages) and nothing is logged."""
    p = Pair(tmp_path)
    g = p.same(lambda b: b.create_pages(2, 16, location="gpu"))
    c = p.same(lambda b: b.create_page(16))
    p.same(lambda b: b.write(int(g[0]), b"0123456789abcdef"))
    fail = [False]

    def fn(x: Any) -> Any:
        if fail[0]:
            raise ValueError("no")
        return x[::-1].copy()

    p.same(lambda b: b.derive(c, fn, [int(g[0])]))
    p.same(lambda b: _tick(b, None))
    fail[0] = True
    batch = DeltaBatch.from_deltas([Delta.range(int(g[0]), b"XXXX", 2), Delta.range(c, b"YY", 0),
                                    Delta.range(int(g[1]), b"ZZ", 14)])  # fmt: skip
    lsn = p.same(lambda b: b.lsn)
    a, h = p.both(lambda b: _raises(lambda: b.tick(batch)))
    assert a == h == "PropagationError"
    assert p.same(lambda b: b.lsn) == lsn
    check_same(p)
    assert bytes(p.d.read(int(g[0]))) == b"0123456789abcdef"
    fail[0] = False
    p.same(lambda b: _tick(b, batch))
    check_same(p)
    p.close()


def _raises(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__
    return "none"
