"""The library's entry point, :func:`open`."""

from __future__ import annotations

import os
from typing import Any

from mmsb.bus import Bus, Clock


def open(
    path: str | os.PathLike[str] | None,
    *,
    create: bool = True,
    readonly: bool = False,
    sync: str | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> Bus:
    """Open (or create) the bus at ``path``; ``None`` gives an ephemeral bus in a temporary
    directory that is removed on close.

    Parameters
    ----------
    create
        Create the bus if ``path`` holds none (else :class:`BusNotFoundError`).
    readonly
        Open without the writer lock; writes raise :class:`ReadOnlyError`. While a writer
        has the bus open, reads follow its commits live (:meth:`Bus.refresh`,
        :meth:`Bus.wait_for`, :attr:`Bus.writer_alive`; docs/design.md, "Live readers");
        otherwise the state is built in process memory and no file is written.
    sync
        ``"always"`` (fsync every commit), ``"normal"`` (fsync on checkpoint and close,
        and from a background thread every ``sync_interval`` seconds; the default on
        disk) or ``"off"`` (never; the default for ephemeral buses). docs/design.md
        states what each survives.
    clock
        Callable returning nanoseconds, for commit timestamps (deterministic in tests).
    options
        ``cpu_fallback`` (keep ``gpu``/``unified`` pages in host memory when no device
        backend exists; default False), ``checkpoint_every`` (log bytes between automatic
        checkpoints, None to disable; default 128 MiB), ``keep_checkpoints`` (kept by
        :meth:`Bus.compact`; default 2), ``auto_compact`` (compact after each automatic
        checkpoint, bounding the log; default False, which keeps all history),
        ``segment_size`` (log segment bytes for a new bus; default 64 MiB),
        ``sync_interval`` (seconds, for ``sync="normal"``; default 1.0),
        ``tick_budget_ms`` (default 16), ``tick_gc_budget_ms`` (the GC step each tick
        runs; default 1, 0 for none), ``invariant_every`` (ticks between sampled
        invariant checks; default 100, 0 for never), ``recovery`` (``"strict"``, the
        default: a complete final log frame that fails its checksum stops the open with
        :class:`CorruptLogError`; ``"truncate"``: drop it and name its LSN in
        ``bus.recovery.dropped_lsns``), ``snapshot_memory`` (bytes the writer keeps for
        the old pages open snapshots still see, :meth:`Bus.snapshot`; default 16 MiB, at
        least 64 KiB), ``verify_on_open`` (``"lazy"``, the default: a clean reopen checks O(1)
        evidence and reads the log frames a crash recovery would need on a background
        thread; ``"full"``: it checks the arena's CRC and those frames before returning),
        ``compression`` (None, the default, or ``"zstd"``: large log frame payloads are
        stored zstandard-compressed where that saves space; the ``mmsb[compress]`` extra),
        ``retain_bytes`` / ``retain_seconds`` (None: compaction keeps more checkpoints than
        ``keep_checkpoints`` until the log after the oldest kept one holds that many bytes
        and that checkpoint is that many seconds older than the newest commit).
        An unknown option raises :class:`InvalidArgumentError`.
    """
    return Bus(path, create=create, readonly=readonly, sync=sync, clock=clock, **options)
