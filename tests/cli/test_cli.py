"""The ``mmsb`` command line, in process: every command, its JSON output, exit codes, and
one-line errors (exit 2) for paths that hold no bus."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

import mmsb
from mmsb.cli import cli, main
from mmsb.storage.log import FRAME_HEADER_SIZE, SEG_HEADER_SIZE, list_segments


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def ok_json(*args: str) -> dict:  # type: ignore[type-arg]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def clock() -> object:
    t = iter(range(10**9, 10**18, 10**6))
    return lambda: next(t)


@pytest.fixture
def bus_path(tmp_path: Path) -> Path:
    """A closed bus: 4 byte pages + 1 float page, mixed deltas, a checkpoint, a deletion."""
    path = tmp_path / "bus"
    with mmsb.open(path, clock=clock()) as bus:  # LSN 1
        ids = [int(p) for p in bus.create_pages(4, 64)]
        fpage = bus.create_page(64, dtype="float64", metadata={"name": "grid"})  # LSN 2
        for i in range(4):  # LSN 3..6
            bus.write(ids[i], bytes([i + 1]) * 8, offset=i)
        bus.checkpoint()  # at LSN 6
        batch = mmsb.DeltaBatch.from_deltas(
            [
                mmsb.Delta.dense(ids[0], [1, 0, 1], b"abc", offset=10),
                mmsb.Delta.sparse(ids[1], [1, 0, 1], b"xy", offset=3, metadata={"why": "t"}),
                mmsb.Delta.range(ids[0], b"zz", offset=40),
            ]
        )
        bus.apply_batch(batch)  # LSN 7
        bus.write(fpage, np.arange(3.0))  # LSN 8
        bus.delete_page(ids[3])  # LSN 9
    return path


@pytest.fixture
def not_a_bus(tmp_path: Path) -> Path:
    d = tmp_path / "plain"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    return d


# -- help, entry points -------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ("info", "log", "history", "checkpoint", "verify", "replay", "compact", "validate"):
        assert name in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert mmsb.__version__ in result.stdout


def test_python_dash_m(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["mmsb", "--version"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("mmsb", run_name="__main__")
    assert exc.value.code == 0
    assert mmsb.__version__ in capsys.readouterr().out


def test_main_takes_argv(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert mmsb.__version__ in capsys.readouterr().out


# -- info -----------------------------------------------------------------------------------


def test_info_json(bus_path: Path) -> None:
    data = ok_json("info", str(bus_path))
    assert data["lsn"] == 9
    assert data["pages"] == {"live": 4, "bytes": 256, "by_dtype": {"uint8": 3, "float64": 1},
                             "names": {}}  # fmt: skip
    assert data["log"]["frames"] == 9
    assert data["log"]["deltas"] == 4 + 3 + 1
    assert [c["lsn"] for c in data["checkpoints"]] == [6]
    assert data["clean_shutdown"] is True
    assert data["writer_active"] is False
    # a cleanly closed bus: the table comes from the clean-shutdown file, no replay
    assert data["recovery"]["mode"] == "clean" and data["recovery"]["checkpoint_lsn"] == 9
    assert data["last_commit"]["timestamp"] > 0
    # the slow oracle: without that file, a read-only open replays from the checkpoint and
    # finds the same pages
    (bus_path / "state.clean").rename(bus_path / "elsewhere")
    slow = ok_json("info", str(bus_path))
    (bus_path / "elsewhere").rename(bus_path / "state.clean")
    assert slow["recovery"]["mode"] == "replay" and slow["recovery"]["checkpoint_lsn"] == 6
    assert slow["recovery"]["frames_replayed"] == 3
    assert (slow["lsn"], slow["pages"], slow["last_commit"]) == (
        data["lsn"],
        data["pages"],
        data["last_commit"],
    )


def test_info_reads_names_from_the_clean_file_as_an_open_does(tmp_path: Path) -> None:
    path = tmp_path / "named"
    with mmsb.open(path) as bus:
        ids = bus.create_pages(3, 16, names=["a", None, "c"])
        bus.rename_page(int(ids[0]), "aa")
        bus.delete_page("c")
    fast = ok_json("info", str(path))
    assert fast["recovery"]["mode"] == "clean"
    assert fast["pages"]["names"] == {"aa": int(ids[0])} and fast["pages"]["live"] == 2
    with mmsb.open(path, readonly=True) as ro:  # the same as a read-only open sees
        assert ro.page_names() == fast["pages"]["names"] and len(ro) == 2
    seg = next((path / "log").iterdir())
    seg.write_bytes(seg.read_bytes() + b"\0" * 8)  # the log is not as it was left
    assert ok_json("info", str(path))["recovery"]["mode"] == "replay"


def test_info_tables(bus_path: Path) -> None:
    result = run("info", str(bus_path))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "LSN" in out and "9" in out
    assert "4 live" in out
    assert "00000000000000000006.ckpt" in out
    assert "recovery" in out


def test_info_while_a_writer_is_open(bus_path: Path) -> None:
    with mmsb.open(bus_path) as bus:
        bus.write(1, b"live")
        data = ok_json("info", str(bus_path))
        assert data["writer_active"] is True
        assert data["lsn"] == 10


# -- log and history ------------------------------------------------------------------------


def test_log_frames_newest_first(bus_path: Path) -> None:
    data = ok_json("log", str(bus_path))
    lsns = [f["lsn"] for f in data["frames"]]
    assert lsns == list(range(9, 0, -1))
    assert data["frames_in_log"] == 9
    by_lsn = {f["lsn"]: f for f in data["frames"]}
    assert by_lsn[9]["type"] == "delete" and by_lsn[9]["deleted"] == [4]
    assert by_lsn[7]["deltas"] == 3
    assert by_lsn[7]["shapes"] == {"range": 1, "dense": 1, "sparse": 1}
    assert by_lsn[2]["created"]["dtype"] == "float64"
    assert by_lsn[2]["created"]["metadata"] == {"name": "grid"}


def test_log_limit(bus_path: Path) -> None:
    data = ok_json("log", str(bus_path), "--limit", "2")
    assert [f["lsn"] for f in data["frames"]] == [9, 8]


def test_log_deltas(bus_path: Path) -> None:
    data = ok_json("log", str(bus_path), "--deltas", "--limit", "3")
    rows = data["deltas"]
    assert [r["delta_id"] for r in rows] == [8, 7, 6]
    assert [r["shape"] for r in rows] == ["range", "range", "sparse"]
    assert rows[2]["metadata"] == {"why": "t"}
    assert rows[0]["page_id"] == 5


def test_log_table(bus_path: Path) -> None:
    result = run("log", str(bus_path), "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "delete 1 page: 4" in result.stdout
    assert "1 delta (1 range)" in result.stdout


def test_log_page_is_history(bus_path: Path) -> None:
    via_log = ok_json("log", str(bus_path), "--page", "1")
    via_history = ok_json("history", str(bus_path), "1")
    assert via_log == via_history
    assert [d["delta_id"] for d in via_history["deltas"]] == [7, 5, 1]


def test_history(bus_path: Path) -> None:
    data = ok_json("history", str(bus_path), "2", "--limit", "1")
    assert data["live"] is True
    assert len(data["deltas"]) == 1
    d = data["deltas"][0]
    assert (d["delta_id"], d["lsn"], d["epoch"], d["shape"]) == (6, 7, 2, "sparse")
    table = run("history", str(bus_path), "2")
    assert table.exit_code == 0
    assert "sparse" in table.stdout


def test_history_of_a_deleted_page(bus_path: Path) -> None:
    data = ok_json("history", str(bus_path), "4")
    assert data["live"] is False
    assert [d["delta_id"] for d in data["deltas"]] == [4]


def test_history_of_an_unknown_page(bus_path: Path) -> None:
    result = run("history", str(bus_path), "99")
    assert result.exit_code == 2
    assert "page 99 does not exist" in result.stderr
    assert "Traceback" not in result.output


# -- verify ---------------------------------------------------------------------------------


def test_verify_ok(bus_path: Path) -> None:
    result = run("verify", str(bus_path))
    assert result.exit_code == 0
    assert result.stdout.startswith("OK")
    data = ok_json("verify", str(bus_path))
    assert data["ok"] is True
    assert data["frames"] == 9
    assert data["deltas"] == 8
    assert data["checkpoints_checked"] == 1


def test_verify_while_a_writer_is_open(bus_path: Path) -> None:
    with mmsb.open(bus_path) as bus:
        bus.write(1, b"more")
        bus.sync_now()
        data = ok_json("verify", str(bus_path))
        assert data["ok"] is True
        assert data["frames"] == 10


def test_verify_reports_damage_with_exit_1(bus_path: Path) -> None:
    first = list_segments(str(bus_path / "log"))[0][1]
    with open(first, "r+b") as f:  # a byte inside the first frame's payload
        f.seek(SEG_HEADER_SIZE + FRAME_HEADER_SIZE + 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    result = run("verify", str(bus_path), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert any("corrupt log frame" in e for e in data["errors"])


# -- writing commands -----------------------------------------------------------------------


def test_checkpoint(bus_path: Path) -> None:
    data = ok_json("checkpoint", str(bus_path))
    assert data["lsn"] == 9
    assert (bus_path / "ckpt" / "00000000000000000009.ckpt").exists()
    text = run("checkpoint", str(bus_path))
    assert text.exit_code == 0
    assert text.stdout.startswith("checkpoint at LSN 9")


def test_checkpoint_while_a_writer_is_open(bus_path: Path) -> None:
    with mmsb.open(bus_path):
        result = run("checkpoint", str(bus_path))
    assert result.exit_code == 2
    assert "already open for writing" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_compact(bus_path: Path) -> None:
    assert run("checkpoint", str(bus_path)).exit_code == 0  # a second checkpoint, at LSN 9
    data = ok_json("compact", str(bus_path), "--keep", "1")
    assert data["checkpoints_removed"] == 1
    assert data["segments_removed"] >= 1
    assert data["oldest_lsn"] == 9
    info = ok_json("info", str(bus_path))
    assert [c["lsn"] for c in info["checkpoints"]] == [9]
    assert info["lsn"] == 9
    assert info["last_commit"]["timestamp"] > 0  # from the checkpoint once the log is gone
    assert ok_json("verify", str(bus_path))["ok"] is True
    # the current LSN is the kept checkpoint's: a replay needs no log frame at all
    out = bus_path.parent / "after-compact"
    data = ok_json("replay", str(bus_path), "--out", str(out))
    assert data["match"] is True and data["lsn"] == 9
    result = run("replay", str(bus_path), "--to", "3", "--out", str(bus_path.parent / "old"))
    assert result.exit_code == 2
    assert "older than the retained history" in result.stderr


def test_empty_bus(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    mmsb.open(path).close()
    info = ok_json("info", str(path))
    assert info["lsn"] == 0 and info["pages"]["live"] == 0 and info["log"]["frames"] == 0
    assert ok_json("log", str(path))["frames"] == []
    result = run("log", str(path))
    assert result.exit_code == 0 and "0 frames (empty)" in result.stdout
    assert ok_json("verify", str(path))["ok"] is True


@pytest.mark.parametrize("lsn", [0, 5, 6, 7, 9])
def test_replay_to_an_lsn(bus_path: Path, tmp_path: Path, lsn: int) -> None:
    out = tmp_path / f"at-{lsn}"
    data = ok_json("replay", str(bus_path), "--to", str(lsn), "--out", str(out))
    assert data["match"] is True
    assert data["lsn"] == lsn
    with mmsb.open(bus_path, readonly=True) as src, mmsb.open(out, readonly=True) as copy:
        snap = src.at(lsn)
        assert copy.state_hash() == snap.state_hash()
        for pid in snap.page_ids().tolist():
            assert copy.read(pid).tobytes() == snap.read(pid).tobytes()


def test_replay_defaults_to_the_last_lsn(bus_path: Path, tmp_path: Path) -> None:
    result = run("replay", str(bus_path), "--out", str(tmp_path / "now"))
    assert result.exit_code == 0, result.output
    assert "LSN 9" in result.stdout and "matches" in result.stdout


def test_replay_errors(bus_path: Path, tmp_path: Path) -> None:
    result = run("replay", str(bus_path), "--to", "99", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2
    assert "LSN 99" in result.stderr
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "f").write_text("x")
    result = run("replay", str(bus_path), "--to", "3", "--out", str(taken))
    assert result.exit_code == 2
    assert "not empty" in result.stderr


# -- errors ---------------------------------------------------------------------------------

COMMANDS = [
    ["info"],
    ["log"],
    ["log", "--page", "1"],
    ["history", "{path}", "1"],
    ["checkpoint"],
    ["verify"],
    ["replay", "{path}", "--to", "1", "--out", "{out}"],
    ["compact"],
]


def _args(cmd: list[str], path: Path, out: Path) -> list[str]:
    if "{path}" not in cmd:
        cmd = [cmd[0], "{path}", *cmd[1:]]
    return [a.format(path=path, out=out) for a in cmd]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_missing_path_is_exit_2(cmd: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = run(*_args(cmd, missing, tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: no bus at {missing}\n"
    assert not missing.exists()  # never created by accident


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_non_bus_directory_is_exit_2(cmd: list[str], not_a_bus: Path, tmp_path: Path) -> None:
    result = run(*_args(cmd, not_a_bus, tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ")
    assert "is not an MMSB bus" in result.stderr
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in not_a_bus.iterdir()) == ["notes.txt"]


def test_usage_error_is_exit_2() -> None:
    result = run("log")
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr
