"""The transaction log: segment files of CRC-protected frames.

Segment file ``log/<first lsn, 20 digits>.seg``::

    segment header (32 B): magic "MMSBLOG1" | version u32 | 0 u32 | first_lsn u64 |
                           crc32 of the previous 24 bytes u32 | 0 u32
    frame*

Frame (header 40 B, little-endian, payload padded with zeros to a multiple of 8)::

    magic "MMSF" | type u16 | flags u16 | lsn u64 | timestamp u64 | length u32 |
    payload crc32 u32 | header crc32 u32 (over the 32 bytes before it) | 0 u32 | payload

One committed batch is one frame, written with a single ``writev``. LSNs are consecutive
across frames and segments; the first frame of a segment carries the segment's first LSN.
Flag ``FLAG_ZSTD``: the stored payload is a zstandard frame of the encoded payload (a bus
opened with ``compression="zstd"``); the CRC covers the stored bytes, and every reader gets
the decoded payload through :func:`payload_of`.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from mmsb.engine.crc import crc32
from mmsb.errors import CorruptLogError, FormatVersionError
from mmsb.storage import layout
from mmsb.storage.codec import FRAME_TYPES

SEGMENT_MAGIC = b"MMSBLOG1"
FRAME_MAGIC = b"MMSF"
LOG_VERSION = 1
SEG_HEADER = struct.Struct("<8sIIQII")
FRAME_HEADER = struct.Struct("<4sHHQQIIII")
SEG_HEADER_SIZE = SEG_HEADER.size  # 32
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 40
MAX_FRAME_PAYLOAD = 2**32 - 1
_SEG_NAME = re.compile(r"^(\d{20})\.seg$")
FLAG_ZSTD = 1  # the payload is stored zstandard-compressed
KNOWN_FLAGS = FLAG_ZSTD
ZSTD_EXTRA = "pip install 'mmsb[compress]'"


def zstandard() -> Any:
    """The ``zstandard`` module (the ``mmsb[compress]`` extra), imported on first use."""
    try:
        import zstandard as zstd
    except ImportError:
        raise FormatVersionError(
            f"zstandard compression needs the zstandard package: {ZSTD_EXTRA}"
        ) from None
    return zstd


def payload_of(flags: int, stored: memoryview, where: str) -> memoryview:
    """The payload a frame with ``flags`` stores as ``stored`` (its checksum already
    checked): the bytes themselves, or decompressed. ``CorruptLogError`` names ``where``."""
    if not flags:
        return stored
    if flags & ~KNOWN_FLAGS:
        raise CorruptLogError(f"{where}: frame has unknown flags {flags:#x}")
    try:
        return memoryview(zstandard().ZstdDecompressor().decompress(stored))
    except FormatVersionError:
        raise
    except Exception as exc:  # zstandard.ZstdError and its kin
        raise CorruptLogError(f"{where}: compressed payload does not decode: {exc}") from None


def segment_name(first_lsn: int) -> str:
    return f"{first_lsn:020d}{layout.SEGMENT_SUFFIX}"


def list_segments(log_dir: str) -> list[tuple[int, str]]:
    """(first lsn, path) of every segment, oldest first."""
    try:
        names = os.listdir(log_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _SEG_NAME.match(name)
        if m:
            out.append((int(m.group(1)), os.path.join(log_dir, name)))
    out.sort()
    return out


def _pad(n: int) -> int:
    return (-n) % 8


def encode_segment_header(first_lsn: int) -> bytes:
    head = struct.pack("<8sIIQ", SEGMENT_MAGIC, LOG_VERSION, 0, first_lsn)
    return head + struct.pack("<II", crc32(head), 0)


def encode_frame_header(
    ftype: int,
    flags: int,
    lsn: int,
    ts: int,
    pieces: Sequence[bytes | memoryview],
    crc: int | None = None,
) -> tuple[bytes, int, int]:
    """Header bytes, payload length and padding for a frame whose payload is ``pieces``.

    ``crc``, when given, is the caller's CRC-32 of the pieces (say, computed on several
    threads); otherwise it is computed here."""
    length = 0
    for p in pieces:
        length += len(p) if isinstance(p, bytes) else memoryview(p).nbytes
    if crc is None:
        crc = 0
        for p in pieces:
            crc = crc32(p, crc)
    if length > MAX_FRAME_PAYLOAD:
        raise ValueError(f"frame payload of {length} bytes exceeds the 4 GiB frame limit")
    pad = (-length) % 8
    if pad:
        crc = crc32(_ZEROS[:pad], crc)
    head = _HEAD_NO_CRC.pack(FRAME_MAGIC, ftype, flags, lsn, ts, length, crc)
    return head + _TRAILER.pack(crc32(head), 0), length, pad


_HEAD_NO_CRC = struct.Struct("<4sHHQQII")
_TRAILER = struct.Struct("<II")
_ZEROS = bytes(8)


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    lsn: int
    timestamp: int
    payload: memoryview  # decoded (decompressed where the frame stores it compressed)
    segment: str
    offset: int  # of the frame header in the segment file
    stored: int = -1  # payload bytes in the file (-1: as many as ``payload`` has)

    @property
    def size(self) -> int:
        """Bytes the frame takes in its segment file, header and padding included."""
        n = self.payload.nbytes if self.stored < 0 else self.stored
        return FRAME_HEADER_SIZE + n + _pad(n)


@dataclass
class TornTail:
    segment: str
    offset: int
    bytes: int
    reason: str
    dropped_lsn: int | None = None  # a complete final frame dropped by a tolerant reader


class LogReader:
    """Scans segments, checking every frame.

    A *torn tail* is a final frame cut off by the end of the newest segment (its header is
    incomplete, or its length runs past the end of the file), or zero bytes after the last
    good frame: an append that never completed, so never acknowledged. It is recorded in
    :attr:`torn` and the frames before it are good. Any other damage, including a complete
    final frame whose checksum fails, raises :class:`CorruptLogError` naming the segment,
    offset (and LSN where the header is intact): that frame may be an acknowledged commit.
    With ``drop_damaged_tail=True`` (``mmsb.open(..., recovery="truncate")``) such a final
    frame is treated as torn instead, and :attr:`torn` names its LSN."""

    def __init__(
        self,
        log_dir: str,
        *,
        drop_damaged_tail: bool = False,
        mapped: bool = False,
        ends: dict[str, int] | None = None,
    ) -> None:
        """``mapped``: each segment is scanned through a read-only mapping instead of being
        read into memory whole (no copy, no transient buffer the size of a segment), for a
        scan whose caller drops each frame before the next; ``ends``: segment name -> the
        bytes of it to scan, as if the file ended there (a segment a live writer appends to:
        what lies past a size taken before it appended may be cut off again, and a mapped
        read of a cut-off page is fatal)."""
        self.log_dir = log_dir
        self.drop_damaged_tail = drop_damaged_tail
        self.mapped = mapped
        self.ends = ends or {}
        self.segments = list_segments(log_dir)
        self.torn: TornTail | None = None
        self.end_lsn = 0  # last good LSN seen by the last scan

    def frames(self, after_lsn: int = 0, headers_only: bool = False) -> Iterator[Frame]:
        """Frames with lsn > ``after_lsn``, in order."""
        segs = self.segments
        start = 0
        for i, (first, _) in enumerate(segs):
            if first <= after_lsn + 1:
                start = i
        expected: int | None = None
        for i in range(start, len(segs)):
            first, path = segs[i]
            last_segment = i == len(segs) - 1
            if expected is not None and first != expected:
                raise CorruptLogError(
                    f"log segment {os.path.basename(path)} starts at LSN {first} but LSN "
                    f"{expected} was expected (a segment is missing or misnamed)",
                    os.path.basename(path),
                    0,
                )
            lsn = first - 1
            for frame in self._scan_segment(path, first, last_segment, headers_only):
                lsn = frame.lsn
                if frame.lsn > after_lsn:
                    yield frame
            self.end_lsn = lsn
            expected = lsn + 1

    def _scan_segment(
        self, path: str, first_lsn: int, last_segment: bool, headers_only: bool
    ) -> Iterator[Frame]:
        name = os.path.basename(path)
        with open(path, "rb") as f:
            data = _segment_bytes(f, self.mapped, self.ends.get(name))
        size = len(data)
        view = memoryview(data)

        def damaged(
            offset: int, reason: str, lsn: int | None = None, length: int = 0
        ) -> CorruptLogError | None:
            """Decide torn tail (returns None after recording it) or corruption. ``lsn`` is
            given for a complete frame (intact header, within the file) that fails its
            payload checksum: never a torn append, unless the caller asked to drop it."""
            rest = data[offset:]
            if last_segment and (not rest.strip(b"\0") or (lsn is None and
                                                         _only_this_frame(offset))):  # fmt: skip
                self.torn = TornTail(name, offset, size - offset, reason)
                return None
            if last_segment and lsn is not None and self.drop_damaged_tail:
                end = offset + FRAME_HEADER_SIZE + length + _pad(length)
                if not data[end:].strip(b"\0"):  # the final frame: drop it, say which LSN
                    self.torn = TornTail(name, offset, size - offset, reason, lsn)
                    return None
            at = f" (LSN {lsn})" if lsn is not None else ""
            return CorruptLogError(
                f"corrupt log frame in segment {name} at offset {offset}{at}: {reason}",
                name,
                offset,
            )

        def _only_this_frame(offset: int) -> bool:
            # a frame whose (valid) header says it reaches the end of the file, or past it
            if size - offset < FRAME_HEADER_SIZE:
                return True
            head = data[offset : offset + FRAME_HEADER_SIZE]
            fields = FRAME_HEADER.unpack(head)
            if crc32(head[:32]) != fields[7] or fields[0] != FRAME_MAGIC:
                return False
            length = fields[5]
            return bool(offset + FRAME_HEADER_SIZE + length + _pad(length) >= size)

        if size < SEG_HEADER_SIZE:
            err = damaged(0, "segment header is incomplete")
            if err:
                raise err
            return
        magic, version, _, seg_first, crc, reserved = SEG_HEADER.unpack_from(data, 0)
        bad = magic != SEGMENT_MAGIC or crc32(data[:24]) != crc or reserved != 0
        if bad or seg_first != first_lsn:
            err = damaged(0, "bad segment header")
            if err:
                raise err
            return
        if version != LOG_VERSION:
            raise CorruptLogError(
                f"segment {name} has log format version {version}; this build reads {LOG_VERSION}",
                name,
                0,
            )
        pos = SEG_HEADER_SIZE
        expected = first_lsn
        while pos < size:
            if size - pos < FRAME_HEADER_SIZE:
                err = damaged(pos, "frame header is cut short")
                if err:
                    raise err
                return
            fields = FRAME_HEADER.unpack_from(data, pos)
            magic, ftype, flags, lsn, ts, length, pcrc, hcrc, _ = fields
            if magic != FRAME_MAGIC or crc32(view[pos : pos + 32]) != hcrc or fields[8]:
                err = damaged(pos, "bad frame header checksum")
                if err:
                    raise err
                return
            body = pos + FRAME_HEADER_SIZE
            stop = body + length + _pad(length)
            if stop > size:
                err = damaged(pos, f"frame of {length} bytes runs past the end of the file")
                if err:
                    raise err
                return
            if not headers_only and crc32(view[body:stop]) != pcrc:
                err = damaged(pos, "payload checksum mismatch", lsn, length)
                if err:
                    raise err
                return
            if lsn != expected:
                raise CorruptLogError(
                    f"segment {name} offset {pos}: frame has LSN {lsn}, expected {expected}",
                    name,
                    pos,
                )
            if ftype not in FRAME_TYPES:
                raise CorruptLogError(
                    f"segment {name} offset {pos}: unknown frame type {ftype}", name, pos
                )
            payload = payload_of(flags, view[body : body + length], f"segment {name} offset {pos}")
            yield Frame(ftype, flags, lsn, ts, payload, name, pos, length)
            expected += 1
            pos = stop


def _segment_bytes(f: Any, mapped: bool, limit: int | None) -> Any:
    """The bytes of the open segment ``f`` (at most ``limit``): a read-only mapping where
    ``mapped`` and the file can be mapped, else read."""
    end = os.fstat(f.fileno()).st_size if limit is None else limit
    return _file_bytes(f, 0, end, mapped)[0]


def _file_bytes(f: Any, start: int, end: int, mapped: bool) -> tuple[Any, int]:
    """Bytes ``[start, end)`` of the open file ``f`` (fewer where the file is shorter) and
    where ``start`` lies in what is returned: a read-only mapping (from the page boundary
    at or before ``start``) where ``mapped`` and the file can be mapped, else the bytes
    read."""
    if mapped:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        size = min(os.fstat(f.fileno()).st_size, end)
        if size > start:
            try:
                m = mmap.mmap(f.fileno(), size - base, offset=base, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                pass
            else:
                return m, start - base
    f.seek(start)
    return f.read(max(end - start, 0)), 0


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def truncate_segment(path: str, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def frame_ends_log(log_dir: str, segment: str, size: int, offset: int, lsn: int) -> bool:
    """Whether the log ends exactly where a clean shutdown recorded it, checked in O(1):
    ``segment`` is the newest segment, ``size`` bytes long, and the frame at ``offset`` in
    it is intact (header and payload checksums), has LSN ``lsn`` and ends the file."""
    segs = list_segments(log_dir)
    if not segs or os.path.basename(segs[-1][1]) != segment or offset < SEG_HEADER_SIZE:
        return False
    try:
        with open(segs[-1][1], "rb") as f:
            if os.fstat(f.fileno()).st_size != size:
                return False
            f.seek(offset)
            head = f.read(FRAME_HEADER_SIZE)
            if len(head) != FRAME_HEADER_SIZE:
                return False
            magic, _, _, flsn, _, length, pcrc, hcrc, zero = FRAME_HEADER.unpack(head)
            if magic != FRAME_MAGIC or crc32(head[:32]) != hcrc or zero or flsn != lsn:
                return False
            start = offset + FRAME_HEADER_SIZE
            if start + length + _pad(length) != size:
                return False
            return bool(_mapped_crc(f, start, size) == pcrc)
    except OSError:
        return False


# from this many bytes a checksum is taken over a mapping rather than a read copy (measured
# here: equal at 512 KiB; 1 MiB 39 against 74 us, 8 MB 0.34 against 0.95 ms)
MAP_MIN = 1 << 20


def _mapped_crc(f: Any, start: int, end: int, map_min: int = MAP_MIN) -> int:
    """CRC-32 of bytes ``[start, end)`` of the open file ``f``: from ``map_min`` bytes on
    through a read-only mapping of them (no copy into a buffer first), where the file can
    be mapped; else read."""
    data, at = _file_bytes(f, start, end, end - start >= map_min)
    if isinstance(data, bytes):
        return crc32(data)
    try:
        with memoryview(data) as view, view[at:] as body:
            return crc32(body)
    finally:
        data.close()
