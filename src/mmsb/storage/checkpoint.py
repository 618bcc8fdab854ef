"""Checkpoints: a full image of the page table and arena at one LSN.

File ``ckpt/<lsn, 20 digits>.ckpt``::

    magic "MMSBCKP1" | version u32 | header length u32 | header crc32 u32 | 0 u32
    header: JSON {lsn, timestamp, next_page_id, next_delta_id, end, sections: {name:
            [offset, length, crc32]}} (padded to 8)
    sections: slot <i8 | size <i8 | epoch <i8 | dtype u1 | loc u1 | live u1 (one entry per
            page id below next_page_id) | metadata JSON | arena bytes [0, end)

Device pages (:mod:`mmsb.storage.devicepages`) are written as an all-host bus holds them:
their bytes at their host slots of the arena section (checkpoints) or of the arena file
(the clean-shutdown file: they are copied there first), so files do not depend on where
the pages were, and a state loaded from one keeps every page in host memory until the
writer moves device pages to the device again.

Written to a temporary name, fsynced, renamed, then the directory is fsynced: a reader sees
either the old set of checkpoints or the new one, never a half-written file. The same format
without the arena section is the clean-shutdown file ``state.clean``. A failed write, fsync
or rename raises :class:`~mmsb.errors.CheckpointWriteError` and leaves the directory as it
was (the temporary file removed; a file renamed into place whose directory entry could not
be synced removed again), so nothing ever relies on an image that may not be on disk.

Loading treats the file as untrusted: every section is bounds-checked and CRC-checked, and
the page table must be self-consistent (sizes, dtypes, non-overlapping slots inside the
arena) before anything is written to an arena.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from mmsb.engine import kernels
from mmsb.engine.crc import crc32
from mmsb.errors import (
    CheckpointWriteError,
    CorruptCheckpointError,
    storage_error,
)
from mmsb.storage import layout
from mmsb.storage.arena import Arena
from mmsb.storage.edges import EdgeTable
from mmsb.storage.log import SEG_HEADER_SIZE, fsync_dir, list_segments
from mmsb.storage.state import State, zeroed
from mmsb.storage.tablecheck import check_table, load_attrs, load_gaps

MAGIC = b"MMSBCKP1"
VERSION = 1
_PRE = struct.Struct("<8sIII4x")
_NAME = re.compile(r"^(\d{20})\.ckpt$")
_COLUMNS = (("slot", "<i8"), ("size", "<i8"), ("epoch", "<i8"), ("dtype", "u1"),
            ("loc", "u1"), ("live", "u1"))  # fmt: skip


def checkpoint_name(lsn: int) -> str:
    return f"{lsn:020d}{layout.CHECKPOINT_SUFFIX}"


def list_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
    """(lsn, path) of every checkpoint file, newest first."""
    try:
        names = os.listdir(ckpt_dir)
    except FileNotFoundError:
        return []
    out = [(int(m.group(1)), os.path.join(ckpt_dir, n)) for n in names if (m := _NAME.match(n))]
    out.sort(reverse=True)
    return out


def log_bytes_since_checkpoint(directory: str) -> int:
    """Frame bytes the log holds after the newest checkpoint on disk (all of it when there
    is none): what the automatic-checkpoint trigger has to count from when a writer opens,
    so that a writer restarted more often than ``checkpoint_every`` still checkpoints.
    A checkpoint starts a new segment, so this is the segments that begin after it."""
    ckpts = list_checkpoints(os.path.join(directory, layout.CKPT_DIR))
    newest = ckpts[0][0] if ckpts else 0
    total = 0
    for first, path in list_segments(os.path.join(directory, layout.LOG_DIR)):
        if first > newest:
            total += max(os.path.getsize(path) - SEG_HEADER_SIZE, 0)
    return total


@dataclass
class CheckpointHeader:
    lsn: int
    timestamp: int
    next_page_id: int
    next_delta_id: int
    end: int
    sections: dict[str, tuple[int, int, int]]
    arena_crc: int | None = None  # clean-shutdown files: CRC32 of the arena file's [0, end)
    # clean-shutdown files only: the arena file's [size, inode, device] and where the log
    # ended [segment name, size, offset of the last frame], for an O(1) lazy open
    arena_file: list[int] | None = None
    log_end: list[Any] | None = None


def _crc(arr: Any) -> int:
    return crc32(memoryview(arr).cast("B"))


def write_state(
    path: str,
    state: State,
    lsn: int,
    timestamp: int,
    *,
    with_arena: bool,
    sync: bool,
    log_end: tuple[str, int, int] | None = None,
) -> int:
    """Write ``state`` to ``path`` atomically; return the file size. A clean-shutdown file
    (``with_arena=False``) also records the arena file's identity, the free-space lists and
    ``log_end`` (segment, size, offset of the last frame), for a lazy open."""
    n = state.next_page_id
    parts: list[tuple[str, Any]] = [
        (name, np.ascontiguousarray(getattr(state, name)[:n]).astype(dt, copy=False))
        for name, dt in _COLUMNS
    ]
    meta = {str(k): v for k, v in sorted(state.metadata.items())}
    parts.append(("metadata", np.frombuffer(json.dumps(meta).encode(), np.uint8)))
    parts.append(("edges", np.frombuffer(state.edges.encode(), np.uint8)))
    # page names and record specs: sections only where some page has one (files of buses
    # without them are byte-for-byte what they were before these existed)
    for sname, table in (("names", state.names), ("records", state.records)):
        if table:
            text = json.dumps({str(k): v for k, v in sorted(table.items())})
            parts.append((sname, np.frombuffer(text.encode(), np.uint8)))
    dev = state.dev
    if with_arena:  # device pages' bytes at their host slots: the image an all-host bus has
        parts.append(
            ("arena", state.arena.buf[: state.end] if dev is None else dev.image(state.end))
        )
    elif dev is not None and dev.count:
        # device memory goes with the process: the arena file must hold the bytes now
        dev.write_back()
        if sync:
            state.arena.flush()
    extra: dict[str, Any] = {}
    if not with_arena:
        # lets the next open prove the arena file is the one this state describes: in full
        # (the CRC) or, for a lazy open, in O(1) (the file's identity and the log's end)
        extra["arena_crc"] = _crc(state.arena.buf[: state.end])
        identity = getattr(state.arena, "identity", None)
        if identity is not None:
            extra["arena_file"] = identity()
        if log_end is not None:
            extra["log_end"] = list(log_end)
        parts += [("gap_start", state.gap_start.astype("<i8")),
                  ("gap_len", state.gap_len.astype("<i8"))]  # fmt: skip
    sections: dict[str, list[int]] = {}
    offset = 0
    for name, arr in parts:
        nbytes = int(arr.nbytes)
        sections[name] = [offset, nbytes, _crc(arr)]
        offset += nbytes + (-nbytes) % 8
    header = json.dumps(
        {
            "lsn": lsn,
            "timestamp": timestamp,
            "next_page_id": n,
            "next_delta_id": state.next_delta_id,
            "end": state.end,
            "sections": sections,
            **extra,
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * ((-len(header)) % 8)
    pre = _PRE.pack(MAGIC, VERSION, len(header), crc32(header))
    tmp = path + layout.TMP_SUFFIX
    existed = os.path.exists(path)
    try:
        size = _write_file(tmp, pre, header, parts, sync)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise storage_error(f"cannot write {path}", exc, CheckpointWriteError) from exc
    try:
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise storage_error(f"cannot rename {tmp} into place", exc, CheckpointWriteError) from exc
    if sync:
        try:
            fsync_dir(os.path.dirname(path))
        except OSError as exc:
            if not existed:  # it may vanish in a power cut: let nothing count on it
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise storage_error(
                f"cannot sync the directory entry of {path}", exc, CheckpointWriteError
            ) from exc
    return size


def _write_file(
    tmp: str, pre: bytes, header: bytes, parts: list[tuple[str, Any]], sync: bool
) -> int:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, layout.FILE_MODE)
    try:
        with os.fdopen(fd, "wb", buffering=0, closefd=False) as f:
            _write(f, pre)
            _write(f, header)
            for _, arr in parts:
                mv = memoryview(arr).cast("B")
                _write(f, mv)
                if mv.nbytes % 8:
                    _write(f, b"\0" * ((-mv.nbytes) % 8))
        if sync:
            os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write(f: BinaryIO, data: bytes | memoryview) -> None:
    mv = memoryview(data)
    while mv.nbytes:
        n = f.write(mv)
        mv = mv[n or 0 :]


def read_header(f: BinaryIO, path: str) -> tuple[CheckpointHeader, int]:
    """Parse and check the header; return it and the offset where sections begin."""
    name = os.path.basename(path)
    pre = f.read(_PRE.size)
    if len(pre) < _PRE.size:
        raise CorruptCheckpointError(f"checkpoint {name} is truncated (no header)")
    magic, version, hlen, hcrc = _PRE.unpack(pre)
    if magic != MAGIC:
        raise CorruptCheckpointError(f"{name} is not an MMSB checkpoint (bad magic)")
    if version != VERSION:
        raise CorruptCheckpointError(f"checkpoint {name} has unsupported version {version}")
    raw = f.read(hlen)
    if len(raw) != hlen or crc32(raw) != hcrc:
        raise CorruptCheckpointError(f"checkpoint {name} header fails its checksum")
    try:
        h = json.loads(raw)
        sections = {str(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in h["sections"].items()}
        header = CheckpointHeader(
            int(h["lsn"]), int(h["timestamp"]), int(h["next_page_id"]),
            int(h["next_delta_id"]), int(h["end"]), sections,
            None if h.get("arena_crc") is None else int(h["arena_crc"]),
            None if h.get("arena_file") is None else [int(x) for x in h["arena_file"]],
            None if h.get("log_end") is None else [str(h["log_end"][0]),
                                                   int(h["log_end"][1]), int(h["log_end"][2])],
        )  # fmt: skip
    except (
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise CorruptCheckpointError(f"checkpoint {name} header is invalid: {exc}") from None
    if header.lsn < 0 or header.next_page_id < 1 or header.next_delta_id < 1 or header.end < 0:
        raise CorruptCheckpointError(f"checkpoint {name} header has out-of-range values")
    return header, _PRE.size + hlen


class Sections:
    """Bounds- and CRC-checked access to the sections of an open checkpoint file."""

    def __init__(
        self, f: BinaryIO, header: CheckpointHeader, base: int, file_size: int, name: str
    ) -> None:
        self.f, self.header, self.base, self.size, self.name = f, header, base, file_size, name

    def locate(self, sname: str) -> tuple[int, int, int]:
        """(file offset, length, CRC) of section ``sname``, checked to lie in the file."""
        if sname not in self.header.sections:
            raise CorruptCheckpointError(f"checkpoint {self.name} lacks section {sname!r}")
        off, length, crc = self.header.sections[sname]
        if off < 0 or length < 0 or self.base + off + length > self.size:
            raise CorruptCheckpointError(
                f"checkpoint {self.name} section {sname!r} lies outside the file"
            )
        return self.base + off, length, crc

    def read(self, sname: str) -> bytes:
        """The bytes of section ``sname``, checked against its CRC."""
        off, length, crc = self.locate(sname)
        self.f.seek(off)
        data = self.f.read(length)
        if len(data) != length or crc32(data) != crc:
            raise CorruptCheckpointError(
                f"checkpoint {self.name} section {sname!r} fails its checksum"
            )
        return data

    def read_into(self, sname: str, out: npt.NDArray[Any]) -> None:
        """Section ``sname`` read straight into ``out`` (its exact size), CRC-checked."""
        off, length, crc = self.locate(sname)
        view = memoryview(out).cast("B")  # type: ignore[arg-type]
        if length != view.nbytes:
            raise CorruptCheckpointError(
                f"checkpoint {self.name} section {sname!r} has the wrong length"
            )
        self.f.seek(off)
        if self.f.readinto(view) != length or crc32(view) != crc:  # type: ignore[attr-defined]
            raise CorruptCheckpointError(
                f"checkpoint {self.name} section {sname!r} fails its checksum"
            )

    def map_columns(self, n: int) -> dict[str, npt.NDArray[Any]] | None:
        """The page-table columns as copy-on-write views of the file, CRC-checked; ``None``
        where the file cannot be mapped or a column is not 8-aligned in it (then they are
        read). Nothing is copied and no new memory is touched until a row is written: a
        clean open of a large table costs the checksum over cached file pages, not the
        first touch of as much fresh memory (on a virtual machine, milliseconds). The file
        must never be changed in place while mapped: checkpoint files are only ever
        written under a temporary name and renamed, and unlinking one keeps its pages."""
        try:
            mm = mmap.mmap(self.f.fileno(), 0, access=mmap.ACCESS_COPY)
        except (OSError, ValueError):
            return None
        cols: dict[str, npt.NDArray[Any]] = {}
        for cname, dt in _COLUMNS:
            off, length, crc = self.locate(cname)
            if off % 8 or length != n * np.dtype(dt).itemsize:
                return None
            col = np.frombuffer(mm, np.dtype(dt), count=n, offset=off)
            if crc32(col) != crc:
                raise CorruptCheckpointError(
                    f"checkpoint {self.name} section {cname!r} fails its checksum"
                )
            cols[cname] = col
        live = cols["live"]
        cols["live"] = live.view(bool) if int(live.max()) <= 1 else live != 0
        return cols


def load_state(
    path: str, arena: Arena, *, with_arena: bool = True, lazy: bool = False
) -> tuple[State, int, int]:
    """Load a checkpoint (or clean-shutdown file) into a new :class:`State` over ``arena``.

    Returns (state, lsn, timestamp). With ``with_arena=False`` the arena is left as it is
    (the clean-shutdown fast path); otherwise it is cleared and filled from the file.
    ``lazy`` (clean-shutdown files only) trades the O(pages log pages + arena) checks for
    O(pages) ones with no sort: every page inside the arena (not that no two overlap), the
    recorded free-space lists, and the arena file's identity instead of its CRC.
    """
    name = os.path.basename(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed in finally below
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot open checkpoint {name}: {exc}") from exc
    try:
        file_size = os.fstat(f.fileno()).st_size
        header, base = read_header(f, path)
        n = header.next_page_id

        sections = Sections(f, header, base, file_size, name)
        section, read_section = sections.locate, sections.read

        for cname, dt in _COLUMNS:  # the file holds every column: n is bounded by its size
            if section(cname)[1] != n * np.dtype(dt).itemsize:
                raise CorruptCheckpointError(
                    f"checkpoint {name} column {cname!r} has the wrong length"
                )
        mapped = None if with_arena else sections.map_columns(n)
        if mapped is not None:  # the table's columns are the file's pages, copy-on-write
            state = State(arena, capacity=1)  # (its own columns are replaced at once)
            mapped["last_access"] = zeroed(n, np.uint32)
            mapped["seen_epoch"] = zeroed(n, np.uint32)
            for cname, col in mapped.items():
                setattr(state, cname, col)
        else:
            state = State(arena, capacity=max(n, 1024))
            for cname, dt in _COLUMNS:  # little-endian columns, read in place where they can be
                col = getattr(state, cname)
                if col.dtype == np.dtype(dt):
                    sections.read_into(cname, col[:n])
                else:  # live: bytes, made bool (any nonzero byte is True)
                    col[:n] = np.frombuffer(read_section(cname), dt)
        try:
            meta_raw = json.loads(read_section("metadata"))
            metadata = {int(k): str(v) for k, v in meta_raw.items()}
            for v in metadata.values():
                json.loads(v)
        except (ValueError, AttributeError, RecursionError) as exc:
            raise CorruptCheckpointError(f"checkpoint {name} metadata is invalid: {exc}") from None
        state.next_page_id = n
        state.next_delta_id = header.next_delta_id
        if state.live[0]:  # (a mapped column: writing it copies its page)
            state.live[0] = False
        lazy = lazy and not with_arena and header.arena_file is not None
        check_table(state, header.end, name, overlaps=not lazy)
        if any(not state.is_live(k) for k in metadata):
            raise CorruptCheckpointError(f"checkpoint {name} has metadata for a dead page")
        state.metadata = metadata
        if "edges" in header.sections:  # absent in files written before graphs existed
            try:
                ep, ec, ek = EdgeTable.decode(read_section("edges"))
            except ValueError as exc:
                raise CorruptCheckpointError(
                    f"checkpoint {name} edges are invalid: {exc}"
                ) from None
            if ep.size and not (state.live[ep].all() and state.live[ec].all()):
                raise CorruptCheckpointError(f"checkpoint {name} has an edge to a dead page")
            state.edges.load(ep, ec, ek)
            try:
                state.edges.check_acyclic()
            except ValueError:
                raise CorruptCheckpointError(f"checkpoint {name} holds a cyclic graph") from None
        load_attrs(state, header.sections, read_section, name)
        state.live_count = int(np.count_nonzero(state.live[:n]))
        if lazy and "gap_start" in header.sections:
            load_gaps(state, read_section, header.end, name)
            state.end = header.end  # the pages' bound is checked against it above
        else:
            state.rebuild_gaps()
        if state.end != header.end and state.live_count:
            raise CorruptCheckpointError(f"checkpoint {name} arena end does not match its pages")
        if with_arena:
            off, length, crc = section("arena")
            if length != header.end:
                raise CorruptCheckpointError(f"checkpoint {name} arena section has wrong size")
            arena.clear(length)
            view = arena.buf[:length]
            f.seek(off)
            mv: Any = memoryview(view)  # type: ignore[arg-type]
            if f.readinto(mv) != length or crc32(mv) != crc:
                raise CorruptCheckpointError(f"checkpoint {name} arena fails its checksum")
            # free space must read as zeros (new pages rely on it)
            kernels.fill_slots(arena.buf, state.gap_start, state.gap_len, np.uint8(0))
            if state.end < length:
                arena.buf[state.end : length] = 0
        elif lazy:
            arena.ensure(state.end)
            identity = getattr(arena, "identity", None)
            if identity is None or identity() != header.arena_file:
                raise CorruptCheckpointError(
                    f"{name}: the arena file is not the one recorded at shutdown"
                )
        else:
            arena.ensure(state.end)
            if header.arena_crc is None or _crc(arena.buf[: state.end]) != header.arena_crc:
                raise CorruptCheckpointError(
                    f"{name}: the arena file does not match the state recorded at shutdown"
                )
        return state, header.lsn, header.timestamp
    finally:
        f.close()
