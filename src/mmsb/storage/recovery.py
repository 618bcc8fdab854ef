"""Bringing a bus directory back to its last committed state, and replaying frames.

On open for writing: a clean-shutdown file whose LSN matches the log end means the arena
is current (fast open). Otherwise the newest checkpoint that passes its checks is loaded and
the log after its LSN is replayed; a torn tail is truncated and reported, damage before the
tail raises :class:`CorruptLogError`. Read-only opens do the same into process memory and
never modify a file.

Recovery never ends behind an LSN the directory records as durable: the LSN of the
clean-shutdown file (written after the log was closed) and that of the checkpoint it starts
from (written after the log was synced up to it). A log that ends before that LSN (a segment
cut short or removed) raises :class:`CorruptLogError` naming both LSNs, whether its end is a
clean frame boundary, a torn append or a damaged final frame, and with
``drop_damaged_tail`` too: dropping a tail may only remove frames after every such LSN.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmsb.errors import (
    CorruptCheckpointError,
    CorruptLogError,
    InvalidArgumentError,
    InvalidDeltaError,
    MMSBError,
    PageNotFoundError,
)
from mmsb.storage import codec, layout, relayout
from mmsb.storage.arena import Arena
from mmsb.storage.checkpoint import list_checkpoints, load_state, read_header
from mmsb.storage.log import (
    SEG_HEADER_SIZE,
    Frame,
    LogReader,
    TornTail,
    frame_ends_log,
    list_segments,
    truncate_segment,
)
from mmsb.storage.state import State
from mmsb.types import RecoveryInfo

log = logging.getLogger("mmsb")

CLEAN_FILE = layout.CLEAN_FILE
OLD_SUFFIX = ".old"  # a clean-shutdown file set aside by an open, to be removed


def apply_frame(state: State, frame: Frame) -> int:
    """Replay one log frame onto ``state``; return the number of deltas applied.

    Everything a frame claims is checked against the state first (ids, bounds, epochs), so
    a frame that passed its CRC but does not fit the state raises :class:`CorruptLogError`
    instead of writing anything.
    """
    try:
        rec = codec.decode(frame.type, frame.payload)
        if isinstance(rec, codec.DecodedBatch):
            dec = rec
            n = len(dec.batch)
            if dec.first_delta_id != state.next_delta_id:
                raise CorruptLogError(
                    f"first delta id {dec.first_delta_id}, expected {state.next_delta_id}"
                )
            state.validate(dec.batch)
            epochs = state.assign_epochs(dec.batch.page_ids)
            if not np.array_equal(epochs, dec.epochs):
                state.undo_epochs(dec.batch.page_ids, epochs)
                raise CorruptLogError("logged epochs differ from the page epochs")
            state.apply(dec.batch)
            state.next_delta_id += n
            return n
        if isinstance(rec, codec.CreateRecord):
            if rec.first != state.next_page_id:
                raise CorruptLogError(
                    f"creates page {rec.first}, expected next page id {state.next_page_id}"
                )
            state.create(rec.n, rec.size, rec.dtype, rec.location, rec.metadata, rec.record,
                         rec.names)  # fmt: skip
            return 0
        if isinstance(rec, codec.DeleteRecord):
            ids = rec.ids
            for pid in ids.tolist():
                state.require(pid)
            if np.unique(ids).size != ids.size:
                raise CorruptLogError("deletes a page twice")
            state.delete(ids)
            return 0
        if isinstance(rec, codec.RelayoutRecord):
            relayout.replay(state, rec.ids, rec.slots)
            return 0
        if isinstance(rec, (codec.MetaRecord, codec.NameRecord)):
            pid = state.require(rec.page)
            what = "metadata" if isinstance(rec, codec.MetaRecord) else "name"
            if rec.epoch != int(state.epoch[pid]):
                raise CorruptLogError(f"page {pid} {what} logged at epoch {rec.epoch}, "
                                      f"the page is at epoch {int(state.epoch[pid])}")  # fmt: skip
            if isinstance(rec, codec.MetaRecord):
                state.set_metadata(pid, rec.metadata)
            else:
                state.set_name(pid, rec.name)
            return 0
        apply_graph(state, rec.ops, rec.kinds, rec.parents, rec.children)
        return 0
    except (CorruptLogError, InvalidDeltaError, PageNotFoundError, InvalidArgumentError) as exc:
        raise CorruptLogError(
            f"log frame LSN {frame.lsn} in segment {frame.segment} at offset {frame.offset} "
            f"does not replay: {exc}",
            frame.segment,
            frame.offset,
        ) from None


def apply_graph(state: State, ops: Any, kinds: Any, parents: Any, children: Any) -> None:
    """Apply logged edge changes, checking them as the live bus did (endpoints live, no
    cycle); a frame that breaks a rule is corrupt."""
    edges = state.edges
    for op, kind, p, c in zip(ops.tolist(), kinds.tolist(), parents.tolist(),
                              children.tolist(), strict=True):  # fmt: skip
        if op == codec.EDGE_ADD:
            if not (state.is_live(p) and state.is_live(c)):
                raise CorruptLogError(f"edge {p} -> {c} names a page that is not live")
            if edges.has(p, c, kind):
                continue
            if edges.find_cycle(p, c) is not None:
                raise CorruptLogError(f"edge {p} -> {c} closes a cycle")
            edges.add(p, c, kind)
        elif not edges.remove(p, c, kind):
            raise CorruptLogError(f"removes edge {p} -> {c} that does not exist")


@dataclass
class Recovered:
    state: State
    lsn: int
    timestamp: int
    info: RecoveryInfo
    last_frame: tuple[str, int] | None = None  # (segment, offset) of the log's last frame
    # a lazy clean open: the LSNs (after, upto] of frames whose checksums it did not read
    unverified: tuple[int, int] | None = None
    stale: str | None = None  # a set-aside clean-shutdown file for the caller to remove


def recover(
    directory: str,
    arena: Arena,
    *,
    readonly: bool,
    drop_damaged_tail: bool = False,
    lazy: bool = False,
) -> Recovered:
    """Rebuild the state of the bus at ``directory`` into ``arena`` (see module doc).

    A complete final frame that fails its checksum is corruption (``CorruptLogError``)
    unless ``drop_damaged_tail``: then it is cut off like a torn tail, its LSN is named in
    ``RecoveryInfo.dropped_lsns`` and a warning is logged. Either way, a log that ends
    before the clean-shutdown LSN or the base checkpoint's LSN raises ``CorruptLogError``
    (see the module doc). ``lazy``: a clean open checks O(1) evidence (the arena file's
    identity, the log's recorded end and its last frame) instead of the arena's CRC and
    every frame after the newest checkpoint; ``Recovered.unverified`` names those frames."""
    t0 = time.perf_counter()
    log_dir = os.path.join(directory, layout.LOG_DIR)
    clean_path = os.path.join(directory, CLEAN_FILE)
    if not readonly and os.path.exists(clean_path):
        fast = _try_clean_open(directory, clean_path, arena, lazy)
        if fast is not None:
            # from here on the arena may change ahead of a checkpoint: the file must go. A
            # rename is O(1); freeing its blocks (milliseconds for a large table) is left to
            # the caller's close (``Recovered.stale``), off the open's path
            stale = clean_path + OLD_SUFFIX
            os.replace(clean_path, stale)
            info = RecoveryInfo("clean", fast[1], 0, 0, 0, None, (), time.perf_counter() - t0,
                                verify="full" if fast[4] is None else "lazy")  # fmt: skip
            return Recovered(fast[0], fast[1], fast[2], info, fast[3], fast[4], stale)
    clean_lsn = _recorded_lsn(clean_path)  # (what the replay must reach, if recorded)
    done = replay(directory, arena, drop_damaged_tail=drop_damaged_tail)
    base, reader = done.base, done.reader
    skipped = [f"{os.path.basename(p)}: {msg}" for p, msg in base.rejected]
    if not readonly:
        for p, _ in base.rejected:
            os.replace(p, p + layout.CORRUPT_SUFFIX)
    segments = list_segments(log_dir)
    state, ckpt_lsn, lsn, ts = done.state, base.lsn, done.lsn, done.timestamp
    if state is None:
        raise CorruptCheckpointError(
            f"no usable checkpoint in {directory} and the log starts at LSN "
            f"{base.first_log_lsn}, so the state before it cannot be rebuilt"
            + (f" (rejected: {'; '.join(skipped)})" if skipped else "")
        )
    if done.gap is not None:
        raise CorruptLogError(
            f"log resumes at LSN {done.gap.lsn} after checkpoint LSN {ckpt_lsn}",
            done.gap.segment,
            done.gap.offset,
        )
    torn = reader.torn
    _check_durable_floor(segments, reader, lsn, ckpt_lsn, clean_lsn)
    if torn is not None and not readonly:
        _truncate_torn(log_dir, torn)
    dropped: tuple[int, ...] = ()
    if torn is not None and torn.dropped_lsn is not None:
        dropped = (torn.dropped_lsn,)
        log.warning("recovery dropped the damaged final log frame, LSN %d (%s, segment %s "
                    "offset %d)", dropped[0], torn.reason, torn.segment, torn.offset)  # fmt: skip
    info = RecoveryInfo(
        "new" if not segments and state.next_page_id == 1 else "replay",
        ckpt_lsn,
        done.frames,
        done.deltas,
        torn.bytes if torn else 0,
        torn.segment if torn else None,
        tuple(skipped),
        time.perf_counter() - t0,
        dropped,
    )
    return Recovered(state, lsn, ts, info, done.last_frame)


@dataclass
class Replayed:
    """What :func:`replay` rebuilt, and where it stopped."""

    state: State | None  # None: no usable checkpoint and the log does not start at LSN 1
    lsn: int  # the last frame applied (or the base's LSN)
    timestamp: int
    base: Base
    frames: int
    deltas: int
    reader: LogReader  # its ``torn`` and ``end_lsn`` say how the log ended
    gap: Frame | None = None  # a frame that does not follow ``lsn``: replay stopped there
    last_frame: tuple[str, int] | None = None  # (segment, offset) of the last frame applied


def replay(
    directory: str, arena: Arena, *, upto: int | None = None, drop_damaged_tail: bool = False
) -> Replayed:
    """Rebuild the state into ``arena``: the newest usable checkpoint at or before ``upto``
    (default: the newest of all), then every following log frame up to ``upto`` (default:
    the end of the log). The one roll-forward behind recovery, ``at(lsn)`` and live
    readers; each caller decides what a missing base, a gap or a short log means to it."""
    base = load_base(directory, arena, upto=upto)
    reader = LogReader(os.path.join(directory, layout.LOG_DIR),
                       drop_damaged_tail=drop_damaged_tail)  # fmt: skip
    state, lsn, ts = base.state, base.lsn, base.timestamp
    if state is None:
        if base.first_log_lsn > 1:
            return Replayed(None, lsn, ts, base, 0, 0, reader)
        arena.clear(0)
        state = State(arena)
    frames = deltas = 0
    last: tuple[str, int] | None = None
    if upto is None or lsn < upto:
        for frame in reader.frames(after_lsn=lsn):
            if frame.lsn != lsn + 1:
                return Replayed(state, lsn, ts, base, frames, deltas, reader, frame, last)
            deltas += apply_frame(state, frame)
            frames += 1
            lsn, ts = frame.lsn, frame.timestamp
            last = (frame.segment, frame.offset)
            if lsn == upto:
                break
    return Replayed(state, lsn, ts, base, frames, deltas, reader, None, last)


@dataclass
class Base:
    """Where a replay starts: a loaded checkpoint (or none: the empty state)."""

    state: State | None
    lsn: int
    timestamp: int
    first_log_lsn: int
    rejected: list[tuple[str, str]]  # (checkpoint path, why it was not usable)


def load_base(directory: str, arena: Arena, upto: int | None = None) -> Base:
    """Load the newest checkpoint at or before ``upto`` (default: any) that passes its checks
    and that the retained log continues without a gap."""
    segments = list_segments(os.path.join(directory, layout.LOG_DIR))
    first_log_lsn = segments[0][0] if segments else 1
    rejected: list[tuple[str, str]] = []
    for lsn, path in list_checkpoints(os.path.join(directory, layout.CKPT_DIR)):
        if upto is not None and lsn > upto:
            continue
        if lsn + 1 < first_log_lsn and lsn != upto:
            break  # the log after this checkpoint is gone; older ones are no better
        try:
            state, ck_lsn, ts = load_state(path, arena)
        except CorruptCheckpointError as exc:
            rejected.append((path, str(exc)))
            continue
        return Base(state, ck_lsn, ts, first_log_lsn, rejected)
    return Base(None, 0, 0, first_log_lsn, rejected)


def _recorded_lsn(path: str) -> int | None:
    """The LSN a clean-shutdown file records (None: no such file, or one whose header
    fails its checks, which records nothing that can be trusted)."""
    try:
        with open(path, "rb") as f:
            return read_header(f, path)[0].lsn
    except (OSError, MMSBError):
        return None


def _check_durable_floor(
    segments: list[tuple[int, str]],
    reader: LogReader,
    lsn: int,
    ckpt_lsn: int,
    clean_lsn: int | None,
) -> None:
    """Raise :class:`CorruptLogError` where the log (less any torn or dropped tail) ends
    before an LSN recorded as durable: the base checkpoint's, or the clean-shutdown file's.

    With no segment at all the state ends at ``lsn`` (the checkpoint's, or 0)."""
    floor, what = ckpt_lsn, f"checkpoint at LSN {ckpt_lsn}"
    if clean_lsn is not None and clean_lsn > floor:
        floor, what = clean_lsn, f"clean-shutdown file ({CLEAN_FILE})"
    end = reader.end_lsn if segments else lsn
    if end >= floor:
        return
    torn = reader.torn
    if torn is not None:
        segment, offset = torn.segment, torn.offset
        where = f"segment {segment} at offset {offset}, where its tail is damaged or cut off"
    elif segments:
        path = segments[-1][1]
        segment, offset = os.path.basename(path), os.path.getsize(path)
        where = f"the end of segment {segment} (offset {offset})"
    else:
        segment, offset, where = "", -1, "no log segment"
    raise CorruptLogError(
        f"log ends at LSN {end} ({where}), before LSN {floor}, which the {what} records as "
        f"durable: the frames up to LSN {floor} are missing (a log segment was cut short or "
        "removed); recovery may only drop frames after it",
        segment,
        offset,
    )


_Clean = tuple[State, int, int, tuple[str, int] | None, tuple[int, int] | None]


def _try_clean_open(directory: str, clean_path: str, arena: Arena, lazy: bool) -> _Clean | None:
    """The state the clean-shutdown file holds, if it is current: (state, LSN, timestamp,
    the log's last frame, the LSN range of frames left unverified); None: replay instead."""
    log_dir = os.path.join(directory, layout.LOG_DIR)
    try:
        with open(clean_path, "rb") as f:
            header = read_header(f, clean_path)[0]
        end = header.log_end if lazy else None
        if (
            end is not None
            and header.arena_file is not None
            and frame_ends_log(log_dir, end[0], end[1], end[2], header.lsn)
        ):  # else the log is not where the shutdown left it: check in full below
            try:
                state, lsn, ts = load_state(clean_path, arena, with_arena=False, lazy=True)
            except CorruptCheckpointError:
                pass  # e.g. not the same arena file: its CRC may still prove it, below
            else:
                ckpts = list_checkpoints(os.path.join(directory, layout.CKPT_DIR))
                after = min(ckpts[0][0], lsn) if ckpts else 0
                return state, lsn, ts, (end[0], end[2]), (after, lsn)
        state, lsn, ts = load_state(clean_path, arena, with_arena=False)
        # check every frame a later crash recovery would replay (those after the newest
        # checkpoint), so damage is found now rather than buried under new commits
        ckpts = list_checkpoints(os.path.join(directory, layout.CKPT_DIR))
        after = min(ckpts[0][0], lsn) if ckpts else 0
        reader = LogReader(log_dir)
        last = None
        for frame in reader.frames(after_lsn=after):
            if frame.lsn > lsn:
                return None  # the log goes beyond the clean state: replay instead
            last = (frame.segment, frame.offset)
        if reader.torn is not None or reader.end_lsn != lsn:
            return None
        return state, lsn, ts, last, None
    except MMSBError:
        return None


def _truncate_torn(log_dir: str, torn: TornTail) -> None:
    path = os.path.join(log_dir, torn.segment)
    if torn.offset < SEG_HEADER_SIZE:
        os.unlink(path)  # not even a complete segment header: drop the file
    else:
        truncate_segment(path, torn.offset)
