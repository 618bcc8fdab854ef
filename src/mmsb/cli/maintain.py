"""Commands that write: ``checkpoint`` and ``compact`` (they take the writer lock, so they
fail with a clear message while another process writes), and ``replay``, which reads the
source read-only and writes a new, standalone bus."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import click

import mmsb
from mmsb.cli import progress
from mmsb.cli.output import EXIT_FAILED, emit_json, human_bytes, require_bus


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def checkpoint(path: str, as_json: bool) -> None:
    """Write a checkpoint of the bus at PATH now."""
    require_bus(path)
    with mmsb.open(path, create=False) as bus:
        ck = bus.checkpoint()
    if as_json:
        emit_json(asdict(ck))
        return
    click.echo(
        f"checkpoint at LSN {ck.lsn:,}: {os.path.basename(ck.path)}, {human_bytes(ck.bytes)}, "
        f"{ck.pages:,} pages, {ck.seconds:.3f} s"
    )


@click.command()
@click.argument("path", type=click.Path())
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Checkpoints to keep; history before the oldest kept one is dropped.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@progress.option
def compact(path: str, keep: int, as_json: bool, show_progress: bool | None) -> None:
    """Drop old checkpoints and the log segments they cover."""
    require_bus(path)
    with progress.bars(progress.wanted(show_progress, json_on_stdout=as_json)) as sink:
        steps = progress.Steps(sink, f"compact {path}", 2)
        with mmsb.open(path, create=False, keep_checkpoints=keep) as bus:
            steps.done()  # opened (recovered)
            info = bus.compact()
            steps.done()
    if as_json:
        emit_json(asdict(info))
        return
    click.echo(
        f"removed {info.segments_removed:,} log segments ({human_bytes(info.bytes_removed)}) "
        f"and {info.checkpoints_removed:,} checkpoints; history now starts after LSN "
        f"{info.oldest_lsn:,}"
    )


@click.command()
@click.argument("path", type=click.Path())
@click.option("--to", "lsn", type=click.IntRange(min=0), help="LSN to stop at (default: last).")
@click.option(
    "--out", "out", type=click.Path(), required=True, help="New directory for the result."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@progress.option
def replay(path: str, lsn: int | None, out: str, as_json: bool, show_progress: bool | None) -> None:
    """Write a standalone bus at OUT holding PATH's history up to an LSN.

    The result is opened again and its state hash compared with the source's snapshot at
    that LSN; exit code 1 if they differ.
    """
    require_bus(path)
    with progress.bars(progress.wanted(show_progress, json_on_stdout=as_json)) as sink:
        # phases: open the source, export, the source's hash at the LSN, open the result
        steps = progress.Steps(sink, f"replay {path}", 4)
        with mmsb.open(path, readonly=True) as src:
            steps.done()
            target = src.lsn if lsn is None else lsn
            src.export(out, target)
            steps.done()
            with src.at(target) as snap:
                expected = snap.state_hash()
            steps.done()
        result = mmsb.open(out, readonly=True)
        steps.done()
    with result:
        got = result.state_hash()
        data: dict[str, Any] = {
            "source": os.path.abspath(path),
            "out": os.path.abspath(out),
            "lsn": result.lsn,
            "pages": len(result),
            "state_hash": got,
            "source_state_hash": expected,
            "match": got == expected and result.lsn == target,
            "recovery": {
                "checkpoint_lsn": result.recovery.checkpoint_lsn,
                "frames_replayed": result.recovery.frames_replayed,
            },
        }
    if as_json:
        emit_json(data)
    else:
        verdict = "matches" if data["match"] else "DIFFERS FROM"
        click.echo(
            f"wrote {out}: LSN {data['lsn']:,}, {data['pages']:,} pages (replayed "
            f"{data['recovery']['frames_replayed']:,} frames after checkpoint LSN "
            f"{data['recovery']['checkpoint_lsn']:,}); state hash {got} {verdict} the "
            f"source at LSN {target:,}"
        )
    if not data["match"]:
        raise click.exceptions.Exit(EXIT_FAILED)
