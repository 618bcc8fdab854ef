"""``mmsb warmup``: after it, a fresh process compiles nothing on its first apply_batch and
first ticks (every kernel signature they need comes from numba's on-disk cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmsb.cli import warmup as warmup_mod
from mmsb.cli.app import cli

#: Kernels on paths the warm-up does not take; they compile on first use.
RARE = {
    "commit_kernels.pack_mask_rows",  # masked rows whose masks are not back to back, 2+ workers
    "gc_kernels.take",  # GC ordering without the direct-address table
    "kernels.undo_epochs",  # a failed log append during recovery
}

#: What users reach for first, in a fresh process: (signatures loaded, compiled) after it.
FIRST_USE = """
import json
import numpy as np
import mmsb
from mmsb import semiring
from mmsb.engine import jit

bus = mmsb.open(None)
a, b, total, doubled = (int(p) for p in bus.create_pages(4, 64, dtype="float64"))
bus.apply_batch(mmsb.DeltaBatch.from_ranges([a, b], [0, 0], [np.ones(8).tobytes()] * 2))
bus.derive_semiring(total, [a, b], semiring.SUM_PRODUCT)
bus.tick(mmsb.DeltaBatch.from_ranges([a], [0], [np.ones(8).tobytes()]))
bus.derive(doubled, lambda t: t * 2.0, parents=[total], name="double")
bus.tick(mmsb.DeltaBatch.from_ranges([b], [0], [np.ones(8).tobytes()]))
assert bus.read(doubled)[0] == 4.0
bus.close()
print(json.dumps(jit.compile_counts()))
"""


def _run(args: list[str], cache: Path) -> str:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_after_warmup_the_first_apply_batch_and_ticks_compile_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "numba-cache"
    loaded, compiled = json.loads(_run([sys.executable, "-c", FIRST_USE], cache))
    assert compiled > 0 and loaded == 0  # an empty cache: the probe sees compilation
    report = json.loads(_run([sys.executable, "-m", "mmsb", "warmup", "--json"], cache))
    assert report["compiled"] > 0 and report["loaded"] > 0  # the probe's are reused
    assert set(report["not_called"]) <= RARE
    assert report["cache_dirs"] and all(d.startswith(str(cache)) for d in report["cache_dirs"])
    loaded, compiled = json.loads(_run([sys.executable, "-c", FIRST_USE], cache))
    assert (compiled, loaded > 0) == (0, True)
    again = json.loads(_run([sys.executable, "-m", "mmsb", "warmup", "--json"], cache))
    assert again["compiled"] == 0  # a second warm-up only loads


def test_warmup_prints_a_table_per_group(monkeypatch: pytest.MonkeyPatch) -> None:
    figures = [
        warmup_mod.GroupFigures(name, 0.5, loaded=1, compiled=2) for name, _ in warmup_mod.GROUPS
    ]
    monkeypatch.setattr(warmup_mod, "run", lambda sink=None: (0.25, figures, ["kernels.x"]))
    monkeypatch.setattr(warmup_mod, "_cache_dirs", lambda: ["/cache/engine_1"])
    result = CliRunner().invoke(cli, ["warmup"])
    assert result.exit_code == 0, result.output
    for name, _ in warmup_mod.GROUPS:
        assert name in result.output
    assert "numba cache: /cache/engine_1" in result.output
    assert "compiled on first use): kernels.x" in result.output
    data = json.loads(CliRunner().invoke(cli, ["warmup", "--json"]).output)
    assert data["compiled"] == 2 * len(figures) and data["loaded"] == len(figures)
    assert data["setup_seconds"] == 0.25 and data["not_called"] == ["kernels.x"]


def test_warmup_says_it_is_safe_beside_a_writer() -> None:
    result = CliRunner().invoke(cli, ["warmup", "--help"])
    assert "Safe beside a running writer: touches no existing bus" in result.output
    listing = CliRunner().invoke(cli, ["--help"]).output
    assert any(line.split()[:2] == ["warmup", "[safe]"] for line in listing.splitlines())
