"""Target #1: replay determinism.

The workload (random ticks, page creations and deletions, checkpoints) runs on an on-disk
bus with the live state hash recorded after every commit. Then the final live state is
compared byte for byte with three replays of its log:

* from zero: the log exported to a new directory with every checkpoint removed, opened
  read-only (recovery replays every frame);
* from the first checkpoint: a crash-style copy of the live directory (taken while the
  writer is open, so there is no clean-shutdown file) keeping only the oldest checkpoint,
  opened for writing through normal recovery;
* crash recovery: the same copy with every checkpoint, which recovers from the newest.

Divergence is the number of differing bytes over all pages plus the pages missing or extra;
it must be exactly 0. Finally ``bus.at(lsn)`` (nearest checkpoint plus log) is compared with
the recorded live hash at randomly sampled intermediate LSNs.

Last, crash recovery is timed against the length of the log tail past the last checkpoint
(:func:`mmsb.validation.series.recovery_sweep`; ``figures["series"]``, plotted by the HTML
report); every recovered state must equal the writer's.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb.storage import layout
from mmsb.validation.runner import Context, Outcome
from mmsb.validation.series import recovery_sweep
from mmsb.validation.workload import WorkloadParams, WorkloadRun
from mmsb.view import StateView

# log tails (deltas past the last checkpoint) whose crash recovery is timed
RECOVERY_TAILS = (1_000, 10_000, 100_000, 1_000_000)
RECOVERY_TAILS_QUICK = (1_000, 10_000, 100_000)


@dataclass(frozen=True)
class PageImage:
    data: npt.NDArray[np.uint8]
    epoch: int
    dtype: str


def capture(view: StateView) -> dict[int, PageImage]:
    """Every live page of ``view``: a copy of its bytes, its epoch and dtype."""
    out = {}
    for pid in view.page_ids().tolist():
        info = view.page(pid)
        out[pid] = PageImage(view.read(pid).view(np.uint8), info.epoch, info.dtype)
    return out


@dataclass
class Divergence:
    bytes: int = 0  # differing bytes over the pages both sides hold
    missing_pages: int = 0  # live pages the replay lacks
    extra_pages: int = 0  # replayed pages the live bus lacks
    pages_compared: int = 0
    bytes_compared: int = 0
    epoch_mismatches: int = 0
    dtype_mismatches: int = 0

    @property
    def total(self) -> int:
        return self.bytes + self.missing_pages + self.extra_pages

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def compare(live: dict[int, PageImage], replayed: dict[int, PageImage]) -> Divergence:
    """Byte-for-byte comparison of two captured states."""
    div = Divergence()
    div.missing_pages = len(live.keys() - replayed.keys())
    div.extra_pages = len(replayed.keys() - live.keys())
    for pid in sorted(live.keys() & replayed.keys()):
        a, b = live[pid], replayed[pid]
        n = min(a.data.size, b.data.size)
        div.bytes += int(np.count_nonzero(a.data[:n] != b.data[:n]))
        div.bytes += abs(a.data.size - b.data.size)  # bytes one side has and the other lacks
        div.pages_compared += 1
        div.bytes_compared += max(a.data.size, b.data.size)
        div.epoch_mismatches += a.epoch != b.epoch
        div.dtype_mismatches += a.dtype != b.dtype
    return div


@dataclass
class ReplayCheck:
    route: str
    divergence: Divergence
    hash_equal: bool
    lsn: int
    checkpoint_lsn: int  # where the replay started (0: from zero)
    frames_replayed: int
    problems: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "divergence": self.divergence.as_dict(),
            "hash_equal": self.hash_equal,
            "lsn": self.lsn,
            "checkpoint_lsn": self.checkpoint_lsn,
            "frames_replayed": self.frames_replayed,
            "problems": self.problems,
        }

    @property
    def ok(self) -> bool:
        d = self.divergence
        return (
            d.total == 0
            and d.epoch_mismatches == 0
            and d.dtype_mismatches == 0
            and self.hash_equal
            and not self.problems
        )


def _check(
    route: str,
    bus: mmsb.Bus,
    run: WorkloadRun,
    live: dict[int, PageImage],
    start_lsn: int,
) -> ReplayCheck:
    problems = []
    rec = bus.recovery
    if bus.lsn != run.lsn:
        problems.append(f"replay ends at LSN {bus.lsn}, the live bus at {run.lsn}")
    if rec.checkpoint_lsn != start_lsn:
        problems.append(f"replay started from LSN {rec.checkpoint_lsn}, expected {start_lsn}")
    if rec.frames_replayed != run.lsn - start_lsn:
        problems.append(f"{rec.frames_replayed} frames replayed, expected {run.lsn - start_lsn}")
    return ReplayCheck(
        route,
        compare(live, capture(bus)),
        bus.state_hash() == run.hashes[-1],
        bus.lsn,
        rec.checkpoint_lsn,
        rec.frames_replayed,
        problems,
    )


def replay_from_zero(ctx: Context, run: WorkloadRun, live: dict[int, PageImage]) -> ReplayCheck:
    out = ctx.path("replay-from-zero")
    run.bus.export(out)
    ckpt_dir = os.path.join(out, layout.CKPT_DIR)
    for name in os.listdir(ckpt_dir):
        os.unlink(os.path.join(ckpt_dir, name))
    with mmsb.open(out, readonly=True) as bus:
        return _check("from zero", bus, run, live, 0)


def crash_copy(ctx: Context, run: WorkloadRun, name: str) -> str:
    """Copy the live directory while its writer is open: what a crash would leave."""
    run.bus.sync_now()
    out = ctx.path(name)
    shutil.copytree(run.path, out)
    return out


def replay_from_checkpoint(
    ctx: Context, run: WorkloadRun, live: dict[int, PageImage], *, newest: bool
) -> ReplayCheck:
    ckpts = sorted(run.checkpoint_lsns)
    if not ckpts:
        raise ValueError("the workload took no checkpoint; nothing to recover from")
    route = "crash recovery" if newest else "from the first checkpoint"
    out = crash_copy(ctx, run, "crash-newest" if newest else "crash-first-checkpoint")
    start = ckpts[-1] if newest else ckpts[0]
    if not newest:
        for lsn in ckpts[1:]:
            os.unlink(os.path.join(out, layout.CKPT_DIR, f"{lsn:020d}{layout.CHECKPOINT_SUFFIX}"))
    with mmsb.open(out, sync="off", checkpoint_every=None) as bus:
        check = _check(route, bus, run, live, start)
        if bus.recovery.mode != "replay":
            check.problems.append(f"recovery mode was {bus.recovery.mode!r}, not 'replay'")
        return check


def check_snapshots(ctx: Context, run: WorkloadRun, count: int, seed: int) -> dict[str, Any]:
    """``bus.at(lsn)`` against the recorded live hash at ``count`` random LSNs."""
    candidates = np.arange(1, run.lsn, dtype=np.int64)  # strictly between empty and now
    rng = np.random.default_rng([seed, 1])
    k = min(count, candidates.size)
    lsns = np.sort(rng.choice(candidates, size=k, replace=False)).tolist()
    mismatches = []
    for i, lsn in enumerate(lsns):
        snap = run.bus.at(lsn)
        if snap.state_hash() != run.hashes[lsn]:
            mismatches.append(lsn)
        snap.close()
        ctx.progress("snapshot checks", i + 1, k)
    return {"checked": k, "matched": k - len(mismatches), "mismatched_lsns": mismatches[:20]}


def _fmt_div(check: ReplayCheck) -> str:
    d = check.divergence
    text = f"{d.bytes:,} B"
    if d.missing_pages or d.extra_pages:
        text += f" + {d.missing_pages + d.extra_pages:,} pages missing/extra"
    return text


def run(ctx: Context, params: dict[str, Any]) -> Outcome:
    wparams = WorkloadParams.from_params(params)
    wl = ctx.workload(wparams)
    t0 = time.perf_counter()
    live = capture(wl.bus)
    checks = [
        replay_from_zero(ctx, wl, live),
        replay_from_checkpoint(ctx, wl, live, newest=False),
        replay_from_checkpoint(ctx, wl, live, newest=True),
    ]
    t1 = time.perf_counter()
    snaps = check_snapshots(ctx, wl, int(params["lsn_checks"]), int(params["seed"]))
    t2 = time.perf_counter()
    # recovery time against the length of the log tail past the last checkpoint (the plot
    # of the HTML report); each recovered state must equal the writer's
    tails = RECOVERY_TAILS_QUICK if ctx.size == "quick" else RECOVERY_TAILS
    recovery, recovery_problems = recovery_sweep(
        ctx.path, tails, seed=int(params["seed"]), progress=ctx.progress
    )
    t3 = time.perf_counter()
    zero, first, crash = checks
    passed = (
        all(c.ok for c in checks)
        and snaps["matched"] == snaps["checked"] > 0
        and not recovery_problems
    )
    figures: dict[str, Any] = {
        "divergence_from_zero": zero.divergence.total,
        "divergence_from_first_checkpoint": first.divergence.total,
        "divergence_after_crash_recovery": crash.divergence.total,
        "replays": [c.as_dict() for c in checks],
        "lsn_checks": snaps["checked"],
        "lsn_matches": snaps["matched"],
        "lsn_mismatches": snaps["mismatched_lsns"],
        "ticks": wparams.ticks,
        "commits": wl.lsn,
        "deltas": wl.deltas,
        "pages_live": len(live),
        "pages_created": wl.pages_created,
        "pages_deleted": wl.pages_deleted,
        "checkpoint_lsns": wl.checkpoint_lsns,
        "propagation": wparams.derived,
        "derived_pages": len(wl.derived_ids),
        "derived_commits": wl.derived_commits,
        "derived_deltas": wl.derived_deltas,
        "seconds_workload": round(wl.seconds, 3),
        "seconds_replays": round(t1 - t0, 3),
        "seconds_snapshots": round(t2 - t1, 3),
        "seconds_recovery_sweep": round(t3 - t2, 3),
        "workload": wparams.as_dict(),
        "series": recovery,
    }
    summary = (
        f"divergence {_fmt_div(zero)} from zero ({zero.frames_replayed:,} frames), "
        f"{_fmt_div(first)} from the first checkpoint (LSN {first.checkpoint_lsn:,}), "
        f"{_fmt_div(crash)} after crash recovery (LSN {crash.checkpoint_lsn:,}); "
        f"{snaps['matched']:,}/{snaps['checked']:,} random LSNs match the live hashes; "
        f"{wparams.ticks:,} ticks, {wl.lsn:,} commits, {wl.deltas:,} deltas + "
        f"{wl.derived_deltas:,} derived by propagation; crash recovery of a "
        f"{recovery['tail_deltas'][-1]:,}-delta log tail {recovery['open_ms'][-1]:.0f} ms"
    )
    notes: list[str] = []
    for c in checks:
        d = c.divergence
        if d.epoch_mismatches or d.dtype_mismatches or not c.hash_equal:
            notes.append(
                f"{c.route}: {d.epoch_mismatches} epoch and {d.dtype_mismatches} dtype "
                f"mismatches, state hash {'equal' if c.hash_equal else 'differs'}"
            )
        notes += [f"{c.route}: {p}" for p in c.problems]
    if snaps["mismatched_lsns"]:
        notes.append(f"snapshots differ at LSNs {snaps['mismatched_lsns']}")
    notes += [f"recovery sweep: {p}" for p in recovery_problems]
    return Outcome(passed, figures, summary, notes)
