"""The writer process of the crash campaign: commits batches until it is killed.

Run as ``python -m mmsb.reliability.writer PATH SYNC SEED REPORT``. Every batch sets every
page of one group to a single byte value, after first scribbling random bytes over part of
each page in the same batch, so a batch that was only partly applied or partly recovered
shows up as a page with mixed bytes or a group whose pages disagree.

It appends lines to ``REPORT`` (a file, so nothing is lost or blocks when the process is
killed; a line cut short by the kill is ignored by the parent)::

    P <pid>              started (before opening the bus)
    R <lsn> <hash>       bus open: the LSN and state hash it found
    I <lsn> <group> <v>  about to commit LSN <lsn>, setting <group> to byte <v>
    A <lsn> <hash>       commit <lsn> returned (acknowledged), and the state hash after it
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.delta import Delta

# a commit triggers a checkpoint or a compaction with these probabilities
CHECKPOINT_P = 0.02
COMPACT_P = 0.01


def group_batch(rng: random.Random, pages: list[tuple[int, int]], value: int) -> DeltaBatch:
    """Noise over part of each page, then the whole page set to ``value`` (three shapes)."""
    rows = []
    for i, (pid, size) in enumerate(pages):
        n = rng.randrange(1, size + 1)
        noise = rng.randbytes(min(n, 64)) * (n // 64 + 1)
        rows.append(Delta.range(pid, noise[:n], size - n))
        data = bytes([value]) * size
        full = np.ones(size, bool)
        if i % 3 == 0:
            rows.append(Delta.range(pid, data))
        elif i % 3 == 1:
            rows.append(Delta.dense(pid, full, data))
        else:
            rows.append(Delta.sparse(pid, full, data))
    return DeltaBatch.from_deltas(rows)


def main(argv: list[str]) -> None:
    path, sync, seed, report = argv[0], argv[1], int(argv[2]), argv[3]
    rng = random.Random(seed)
    fd = os.open(report, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = os.fdopen(fd, "w", buffering=1)  # line buffered: one write per line
    out.write(f"P {os.getpid()}\n")
    bus = mmsb.open(
        path, sync=sync, checkpoint_every=256 << 10, keep_checkpoints=2, sync_interval=0.05
    )
    groups: dict[int, list[tuple[int, int]]] = {}
    for pid in bus.page_ids().tolist():
        info = bus.page(pid)
        groups.setdefault(int(info.metadata["group"]), []).append((pid, info.size))
    out.write(f"R {bus.lsn} {bus.state_hash()}\n")
    while True:
        g = rng.randrange(len(groups))
        v = rng.randrange(256)
        batch = group_batch(rng, groups[g], v)
        out.write(f"I {bus.lsn + 1} {g} {v}\n")
        commit = bus.apply_batch(batch)
        out.write(f"A {commit.lsn} {bus.state_hash()}\n")
        r = rng.random()
        if r < CHECKPOINT_P:
            bus.checkpoint()
        elif r < CHECKPOINT_P + COMPACT_P:
            bus.compact()


if __name__ == "__main__":
    main(sys.argv[1:])
