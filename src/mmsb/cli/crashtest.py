"""``mmsb crashtest``: the crash campaign (see :mod:`mmsb.reliability.crashtest`)."""

from __future__ import annotations

import json
import os
import sys

import click

from mmsb.cli import progress
from mmsb.cli.output import EXIT_FAILED, console, emit_json, grid
from mmsb.reliability import crashtest as campaign

ROWS = (
    ("iterations", "iterations"),
    ("kills", "kills"),
    ("kills during open/recovery", "early_kills"),
    ("commits started", "commits_started"),
    ("acknowledged commits", "acknowledged"),
    ("unacknowledged commits found", "recovered_unacknowledged"),
    ("lost acknowledged commits", "lost_acknowledged"),
    ("phantom commits", "phantom_commits"),
    ("half-applied batches", "half_applied"),
    ("wrong states", "wrong_state"),
    ("failed reopens", "failed_reopens"),
    ("verify failures", "verify_failures"),
    ("stale locks taken over", "stale_locks_taken_over"),
    ("stale locks missed", "stale_lock_misses"),
    ("leaked temporary files", "leaked_temporaries"),
    ("leaked shared-memory segments", "leaked_shm_segments"),
    ("writers that failed by themselves", "writer_errors"),
)


def _write_json(path: str, data: dict[str, object]) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


@click.command("crashtest")
@click.argument("path", type=click.Path(file_okay=False))
@click.option(
    "--iterations",
    "-n",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Writers killed per sync mode.",
)
@click.option(
    "--sync",
    "sync",
    type=click.Choice(["always", "normal", "off", "all"]),
    default="all",
    show_default=True,
    help="Sync mode of the killed writers.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--json",
    "json_file",
    type=click.Path(dir_okay=False),
    help="Also write the figures as JSON to this file ('-' for stdout only).",
)
@progress.option
def crashtest(
    path: str, iterations: int, sync: str, seed: int, json_file: str | None,
    show_progress: bool | None,
) -> None:  # fmt: skip
    """Kill writer processes at random moments and check every recovery.

    PATH is a new (or empty) work directory; one bus per sync mode is made under it.
    Exit status 1 when any check fails (a lost acknowledged commit, a half-applied batch,
    a failed reopen, a verify failure, a stale lock not detected, leaked files).
    """
    modes = ("always", "normal", "off") if sync == "all" else (sync,)
    partial: dict[str, campaign.ModeFigures] = {}

    with progress.bars(progress.wanted(show_progress, json_on_stdout=json_file == "-")) as sink:

        def report(fig: campaign.ModeFigures) -> None:
            sink(f"sync={fig.sync}", fig.iterations, iterations)
            if json_file and json_file != "-":  # figures so far, in case the run is cut short
                partial[fig.sync] = fig
                so_far = campaign.CampaignResult(list(partial.values()), seed, 0.0).to_json()
                _write_json(json_file, {**so_far, "complete": False})

        result = campaign.run_campaign(path, iterations, modes, seed, report)
    data = result.to_json()
    if json_file == "-":
        emit_json(data)
    else:
        if json_file:
            _write_json(json_file, {**data, "complete": True})
        rows = [[label, *(f"{getattr(m, attr):,}" for m in result.modes)] for label, attr in ROWS]
        rows.append(["time (s)", *(f"{m.seconds:.1f}" for m in result.modes)])
        rows.append(["result", *("ok" if m.ok else "FAILED" for m in result.modes)])
        title = f"crash campaign (seed {seed}, {iterations} kills per mode)"
        console().print(grid(title, ["figure", *(f"sync={m.sync}" for m in result.modes)], rows))
        for m in result.modes:
            for line in m.failures:
                click.echo(f"{m.sync}: {line}", err=True)
    if not result.ok:
        sys.exit(EXIT_FAILED)
