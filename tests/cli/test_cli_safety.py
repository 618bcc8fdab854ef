"""Every command says whether it is safe beside a running writer, and does what it says:
the safe readers succeed while a writer holds the bus, the lock takers refuse with exit 2
and one line. The command listing is drawn without importing the commands."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

import mmsb
from mmsb.cli import cli
from mmsb.cli.app import BESIDE_WRITER, COMMANDS, TAGS


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture
def bus_path(tmp_path: Path) -> Path:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        a, b = (int(p) for p in bus.create_pages(2, 64))
        bus.write(a, b"abc")
        bus.write(b, b"xyz", offset=5)
    return path


def test_the_registry_is_the_group() -> None:
    assert list(cli.commands) == list(COMMANDS)
    for name, spec in COMMANDS.items():
        assert spec.safety in BESIDE_WRITER and spec.safety in TAGS
        assert cli.commands[name].name == name


def test_every_command_help_says_whether_it_is_safe_beside_a_writer() -> None:
    for name, spec in COMMANDS.items():
        result = run(name, "--help")
        assert result.exit_code == 0, result.output
        text = flat(result.stdout)
        assert flat(BESIDE_WRITER[spec.safety]) in text, name
        said = [k for k, v in BESIDE_WRITER.items() if flat(v) in text]
        assert said == [spec.safety], (name, said)  # exactly one statement
    top = run("--help")
    assert top.exit_code == 0
    listing = top.stdout.split("Commands:")[1]
    for name, spec in COMMANDS.items():
        row = re.search(rf"^  {name}\s+(\[\w+\])", listing, re.MULTILINE)
        assert row is not None and row[1] == TAGS[spec.safety], name
    assert "[safe]" in top.stdout.split("Commands:")[0]  # the tags are explained
    assert "[lock]" in top.stdout.split("Commands:")[0]


def test_the_own_bus_commands_take_no_bus_path() -> None:
    for name, spec in COMMANDS.items():
        args = [p.name for p in cli.commands[name].params if isinstance(p, click.Argument)]
        if spec.safety == "own-buses":
            assert args in ([], ["path"]), name
        if name == "crashtest":  # its PATH is a new work directory, never an existing bus
            assert "new (or empty) work directory" in (cli.commands[name].help or "")


SAFE_RUNS = {
    "info": ["info", "{bus}"],
    "log": ["log", "{bus}"],
    "history": ["history", "{bus}", "1"],
    "verify": ["verify", "{bus}"],
    "graph": ["graph", "{bus}"],
    "provenance": ["provenance", "{bus}", "1"],
    "replay": ["replay", "{bus}", "--out", "{tmp}/copy"],
    "metrics": ["metrics", "{bus}", "--port", "0", "--duration", "0.05"],
}
LOCKED_RUNS = {"checkpoint": ["checkpoint", "{bus}"], "compact": ["compact", "{bus}"]}


def test_every_command_is_covered_below() -> None:
    readers = {n for n, s in COMMANDS.items() if s.safety in ("read-only", "replay")}
    assert readers == set(SAFE_RUNS)
    assert {n for n, s in COMMANDS.items() if s.safety == "writer-lock"} == set(LOCKED_RUNS)


@pytest.mark.parametrize("name", sorted(SAFE_RUNS))
def test_a_safe_command_runs_beside_a_writer(name: str, bus_path: Path, tmp_path: Path) -> None:
    if name == "metrics" and importlib.util.find_spec("prometheus_client") is None:
        pytest.skip("prometheus-client (mmsb[metrics]) is not installed")
    args = [a.format(bus=bus_path, tmp=tmp_path) for a in SAFE_RUNS[name]]
    with mmsb.open(bus_path, sync="off") as writer:
        writer.write(1, b"live")
        result = run(*args)
        assert result.exit_code == 0, result.output
        writer.write(2, b"still mine")  # the writer is undisturbed
        lsn = writer.lsn
    with mmsb.open(bus_path, readonly=True) as after:
        assert after.lsn == lsn


@pytest.mark.parametrize("name", sorted(LOCKED_RUNS))
def test_a_lock_taking_command_refuses_beside_a_writer(name: str, bus_path: Path) -> None:
    args = [a.format(bus=bus_path) for a in LOCKED_RUNS[name]]
    with mmsb.open(bus_path, sync="off") as writer:
        result = run(*args)
        assert result.exit_code == 2
        assert "already open for writing" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
        writer.write(1, b"ok")
    assert run(*args).exit_code == 0  # and works once the writer is gone


def test_help_imports_no_command_module() -> None:
    code = (
        "import sys\nfrom mmsb.cli import cli\n"
        "try:\n    cli.main(args=['--help'], prog_name='mmsb')\n"
        "except SystemExit as e:\n    assert not e.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('mmsb.cli.') or m == 'rich'))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "['mmsb.cli.app', 'mmsb.cli.output']"
