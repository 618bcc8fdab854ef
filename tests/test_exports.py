"""The public surface: what ``import mmsb`` offers is exactly the documented contract."""

from __future__ import annotations

import builtins

import mmsb

CONTRACT = {
    # entry points and types
    "open", "verify", "Bus", "Snapshot", "LiveSnapshot", "Delta", "DeltaBatch",
    # records
    "PageInfo", "Commit", "DeltaRecord", "CheckpointInfo", "CompactInfo", "RecoveryInfo",
    "PageDiff", "IntegrityReport", "BusStats",
    # graph, propagation, events, provenance, invariants
    "Semiring", "TickReport", "GraphReport", "Event", "Subscription", "Provenance",
    "ProvenanceStep", "InvariantResult",
    # errors
    "MMSBError", "PageNotFoundError", "InvalidDeltaError", "InvalidArgumentError",
    "CorruptStateError", "CorruptLogError", "CorruptCheckpointError", "BusLockedError",
    "BusClosedError", "BusNotFoundError", "ReadOnlyError", "FormatVersionError",
    "HistoryUnavailableError", "DeviceUnavailableError", "CycleError", "PropagationError",
    "ReentrantWriteError",
    "LogWriteError", "SnapshotTooOldError",
    "LogSyncError", "StorageIOError", "StorageFullError", "CheckpointWriteError",
    "__version__",
}  # fmt: skip


def test_all_is_the_contract() -> None:
    assert set(mmsb.__all__) == CONTRACT
    assert len(mmsb.__all__) == len(set(mmsb.__all__))
    for name in mmsb.__all__:
        assert hasattr(mmsb, name), name


def test_every_error_is_rooted_and_matches_a_builtin() -> None:
    errors = [getattr(mmsb, n) for n in mmsb.__all__ if n.endswith("Error")]
    for err in errors:
        assert issubclass(err, mmsb.MMSBError), err
        if err is not mmsb.MMSBError:
            builtin_bases = [
                b for b in err.__mro__ if b.__name__ in vars(builtins) and b is not object
            ]
            assert any(b not in (Exception, BaseException) for b in builtin_bases), err
    assert issubclass(mmsb.PageNotFoundError, KeyError)
    assert issubclass(mmsb.InvalidDeltaError, ValueError)
    assert issubclass(mmsb.BusLockedError, BlockingIOError)
    assert issubclass(mmsb.ReadOnlyError, PermissionError)
    assert issubclass(mmsb.CorruptLogError, OSError)


def test_package_ships_type_information() -> None:
    import importlib.resources

    assert importlib.resources.files("mmsb").joinpath("py.typed").is_file()
