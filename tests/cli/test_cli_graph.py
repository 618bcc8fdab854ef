"""``mmsb graph`` and ``mmsb provenance`` against a real on-disk bus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import mmsb
from mmsb import semiring
from mmsb.cli.app import cli


def make_bus(path: Path) -> tuple[int, int, int]:
    with mmsb.open(path) as bus:
        a, b, c = (int(x) for x in bus.create_pages(3, 64, dtype="float64"))
        bus.derive_semiring(b, [a], semiring.SUM_PRODUCT, weights=[2.0])
        bus.derive_semiring(c, [b], semiring.SUM_PRODUCT, weights=[3.0])
        bus.graph.add_edge(a, c, "control")
        bus.tick(mmsb.DeltaBatch.from_ranges([a], [8], [np.ones(2).tobytes()]))
    return a, b, c


def test_graph_command(tmp_path: Path) -> None:
    a, b, c = make_bus(tmp_path / "bus")
    res = CliRunner().invoke(cli, ["graph", str(tmp_path / "bus"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["ok"] and data["acyclic"]
    assert data["edges"] == 3
    assert data["by_kind"] == {"control": 1, "data": 2}
    assert {(e["parent"], e["child"], e["kind"]) for e in data["edge_list"]} == {
        (a, b, "data"), (b, c, "data"), (a, c, "control"),
    }  # fmt: skip
    text = CliRunner().invoke(cli, ["graph", str(tmp_path / "bus")])
    assert text.exit_code == 0 and "OK" in text.stdout


def test_provenance_command(tmp_path: Path) -> None:
    a, b, c = make_bus(tmp_path / "bus")
    res = CliRunner().invoke(cli, ["provenance", str(tmp_path / "bus"), str(c), "--json"])
    assert res.exit_code == 0, res.output
    root = json.loads(res.stdout)["root"]
    assert root["page_id"] == c and root["record"]["source"] == "propagation"
    assert root["record"]["metadata"]["derive"] == "SUM_PRODUCT"
    (pb,) = root["parents"]
    assert pb["page_id"] == b and pb["parents"][0]["page_id"] == a
    assert pb["parents"][0]["record"]["source"] == "api"
    res = CliRunner().invoke(cli, ["provenance", str(tmp_path / "bus"), str(c), "--byte", "9"])
    assert res.exit_code == 0
    assert f"page {c} byte 9" in res.stdout and "derived by SUM_PRODUCT" in res.stdout
    res = CliRunner().invoke(cli, ["provenance", str(tmp_path / "bus"), str(c), "--byte", "64"])
    assert res.exit_code == 2 and "outside page" in res.output
    res = CliRunner().invoke(cli, ["provenance", str(tmp_path / "bus"), "99"])
    assert res.exit_code == 2
