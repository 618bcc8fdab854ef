"""Target #2: delta integrity.

Two halves. First, :func:`mmsb.verify` over the whole log of the target-#1 workload: every
frame's CRC and schema, no orphan deltas, epochs strictly increasing per page, every
checkpoint equal to the replayed state; the counts it checked must equal what the workload
committed (100% coverage). Second, a set of structurally bad deltas is offered to the live
bus through its public API; each must be rejected with its typed error and leave the LSN,
the state hash and the log unchanged.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.delta import DENSE, RANGE, SPARSE, Delta
from mmsb.errors import InvalidDeltaError, MMSBError, PageNotFoundError
from mmsb.storage import layout
from mmsb.validation.runner import Context, Outcome
from mmsb.validation.workload import WorkloadParams, WorkloadRun
from mmsb.verify import verify


@dataclass(frozen=True)
class BadCase:
    name: str
    expected: type[MMSBError]
    attempt: Callable[[mmsb.Bus], object]


def _raw_batch(
    pid: int,
    offset: int,
    length: int,
    kind: int,
    payload: bytes,
    mask: bytes = b"",
    plen: int | None = None,
) -> DeltaBatch:
    """A one-row batch from raw columns, bypassing the constructors' checks (as a caller
    filling columns by hand, or a buggy producer, would)."""

    def col(v: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        return np.array([v], np.int64)

    return DeltaBatch(
        col(pid), col(offset), col(length), np.array([kind], np.uint8), col(0),
        col(len(payload) if plen is None else plen), col(-1 if kind == RANGE else 0),
        np.frombuffer(payload, np.uint8).copy(), np.frombuffer(mask, np.uint8).copy(),
        np.zeros(1, np.uint16), ("validate",), np.full(1, -1, np.int32), (),
    )  # fmt: skip


def bad_cases(run: WorkloadRun, deleted: int) -> list[BadCase]:
    """The injected deltas: each names the typed error it must raise."""
    page = run.byte_ids[0]
    size = run.bus.page(page).size
    fpage = run.float_ids[0] if run.float_ids else None
    unknown = int(max(run.bus.page_ids().max(), deleted)) + 1000
    good = Delta.range(page, b"\x01\x02", 0)
    cases = [
        BadCase("unknown page", PageNotFoundError, lambda b: b.apply(Delta.range(unknown, b"x"))),
        BadCase("deleted page", PageNotFoundError, lambda b: b.write(deleted, b"x")),
        BadCase(
            "deleted page inside an otherwise good batch",
            PageNotFoundError,
            lambda b: b.apply_batch(DeltaBatch.from_deltas([good, Delta.range(deleted, b"x")])),
        ),
        BadCase(
            "range past the page end",
            InvalidDeltaError,
            lambda b: b.apply(Delta.range(page, bytes(16), size - 8)),
        ),
        BadCase(
            "write past the page end",
            InvalidDeltaError,
            lambda b: b.write(page, bytes(2), offset=size - 1),
        ),
        BadCase(
            "dense mask past the page end",
            InvalidDeltaError,
            lambda b: b.apply(Delta.dense(page, [1] * 8, bytes(8), size - 4)),
        ),
        BadCase(
            "bad row inside an otherwise good batch (atomicity)",
            InvalidDeltaError,
            lambda b: b.apply_batch(
                DeltaBatch.from_deltas([good, good, Delta.range(page, bytes(4), size)])
            ),
        ),
        BadCase(
            "dense mask/payload length mismatch (constructor)",
            InvalidDeltaError,
            lambda b: b.apply(Delta.dense(page, [1, 0, 1], b"\x01\x02")),
        ),
        BadCase(
            "dense mask/payload length mismatch (raw columns)",
            InvalidDeltaError,
            lambda b: b.apply_batch(_raw_batch(page, 0, 3, DENSE, b"\x01\x02", b"\x01\x00\x01")),
        ),
        BadCase(
            "sparse payload/set-bit mismatch (constructor)",
            InvalidDeltaError,
            lambda b: b.apply(Delta.sparse(page, [1, 0, 1], b"\x01")),
        ),
        BadCase(
            "sparse payload/set-bit mismatch (raw columns)",
            InvalidDeltaError,
            lambda b: b.apply_batch(_raw_batch(page, 0, 3, SPARSE, b"\x01", b"\x01\x00\x01")),
        ),
        BadCase(
            "negative offset (raw columns)",
            InvalidDeltaError,
            lambda b: b.apply_batch(_raw_batch(page, -4, 4, RANGE, bytes(4))),
        ),
        BadCase(
            "payload slice outside the pool (raw columns)",
            InvalidDeltaError,
            lambda b: b.apply_batch(_raw_batch(page, 0, 8, RANGE, bytes(4), plen=8)),
        ),
        BadCase(
            "unknown delta shape (raw columns)",
            InvalidDeltaError,
            lambda b: b.apply_batch(_raw_batch(page, 0, 2, 3, bytes(2), b"\x01\x01")),
        ),
        BadCase("empty payload", InvalidDeltaError, lambda b: b.write(page, b"")),
        BadCase("page id 0", InvalidDeltaError, lambda b: b.apply(Delta.range(0, b"x"))),
        BadCase("not a delta", InvalidDeltaError, lambda b: b.apply("not a delta")),  # type: ignore[arg-type]
    ]
    if fpage is not None:
        cases += [
            BadCase(
                "wrong dtype for a float64 page",
                InvalidDeltaError,
                lambda b: b.write(fpage, np.arange(4, dtype=np.int64)),
            ),
            BadCase(
                "float64 write at a misaligned offset",
                InvalidDeltaError,
                lambda b: b.write(fpage, np.zeros(2), offset=3),
            ),
        ]
    return cases


def log_bytes(path: str) -> int:
    log_dir = os.path.join(path, layout.LOG_DIR)
    return sum(os.path.getsize(os.path.join(log_dir, n)) for n in os.listdir(log_dir))


def inject(run: WorkloadRun, cases: list[BadCase]) -> list[dict[str, Any]]:
    """Offer each bad delta to the live bus; record how it was handled."""
    bus = run.bus
    out = []
    for case in cases:
        lsn, digest, nbytes = bus.lsn, bus.state_hash(), log_bytes(run.path)
        got: str | None = None
        message = ""
        try:
            case.attempt(bus)
            outcome = "accepted"
        except MMSBError as exc:
            got, message = type(exc).__name__, str(exc)
            outcome = "rejected" if isinstance(exc, case.expected) else "wrong error"
        if outcome == "rejected" and (
            bus.lsn != lsn or bus.state_hash() != digest or log_bytes(run.path) != nbytes
        ):
            outcome = "state changed"
        out.append(
            {
                "case": case.name,
                "expected": case.expected.__name__,
                "got": got,
                "message": message,
                "outcome": outcome,
            }
        )
    return out


def deleted_page(run: WorkloadRun) -> int:
    """A page deleted during the workload (one is created and deleted if none was)."""
    if run.deleted_ids:
        return run.deleted_ids[0]
    pid = run.bus.create_page(8)
    run.hashes.append(run.bus.state_hash())
    run.bus.delete_page(pid)
    run.hashes.append(run.bus.state_hash())
    run.deleted_ids.append(pid)
    return pid


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    wparams = WorkloadParams.from_params(params)
    wl = ctx.workload(wparams)
    t0 = time.perf_counter()
    wl.bus.sync_now()
    rep = verify(wl.path)
    t1 = time.perf_counter()
    ckpts = len(wl.checkpoint_lsns)
    committed = wl.deltas + wl.derived_deltas  # input deltas and propagation's
    coverage_ok = rep.frames == wl.lsn and rep.deltas == committed
    verify_ok = (
        rep.ok
        and coverage_ok
        and rep.orphan_deltas == 0
        and rep.epoch_violations == 0
        and rep.invalid_deltas == 0
        and rep.checkpoints_checked == ckpts
    )
    deleted = deleted_page(wl)
    results = inject(wl, bad_cases(wl, deleted))
    rejected = sum(r["outcome"] == "rejected" for r in results)
    wl.bus.sync_now()
    after = verify(wl.path)
    after_ok = after.ok and after.frames == wl.lsn
    t2 = time.perf_counter()
    pct = 100.0 * min(rep.frames, wl.lsn) / wl.lsn if wl.lsn else 0.0
    dpct = 100.0 * min(rep.deltas, committed) / committed if committed else 0.0
    # never round a shortfall up to 100%
    coverage = "100%" if coverage_ok else f"{math.floor(min(pct, dpct) * 10) / 10:.1f}%"
    figures: dict[str, Any] = {
        "verify_ok": rep.ok,
        "frames_checked": rep.frames,
        "frames_in_log": wl.lsn,
        "deltas_checked": rep.deltas,
        "deltas_committed": committed,
        "derived_deltas": wl.derived_deltas,
        "schema_checked_pct": round(min(pct, dpct), 3),
        "orphan_deltas": rep.orphan_deltas,
        "epoch_violations": rep.epoch_violations,
        "invalid_deltas": rep.invalid_deltas,
        "checkpoints_checked": rep.checkpoints_checked,
        "checkpoints": ckpts,
        "verify_errors": rep.errors[:10],
        "injected": len(results),
        "rejected": rejected,
        "cases": results,
        "verify_after_injection_ok": after_ok,
        "seconds_verify": round(t1 - t0, 3),
        "seconds_injection": round(t2 - t1, 3),
        "ticks": wparams.ticks,
    }
    summary = (
        f"verify checked {rep.frames:,}/{wl.lsn:,} frames and {rep.deltas:,}/{committed:,} "
        f"deltas ({coverage}), {rep.orphan_deltas} orphan deltas, "
        f"{rep.epoch_violations} epoch violations, {rep.invalid_deltas} invalid, "
        f"{rep.checkpoints_checked}/{ckpts} checkpoints match; injected bad deltas rejected "
        f"{rejected}/{len(results)} with typed errors, LSN, state and log unchanged"
    )
    notes = [f"verify: {e}" for e in rep.errors[:3]]
    notes += [
        f"{r['case']}: {r['outcome']} (expected {r['expected']}, got {r['got'] or 'no error'})"
        for r in results
        if r["outcome"] != "rejected"
    ]
    if not after_ok:
        notes.append(f"verify after injection failed: {(after.errors or ['frame count'])[0]}")
    passed = verify_ok and rejected == len(results) and after_ok
    return Outcome(passed, figures, summary, notes)
