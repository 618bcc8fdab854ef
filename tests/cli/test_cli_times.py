"""Commit times on the command line: ISO 8601 in the local time zone, with its UTC offset,
for people; the raw nanoseconds since the epoch under ``--json``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmsb
from mmsb.cli import cli
from mmsb.cli.output import iso_ns, replace_ns_times, short_time

T0 = 1_796_528_467_123_456_789  # 2026-12-06T03:41:07.123456789 UTC
IST = "2026-12-06T09:11:07.123456+05:30"  # the same instant in Asia/Kolkata


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The local time zone is UTC+05:30 (no daylight saving) for the test."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def bus_path(tmp_path: Path) -> Path:
    ticks = iter(range(T0, T0 + 10**12, 10**9))  # one commit a second from T0
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off", clock=lambda: next(ticks)) as bus:
        page = int(bus.create_page(64))  # LSN 1 at T0
        bus.write(page, b"abc")  # LSN 2 at T0 + 1 s
    return path


def out(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_formats(kolkata: None) -> None:
    assert iso_ns(T0) == IST
    assert short_time(T0) == "2026-12-06T09:11:07.123+05:30"
    assert iso_ns(0) == short_time(0) == "-"
    text = "page 1: delta 3 at LSN 4, epoch 1, time 1796528467123456789, user, bytes [0, 3)"
    assert replace_ns_times(text) == text.replace("1796528467123456789", IST)
    assert replace_ns_times("metadata: {'time 5,': 1}") == "metadata: {'time 5,': 1}"


def test_utc_says_plus_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert iso_ns(T0) == "2026-12-06T03:41:07.123456+00:00"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_log_and_history(bus_path: Path, kolkata: None) -> None:
    assert "2026-12-06T09:11:08.123+05:30" in out("log", str(bus_path))  # LSN 2
    assert "2026-12-06T09:11:08.123+05:30" in out("log", str(bus_path), "--deltas")
    assert "2026-12-06T09:11:08.123+05:30" in out("history", str(bus_path), "1")
    assert "time (local)" in out("log", str(bus_path))
    frames = json.loads(out("log", str(bus_path), "--json"))["frames"]
    assert [f["timestamp"] for f in frames] == [T0 + 10**9, T0]
    assert frames[1]["time"] == IST
    deltas = json.loads(out("history", str(bus_path), "1", "--json"))["deltas"]
    assert deltas[0]["timestamp"] == T0 + 10**9
    rows = json.loads(out("log", str(bus_path), "--deltas", "--json"))["deltas"]
    assert rows[0]["timestamp"] == T0 + 10**9


def test_info(bus_path: Path, kolkata: None) -> None:
    assert "last commit 2026-12-06T09:11:08.123456+05:30" in out("info", str(bus_path))
    data = json.loads(out("info", str(bus_path), "--json"))
    assert data["last_commit"] == {"timestamp": T0 + 10**9,
                                   "time": "2026-12-06T09:11:08.123456+05:30"}  # fmt: skip
    assert isinstance(data["created_ns"], int) and data["created_ns"] > 0
    assert data["created"] == iso_ns(data["created_ns"])


def test_provenance(bus_path: Path, kolkata: None) -> None:
    text = out("provenance", str(bus_path), "1")
    assert "time 2026-12-06T09:11:08.123456+05:30," in text
    assert str(T0 + 10**9) not in text
    data = json.loads(out("provenance", str(bus_path), "1", "--json"))
    assert data["root"]["record"]["timestamp"] == T0 + 10**9
