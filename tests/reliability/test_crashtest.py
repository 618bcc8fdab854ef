"""``mmsb crashtest`` and the checks of the crash campaign: the command prints its figures and
JSON, and damage planted between the kill and the reopen is caught (a checker that cannot
fail proves nothing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmsb
from mmsb.cli import app
from mmsb.reliability import crashtest
from mmsb.reliability.crashtest import Expected, make_bus, page_problem, run_campaign
from mmsb.storage.checkpoint import list_checkpoints
from mmsb.storage.log import LogReader, list_segments


def test_command_prints_figures_and_json(tmp_path: Path) -> None:
    out_json = tmp_path / "figures.json"
    result = CliRunner().invoke(
        app.cli,
        ["crashtest", str(tmp_path / "work"), "-n", "2", "--sync", "always", "--seed", "4",
         "--json", str(out_json)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = ("kills", "acknowledged commits", "lost acknowledged commits",
              "half-applied batches", "failed reopens", "verify failures", "time (s)")  # fmt: skip
    for label in labels:
        assert label in result.output
    data = json.loads(out_json.read_text())
    assert data["ok"] is True and data["complete"] is True
    (mode,) = data["modes"]
    assert mode["sync"] == "always"
    assert mode["kills"] == 2
    assert mode["lost_acknowledged"] == 0
    assert mode["acknowledged"] > 0


def test_command_exits_1_when_a_check_fails(tmp_path: Path, monkeypatch) -> None:
    real = crashtest.run_campaign

    def with_damage(*args, **kwargs):  # type: ignore[no-untyped-def]
        return real(*args, **kwargs, tamper=drop_last_frames)

    monkeypatch.setattr(crashtest, "run_campaign", with_damage)
    result = CliRunner().invoke(
        app.cli, ["crashtest", str(tmp_path / "w"), "-n", "1", "--sync", "off", "--json", "-"]
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["ok"] is False
    assert data["modes"][0]["lost_acknowledged"] > 0


def test_command_rejects_a_non_empty_work_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("mine")
    result = CliRunner().invoke(app.cli, ["crashtest", str(tmp_path), "-n", "1"])
    assert result.exit_code == 2
    assert "is not an empty directory" in result.output
    assert sorted(os.listdir(tmp_path)) == ["x"]


def drop_last_frames(bus_path: Path) -> None:
    """Cut the log before its last two frames, with every checkpoint that covers them:
    acknowledged commits vanish. (The newest segment alone may hold no frame at all when
    the writer was killed just after a checkpoint rolled the log.)"""
    log_dir = str(bus_path / "log")
    frames = list(LogReader(log_dir).frames(headers_only=True))
    if len(frames) < 2:
        return
    cut = frames[-2]
    os.truncate(os.path.join(log_dir, cut.segment), cut.offset)
    for first, path in list_segments(log_dir):
        if first > cut.lsn:
            os.unlink(path)
    for lsn, path in list_checkpoints(str(bus_path / "ckpt")):
        if lsn >= cut.lsn:
            os.unlink(path)
    (bus_path / "state.clean").unlink(missing_ok=True)


def test_lost_commits_are_counted(tmp_path: Path) -> None:
    result = run_campaign(tmp_path / "w", 1, ["always"], seed=5, tamper=drop_last_frames)
    (fig,) = result.modes
    assert not result.ok
    assert fig.lost_acknowledged >= 1
    assert any("after acknowledging" in f for f in fig.failures)


def test_a_half_applied_batch_is_recognised(tmp_path: Path) -> None:
    exp = make_bus(tmp_path / "b")
    with mmsb.open(tmp_path / "b") as bus:
        first = int(bus.page_ids()[0])
        assert page_problem(bus, exp) is None
        bus.write(first, b"\x07" * 16)  # one page of group 0 changes, its group does not
        assert "holds [7], expected 0" in str(page_problem(bus, exp))
        moved = Expected(exp.lsn, "", [7, 0, 0, 0], [1, 0, 0, 0])
        # the right bytes with the wrong epoch: not one whole batch either
        assert page_problem(bus, moved) == f"page {first} has epoch 1, expected 2"


def test_report_lines_cut_by_the_kill_are_ignored() -> None:
    rep = crashtest.parse_report("P 12\nR 3 abc\nI 4 1 9\nA 4 def\nI 5 2 1\nA 5 gh")
    assert rep.pid == 12
    assert rep.ready == (3, "abc")
    assert rep.intents == {4: (1, 9), 5: (2, 1)}
    assert rep.acks == {4: "def"}


@pytest.mark.parametrize("bad", [0, -1, True])
def test_campaign_rejects_bad_iterations(tmp_path: Path, bad: int) -> None:
    with pytest.raises(mmsb.InvalidArgumentError, match="iterations must be a positive"):
        run_campaign(tmp_path / "w", bad)
    assert not (tmp_path / "w").exists()


def test_a_writer_that_fails_by_itself_is_counted(tmp_path: Path, monkeypatch) -> None:
    def dies(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise crashtest.WriterDied("writer exited with status 1 before it was killed: boom")

    monkeypatch.setattr(crashtest, "run_and_kill", dies)
    fig = crashtest.run_mode(tmp_path, "off", 2, seed=1)
    assert fig.writer_errors == 2 and fig.iterations == 2
    assert not fig.ok
    assert "boom" in fig.failures[0]


def test_leak_check_counts_only_new_scratch_files(tmp_path: Path) -> None:
    import tempfile
    import time

    work = tmp_path / "work"
    work.mkdir()
    old = Path(tempfile.mkstemp(suffix=".tmp")[1])
    time.sleep(0.3)
    since = time.time()  # the writer "started" after ``old`` was made, before ``new``
    new = Path(tempfile.mkstemp(suffix=".tmp")[1])
    try:
        held = {str(old), str(new), str(work / "bus" / "x.tmp"),
                str(Path(mmsb.__file__).parent / "engine" / "kernels.py"),
                "/dev/shm/psm_gone (deleted)"}  # fmt: skip
        got = crashtest.scratch_paths(held, work, since)
        assert str(old) not in got  # existed before the writer
        assert str(new) in got  # made during its life and still there
        assert "/dev/shm/psm_gone" in got  # a shared-memory segment is always a candidate
        assert not any("kernels.py" in p for p in got)  # the package's own files
    finally:
        old.unlink()
        new.unlink()
