"""``mmsb bench``: the engine and memory benchmarks, with progress bars and a results table.

The scenarios are the ones ``mmsb validate`` measures for targets #5 and #7
(:mod:`mmsb.benchmarks.engine`, :mod:`mmsb.benchmarks.memory`); ``--scale`` shrinks or
grows their sizes.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import click
from rich.table import Table

from mmsb.benchmarks import agents, compare, engine, logvolume, memory, peers, snapshots
from mmsb.benchmarks.common import Result
from mmsb.cli import progress
from mmsb.cli.output import console


def _results_table(title: str, results: list[Result], note: str | None) -> Table:
    table = Table(title=_tagged(title, note))
    for col in ("benchmark", "result", "conditions"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, _value(r), _conditions(r, note))
    return table


def scaled_note(scale: float) -> str | None:
    """What every figure of a run at ``scale`` carries: None for a full-size run (1.0)."""
    if scale == 1.0:
        return None
    return f"scale {scale:g}: not comparable with a full run"


def _tagged(text: str, note: str | None) -> str:
    return text if note is None else f"{text} ({note})"  # round brackets: rich eats [..]


def _conditions(r: Result, note: str | None = None) -> str:
    text = ", ".join(f"{k}={v}" for k, v in r.conditions.items())
    return text if note is None else f"{note}; {text}" if text else note


def _value(r: Result) -> str:
    return f"{r.value:,.0f} {r.unit}" if r.value >= 100 else f"{r.value:.3f} {r.unit}"


def _figure(f: compare.Figure) -> str:
    return f"{f.value:,.0f} {f.unit}" if f.rate else f"{f.value * 1e3:,.2f} ms"


def _versus(f: compare.Figure) -> str:
    if f.advantage is None:
        return "-"
    a = f.advantage
    return f"MMSB {a:.2f}x faster" if a >= 1 else f"MMSB {1 / a:.2f}x slower"


def _compare(scale: float, json_path: str | None) -> None:
    """Run :func:`mmsb.benchmarks.compare.run`; print its table, goal lines and skips."""
    try:
        with progress.bars(sys.stderr.isatty()) as sink:
            rep = compare.run(scale, progress=sink)
    except peers.MismatchError as e:
        raise click.ClickException(f"comparison check failed: {e}") from e
    note = scaled_note(scale)
    table = Table(title=_tagged("mmsb bench --compare", note))
    for col in ("system", "workload", "figure", "conditions", "vs MMSB"):
        table.add_column(col)
    for key, title in peers.WORKLOADS.items():
        for fig in rep.figures:
            if fig.workload == key:
                conditions = fig.conditions if note is None else f"{note}; {fig.conditions}"
                table.add_row(fig.system, title, _figure(fig), conditions, _versus(fig))
    out = console()
    out.print(table)
    s = rep.sizes
    out.print(
        f"{s['updates']:,} updates of {peers.PAYLOAD} B into {s['pages']:,} pages of "
        f"{peers.PAGE} B in {s['batches']} batches of {s['batch']:,}; {s['reads']:,} "
        f"reads; {s['durable']:,} durable commits; seed {rep.seed}"
    )
    for g in rep.goals:
        out.print(_tagged(g.text, note))
    for name, why in rep.skipped.items():
        out.print(f"{name} skipped: {why}")
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            doc = {"scale": scale, "comparable_with_full_run": note is None, "scale_note": note,
                   **rep.to_json()}  # fmt: skip
            json.dump(doc, f, indent=2, ensure_ascii=False)
        click.echo(f"results written to {json_path}", err=True)


def _cluster(scale: float, json_path: str | None) -> None:
    """Run :func:`mmsb.benchmarks.cluster.run`; print its table and the model's lines."""
    from mmsb.benchmarks import cluster as cluster_bench
    from mmsb.errors import ClusterError

    try:
        with progress.bars(sys.stderr.isatty()) as sink:
            results, model = cluster_bench.run(scale, progress=sink)
    except ClusterError as e:
        raise click.ClickException(str(e)) from e
    note = scaled_note(scale)
    out = console()
    out.print(_results_table("mmsb bench --cluster", results, note))
    for line in model:
        out.print(_tagged(line, note))
    if json_path:
        doc = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
               "scale": scale, "comparable_with_full_run": note is None, "scale_note": note,
               "results": [r.to_json() for r in results], "model": model}  # fmt: skip
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        click.echo(f"results written to {json_path}", err=True)


@click.command()
@click.option("--suite", type=click.Choice(["all", "engine", "memory", "snapshots", "agents",
                                             "logvolume"]),
              default="all",
              show_default=True, help="Which benchmarks to run.")  # fmt: skip
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="Multiply the stated sizes (deltas, pages) by this; at any other value "
                   "than 1 every figure says that it is not comparable with a full "
                   "run.")  # fmt: skip
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the results, with their conditions, to this file.")  # fmt: skip
@click.option("--compare", "compare_peers", is_flag=True,
              help="Instead of the suites: MMSB against LMDB, SQLite and numpy on shared "
                   "memory (LMDB needs mmsb[compare]).")  # fmt: skip
@click.option("--cluster", "cluster", is_flag=True,
              help="Instead of the suites: the sharded bus on a local Ray with 1, 2 and 4 "
                   "shards, Ray's per-call cost, and a model of a multi-machine cluster "
                   "(needs mmsb[cluster]).")  # fmt: skip
def bench(
    suite: str, scale: float, json_path: str | None, compare_peers: bool, cluster: bool
) -> None:
    """Measure commit throughput (1 and 2 workers, the numpy floor, the seed's workload),
    memory (page creation, a million pages, GC and CPython gc pauses) and snapshots (open
    and read cost, before-image memory under a slow reader); or, with
    --compare, MMSB against LMDB, SQLite and numpy on the same workloads."""
    if not scale > 0:
        raise click.BadParameter("must be positive", param_hint="--scale")
    if compare_peers:
        _compare(scale, json_path)
        return
    if cluster:
        _cluster(scale, json_path)
        return
    results: list[Result] = []
    detailed: list[Result] = []
    with progress.bars(sys.stderr.isatty()) as sink:
        if suite in ("all", "engine"):
            for label, fn in engine.scenarios(scale):
                results.append(fn(progress=lambda d, t, label=label: sink(label, d, t)))
        if suite in ("all", "memory"):
            pages = max(int(1_000_000 * scale), 10_000)
            results.append(memory.create_rate(pages))
            results.append(memory.million_pages(pages, progress=sink))
        if suite in ("all", "snapshots"):
            for i, scenario in enumerate(snapshots.scenarios(scale)):
                sink("snapshots", i, 2)
                got = scenario()
                results.extend(got)
                detailed.append(got[-1])  # the scenario's figures behind its ratios
        if suite in ("all", "logvolume"):
            for i, scenario in enumerate(logvolume.scenarios(scale)):
                sink("log volume", i, 3)
                results.extend(scenario())
        if suite in ("all", "agents"):
            for scenario in agents.scenarios(scale):
                sink("agents", 0, 1)
                got = scenario()
                results.extend(got)
                detailed.append(got[0])  # the pairs behind the medians
    note = scaled_note(scale)
    table = _results_table("mmsb bench", results, note)
    summary = engine.summarize(results)
    for k, v in summary.items():
        table.add_row(k, f"{v:.2f}", _tagged("ratio of the measured figures above", note))
    out = console()
    out.print(table)
    for r in results:
        if r.unit == "bytes" or r in detailed:  # the million-page run, snapshots: details
            for k, v in r.extra.items():
                shown = f"  {k}: {v:,.3f}" if isinstance(v, float) else f"  {k}: {v}"
                out.print(_tagged(shown, note))
    if json_path:
        doc = {
            "machine": {"python": platform.python_version(), "platform": platform.platform(),
                        "cpus": os.cpu_count()},
            "scale": scale,
            "comparable_with_full_run": note is None,
            "scale_note": note,
            "results": [r.to_json() for r in results],
            "summary": summary,
        }  # fmt: skip
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
        click.echo(f"results written to {json_path}", err=True)
