"""The options of :func:`mmsb.open`, checked once, in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mmsb.errors import InvalidArgumentError
from mmsb.storage.retention import Retention
from mmsb.types import SYNC_MODES, integer_arg

DEFAULT_SEGMENT_SIZE = 64 << 20
DEFAULT_CHECKPOINT_EVERY = 128 << 20
DEFAULT_SNAPSHOT_MEMORY = 16 << 20


@dataclass(frozen=True)
class Options:
    """Everything a bus is opened with besides its path, ``create``, ``readonly`` and
    ``clock`` (see :func:`mmsb.open` for each option's meaning)."""

    sync: str = "normal"
    cpu_fallback: bool = False
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY
    keep_checkpoints: int = 2
    auto_compact: bool = False
    segment_size: int = DEFAULT_SEGMENT_SIZE
    sync_interval: float = 1.0
    tick_budget_ms: float = 16.0
    tick_gc_budget_ms: float = 1.0
    invariant_every: int = 100
    recovery: str = "strict"
    snapshot_memory: int = DEFAULT_SNAPSHOT_MEMORY
    verify_on_open: str = "lazy"
    compression: str | None = None
    retain_bytes: int | None = None
    retain_seconds: float | None = None

    @property
    def retention(self) -> Retention:
        """What compaction keeps: ``keep_checkpoints``, ``retain_bytes``, ``retain_seconds``."""
        return Retention(self.keep_checkpoints, self.retain_bytes, self.retain_seconds)

    @classmethod
    def check(cls, ephemeral: bool, sync: str | None, **given: Any) -> Options:
        """The options with their defaults filled in, or :class:`InvalidArgumentError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"expected some of {', '.join(sorted(known - {'sync'}))}"
            )
        if sync is None:
            sync = "off" if ephemeral else "normal"
        if sync not in SYNC_MODES:
            raise InvalidArgumentError(
                f"unknown sync mode {sync!r}; expected one of {', '.join(SYNC_MODES)}"
            )
        opts = cls(sync=sync, **given)
        if opts.keep_checkpoints < 1:
            raise InvalidArgumentError("keep_checkpoints must be at least 1")
        si = opts.sync_interval
        if isinstance(si, bool) or not isinstance(si, (int, float)) or not (si > 0):
            raise InvalidArgumentError(f"sync_interval must be > 0 seconds, got {si!r}")
        ce = opts.checkpoint_every
        if ce is not None and integer_arg(ce, "checkpoint_every") < 1:
            raise InvalidArgumentError("checkpoint_every must be None or a positive byte count")
        for name, zero_ok in (("tick_budget_ms", False), ("tick_gc_budget_ms", True)):
            v = getattr(opts, name)
            ok = not isinstance(v, bool) and isinstance(v, (int, float))
            if not (ok and (v >= 0 if zero_ok else v > 0)):
                bound = ">= 0" if zero_ok else "> 0"
                raise InvalidArgumentError(f"{name} must be a number {bound}, got {v!r}")
        if integer_arg(opts.invariant_every, "invariant_every") < 0:
            raise InvalidArgumentError("invariant_every must be >= 0 ticks (0: never)")
        if opts.recovery not in ("strict", "truncate"):
            raise InvalidArgumentError(
                f"recovery must be 'strict' or 'truncate', got {opts.recovery!r}"
            )
        if opts.retain_bytes is not None and integer_arg(opts.retain_bytes, "retain_bytes") < 0:
            raise InvalidArgumentError("retain_bytes must be None or a byte count >= 0")
        rs = opts.retain_seconds
        if rs is not None and (isinstance(rs, bool) or not isinstance(rs, (int, float))
                               or not rs >= 0):  # fmt: skip
            raise InvalidArgumentError(f"retain_seconds must be None or >= 0, got {rs!r}")
        if opts.compression not in (None, "zstd"):
            raise InvalidArgumentError(
                f"compression must be None or 'zstd', got {opts.compression!r}"
            )
        if opts.compression == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise InvalidArgumentError(
                    "compression='zstd' needs the zstandard package: pip install 'mmsb[compress]'"
                ) from None
        if opts.verify_on_open not in ("lazy", "full"):
            raise InvalidArgumentError(
                f"verify_on_open must be 'lazy' or 'full', got {opts.verify_on_open!r}"
            )
        if integer_arg(opts.snapshot_memory, "snapshot_memory") < 65536:
            raise InvalidArgumentError("snapshot_memory must be at least 65536 bytes")
        if integer_arg(opts.segment_size, "segment_size") < 4096:
            raise InvalidArgumentError("segment_size must be at least 4096 bytes")
        return opts
