"""Graph commands: ``graph`` (summary and validation) and ``provenance``.

Both open the bus read-only, so they work beside a live writer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click
import numpy as np

import mmsb
from mmsb.cli.output import (
    EXIT_FAILED,
    console,
    emit_json,
    grid,
    iso_ns,
    kv_table,
    replace_ns_times,
    require_bus,
)
from mmsb.graph import KINDS
from mmsb.history.provenance import ProvenanceStep


def graph_data(path: str, limit: int) -> dict[str, Any]:
    require_bus(path)
    with mmsb.open(path, readonly=True) as bus:
        g = bus.graph
        rep = g.validate()
        edges = g.edges()
        kinds, counts = np.unique(edges["kind"], return_counts=True)
        by_kind = {KINDS[int(k)]: int(n) for k, n in zip(kinds, counts, strict=True)}
        order = g.topo_order() if rep.acyclic else np.zeros(0, np.int64)
        roots = [int(p) for p in order.tolist() if g.parents(p).size == 0]
        return {
            "lsn": bus.lsn,
            "pages_with_edges": rep.nodes,
            "edges": rep.edges,
            "by_kind": by_kind,
            "acyclic": rep.acyclic,
            "dead_endpoints": [list(e) for e in rep.dead_endpoints],
            "ok": rep.ok,
            "roots": len(roots),
            "timings_ms": {k: v / 1e6 for k, v in rep.timings_ns.items()},
            "edge_list": [
                {
                    "parent": int(e["parent"]),
                    "child": int(e["child"]),
                    "kind": KINDS[int(e["kind"])],
                }
                for e in edges[:limit]
            ],
        }


@click.command("graph")
@click.argument("path", type=click.Path())
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="List at most N edges.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def graph(path: str, limit: int, as_json: bool) -> None:
    """The dependency graph of the bus at PATH: size, kinds, validation."""
    data = graph_data(path, limit)
    if as_json:
        emit_json(data)
    else:
        out = console()
        kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(data["by_kind"].items())) or "-"
        out.print(kv_table(f"graph at LSN {data['lsn']}", [
            ("pages with edges", f"{data['pages_with_edges']:,}"),
            ("edges", f"{data['edges']:,} ({kinds})"),
            ("root pages", f"{data['roots']:,}"),
            ("acyclic", "yes" if data["acyclic"] else "NO"),
            ("edges to missing pages", len(data["dead_endpoints"])),
            ("checked in", f"{sum(data['timings_ms'].values()):.3f} ms"),
            ("result", "OK" if data["ok"] else "INVALID"),
        ]))  # fmt: skip
        if data["edge_list"]:
            rows = [(e["parent"], e["child"], e["kind"]) for e in data["edge_list"]]
            out.print(grid("edges", ("parent", "child", "kind"), rows))
    if not data["ok"]:
        raise SystemExit(EXIT_FAILED)


def _record_json(step: ProvenanceStep) -> dict[str, Any]:
    assert step.record is not None
    return {**asdict(step.record), "time": iso_ns(step.record.timestamp)}


def _step_json(step: ProvenanceStep) -> dict[str, Any]:
    return {
        "page_id": step.page_id,
        "byte": step.byte,
        "record": None if step.record is None else _record_json(step),
        "truncated": step.truncated,
        "parents": [_step_json(p) for p in step.parents],
    }


@click.command("provenance")
@click.argument("path", type=click.Path())
@click.argument("page", type=int)
@click.option("--byte", type=click.IntRange(min=0), default=None,
              help="Explain this byte of the page instead of the whole page.")  # fmt: skip
@click.option("--depth", type=click.IntRange(min=0), default=32, show_default=True,
              help="How many derivation levels to follow.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def provenance(path: str, page: int, byte: int | None, depth: int, as_json: bool) -> None:
    """Which delta wrote PAGE (or one byte of it), and what fed it if it is derived."""
    require_bus(path)
    with mmsb.open(path, readonly=True) as bus:
        prov = bus.provenance(page, byte=byte, depth=depth)
    if as_json:
        emit_json({"lsn": prov.lsn, "depth": prov.depth, "steps": prov.steps,
                   "root": _step_json(prov.root)})  # fmt: skip
    else:
        click.echo(replace_ns_times(prov.explain()))  # --json keeps the raw nanoseconds
