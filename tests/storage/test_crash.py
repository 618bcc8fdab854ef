"""Crash tests with real processes: a writer commits batches until it is killed with SIGKILL
at a random moment; the bus is then reopened and checked against what the writer reported.

The campaign itself is shipped (:mod:`mmsb.reliability.crashtest`, ``mmsb crashtest``); these
tests run it with a few kills per sync mode by default and 34 per mode in the slow suite, and
require every check to hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsb.reliability.crashtest import ModeFigures, run_mode


def crash_rounds(tmp_path: Path, sync: str, rounds: int, seed: int) -> ModeFigures:
    fig = run_mode(tmp_path, sync, rounds, seed)
    assert fig.ok, fig.failures
    assert fig.iterations == fig.kills == rounds
    # the writers got far enough for the checks to mean something
    assert fig.acknowledged > rounds
    assert fig.stale_locks_taken_over >= rounds - fig.early_kills
    return fig


@pytest.mark.parametrize("sync", ["always", "normal", "off"])
def test_killed_writer_recovers_to_a_reported_state(tmp_path: Path, sync: str) -> None:
    crash_rounds(tmp_path, sync, rounds=3, seed={"always": 1, "normal": 2, "off": 3}[sync])


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["always", "normal", "off"])
def test_killed_writer_recovers_many_times(tmp_path: Path, sync: str) -> None:
    crash_rounds(tmp_path, sync, rounds=34, seed={"always": 11, "normal": 12, "off": 13}[sync])
