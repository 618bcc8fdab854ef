"""Where things live in a bus directory, and with which permissions: the one place that
names them (every other module takes its names and modes from here)::

    MANIFEST.json      format version and configuration            (manifest.py)
    LOCK               writer lock (flock)                          (lock.py)
    SEQ                publication header for reader processes      (seqlock.py)
    READERS            live readers' shared locks                   (readers.py)
    SNAPSHOTS          pinned snapshots and before-images           (snapstore.py)
    arena.bin          page bytes, memory-mapped                    (arena.py)
    state.clean        page table at a clean shutdown               (recovery.py)
    log/*.seg          transaction log segments                     (log.py)
    ckpt/*.ckpt        checkpoints                                  (checkpoint.py)

A bus holds private state: directories are created ``0700`` and files ``0600``, whatever
the umask says.
"""

from __future__ import annotations

import os

MANIFEST_FILE = "MANIFEST.json"
LOCK_FILE = "LOCK"
SEQ_FILE = "SEQ"
READERS_FILE = "READERS"
SNAPSHOTS_FILE = "SNAPSHOTS"
ARENA_FILE = "arena.bin"
CLEAN_FILE = "state.clean"
LOG_DIR = "log"
CKPT_DIR = "ckpt"

SEGMENT_SUFFIX = ".seg"
CHECKPOINT_SUFFIX = ".ckpt"
TMP_SUFFIX = ".tmp"  # written, not yet renamed into place
CORRUPT_SUFFIX = ".corrupt"  # a checkpoint set aside by recovery
DROP_SUFFIX = ".drop"  # a log segment renamed for unlinking by the GC

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: str) -> None:
    """Create ``path`` and its ``log`` and ``ckpt`` folders (``DIR_MODE``) if missing."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    os.makedirs(os.path.join(path, LOG_DIR), mode=DIR_MODE, exist_ok=True)
    os.makedirs(os.path.join(path, CKPT_DIR), mode=DIR_MODE, exist_ok=True)
