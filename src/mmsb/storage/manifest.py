"""The bus directory's manifest (``MANIFEST.json``): format version and configuration.

Written once at creation (temporary name, fsync, rename); read and checked on every open.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mmsb.errors import FormatVersionError
from mmsb.storage import layout
from mmsb.storage.log import fsync_dir

FORMAT = "mmsb"
FORMAT_VERSION = 1
MANIFEST = layout.MANIFEST_FILE


@dataclass(frozen=True)
class Manifest:
    version: int
    created_ns: int
    segment_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "created_ns": self.created_ns,
            "segment_size": self.segment_size,
        }


def write_manifest(directory: str, manifest: Manifest) -> None:
    path = os.path.join(directory, MANIFEST)
    tmp = path + layout.TMP_SUFFIX
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, layout.FILE_MODE)
    try:
        os.write(fd, json.dumps(manifest.to_json(), indent=2).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)


def read_manifest(directory: str) -> Manifest:
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
    except FileNotFoundError:
        raise FormatVersionError(f"{directory} is not an MMSB bus (no {MANIFEST})") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not an MMSB manifest")
        version = int(data["version"])
        manifest = Manifest(version, int(data["created_ns"]), int(data["segment_size"]))
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise FormatVersionError(f"{path} is not a valid MMSB manifest: {exc}") from None
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"{directory} uses MMSB format version {version}; this build reads version "
            f"{FORMAT_VERSION}"
        )
    if manifest.segment_size < 4096:
        raise FormatVersionError(f"{path} has an invalid segment size {manifest.segment_size}")
    return manifest
