"""Hygiene and security: file modes, no code execution on load paths, the writer lock's
stale-holder detection and takeover, no leftovers from killed writers, and no writes
outside the bus directory whatever the data says."""

from __future__ import annotations

import ast
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import mmsb
from mmsb import BusLockedError, Delta, DeltaBatch
from mmsb.reliability.crashtest import run_mode
from mmsb.storage.lock import WriterLock, pid_alive

SRC = Path(mmsb.__file__).parent


# -- file modes ------------------------------------------------------------------------------


def busy_bus(path: Path) -> None:
    """Make every kind of file a bus has: log segments, checkpoints, clean-shutdown file,
    lock, an export, a read-only open."""
    with mmsb.open(path, segment_size=4096, sync="always") as bus:
        pids = bus.create_pages(3, 1024, metadata={"k": "v"})
        for i in range(12):
            bus.write(int(pids[i % 3]), bytes([i]) * 1024)
        bus.checkpoint()
        bus.write(int(pids[0]), b"x")
        bus.export(path.parent / "exported")
    with mmsb.open(path, readonly=True) as ro:
        assert ro.lsn > 0
    with mmsb.open(path) as bus:
        bus.checkpoint()


def modes_under(root: Path) -> Iterator[tuple[Path, int, bool]]:
    yield root, stat.S_IMODE(root.stat().st_mode), True
    for p in root.rglob("*"):
        yield p, stat.S_IMODE(p.stat().st_mode), p.is_dir()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027, 0o002, 0o000, 0o037])
def test_directories_0700_files_0600_never_looser_than_the_umask(
    tmp_path: Path, umask: int
) -> None:
    old = os.umask(umask)
    try:
        busy_bus(tmp_path / "bus")
    finally:
        os.umask(old)
    seen = 0
    for root in (tmp_path / "bus", tmp_path / "exported"):
        for p, mode, is_dir in modes_under(root):
            want = (0o700 if is_dir else 0o600) & ~umask
            assert mode & ~want == 0, f"{p} has mode {mode:o}, umask {umask:o} allows {want:o}"
            if is_dir or umask & 0o077 == 0:
                assert mode == want, f"{p} has mode {mode:o}, expected {want:o}"
            seen += 1
    assert seen >= 10


# -- no code execution on load paths -----------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}


def forbidden_uses(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            found += [f"{name}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FORBIDDEN_MODULES]  # fmt: skip
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{name}: from {node.module} import")
        elif isinstance(node, ast.Call):
            f = node.func
            called = (
                f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            )
            if called in FORBIDDEN_CALLS and not (
                isinstance(f, ast.Attribute) and called == "compile"  # re.compile and the like
            ):
                found.append(f"{name}:{node.lineno}: {called}()")
            if called in ("load", "loads") and isinstance(f, ast.Attribute):
                owner = f.value
                if isinstance(owner, ast.Name) and owner.id in FORBIDDEN_MODULES | {"yaml"}:
                    found.append(f"{name}:{node.lineno}: {owner.id}.{called}()")
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{name}:{node.lineno}: allow_pickle")
    return found


def test_no_pickle_eval_or_exec_in_the_package() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = []
    for p in files:
        found += forbidden_uses(p.read_text(), str(p.relative_to(SRC)))
    assert found == []


def test_the_source_check_finds_what_it_looks_for() -> None:
    bad = textwrap.dedent(
        """
        import pickle
        from marshal import loads
        import numpy as np
        x = eval("1")
        exec("y = 2")
        np.load("f", allow_pickle=True)
        pickle.loads(b"")
        """
    )
    found = forbidden_uses(bad, "bad.py")
    assert len(found) == 6, found
    assert forbidden_uses("import re\nre.compile('x')\nimport json\njson.loads('1')\n", "ok") == []


# -- the writer lock ------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import os, sys, time
    import mmsb
    bus = mmsb.open(sys.argv[1])
    bus.create_page(8)
    if sys.argv[2] == "fork":
        child = os.fork()
        if child == 0:  # the forked child keeps the lock's open file description
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            time.sleep(120)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)
    print("ready", flush=True)
    time.sleep(120)
    """
)


def start_holder(tmp_path: Path, path: Path, how: str = "hold") -> subprocess.Popen[str]:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), how], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    proc.line = proc.stdout.readline().strip()  # type: ignore[attr-defined]
    return proc


def lock_text(path: Path) -> str:
    return (path / "LOCK").read_text()


def test_a_killed_writers_lock_is_taken_over_and_reported(tmp_path: Path, caplog) -> None:
    path = tmp_path / "bus"
    proc = start_holder(tmp_path, path)
    assert proc.line == "ready"
    assert lock_text(path) == f"{proc.pid}\n"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not pid_alive(proc.pid)
    with caplog.at_level(logging.WARNING, logger="mmsb.storage.lock"):
        bus = mmsb.open(path)
    try:
        assert bus._session.lock is not None
        assert bus._session.lock.stale_pid == bus._session.lock.previous_pid == proc.pid
        assert f"taking over the writer lock of pid {proc.pid}" in caplog.text
        assert lock_text(path) == f"{os.getpid()}\n"
        assert bus.lsn == 1 and bus.recovery.mode == "replay"
    finally:
        bus.close()
    assert lock_text(path) == ""  # a clean release leaves no holder behind
    with mmsb.open(path) as bus:
        assert bus._session.lock is not None and bus._session.lock.previous_pid is None


def test_a_live_writers_lock_is_never_taken(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    proc = start_holder(tmp_path, path)
    try:
        before = {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
        for _ in range(3):
            with pytest.raises(
                BusLockedError, match=rf"already open for writing \(by pid {proc.pid}\)$"
            ):
                mmsb.open(path)
        with pytest.raises(BusLockedError):
            WriterLock(str(path / "LOCK"))
        assert proc.poll() is None
        assert {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()} == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    with mmsb.open(path) as bus:  # now it is free
        assert bus._session.lock is not None and bus._session.lock.stale_pid == proc.pid


def test_a_lock_held_by_a_forked_child_of_a_dead_writer_is_not_taken(tmp_path: Path) -> None:
    """The pid in LOCK is dead, but its forked child still holds the flock: not stale."""
    path = tmp_path / "bus"
    proc = start_holder(tmp_path, path, "fork")
    proc.communicate()
    child = int(proc.line)  # type: ignore[attr-defined]
    try:
        assert not pid_alive(proc.pid) and pid_alive(child)
        with pytest.raises(BusLockedError, match=rf"by pid {proc.pid}\); that pid has exited"):
            mmsb.open(path)
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    with mmsb.open(path) as bus:
        assert bus.page_ids().tolist() == [1]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_leftover_temporaries_are_removed_by_the_next_writer(tmp_path: Path) -> None:
    path = tmp_path / "bus"
    with mmsb.open(path) as bus:
        bus.create_page(8)
    (path / "ckpt" / "00000000000000000001.ckpt.tmp").write_bytes(b"half a checkpoint")
    (path / "state.clean.tmp").write_bytes(b"half a state")
    with mmsb.open(path, readonly=True):  # a reader removes nothing
        assert (path / "state.clean.tmp").exists()
    with mmsb.open(path) as bus:
        assert bus._session.lock is not None
        assert bus._session.lock.removed_temporaries == [
            "ckpt/00000000000000000001.ckpt.tmp",
            "state.clean.tmp",
        ]
        assert list(path.rglob("*.tmp")) == []
        assert bus.recovery.mode == "clean"


def test_no_leftovers_after_killed_writers(tmp_path: Path) -> None:
    fig = run_mode(tmp_path, "normal", 2, seed=21)
    assert fig.ok, fig.failures
    assert fig.leaked_temporaries == fig.leaked_shm_segments == 0


@pytest.mark.slow
def test_no_leftovers_after_200_killed_writers(tmp_path: Path) -> None:
    fig = run_mode(tmp_path, "always", 200, seed=200)
    assert fig.ok, fig.failures
    assert fig.kills == 200
    assert fig.leaked_temporaries == fig.leaked_shm_segments == 0
    assert list((tmp_path / "always").rglob("*.tmp")) == []


# -- nothing written outside the bus directory -------------------------------------------

NASTY = ["../../escape", "/tmp/abs", "..", "ckpt/../../x", "a\x00b", "名前/../..", "~root"]
ALLOWED = re.compile(
    r"^(MANIFEST\.json|LOCK|READERS|SEQ|SNAPSHOTS|arena\.bin|state\.clean|log|ckpt|log/\d{20}\.seg|"
    r"ckpt/\d{20}\.ckpt)$"
)


def tree(root: Path, skip: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for p in root.rglob("*"):
        if p == skip or skip in p.parents:
            continue
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() else None
    return out


def test_metadata_sources_and_names_cannot_write_outside_the_bus(tmp_path: Path) -> None:
    path = tmp_path / "outer" / "bus"
    path.parent.mkdir()
    (tmp_path / "outer" / "bystander").write_bytes(b"untouched")
    before = tree(tmp_path, path)
    with mmsb.open(path, segment_size=4096) as bus:
        for name in NASTY:
            pid = bus.create_page(16, metadata={"name": name, "path": name, name: name})
            bus.write(pid, name.encode()[:16], source=name, metadata={"file": name})
            bus.apply_batch(
                DeltaBatch.from_deltas(
                    [Delta.range(pid, b"z", 3, source=name, metadata={"dir": name})]
                )
            )
        assert bus.history(pid)[0].source == NASTY[-1]
        bus.checkpoint()
        bus.compact()
    with mmsb.open(path) as bus:
        assert bus.page(pid).metadata["path"] == NASTY[-1]
        assert bus.verify().ok
    assert tree(tmp_path, path) == before
    names = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    assert [n for n in names if not ALLOWED.match(n)] == []


def test_crafted_lsns_in_files_do_not_name_paths(tmp_path: Path) -> None:
    """Checkpoint and segment names come from the bus's own LSN counter, never from text in
    a file: a checkpoint header claiming odd values is refused, and nothing new appears."""
    path = tmp_path / "bus"
    with mmsb.open(path) as bus:
        pid = bus.create_page(8)
        ck = bus.checkpoint()
        bus.write(pid, b"a")
    raw = Path(ck.path).read_bytes()
    Path(ck.path).write_bytes(raw.replace(b'"lsn":1', b'"lsn":"../../x"'))
    (path / "state.clean").unlink()
    before = tree(tmp_path, path / "ckpt")
    with mmsb.open(path) as bus:
        assert bus.read(pid).tobytes()[:1] == b"a"
        assert bus.recovery.skipped_checkpoints  # refused (its header CRC no longer matches)
    after = tree(tmp_path, path / "ckpt")
    assert set(after) - set(before) <= {"bus/state.clean"}
    assert all(ALLOWED.match(p.name) or p.suffix == ".corrupt" for p in (path / "ckpt").iterdir())
    assert np.array_equal(bus_page(path, pid), np.frombuffer(b"a" + bytes(7), np.uint8))


def bus_page(path: Path, pid: int) -> np.ndarray:
    with mmsb.open(path, readonly=True) as ro:
        return ro.read(pid)
