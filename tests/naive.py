"""Slow, obviously-correct oracles the fast paths are compared against.

``Model`` is a dict of bytearrays with one Python loop per byte: no numpy kernels, no
columns, no log. Tests drive it and a real bus with the same operations and compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mmsb
from mmsb.delta import DENSE, RANGE, SPARSE


@dataclass
class Model:
    pages: dict[int, bytearray] = field(default_factory=dict)
    epochs: dict[int, int] = field(default_factory=dict)
    dtypes: dict[int, str] = field(default_factory=dict)
    next_id: int = 1
    lsn: int = 0

    def create(self, size: int, dtype: str = "uint8") -> int:
        pid = self.next_id
        self.next_id += 1
        self.pages[pid] = bytearray(size)
        self.epochs[pid] = 0
        self.dtypes[pid] = dtype
        self.lsn += 1
        return pid

    def delete(self, pid: int) -> None:
        del self.pages[pid]
        del self.epochs[pid]
        del self.dtypes[pid]
        self.lsn += 1

    def apply_delta(self, d: mmsb.Delta) -> None:
        page = self.pages[d.page_id]
        payload = bytes(d.payload)
        if d.shape == RANGE:
            for i, b in enumerate(payload):
                page[d.offset + i] = b
        elif d.shape == DENSE:
            assert d.mask is not None
            for i, m in enumerate(d.mask):
                if m:
                    page[d.offset + i] = payload[i]
        elif d.shape == SPARSE:
            assert d.mask is not None
            k = 0
            for i, m in enumerate(d.mask):
                if m:
                    page[d.offset + i] = payload[k]
                    k += 1
        self.epochs[d.page_id] += 1

    def apply_batch(self, batch: mmsb.DeltaBatch) -> None:
        if len(batch) == 0:
            return
        for d in batch:
            self.apply_delta(d)
        self.lsn += 1

    def copy(self) -> Model:
        return Model(
            {k: bytearray(v) for k, v in self.pages.items()},
            dict(self.epochs),
            dict(self.dtypes),
            self.next_id,
            self.lsn,
        )


def assert_matches(view: mmsb.Bus | mmsb.Snapshot, model: Model) -> None:
    """The bus (or snapshot) holds exactly the model's pages, bytes and epochs."""
    ids = [int(p) for p in view.page_ids()]
    assert ids == sorted(model.pages), (ids, sorted(model.pages))
    for pid in ids:
        got = view.read(pid).view("uint8").tobytes()
        assert got == bytes(model.pages[pid]), f"page {pid} bytes differ"
        assert view.page(pid).epoch == model.epochs[pid], f"page {pid} epoch differs"
    assert len(view) == len(model.pages)
