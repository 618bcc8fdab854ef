"""Integrity checking of a bus directory, read-only (safe while a writer is open).

Checks every log frame's CRC and schema, replays the whole retained log into process
memory to find orphan deltas (rows naming a page that did not exist at that LSN), bounds
violations, non-increasing epochs and non-consecutive ids, and checks each checkpoint's
CRCs and that its content equals the replayed state at its LSN.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from mmsb.errors import CorruptCheckpointError, CorruptLogError, MMSBError
from mmsb.storage import codec, layout, relayout
from mmsb.storage.arena import MemoryArena
from mmsb.storage.checkpoint import list_checkpoints, load_state
from mmsb.storage.log import Frame, LogReader, list_segments
from mmsb.storage.manifest import read_manifest
from mmsb.storage.recovery import apply_graph
from mmsb.storage.state import State


@dataclass
class IntegrityReport:
    path: str
    ok: bool = True
    frames: int = 0
    deltas: int = 0
    first_lsn: int = 0
    last_lsn: int = 0
    orphan_deltas: int = 0
    invalid_deltas: int = 0
    epoch_violations: int = 0
    checkpoints_checked: int = 0
    torn_tail_bytes: int = 0
    state_hash: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def error(self, msg: str) -> None:
        self.ok = False
        if len(self.errors) < 100:
            self.errors.append(msg)

    def summary(self) -> str:
        status = "OK" if self.ok else "FAILED"
        lines = [
            f"{status}: {self.path}",
            f"  frames {self.frames} (LSN {self.first_lsn}..{self.last_lsn}), deltas "
            f"{self.deltas}, checkpoints checked {self.checkpoints_checked}",
            f"  orphan deltas {self.orphan_deltas}, invalid deltas {self.invalid_deltas}, "
            f"epoch violations {self.epoch_violations}, torn tail {self.torn_tail_bytes} B",
        ]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def verify(path: str | os.PathLike[str]) -> IntegrityReport:
    directory = os.fspath(path)
    t0 = time.perf_counter()
    rep = IntegrityReport(directory)
    try:
        read_manifest(directory)
    except MMSBError as exc:
        rep.error(str(exc))
        return rep
    log_dir = os.path.join(directory, layout.LOG_DIR)
    segs = list_segments(log_dir)
    first = segs[0][0] if segs else 1
    ckpts = {lsn: p for lsn, p in list_checkpoints(os.path.join(directory, layout.CKPT_DIR))}
    state: State | None = None
    base = 0
    if first > 1:
        # compacted: replay from the oldest checkpoint the retained log reaches (segments
        # end where they end, so frames before it may remain: they are CRC-checked only)
        for lsn in sorted(k for k in ckpts if k >= first - 1):
            try:
                state, base, _ = load_state(ckpts[lsn], MemoryArena())
                break
            except CorruptCheckpointError:
                continue  # reported with the other checkpoints below
        if state is None:
            rep.error(
                f"the log starts at LSN {first} and no usable checkpoint at or after LSN "
                f"{first - 1} exists to replay it from"
            )
            rep.seconds = time.perf_counter() - t0
            return rep
    else:
        state = State(MemoryArena())
    rep.first_lsn = base + 1
    rep.last_lsn = base
    hashes: dict[int, str] = {}
    if base in ckpts:
        hashes[base] = state.state_hash()
    reader = LogReader(log_dir)
    try:
        for frame in reader.frames(after_lsn=base):
            rep.frames += 1
            rep.last_lsn = frame.lsn
            _check_frame(state, frame, rep)
            if frame.lsn in ckpts:
                hashes[frame.lsn] = state.state_hash()
    except CorruptLogError as exc:
        rep.error(str(exc))
    except FileNotFoundError as exc:
        rep.error(f"a log segment disappeared during the check (compaction?): {exc}")
    if reader.torn is not None:
        rep.torn_tail_bytes = reader.torn.bytes
        rep.warnings.append(
            f"torn tail of {reader.torn.bytes} B in {reader.torn.segment} at offset "
            f"{reader.torn.offset} ({reader.torn.reason}); the next writer open truncates it"
        )
    for lsn, p in sorted(ckpts.items()):
        name = os.path.basename(p)
        try:
            ck, _, _ = load_state(p, MemoryArena())
        except CorruptCheckpointError as exc:
            rep.error(str(exc))
            continue
        rep.checkpoints_checked += 1
        if lsn in hashes and ck.state_hash() != hashes[lsn]:
            rep.error(f"checkpoint {name} differs from the replayed state at LSN {lsn}")
        elif lsn not in hashes and lsn > rep.last_lsn:
            rep.error(f"checkpoint {name} is beyond the end of the log (LSN {rep.last_lsn})")
    rep.state_hash = state.state_hash()
    rep.seconds = time.perf_counter() - t0
    return rep


def _check_frame(state: State, frame: Frame, rep: IntegrityReport) -> None:
    where = f"LSN {frame.lsn} ({frame.segment} @ {frame.offset})"
    try:
        rec = codec.decode(frame.type, frame.payload)
        if isinstance(rec, codec.DecodedBatch):
            dec = rec
            b = dec.batch
            n = len(b)
            rep.deltas += n
            if dec.first_delta_id != state.next_delta_id:
                rep.error(
                    f"{where}: first delta id {dec.first_delta_id}, expected {state.next_delta_id}"
                )
            pids = b.page_ids
            known = (pids > 0) & (pids < state.next_page_id)
            live = known.copy()
            live[known] = state.live[pids[known]]
            orphans = int((~live).sum())
            if orphans:
                rep.orphan_deltas += orphans
                rep.error(f"{where}: {orphans} deltas name pages that do not exist then")
                state.next_delta_id = dec.first_delta_id + n
                return
            over = b.offsets + b.lengths > state.size[pids]
            if over.any():
                rep.invalid_deltas += int(over.sum())
                rep.error(f"{where}: {int(over.sum())} deltas reach past their page")
                state.next_delta_id = dec.first_delta_id + n
                return
            before = state.epoch[pids]
            epochs = state.assign_epochs(pids)
            bad = int((dec.epochs != epochs).sum()) + int((dec.epochs <= before).sum())
            if bad:
                rep.epoch_violations += bad
                rep.error(f"{where}: {bad} deltas carry epochs that are not the next ones")
            state.apply(b)
            state.next_delta_id = dec.first_delta_id + n
        elif isinstance(rec, codec.CreateRecord):
            if rec.first != state.next_page_id:
                rep.error(f"{where}: creates page {rec.first}, expected {state.next_page_id}")
            state.create(rec.n, rec.size, rec.dtype, rec.location, rec.metadata, rec.record,
                         rec.names)  # fmt: skip
        elif isinstance(rec, codec.RelayoutRecord):
            relayout.replay(state, rec.ids, rec.slots)
        elif isinstance(rec, (codec.MetaRecord, codec.NameRecord)):
            what = "metadata" if isinstance(rec, codec.MetaRecord) else "name"
            if not state.is_live(rec.page):
                rep.error(f"{where}: sets the {what} of page {rec.page}, which is not live")
            elif rec.epoch != int(state.epoch[rec.page]):
                rep.epoch_violations += 1
                rep.error(f"{where}: {what} of page {rec.page} logged at epoch {rec.epoch}, "
                          f"the page is at epoch {int(state.epoch[rec.page])}")  # fmt: skip
            elif isinstance(rec, codec.MetaRecord):
                state.set_metadata(rec.page, rec.metadata)
            else:
                state.set_name(rec.page, rec.name)
        elif isinstance(rec, codec.GraphRecord):
            apply_graph(state, rec.ops, rec.kinds, rec.parents, rec.children)
        elif isinstance(rec, codec.DeleteRecord):
            ids = rec.ids
            dead = [int(p) for p in ids if not state.is_live(int(p))]
            if dead or np.unique(ids).size != ids.size:
                rep.error(f"{where}: deletes pages that are not live: {dead[:10]}")
                ids = np.array([p for p in np.unique(ids) if state.is_live(int(p))], np.int64)
            state.delete(ids)
    except MMSBError as exc:
        rep.invalid_deltas += 1
        rep.error(f"{where}: {exc}")
