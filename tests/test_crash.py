"""Crash tests with real processes: a writer commits batches until it is killed with
SIGKILL at a random moment; the bus is then reopened and checked against what the writer
reported.

Every batch sets every page of one group to a single byte value (after first scribbling
random bytes over part of each page in the same batch), so a batch that was only partly
applied, or partly recovered, shows up as a page with mixed bytes or a group whose pages
disagree. Before each commit the writer announces the LSN it is about to commit and the
(group, value) it writes; after the commit returns it reports the LSN and the state hash.
The parent can therefore compute the exact expected state at any LSN the writer reached,
acknowledged or not.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import mmsb

GROUPS = 4
PAGE_KINDS = ((16, "uint8"), (200, "float64"), (1024, "int32"))

WRITER = textwrap.dedent(
    """
    import random
    import sys

    import numpy as np

    import mmsb
    from mmsb import Delta, DeltaBatch

    path, sync, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    bus = mmsb.open(
        path, sync=sync, checkpoint_every=256 << 10, keep_checkpoints=2, sync_interval=0.05
    )
    groups = {}
    for pid in bus.page_ids().tolist():
        info = bus.page(pid)
        groups.setdefault(info.metadata["group"], []).append((pid, info.size))
    out = sys.stdout
    out.write(f"R {bus.lsn} {bus.state_hash()}\\n")
    out.flush()
    while True:
        g = rng.randrange(len(groups))
        v = rng.randrange(256)
        rows = []
        for i, (pid, size) in enumerate(groups[g]):
            n = rng.randrange(1, size + 1)
            noise = bytes(rng.randrange(256) for _ in range(min(n, 64))) * (n // 64 + 1)
            rows.append(Delta.range(pid, noise[:n], size - n))
            data = bytes([v]) * size
            full = np.ones(size, bool)
            if i % 3 == 0:
                rows.append(Delta.range(pid, data))
            elif i % 3 == 1:
                rows.append(Delta.dense(pid, full, data))
            else:
                rows.append(Delta.sparse(pid, full, data))
        out.write(f"I {bus.lsn + 1} {g} {v}\\n")
        out.flush()
        commit = bus.apply_batch(DeltaBatch.from_deltas(rows))
        out.write(f"A {commit.lsn} {bus.state_hash()}\\n")
        out.flush()
        r = rng.random()
        if r < 0.02:
            bus.checkpoint()
        elif r < 0.03:
            bus.compact()
    """
)


@dataclass
class Expected:
    """What the parent knows: the state at ``lsn`` as one (value, batches) per group."""

    lsn: int
    digest: str
    values: list[int] = field(default_factory=lambda: [0] * GROUPS)
    batches: list[int] = field(default_factory=lambda: [0] * GROUPS)


@dataclass
class Report:
    ready: tuple[int, str]
    intents: dict[int, tuple[int, int]]
    acks: dict[int, str]


def parse(text: str) -> Report:
    ready: tuple[int, str] | None = None
    intents: dict[int, tuple[int, int]] = {}
    acks: dict[int, str] = {}
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # cut off by the kill
        kind, *rest = line.split()
        if kind == "R":
            ready = (int(rest[0]), rest[1])
        elif kind == "I":
            intents[int(rest[0])] = (int(rest[1]), int(rest[2]))
        elif kind == "A":
            acks[int(rest[0])] = rest[1]
    assert ready is not None, text
    return Report(ready, intents, acks)


def make_bus(path: Path) -> Expected:
    with mmsb.open(path, sync="always") as bus:
        for g in range(GROUPS):
            for size, dtype in PAGE_KINDS:
                bus.create_page(size, dtype=dtype, metadata={"group": g})
        return Expected(bus.lsn, bus.state_hash())


def run_and_kill(script: Path, path: Path, sync: str, seed: int, delay: float) -> Report:
    out_file = path.parent / f"out-{seed}.txt"
    err_file = path.parent / f"err-{seed}.txt"
    with open(out_file, "w") as out, open(err_file, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), sync, str(seed)], stdout=out, stderr=err
        )
        try:
            deadline = time.monotonic() + 60
            while not out_file.read_text().startswith("R "):
                assert proc.poll() is None, err_file.read_text()
                assert time.monotonic() < deadline, "writer did not start"
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err_file.read_text()
    return parse(out_file.read_text())


def check_pages(view: mmsb.Bus | mmsb.Snapshot, exp: Expected) -> None:
    """Every page of a group holds its group's one value, with the epoch its batches gave."""
    ids = view.page_ids()
    assert len(ids) == GROUPS * len(PAGE_KINDS)
    for pid in ids.tolist():
        info = view.page(pid)
        g = info.metadata["group"]
        got = np.unique(view.read(pid).view(np.uint8))
        assert got.tolist() == [exp.values[g]], f"page {pid} of group {g}: {got[:8]}"
        assert info.epoch == 2 * exp.batches[g], f"page {pid} epoch"


def advance(exp: Expected, rep: Report, lsn: int) -> Expected:
    """The expected state at ``lsn``, from the state at ``exp.lsn`` and the intents."""
    values, batches = list(exp.values), list(exp.batches)
    for n in range(exp.lsn + 1, lsn + 1):
        g, v = rep.intents[n]
        values[g] = v
        batches[g] += 1
    return Expected(lsn, rep.acks.get(lsn, ""), values, batches)


def crash_rounds(tmp_path: Path, sync: str, rounds: int, seed: int) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path = tmp_path / "bus"
    exp = make_bus(path)
    rng = random.Random(seed)
    for r in range(rounds):
        rep = run_and_kill(script, path, sync, seed * 1000 + r, rng.uniform(0.0, 0.4))
        # the writer started from exactly the state the last round left
        assert rep.ready == (exp.lsn, exp.digest)
        last_ack = max(rep.acks, default=exp.lsn)
        last_try = max(rep.intents, default=exp.lsn)

        report = mmsb.verify(path)  # read-only; the tail may still be torn
        assert report.ok, report.summary()
        with mmsb.open(path, readonly=True) as ro:
            ro_lsn, ro_hash = ro.lsn, ro.state_hash()

        bus = mmsb.open(path, sync="off")
        try:
            assert bus.recovery.mode in ("clean", "replay")
            lsn = bus.lsn
            # a process crash keeps the page cache: every acknowledged commit is there
            # whatever the sync mode, and nothing the writer never started
            assert last_ack <= lsn <= last_try, (last_ack, lsn, last_try)
            assert (ro_lsn, ro_hash) == (lsn, bus.state_hash())
            now = advance(exp, rep, lsn)
            check_pages(bus, now)  # never a half-applied batch
            if now.digest:
                assert bus.state_hash() == now.digest
            if last_ack > exp.lsn:
                assert bus.at(last_ack).state_hash() == rep.acks[last_ack]
                with bus.at(last_ack) as snap:
                    check_pages(snap, advance(exp, rep, last_ack))
            report = bus.verify()
            assert report.ok, report.summary()
            assert report.torn_tail_bytes == 0
            exp = Expected(lsn, bus.state_hash(), now.values, now.batches)
        finally:
            # alternate how the parent leaves the bus: the next writer then opens via the
            # fast path or by replay
            if r % 2:
                bus.close()
            else:
                bus._release()


@pytest.mark.parametrize("sync", ["always", "normal", "off"])
def test_killed_writer_recovers_to_a_reported_state(tmp_path: Path, sync: str) -> None:
    crash_rounds(tmp_path, sync, rounds=4, seed={"always": 1, "normal": 2, "off": 3}[sync])


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["always", "normal", "off"])
def test_killed_writer_recovers_many_times(tmp_path: Path, sync: str) -> None:
    crash_rounds(tmp_path, sync, rounds=34, seed={"always": 11, "normal": 12, "off": 13}[sync])
