"""The lean install: matplotlib is the optional ``report`` extra, needed only by the plots of
``mmsb validate --html``. Without it every other command works, and ``--html`` fails at once
(before the long run) with a message naming the extra.

A missing package is simulated by ``sys.modules['matplotlib'] = None`` in a fresh
interpreter, which makes every ``import matplotlib...`` raise ImportError.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmsb.validation import ValidationReport
from mmsb.validation.html import render_html
from mmsb.validation.plots import REPORT_EXTRA, require_matplotlib

ROOT = Path(__file__).resolve().parents[1]
HINT = "pip install 'mmsb[report]'"
BLOCK = "import sys\nsys.modules['matplotlib'] = None  # as if it were not installed\n"
LOADED = "any(m.split('.')[0] == 'matplotlib' and v is not None for m, v in sys.modules.items())"


def run_python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def mmsb_without_matplotlib(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``mmsb ARGS`` in an interpreter where matplotlib cannot be imported."""
    return run_python(BLOCK + "from mmsb.cli import main\nmain()\n", *args, cwd=cwd)


def test_matplotlib_is_the_report_extra_not_a_core_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        key: [d.split(">")[0].split("=")[0].split("[")[0].strip() for d in deps]
        for key, deps in [("core", project["dependencies"]),
                          *project["optional-dependencies"].items()]
    }  # fmt: skip
    assert "matplotlib" not in names["core"]
    assert names["report"] == ["matplotlib"]
    assert "matplotlib" in names["dev"]  # the test suite draws the report
    assert REPORT_EXTRA == HINT


def test_validate_html_without_matplotlib_fails_before_the_run(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    res = mmsb_without_matplotlib("validate", "--quick", "-t", "3", "--no-history",
                                  "--html", str(out), cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert HINT in res.stderr and "matplotlib" in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""  # no target ran
    assert not out.exists() and not (tmp_path / ".mmsb-history").exists()


def test_everything_else_works_without_matplotlib(tmp_path: Path) -> None:
    code = BLOCK + (
        "import numpy as np, mmsb\n"
        "from mmsb.cli import cli\n"
        "with mmsb.open('bus') as bus:\n"
        "    a, b = (int(i) for i in bus.create_pages(2, 64, dtype='float64'))\n"
        "    bus.derive(b, lambda x: x * 2.0, parents=[a], name='double')\n"
        "    bus.tick(mmsb.DeltaBatch.from_ranges([a], [0], [np.ones(8).tobytes()]))\n"
        "    assert bus.read(b).tolist() == [2.0] * 8\n"
        "    print(bus.provenance(b).explain().splitlines()[0])\n"
        "for args in (['info', 'bus'], ['verify', 'bus'], ['graph', 'bus'], ['log', 'bus'],\n"
        "             ['validate', '--quick', '-t', '3', '--no-history', '--json', 'v.json']):\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='mmsb')\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (args, e.code)\n"
    )
    res = run_python(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "provenance as of LSN" in res.stdout and "OK: bus" in res.stdout
    assert "Result: 1/1 PASS" in res.stdout and (tmp_path / "v.json").is_file()


def test_import_mmsb_and_help_do_not_load_matplotlib(tmp_path: Path) -> None:
    code = (
        "import sys\nimport mmsb\n"
        f"print('after import:', {LOADED})\n"
        "from mmsb.cli import cli\n"
        "for args in (['--help'], ['validate', '--help'], ['--version']):\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='mmsb')\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        f"print('after help:', {LOADED})\n"
    )
    res = run_python(code, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "after import: False" in res.stdout and "after help: False" in res.stdout
    assert "mmsb[report]" in res.stdout  # `mmsb validate --help` names the extra


def test_render_html_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # in this process matplotlib may already be loaded: hide it and every submodule
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'mmsb\[report\]'"):
        require_matplotlib()
    report = ValidationReport(size="quick", seed=0, started="now", seconds=0.0, results=[])
    with pytest.raises(ImportError, match=r"mmsb\[report\]"):
        render_html(report)
