"""The page table a clean shutdown recorded, read without opening the bus.

``mmsb info`` on a closed bus needs page counts, sizes, dtypes and names, not the arena:
:func:`clean_table` reads them from ``state.clean`` (header and section checksums checked)
when the log still ends where that file says (checked in O(1), as a lazy open checks it),
so no replay runs and no kernel is compiled or loaded. Anything else returns None and the
caller opens the bus read-only as usual.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.errors import MMSBError
from mmsb.storage import layout
from mmsb.storage.checkpoint import Sections, read_header
from mmsb.storage.log import frame_ends_log


@dataclass(frozen=True)
class CleanTable:
    """The live pages of a cleanly closed bus, as its clean-shutdown file records them."""

    lsn: int
    timestamp: int
    sizes: npt.NDArray[np.int64]  # of the live pages, by ascending id
    dtypes: npt.NDArray[np.uint8]  # their dtype codes (mmsb.types.DTYPE_NAMES)
    names: dict[str, int]  # page name -> id


def clean_table(directory: str) -> CleanTable | None:
    """The recorded table of the bus at ``directory`` if it was closed cleanly and its log
    is as the shutdown left it; None when that cannot be shown cheaply."""
    path = os.path.join(directory, layout.CLEAN_FILE)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, base = read_header(f, path)
            end = header.log_end
            if end is None or not frame_ends_log(
                os.path.join(directory, layout.LOG_DIR), end[0], end[1], end[2], header.lsn
            ):
                return None

            sections = Sections(f, header, base, size, path)

            def section(name: str) -> bytes | None:
                return sections.read(name) if name in header.sections else None

            n = header.next_page_id
            cols = {c: section(c) for c in ("size", "dtype", "live")}
            names_raw = section("names")
    except (OSError, ValueError, MMSBError):
        return None
    if any(v is None for v in cols.values()):
        return None
    live = np.frombuffer(cols["live"], np.uint8)  # type: ignore[arg-type]
    sizes = np.frombuffer(cols["size"], "<i8")  # type: ignore[arg-type]
    codes = np.frombuffer(cols["dtype"], np.uint8)  # type: ignore[arg-type]
    if not live.size == sizes.size == codes.size == n:
        return None
    ids = np.flatnonzero(live).astype(np.int64)
    names: dict[str, Any] = {}
    try:
        if names_raw is not None:
            names = {str(v): int(k) for k, v in json.loads(names_raw).items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return CleanTable(header.lsn, header.timestamp, sizes[ids].astype(np.int64), codes[ids],
                      names)  # fmt: skip
