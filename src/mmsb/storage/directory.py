"""Finding, creating and checking a bus directory (names and modes from :mod:`layout`)."""

from __future__ import annotations

import os
import tempfile
import time

from mmsb.errors import BusNotFoundError, FormatVersionError, InvalidArgumentError
from mmsb.storage import layout
from mmsb.storage.manifest import FORMAT_VERSION, Manifest, read_manifest, write_manifest


def bus_path(path: str | os.PathLike[str] | None, readonly: bool) -> str:
    """``path`` as a string; for ``None`` (an ephemeral bus) a new temporary directory."""
    if path is not None:
        return os.fspath(path)
    if readonly:
        raise InvalidArgumentError("an ephemeral bus cannot be read-only")
    return tempfile.mkdtemp(prefix="mmsb-")


def open_directory(path: str, *, create: bool, readonly: bool, segment_size: int) -> Manifest:
    """The manifest of the bus at ``path``, creating the bus there first when allowed.

    Refuses to create over a file or a non-empty directory that holds no bus.
    """
    exists = os.path.isdir(path) and os.path.exists(os.path.join(path, layout.MANIFEST_FILE))
    if not exists:
        if readonly or not create:
            if os.path.isdir(path) and os.listdir(path):
                raise FormatVersionError(f"{path} is not an MMSB bus (no {layout.MANIFEST_FILE})")
            raise BusNotFoundError(f"no bus at {path}")
        if os.path.exists(path) and not os.path.isdir(path):
            raise FormatVersionError(f"{path} exists and is not a directory")
        if os.path.isdir(path) and os.listdir(path):
            raise FormatVersionError(
                f"{path} is a non-empty directory without an MMSB manifest; refusing to "
                "create a bus over it"
            )
        layout.make_dirs(path)
        write_manifest(path, Manifest(FORMAT_VERSION, time.time_ns(), segment_size))
    return read_manifest(path)
