"""Read-only commands: ``info``, ``log``, ``history``, ``verify``.

None of them takes the writer lock: they open the bus with ``readonly=True`` (the state is
rebuilt in process memory) or read its files directly, so they work beside a live writer.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from typing import Any

import click
import numpy as np

import mmsb
from mmsb.cli import logview, progress
from mmsb.cli.output import (
    EXIT_FAILED,
    console,
    emit_json,
    grid,
    human_bytes,
    iso_ns,
    kv_table,
    require_bus,
    short_time,
)
from mmsb.storage import layout
from mmsb.storage.checkpoint import checkpoint_name, list_checkpoints, read_header
from mmsb.storage.lock import writer_active
from mmsb.storage.recovery import CLEAN_FILE
from mmsb.storage.tableinfo import clean_table
from mmsb.types import DTYPE_NAMES, RecoveryInfo

LIMIT_HELP = "Show at most N entries, newest first (0: all)."
TIME_COLUMN = "time (local)"  # ISO 8601 with the UTC offset; --json keeps the nanoseconds


def _limit(n: int) -> int | None:
    return None if n == 0 else n


# -- info ---------------------------------------------------------------------------------


def info_data(path: str) -> dict[str, Any]:
    manifest = require_bus(path)
    log = logview.scan(path)
    ckpts = [
        {"lsn": lsn, "file": os.path.basename(p), "bytes": os.path.getsize(p)}
        for lsn, p in list_checkpoints(os.path.join(path, layout.CKPT_DIR))
    ]
    arena = os.path.join(path, layout.ARENA_FILE)
    active = writer_active(os.path.join(path, layout.LOCK_FILE))
    lsn, sizes, dtypes, names, rec = _table(path, active)
    last_ts = log.last_timestamp if log.last_lsn == lsn else 0
    if log.last_lsn != lsn:  # compacted up to a checkpoint: its header has the time
        last_ts = _checkpoint_timestamp(path, lsn)
    codes, counts = np.unique(dtypes, return_counts=True)
    by_dtype = {DTYPE_NAMES[int(c)]: int(k) for c, k in zip(codes, counts, strict=True)}
    return {
        "path": os.path.abspath(path),
        "format_version": manifest.version,
        "created": iso_ns(manifest.created_ns),
        "created_ns": manifest.created_ns,
        "segment_size": manifest.segment_size,
        "lsn": lsn,
        "last_commit": {"timestamp": last_ts, "time": iso_ns(last_ts)},
        "pages": {
            "live": int(sizes.size),
            "bytes": int(sizes.sum()),
            "by_dtype": by_dtype,
            "names": names,
        },
        "log": {
            "segments": [
                {"first_lsn": first, "file": name, "bytes": size}
                for first, name, size in log.segments
            ],
            "bytes": log.log_bytes,
            "frames": log.frames,
            "deltas": log.deltas,
            "first_lsn": log.first_lsn,
            "last_lsn": log.last_lsn,
            "torn_tail": log.torn,
        },
        "checkpoints": ckpts,
        "arena_bytes": os.path.getsize(arena) if os.path.exists(arena) else 0,
        "writer_active": active,
        "clean_shutdown": os.path.exists(os.path.join(path, CLEAN_FILE)),
        "recovery": rec,
    }


def _table(path: str, writer: bool) -> tuple[int, Any, Any, dict[str, int], dict[str, Any]]:
    """LSN, live page sizes and dtype codes, names, and how an open finds the bus: from the
    clean-shutdown file when the bus is closed and its log is as it was left (no replay, no
    kernels: fast), else from a read-only open."""
    t0 = time.perf_counter()
    table = None if writer else clean_table(path)
    if table is not None:
        info = RecoveryInfo("clean", table.lsn, 0, 0, 0, None, (), time.perf_counter() - t0,
                            verify="lazy")  # fmt: skip
        rec = asdict(info)
        rec["skipped_checkpoints"] = []
        return table.lsn, table.sizes, table.dtypes, table.names, rec
    with mmsb.open(path, readonly=True) as bus:
        pages = bus.page_table()
        rec = asdict(bus.recovery)
        rec["skipped_checkpoints"] = list(rec["skipped_checkpoints"])
        return bus.lsn, pages["size"], pages["dtype"], bus.page_names(), rec


def _names(names: dict[str, int]) -> str:
    shown = ", ".join(f"{n}={p}" for n, p in sorted(names.items())[:8])
    return f"{len(names):,}: {shown}{' ...' if len(names) > 8 else ''}" if names else "-"


def _checkpoint_timestamp(path: str, lsn: int) -> int:
    ck = os.path.join(path, layout.CKPT_DIR, checkpoint_name(lsn))
    try:
        with open(ck, "rb") as f:
            return read_header(f, ck)[0].timestamp
    except (OSError, mmsb.MMSBError):
        return 0


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def info(path: str, as_json: bool) -> None:
    """What is in the bus at PATH: LSN, pages, log, checkpoints, recovery."""
    data = info_data(path)
    if as_json:
        emit_json(data)
        return
    out = console()
    pages, log, rec = data["pages"], data["log"], data["recovery"]
    dtypes = ", ".join(f"{n:,} {d}" for d, n in sorted(pages["by_dtype"].items())) or "-"
    out.print(
        kv_table(
            f"MMSB bus {data['path']}",
            [
                ("format", f"version {data['format_version']}, created {data['created']}"),
                ("LSN", f"{data['lsn']:,} (last commit {data['last_commit']['time']})"),
                ("pages", f"{pages['live']:,} live, {human_bytes(pages['bytes'])} ({dtypes})"),
                ("named", _names(pages["names"])),
                ("arena file", human_bytes(data["arena_bytes"])),
                ("writer", "open now" if data["writer_active"] else "none"),
                ("last shutdown", "clean" if data["clean_shutdown"] else "not clean (or open)"),
            ],
        )
    )
    torn = log["torn_tail"]
    out.print(
        kv_table(
            "log",
            [
                ("segments", f"{len(log['segments']):,} ({human_bytes(log['bytes'])})"),
                ("frames", f"{log['frames']:,} (LSN {log['first_lsn']:,}..{log['last_lsn']:,})"),
                ("deltas", f"{log['deltas']:,}"),
                (
                    "torn tail",
                    "none" if torn is None else f"{torn['bytes']:,} B in {torn['segment']}",
                ),
            ],
        )
    )
    ck_rows = [(f"{c['lsn']:,}", c["file"], human_bytes(c["bytes"])) for c in data["checkpoints"]]
    if ck_rows:
        out.print(grid("checkpoints", ["LSN", "file", "size"], ck_rows))
    else:
        out.print("checkpoints: none")
    skipped = "; ".join(rec["skipped_checkpoints"]) or "none"
    out.print(
        kv_table(
            "recovery (this read-only open)",
            [
                ("mode", rec["mode"]),
                ("from checkpoint LSN", f"{rec['checkpoint_lsn']:,}"),
                (
                    "replayed",
                    f"{rec['frames_replayed']:,} frames, {rec['deltas_replayed']:,} deltas",
                ),
                ("skipped checkpoints", skipped),
                ("seconds", f"{rec['seconds']:.3f}"),
            ],
        )
    )


# -- history and log ----------------------------------------------------------------------


def _page_ref(ctx: Any, param: Any, value: str | None) -> int | str | None:
    """A PAGE argument: an id, or a page name (names never read as numbers)."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _page_info(bus: mmsb.Bus, page: int) -> dict[str, Any]:
    info = asdict(bus.page(page))
    dt = info.pop("record_dtype")
    info["record_dtype"] = None if dt is None else str(dt)
    return info


def history_data(path: str, page: int | str, limit: int | None) -> dict[str, Any]:
    require_bus(path)
    with mmsb.open(path, readonly=True) as bus:
        page = bus.page_id(page) if isinstance(page, str) else page
        records = bus.history(page, limit)
        live = page in bus
        return {
            "path": os.path.abspath(path),
            "page_id": page,
            "live": live,
            "page": _page_info(bus, page) if live else None,
            "lsn": bus.lsn,
            "deltas": [{**asdict(r), "time": iso_ns(r.timestamp)} for r in records],
        }


def _print_deltas(title: str, deltas: list[dict[str, Any]]) -> None:
    rows = [
        (
            f"{d['delta_id']:,}", f"{d['lsn']:,}", d["page_id"], d["epoch"],
            short_time(d["timestamp"]), d["shape"], d["offset"], d["length"], d["source"],
            "" if d["metadata"] is None else json.dumps(d["metadata"]),
        )
        for d in deltas
    ]  # fmt: skip
    columns = ["delta", "LSN", "page", "epoch", TIME_COLUMN, "shape", "offset", "length", "source",
               "metadata"]  # fmt: skip
    console().print(grid(title, columns, rows))


def _show_history(path: str, page: int | str, limit: int, as_json: bool) -> None:
    data = history_data(path, page, _limit(limit))
    if as_json:
        emit_json(data)
        return
    state = "live" if data["live"] else "deleted"
    named = data["page"]["name"] if data["page"] else None
    shown = f"page {data['page_id']}" + (f" '{named}'" if named else "")
    title = f"{shown} ({state}): {len(data['deltas']):,} deltas shown, newest first"
    _print_deltas(title, data["deltas"])


@click.command()
@click.argument("path", type=click.Path())
@click.argument("page", callback=_page_ref)
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help=LIMIT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def history(path: str, page: int | str, limit: int, as_json: bool) -> None:
    """Deltas that touched PAGE (an id or a name) of the bus at PATH, newest first."""
    _show_history(path, page, limit, as_json)


def log_data(path: str, limit: int | None, deltas: bool) -> dict[str, Any]:
    require_bus(path)
    keep = limit if limit is not None else 1 << 62
    scan = logview.scan(path, keep, batches_only=deltas)
    frames = list(reversed(scan.newest))
    out: dict[str, Any] = {
        "path": os.path.abspath(path),
        "frames_in_log": scan.frames,
        "deltas_in_log": scan.deltas,
        "first_lsn": scan.first_lsn,
        "last_lsn": scan.last_lsn,
        "torn_tail": scan.torn,
    }
    if deltas:
        rows: list[dict[str, Any]] = []
        for frame in frames:
            rows += [{**r, "time": iso_ns(r["timestamp"])} for r in logview.delta_rows(frame)]
            if limit is not None and len(rows) >= limit:
                break
        out["deltas"] = rows[:limit]
    else:
        out["frames"] = [{**logview.frame_summary(f), "time": iso_ns(f.timestamp)} for f in frames]
    return out


@click.command("log")
@click.argument("path", type=click.Path())
@click.option("--page", callback=_page_ref, help="Show this page's (id or name) history instead.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help=LIMIT_HELP)
@click.option("--deltas", is_flag=True, help="List individual deltas instead of frames.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def log_cmd(path: str, page: int | str | None, limit: int, deltas: bool, as_json: bool) -> None:
    """Commits (log frames) of the bus at PATH, newest first."""
    if page is not None:
        _show_history(path, page, limit, as_json)
        return
    data = log_data(path, _limit(limit), deltas)
    if as_json:
        emit_json(data)
        return
    span = f"LSN {data['first_lsn']:,}..{data['last_lsn']:,}" if data["frames_in_log"] else "empty"
    head = f"log of {data['path']}: {data['frames_in_log']:,} frames ({span}), "
    head += f"{data['deltas_in_log']:,} deltas"
    if deltas:
        _print_deltas(head, data["deltas"])
    else:
        rows = [
            (f"{f['lsn']:,}", short_time(f["timestamp"]), f["type"], logview.describe(f),
             f"{f['segment']}@{f['offset']}")
            for f in data["frames"]
        ]  # fmt: skip
        console().print(grid(head, ["LSN", TIME_COLUMN, "type", "what", "where"], rows))
    if data["torn_tail"] is not None:
        t = data["torn_tail"]
        click.echo(
            f"torn tail: {t['bytes']:,} B in {t['segment']} at {t['offset']} ({t['reason']})"
        )


# -- verify -------------------------------------------------------------------------------


@click.command()
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@progress.option
def verify(path: str, as_json: bool, show_progress: bool | None) -> None:
    """Check the integrity of the bus at PATH (read-only). Exit code 1 when not ok."""
    require_bus(path)
    with progress.bars(progress.wanted(show_progress, json_on_stdout=as_json)) as sink:
        steps = progress.Steps(sink, f"verify {path}", 1)  # one library call: elapsed time
        report = mmsb.verify(path)
        steps.done()
    if as_json:
        emit_json(asdict(report))
    else:
        click.echo(report.summary())
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)
