"""Model-based tests: random operation sequences on a real bus against the dict model.

A hypothesis state machine drives a bus on disk and ``naive.Model`` with the same page
creations, deletions and delta batches, interleaved with checkpoints, clean reopens,
simulated crashes (the process keeps running but the bus is dropped without its
clean-shutdown file), compaction and read-only opens. After every step the bus must equal
the model; time travel to earlier LSNs must give back exactly what was live then.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

import mmsb
from mmsb import Delta, DeltaBatch
from naive import Model, assert_matches

# (size in bytes, dtype): sizes are multiples of each dtype's itemsize
PAGE_KINDS = [(8, "uint8"), (24, "uint8"), (64, "float64"), (40, "int32"), (200, "uint16")]
MAX_SAVED = 12  # past LSNs remembered for time-travel checks


@st.composite
def deltas_for(draw: st.DrawFn, page_id: int, size: int) -> Delta:
    """One random delta (range, dense or sparse) that fits a page of ``size`` bytes."""
    offset = draw(st.integers(0, size - 1))
    length = draw(st.integers(1, min(size - offset, 32)))
    shape = draw(st.sampled_from(["range", "dense", "sparse"]))
    if shape == "range":
        return Delta.range(page_id, draw(st.binary(min_size=length, max_size=length)), offset)
    mask = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    if shape == "dense":
        data = draw(st.binary(min_size=length, max_size=length))
        return Delta.dense(page_id, np.array(mask), data, offset)
    bits = sum(mask)
    data = draw(st.binary(min_size=bits, max_size=bits))
    return Delta.sparse(page_id, np.array(mask), data, offset)


class BusMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="mmsb-model-")
        self.path = os.path.join(self.root, "bus")
        self.model = Model()
        self.bus: mmsb.Bus | None = None
        self.options: dict[str, object] = {}
        # lsn -> (state hash, model copy) recorded live right after that commit
        self.saved: dict[int, tuple[str, Model]] = {}
        self.steps = 0

    # -- setup and teardown ---------------------------------------------------------------

    @initialize(
        sync=st.sampled_from(["off", "normal", "always"]),
        checkpoint_every=st.sampled_from([None, 2048]),
        keep=st.sampled_from([1, 2]),
    )
    def open_new(self, sync: str, checkpoint_every: int | None, keep: int) -> None:
        self.options = {
            "checkpoint_every": checkpoint_every,
            "keep_checkpoints": keep,
            "segment_size": 4096,  # small, so segments roll within one example
        }
        self.bus = mmsb.open(self.path, sync=sync, **self.options)
        assert self.bus.recovery.mode == "new"
        self._record()

    def teardown(self) -> None:
        if self.bus is not None:
            self.bus.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------

    @property
    def live(self) -> mmsb.Bus:
        assert self.bus is not None
        return self.bus

    def _record(self) -> None:
        bus = self.live
        assert bus.lsn == self.model.lsn
        self.saved[bus.lsn] = (bus.state_hash(), self.model.copy())
        if len(self.saved) > MAX_SAVED:
            # forget one LSN from the middle, keep the oldest and the newest
            keys = sorted(self.saved)
            del self.saved[keys[len(keys) // 2]]

    def _reopen(self, sync: str) -> mmsb.Bus:
        self.bus = mmsb.open(self.path, sync=sync, **self.options)
        return self.bus

    def _check_snapshot(self, lsn: int) -> None:
        digest, model = self.saved[lsn]
        with self.live.at(lsn) as snap:
            assert snap.lsn == lsn
            assert snap.state_hash() == digest
            assert_matches(snap, model)

    # -- pages --------------------------------------------------------------------------

    @rule(kind=st.sampled_from(PAGE_KINDS), n=st.integers(1, 3))
    def create_pages(self, kind: tuple[int, str], n: int) -> None:
        size, dtype = kind
        ids = self.live.create_pages(n, size, dtype=dtype)
        expected = [self.model.create(size, dtype) for _ in range(n)]
        self.model.lsn -= n - 1  # one commit for the whole call
        assert ids.tolist() == expected
        self._record()

    @precondition(lambda self: self.model.pages)
    @rule(data=st.data())
    def delete_pages(self, data: st.DataObject) -> None:
        ids = data.draw(
            st.lists(st.sampled_from(sorted(self.model.pages)), min_size=1, max_size=2, unique=True)
        )
        self.live.delete_pages(ids)
        for pid in ids:
            self.model.delete(pid)
        self.model.lsn -= len(ids) - 1
        self._record()
        for pid in ids:
            assert pid not in self.live

    # -- deltas -------------------------------------------------------------------------

    @precondition(lambda self: self.model.pages)
    @rule(data=st.data())
    def apply_mixed_batch(self, data: st.DataObject) -> None:
        """A batch of mixed shapes; rows often share a page and overlap."""
        pages = sorted(self.model.pages)
        n = data.draw(st.integers(1, 8))
        deltas: list[Delta] = []
        for _ in range(n):
            if deltas and data.draw(st.booleans()):
                pid = deltas[-1].page_id  # same page as the previous row
            else:
                pid = data.draw(st.sampled_from(pages))
            deltas.append(data.draw(deltas_for(pid, len(self.model.pages[pid]))))
        batch = DeltaBatch.from_deltas(deltas)
        commit = self.live.apply_batch(batch)
        self.model.apply_batch(batch)
        assert commit.lsn == self.model.lsn
        assert commit.count == n
        self._record()

    @precondition(lambda self: self.model.pages)
    @rule(data=st.data())
    def apply_ranges(self, data: st.DataObject) -> None:
        """Columnar range rows (2-D payload) followed by individual deltas, concatenated."""
        pages = sorted(self.model.pages)
        pid = data.draw(st.sampled_from(pages))
        size = len(self.model.pages[pid])
        width = data.draw(st.integers(1, min(size, 8)))
        rows = data.draw(st.integers(1, 4))
        offsets = [data.draw(st.integers(0, size - width)) for _ in range(rows)]
        payload = np.frombuffer(
            data.draw(st.binary(min_size=rows * width, max_size=rows * width)), np.uint8
        ).reshape(rows, width)
        first = DeltaBatch.from_ranges([pid] * rows, offsets, payload)
        other = data.draw(st.sampled_from(pages))
        second = DeltaBatch.from_deltas(
            [data.draw(deltas_for(other, len(self.model.pages[other])))]
        )
        batch = DeltaBatch.concat([first, second])
        self.live.apply_batch(batch)
        self.model.apply_batch(batch)
        self._record()

    @precondition(lambda self: self.model.pages)
    @rule(data=st.data())
    def write_typed(self, data: st.DataObject) -> None:
        """``Bus.write`` with a numpy array of the page's dtype at an aligned offset."""
        pid = data.draw(st.sampled_from(sorted(self.model.pages)))
        dtype = np.dtype(self.model.dtypes[pid])
        count = len(self.model.pages[pid]) // dtype.itemsize
        start = data.draw(st.integers(0, count - 1))
        k = data.draw(st.integers(1, count - start))
        raw = data.draw(st.binary(min_size=k * dtype.itemsize, max_size=k * dtype.itemsize))
        values = np.frombuffer(raw, dtype)
        self.live.write(pid, values, offset=start * dtype.itemsize)
        self.model.apply_batch(
            DeltaBatch.from_deltas([Delta.range(pid, raw, start * dtype.itemsize)])
        )
        self._record()

    @precondition(lambda self: self.model.pages)
    @rule(data=st.data(), bad=st.sampled_from(["past_end", "unknown_page"]))
    def reject_invalid_batch(self, data: st.DataObject, bad: str) -> None:
        """A batch with one bad row changes nothing: no log frame, no bytes, no epochs."""
        pages = sorted(self.model.pages)
        pid = data.draw(st.sampled_from(pages))
        good = data.draw(deltas_for(pid, len(self.model.pages[pid])))
        if bad == "past_end":
            size = len(self.model.pages[pid])
            wrong = Delta.range(pid, b"\x07\x07", size - 1)
            error: type[Exception] = mmsb.InvalidDeltaError
        else:
            wrong = Delta.range(self.model.next_id + 5, b"\x07")
            error = mmsb.PageNotFoundError
        before = self.live.lsn
        with pytest.raises(error, match=r"batch rows \[1\]"):
            self.live.apply_batch(DeltaBatch.from_deltas([good, wrong]))
        assert self.live.lsn == before

    # -- durability and history ---------------------------------------------------------

    @rule()
    def checkpoint(self) -> None:
        info = self.live.checkpoint()
        assert info.lsn == self.model.lsn
        assert os.path.exists(info.path)

    @rule(sync=st.sampled_from(["off", "normal", "always"]))
    def reopen_clean(self, sync: str) -> None:
        self.live.close()
        bus = self._reopen(sync)
        assert bus.recovery.mode == "clean"
        assert bus.lsn == self.model.lsn

    @rule(sync=st.sampled_from(["off", "normal", "always"]))
    def crash_and_reopen(self, sync: str) -> None:
        self.live.abandon()  # drop the bus without writing the clean-shutdown file
        assert not os.path.exists(os.path.join(self.path, "state.clean"))
        bus = self._reopen(sync)
        assert bus.recovery.mode == "replay"
        assert bus.recovery.torn_tail_bytes == 0
        assert bus.lsn == self.model.lsn

    @rule()
    def compact(self) -> None:
        info = self.live.compact()
        oldest = info.oldest_lsn
        for lsn in [k for k in self.saved if k < oldest]:
            if info.segments_removed:
                with pytest.raises(mmsb.HistoryUnavailableError):
                    self.live.at(lsn)
            del self.saved[lsn]

    @rule()
    def readonly_view(self) -> None:
        """A read-only open next to the writer sees the last commit and leaves it alone."""
        with mmsb.open(self.path, readonly=True) as ro:
            assert ro.lsn == self.model.lsn
            assert_matches(ro, self.model)
            with pytest.raises(mmsb.ReadOnlyError):
                ro.create_page(8)

    @precondition(lambda self: len(self.saved) > 1)
    @rule(data=st.data())
    def time_travel(self, data: st.DataObject) -> None:
        self._check_snapshot(data.draw(st.sampled_from(sorted(self.saved))))

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def bus_matches_model(self) -> None:
        if self.bus is None:
            return
        assert self.bus.lsn == self.model.lsn
        assert_matches(self.bus, self.model)

    @invariant()
    def past_states_replay(self) -> None:
        """One remembered LSN per step (rotating) rebuilt from checkpoint + log."""
        if self.bus is None or not self.saved:
            return
        keys = sorted(self.saved)
        self.steps += 1
        self._check_snapshot(keys[self.steps % len(keys)])

    @invariant()
    def log_replays_to_live_state(self) -> None:
        """Replaying the retained log (from zero, or from the checkpoint it continues)
        reproduces the live state, and the integrity check passes."""
        if self.bus is None:
            return
        report = mmsb.verify(self.path)
        assert report.ok, report.summary()
        assert report.last_lsn == self.model.lsn
        assert report.state_hash == self.bus.state_hash()


class TestBusModel(BusMachine.TestCase):
    settings = settings(
        max_examples=30,
        stateful_step_count=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@pytest.mark.slow
class TestBusModelLong(BusMachine.TestCase):
    settings = settings(
        max_examples=300,
        stateful_step_count=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
