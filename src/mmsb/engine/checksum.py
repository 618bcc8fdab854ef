"""CRC-32 of a frame payload, split across worker threads where that helps.

The log's frame checksum is CRC-32 over the payload pieces (and the zero padding). With
zlib-ng (:mod:`mmsb.engine.crc`) one thread runs it at about 15 GB/s and nothing is
split. With the standard zlib (about 3.6 GB/s, as long as the arena update itself at
100,000 deltas a batch) the bytes are cut into ``parts`` contiguous spans, each span's CRC
is computed on its own thread (zlib drops the GIL on large buffers), and the results are
joined with zlib's ``crc32_combine``: the value is the same as one pass over the whole
stream. Where the zlib library cannot be loaded the combine runs in Python
(:func:`combine_slow`, also the oracle the tests hold the fast one to).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from mmsb.engine import crc
from mmsb.engine.driver import run_shares

Piece = bytes | memoryview

_combine: Any = None


def _load_combine() -> Any:
    global _combine
    if _combine is None:
        try:
            name = ctypes.util.find_library("z")
            if name is None:
                raise OSError("zlib not found")
            fn = ctypes.CDLL(name).crc32_combine
            fn.argtypes = [ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long]
            fn.restype = ctypes.c_ulong
            _combine = fn
        except (OSError, AttributeError):
            _combine = False
    return _combine


def _gf2_times(mat: list[int], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


def combine_slow(crc1: int, crc2: int, len2: int) -> int:
    """CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)`` (zlib's algorithm:
    apply ``len2`` zero bytes to ``crc1`` by repeated squaring of the shift operator)."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four zero bits
    while True:
        even = _gf2_square(odd)  # first pass: one zero byte
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def combine(crc1: int, crc2: int, len2: int) -> int:
    fn = _load_combine()
    if fn is False:
        return combine_slow(crc1, crc2, len2)
    return int(fn(crc1, crc2, len2)) & 0xFFFFFFFF


def _views(pieces: Sequence[Piece]) -> list[memoryview]:
    return [v for v in (memoryview(p).cast("B") for p in pieces) if v.nbytes]


def spans(views: Sequence[memoryview], parts: int) -> list[list[memoryview]]:
    """Cut the concatenation of ``views`` into ``parts`` contiguous spans of about equal
    length (each a list of sub-views, in order)."""
    total = sum(v.nbytes for v in views)
    bounds = [total * k // parts for k in range(parts + 1)]
    out: list[list[memoryview]] = [[] for _ in range(parts)]
    pos = 0
    for v in views:
        start, end = pos, pos + v.nbytes
        for k in range(parts):
            lo, hi = max(start, bounds[k]), min(end, bounds[k + 1])
            if lo < hi:
                out[k].append(v[lo - start : hi - start])
        pos = end
    return out


def _crc_span(span: Sequence[memoryview], fn: Callable[..., int]) -> tuple[int, int]:
    crc = 0
    for v in span:
        crc = fn(v, crc)
    return crc, sum(v.nbytes for v in span)


def crc32(pieces: Sequence[Piece], parts: int = 1, *, split: bool | None = None) -> int:
    """CRC-32 of the concatenated ``pieces``; over ``parts`` threads when ``split`` (by
    default: when the CRC in use lets go of the GIL, i.e. without zlib-ng)."""
    views = _views(pieces)
    if split is None:
        split = crc.RELEASES_GIL
    fn = zlib.crc32 if split else crc.crc32
    if not split or parts <= 1 or sum(v.nbytes for v in views) < (1 << 20):
        return int(_crc_span(views, crc.crc32)[0])
    results = run_shares(_crc_span, [(s, fn) for s in spans(views, parts)])
    out = int(results[0][0])
    for part_crc, length in results[1:]:
        out = combine(out, part_crc, length)
    return out
