"""Progress bars of the long commands: drawn on stderr only when asked or on a terminal,
fed by each command (verify, replay, compact, crashtest, warmup), never on stdout."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

import mmsb
from mmsb.cli import progress
from mmsb.cli.app import cli
from mmsb.reliability import crashtest as campaign


class Recorder:
    """Stands in for :func:`progress.bars`: notes whether bars were wanted and every update."""

    def __init__(self) -> None:
        self.enabled: list[bool] = []
        self.updates: list[tuple[str, int, int]] = []

    @contextmanager
    def bars(self, enabled: bool, console: Any = None) -> Iterator[progress.Sink]:
        self.enabled.append(enabled)
        yield lambda what, done, total: self.updates.append((what, done, total))

    def finished(self) -> set[str]:
        """The bars that reached their total."""
        return {what for what, done, total in self.updates if done == total}


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(progress, "bars", rec.bars)
    return rec


@pytest.fixture
def bus_path(tmp_path: Path) -> Path:
    path = tmp_path / "bus"
    with mmsb.open(path, sync="off") as bus:
        page = int(bus.create_page(64))
        bus.write(page, b"x" * 8)
        bus.checkpoint()
        bus.write(page, b"y" * 8)
    return path


def test_wanted_follows_the_flag_then_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress.wanted(True, json_on_stdout=True) is True
    assert progress.wanted(False) is False
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert progress.wanted(None) is True
    assert progress.wanted(None, json_on_stdout=True) is False


def test_bars_draw_on_the_given_console_and_nothing_when_disabled() -> None:
    out = io.StringIO()
    with progress.bars(True, Console(file=out, force_terminal=True, width=80)) as sink:
        steps = progress.Steps(sink, "verify demo", 2)
        steps.done()
        steps.done()
    assert "verify demo" in out.getvalue() and "2/2" in out.getvalue()
    with progress.bars(False) as sink:
        sink("nothing", 1, 1)  # a no-op


@pytest.mark.parametrize(
    ("args", "title"),
    [
        (["verify"], "verify"),
        (["compact", "--keep", "1"], "compact"),
        (["replay", "--out", "{out}"], "replay"),
    ],
)
def test_bus_commands_feed_their_bar(
    recorder: Recorder, bus_path: Path, tmp_path: Path, args: list[str], title: str
) -> None:
    def argv(out: str) -> list[str]:
        return [args[0], str(bus_path), *(a.format(out=tmp_path / out) for a in args[1:])]

    result = CliRunner().invoke(cli, [*argv("out1"), "--progress"])
    assert result.exit_code == 0, result.output
    assert recorder.enabled == [True]
    assert recorder.finished() == {f"{title} {bus_path}"}
    result = CliRunner().invoke(cli, argv("out2"))
    assert result.exit_code == 0, result.output
    assert recorder.enabled == [True, False]  # not a terminal, no flag: no bars


def test_json_on_stdout_stays_clean_with_bars(bus_path: Path) -> None:
    result = CliRunner().invoke(cli, ["verify", str(bus_path), "--json", "--progress"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True  # bars go to stderr only


def test_crashtest_has_one_bar_per_sync_mode(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def fake_campaign(path: Any, iterations: int, modes: Any, seed: int, report: Any) -> Any:
        figures = []
        for mode in modes:
            fig = campaign.ModeFigures(mode)
            for _ in range(iterations):
                fig.iterations += 1
                report(fig)
            figures.append(fig)
        return campaign.CampaignResult(figures, seed, 0.0)

    monkeypatch.setattr(campaign, "run_campaign", fake_campaign)
    result = CliRunner().invoke(cli, ["crashtest", str(tmp_path / "w"), "-n", "3", "--progress"])
    assert result.exit_code == 0, result.output
    assert recorder.finished() == {"sync=always", "sync=normal", "sync=off"}
    assert ("sync=off", 1, 3) in recorder.updates
    CliRunner().invoke(cli, ["crashtest", str(tmp_path / "v"), "-n", "1", "--json", "-"])
    assert recorder.enabled[-1] is False


def test_warmup_feeds_its_bar(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsb.cli import warmup

    def fake_run(sink: progress.Sink | None = None) -> Any:
        assert sink is not None
        for i in range(len(warmup.GROUPS) + 1):
            sink("warm-up", i, len(warmup.GROUPS))
        return 0.0, [], []

    monkeypatch.setattr(warmup, "run", fake_run)
    monkeypatch.setattr(warmup, "_cache_dirs", lambda: [])
    result = CliRunner().invoke(cli, ["warmup", "--progress"])
    assert result.exit_code == 0, result.output
    assert recorder.enabled == [True] and recorder.finished() == {"warm-up"}
