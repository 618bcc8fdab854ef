"""The programs in ``examples/`` run as documented: exit status 0, their key lines printed,
and nothing written outside their temporary directory (removed at exit) or ``--dir``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mmsb

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/NAME ARGS`` with its temporary files under ``cwd/tmp``; its stdout."""
    tmp = cwd / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    res = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, f"{name} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    assert list(tmp.iterdir()) == [], "the temporary directory was not removed"
    return res.stdout


def test_every_example_is_listed_and_tested() -> None:
    programs = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert programs == ["agents.py", "dashboard.py", "heat_diffusion.py"]
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"examples/{p}" in readme for p in programs)


def test_heat_diffusion(tmp_path: Path) -> None:
    out = run_example("heat_diffusion.py", cwd=tmp_path)
    assert "time travel to step 10 (LSN 12): OK, identical to the grid of that step" in out
    assert "diff step 10 -> 500: 8 of 8 pages changed" in out
    assert "from 'heat'" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_heat_diffusion_keeps_its_bus_with_dir(tmp_path: Path) -> None:
    out = run_example("heat_diffusion.py", "--dir", "kept", "--steps", "40", "--size", "32",
                      "--block-rows", "8", cwd=tmp_path)  # fmt: skip
    assert "40 steps of a 32x32 grid in 4 pages" in out and "OK, identical" in out
    with mmsb.open(tmp_path / "kept", readonly=True) as bus:
        assert bus.lsn == 42 and len(bus) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "tmp"]


def test_agents(tmp_path: Path) -> None:
    out = run_example("agents.py", cwd=tmp_path)
    assert "tick  400: best cell" in out
    assert "richest cell: " in out and "; the agents " in out
    assert "derivations: 9 = best, 10 = consensus, 11 = contested, 12 = summarize" in out
    assert "derived by summarize" in out and "derived by best" in out and "observe" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


@pytest.mark.skipif(sys.platform == "win32", reason="select() on a pipe")
def test_dashboard(tmp_path: Path) -> None:
    out = run_example("dashboard.py", "--seconds", "1.5", cwd=tmp_path)
    lines = out.splitlines()
    frames = [line for line in lines if "events, busiest station" in line]
    assert len(frames) >= 3 and all(line.endswith("; consistent") for line in frames)
    assert lines[-1] == "caught up with the writer: yes; every frame consistent: yes"
    assert "events delivered for" in lines[-2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
