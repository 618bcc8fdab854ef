"""``mmsb validate``: measure the validation targets (SPEC §9) on an on-disk bus."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from mmsb.cli import progress
from mmsb.cli.output import EXIT_FAILED, CommandError
from mmsb.validation import (
    TargetResult,
    append_history,
    compare_with_history,
    format_line,
    format_report,
    load_targets,
    run_validation,
    write_json,
)
from mmsb.validation.workload import Progress as ProgressSink


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[ProgressSink | None]:
    """A progress sink drawing rich bars on stderr (only on a terminal), else None."""
    if not enabled:
        yield None
        return
    with progress.bars(True) as sink:
        yield sink


QUICK_NOTE = "not comparable with a full run"


@click.command()
@click.option("--quick", is_flag=True,
              help="Reduced sizes; every line says that it is not comparable with a full "
                   "run.")  # fmt: skip
@click.option("--full", is_flag=True, help="At least the stated sizes (some larger).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    help="Write machine-readable results to this file.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Write a self-contained HTML report with plots to this file "
    "(needs matplotlib: pip install 'mmsb[report]').",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the workloads.")
@click.option(
    "--target",
    "-t",
    "targets",
    type=int,
    multiple=True,
    help="Run only this target (repeatable; default: all).",
)
@click.option(
    "--history",
    "history_dir",
    type=click.Path(file_okay=False),
    default=".mmsb-history",
    show_default=True,
    help="Directory whose validate.jsonl gets one line per run.",
)
@click.option("--no-history", is_flag=True, help="Do not append to the history file.")
@click.option(
    "--speed-advisory",
    is_flag=True,
    help="Exit 0 when every correctness check passes even if a speed floor is missed "
    "(for shared CI machines; the output says so).",
)
def validate(
    quick: bool,
    full: bool,
    json_path: str | None,
    html_path: str | None,
    seed: int,
    targets: tuple[int, ...],
    history_dir: str,
    no_history: bool,
    speed_advisory: bool,
) -> None:
    """Measure the validation targets; one ✓/✗ line each. Exit code 1 if any is missed."""
    if quick and full:
        raise click.UsageError("--quick and --full exclude each other")
    size = "quick" if quick else "full" if full else "stated"
    specs = load_targets()
    known = {s.id for s in specs}
    unknown = sorted(set(targets) - known)
    if unknown:
        ids = ", ".join(f"#{i}" for i in unknown)
        raise CommandError(f"no validation target {ids}; known: {sorted(known)}")
    if html_path:
        from mmsb.validation.plots import require_matplotlib

        try:  # before the long run, not after it: the report needs the optional matplotlib
            require_matplotlib()
        except ImportError as e:
            raise CommandError(f"--html: {e}") from e

    note = QUICK_NOTE if quick else None

    def show(result: TargetResult) -> None:
        line = format_line(result, size, note)  # the note goes on every line, reduced or not
        mark, rest = line[:1], line[1:]
        click.echo(click.style(mark, fg="green" if result.passed else "red", bold=True) + rest)

    with _progress_bars(sys.stderr.isatty()) as sink:
        report = run_validation(
            size=size,
            seed=seed,
            only=targets or None,
            progress=sink,
            on_result=show,
            specs=specs,
        )
    # compared with the previous comparable run before anything is written, so the JSON,
    # the HTML and the new history entry carry the regression flags
    for warning in compare_with_history(report, history_dir, specs):
        click.echo(f"warning: {warning}", err=True)
    for line in format_report(report)[len(report.results) :]:  # goals, result, regressions
        click.echo(line)
    if note is not None:
        click.echo(f"{size} run: reduced sizes; its figures are {note}", err=True)
    if json_path:
        write_json(report, json_path)
        click.echo(f"results written to {json_path}", err=True)
    if html_path:
        from mmsb.validation.html import write_html  # draws with matplotlib: loaded on demand

        write_html(report, html_path)
        click.echo(f"HTML report written to {html_path}", err=True)
    if not no_history:
        path = append_history(report, history_dir)
        click.echo(f"history appended to {path}", err=True)
    if speed_advisory and report.correct and not report.ok:
        click.echo(
            "speed floors are advisory in this run (--speed-advisory): every correctness "
            "check passed, so the exit status is 0"
        )
        return
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)
