"""Power-loss simulation: what a power cut can leave on disk, and what recovery makes of it.

A process crash keeps the kernel's page cache; a power cut keeps only what reached the
disk. This module runs a workload on a real bus in this process while it records, at every
``fsync``/``fdatasync`` the library makes, what is durable:

* a file's contents become durable when the file is fsynced (by inode, so a checkpoint
  written under a temporary name and renamed keeps what was synced);
* a directory's entries (creations, renames, unlinks) become durable when the directory is
  fsynced.

Cut points are the moments just before each fsync and just after each workload operation.
For each cut, :func:`power_cut_images` builds disk images a power cut could leave:

* for each directory, either its durable entries or its current ones;
* for each file, its durable bytes plus any part of the unsynced writes: everything, none,
  a prefix cut at any byte (a write torn mid-way), or an arbitrary subset of the changed
  4 KiB pages, with unsynced pages reading as the old bytes or as zeros (write-back in any
  order). ``arena.bin`` is written through a memory map and never fsynced, so it is
  modelled the same way, from its contents when recording started.

:func:`check_image` opens each image (read-only, then as a writer) and compares the result
with an oracle of the state hash after every commit: the outcome is a correct prefix of
the commits (and, with ``sync="always"``, every acknowledged commit), or a clear
:class:`~mmsb.errors.CorruptStateError`. Anything else — a state that matches no commit, a
lost acknowledged commit, any other exception — is a silent wrong state and is counted.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import mmsb
from mmsb.batch import DeltaBatch
from mmsb.delta import Delta
from mmsb.errors import CorruptStateError, InvalidArgumentError
from mmsb.storage import layout

PAGE = 4096
DIRS = ("", layout.LOG_DIR, layout.CKPT_DIR)

# A file is identified by its inode number while it exists; once it is unlinked, what was
# durable of it moves to a retired key, so a new file that reuses the inode number starts
# with nothing durable (it never inherits the deleted file's bytes).
Listing = dict[str, dict[str, str]]  # directory (relative) -> name -> file key


@dataclass
class Cut:
    """What the disk holds at one instant: current and durable entries and contents."""

    current: Listing
    durable: Listing
    contents: dict[str, bytes]  # file key -> current bytes
    synced: dict[str, bytes]  # file key -> durable bytes (absent: nothing durable)
    acknowledged: int  # LSN of the last operation that returned
    where: str


class DiskModel:
    """Records durable and current file state under ``root`` (a bus directory)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.durable: Listing = {}
        self.synced: dict[str, bytes] = {}
        self.retired = 0
        self.cuts: list[Cut] = []
        self.acknowledged = 0
        self.where = "start"
        self.recording = False

    def scan(self) -> tuple[Listing, dict[str, bytes]]:
        listing: Listing = {}
        contents: dict[str, bytes] = {}
        for sub in DIRS:
            d = os.path.join(self.root, sub)
            entries: dict[str, str] = {}
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                names = []
            for name in names:
                p = os.path.join(d, name)
                try:
                    st = os.stat(p)
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    with open(p, "rb") as f:
                        data = f.read()
                except FileNotFoundError:
                    continue
                entries[name] = str(st.st_ino)
                contents[str(st.st_ino)] = data
            listing[sub] = entries
        self._retire(contents)
        return listing, contents

    def _retire(self, alive: dict[str, bytes]) -> None:
        """Move what is durable of files that no longer exist to retired keys."""
        for key in [k for k in self.synced if k.isdigit() and k not in alive]:
            self.retired += 1
            dead = f"{key}:retired{self.retired}"
            self.synced[dead] = self.synced.pop(key)
            for entries in self.durable.values():
                for name, k in entries.items():
                    if k == key:
                        entries[name] = dead

    def start(self) -> None:
        """Everything on disk now is durable (call after a clean, synced close)."""
        self.durable, self.synced = self.scan()
        self.recording = True

    def cut(self, where: str) -> None:
        if not self.recording:
            return
        current, contents = self.scan()
        self.cuts.append(
            Cut(current, {k: dict(v) for k, v in self.durable.items()}, contents,
                dict(self.synced), self.acknowledged, where)
        )  # fmt: skip

    def synced_fd(self, fd: int) -> None:
        """Record that ``fd`` was just fsynced."""
        if not self.recording:
            return
        try:
            st = os.fstat(fd)
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if not path.startswith(self.root):
            return
        if stat.S_ISDIR(st.st_mode):
            rel = os.path.relpath(path, self.root)
            rel = "" if rel == "." else rel
            current, _ = self.scan()
            self.durable[rel] = current.get(rel, {})
        elif stat.S_ISREG(st.st_mode):
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                self.synced[str(st.st_ino)] = f.read()


@contextlib.contextmanager
def recording(model: DiskModel) -> Iterator[DiskModel]:
    """Route this process's ``os.fsync``/``os.fdatasync`` through ``model``: a cut point
    before each call, the durable state updated after it."""
    real = {"fsync": os.fsync, "fdatasync": os.fdatasync}

    def wrap(name: str) -> Callable[[Any], None]:
        def synced(fd: Any) -> None:
            model.cut(f"before {name}")
            real[name](fd)
            model.synced_fd(fd if isinstance(fd, int) else fd.fileno())

        return synced

    os.fsync = wrap("fsync")  # type: ignore[assignment]
    os.fdatasync = wrap("fdatasync")  # type: ignore[assignment]
    try:
        yield model
    finally:
        os.fsync = real["fsync"]
        os.fdatasync = real["fdatasync"]


# -- the workload --------------------------------------------------------------------------


@dataclass
class Run:
    """A recorded workload: its cut points and the state hash after every commit."""

    sync: str
    cuts: list[Cut]
    oracle: dict[int, str]  # LSN -> state hash
    final_lsn: int


def run_workload(path: str, sync: str, steps: int, seed: int) -> Run:
    """Run ``steps`` random operations on a new bus at ``path`` while recording."""
    rng = random.Random(seed)
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)
    opts: dict[str, Any] = {
        "sync": sync, "checkpoint_every": 24 << 10, "keep_checkpoints": 2,
        "sync_interval": 3600.0, "clock": lambda: next(ticks),
    }  # fmt: skip
    with mmsb.open(path, segment_size=4096, **opts) as bus:
        for size in (16, 200, 1024):
            bus.create_page(size)
        oracle = {0: "", bus.lsn: bus.state_hash()}
    with mmsb.open(path, readonly=True) as ro:
        oracle[0] = ro.at(0).state_hash()
    model = DiskModel(path)
    model.start()
    model.acknowledged = max(oracle)
    with recording(model):
        bus = mmsb.open(path, **opts)
        try:
            for step in range(steps):
                model.where = f"step {step}"
                r = rng.random()
                ids = bus.page_ids().tolist()
                if r < 0.72:
                    rows = []
                    for _ in range(rng.randrange(1, 4)):
                        pid = rng.choice(ids)
                        size = bus.page(pid).size
                        off = rng.randrange(size)
                        n = rng.randrange(1, size - off + 1)
                        if rng.random() < 0.3:
                            mask = np.frombuffer(rng.randbytes(n), np.uint8) & 1
                            rows.append(Delta.dense(pid, mask, rng.randbytes(n), off))
                        else:
                            rows.append(Delta.range(pid, rng.randbytes(n), off))
                    bus.apply_batch(DeltaBatch.from_deltas(rows))
                elif r < 0.78:
                    bus.create_pages(rng.randrange(1, 3), rng.choice((8, 64, 512)))
                elif r < 0.82 and len(ids) > 3:
                    bus.delete_page(rng.choice(ids))
                elif r < 0.88:
                    bus.checkpoint()
                elif r < 0.92:
                    bus.compact()
                elif r < 0.96:
                    bus.close()
                    bus = mmsb.open(path, **opts)
                else:
                    bus.sync_now()
                oracle[bus.lsn] = bus.state_hash()
                model.acknowledged = bus.lsn
                model.cut(f"after step {step}")
        finally:
            bus.close()
    return Run(sync, model.cuts, oracle, max(oracle))


# -- power-cut images ------------------------------------------------------------------------


def _mix_pages(new: bytes, old: bytes, length: int, rng: random.Random) -> bytes:
    out = bytearray(length)
    for start in range(0, length, PAGE):
        a = new[start : start + PAGE]
        b = old[start : start + PAGE]
        piece = a if a == b or rng.random() < 0.5 else b
        out[start : start + len(piece)] = piece[: length - start]
    return bytes(out)


def _file_variant(new: bytes, old: bytes, mode: str, rng: random.Random) -> bytes:
    if mode == "new" or new == old:
        return new
    if mode == "old":
        return old
    common = 0
    limit = min(len(new), len(old))
    while common < limit and new[common] == old[common]:
        common += 1
    if mode == "prefix":  # writes reached the disk in order, up to a byte
        return new[: rng.randint(common, len(new))]
    length = rng.choice((len(new), len(old), rng.randint(min(len(new), len(old)),
                                                         max(len(new), len(old)))))  # fmt: skip
    return _mix_pages(new, old, length, rng)


def power_cut_images(cut: Cut, rng: random.Random, k: int) -> Iterator[dict[str, bytes]]:
    """Up to ``k`` disk images (relative path -> bytes) a power cut at ``cut`` could leave.
    The first is "everything reached the disk", the second "only what was synced"."""
    for i in range(k):
        if i == 0:
            dirs, mode = {d: "current" for d in DIRS}, "new"
        elif i == 1:
            dirs, mode = {d: "durable" for d in DIRS}, "old"
        else:
            dirs = {d: rng.choice(("current", "durable")) for d in DIRS}
            mode = ""
        image: dict[str, bytes] = {}
        for d in DIRS:
            listing = (cut.current if dirs[d] == "current" else cut.durable).get(d, {})
            for name, key in listing.items():
                new = cut.contents.get(key, cut.synced.get(key, b""))
                old = cut.synced.get(key, b"")
                fmode = mode or rng.choice(("new", "old", "prefix", "pages", "pages"))
                image[os.path.join(d, name)] = _file_variant(new, old, fmode, rng)
        yield image


def write_image(image: dict[str, bytes], target: str) -> None:
    os.makedirs(target, mode=layout.DIR_MODE)
    for d in DIRS[1:]:
        os.makedirs(os.path.join(target, d), mode=layout.DIR_MODE, exist_ok=True)
    for rel, data in image.items():
        fd = os.open(
            os.path.join(target, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, layout.FILE_MODE
        )
        try:
            # write only the non-zero pages: the rest of the file is a hole reading as zeros
            for start in range(0, len(data), 1 << 16):
                chunk = data[start : start + (1 << 16)]
                if chunk.strip(b"\0"):
                    os.pwrite(fd, chunk, start)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)


# -- checking -------------------------------------------------------------------------------


@dataclass
class PowerLossFigures:
    sync: str
    cuts: int = 0
    images: int = 0
    recovered: int = 0  # opened to a correct prefix of the commits
    recovered_all_acknowledged: int = 0
    clear_errors: int = 0  # refused with a CorruptStateError (nothing silently wrong)
    wrong_states: int = 0  # a state that is no commit's, or read-only and writer disagree
    lost_acknowledged: int = 0  # always mode: an acknowledged commit missing
    other_exceptions: int = 0
    partly_refused: int = 0  # one of the two opens refused (typed error), the other recovered
    verify_flagged: int = 0  # recovered correctly, but verify reports damage left behind
    lost_commits_total: int = 0  # commits acknowledged but not recovered (all modes)
    failures: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)  # the first few clear errors

    @property
    def ok(self) -> bool:
        return not (self.wrong_states or self.lost_acknowledged or self.other_exceptions)

    def fail(self, counter: str, message: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        if len(self.failures) < 20:
            self.failures.append(message)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _open_outcome(path: str, readonly: bool) -> tuple[int, str, bool] | BaseException:
    """(LSN, state hash, whether ``verify`` then finds the files clean), or the exception."""
    try:
        if readonly:
            with mmsb.open(path, readonly=True) as ro:
                return ro.lsn, ro.state_hash(), True
        with mmsb.open(path, sync="off") as bus:
            return bus.lsn, bus.state_hash(), bus.verify().ok
    except Exception as exc:  # classified by the caller
        return exc


def check_image(path: str, cut: Cut, run: Run, fig: PowerLossFigures, label: str) -> None:
    """Open the image at ``path`` and classify the outcome into ``fig``."""
    fig.images += 1
    outcomes = [_open_outcome(path, readonly=True), _open_outcome(path, readonly=False)]
    states = [o[:2] for o in outcomes if isinstance(o, tuple)]
    errs = [o for o in outcomes if isinstance(o, BaseException)]
    for e in errs:
        if not isinstance(e, CorruptStateError):
            fig.fail("other_exceptions", f"{label}: {type(e).__name__}: {e}")
            return
        key = type(e).__name__
        fig.errors[key] = fig.errors.get(key, 0) + 1
        if len(fig.error_examples) < 10:
            fig.error_examples.append(f"{label}: {key}: {e}")
    if len(states) == 2 and states[0] != states[1]:
        fig.fail("wrong_states", f"{label}: read-only open {states[0]} != writer {states[1]}")
        return
    if not states:
        fig.clear_errors += 1
        return
    if errs:
        fig.partly_refused += 1
    lsn, digest = states[0]
    if run.oracle.get(lsn) != digest:
        fig.fail("wrong_states", f"{label}: LSN {lsn} with a state no commit had")
        return
    if lsn > cut.acknowledged + 1:
        fig.fail("wrong_states", f"{label}: LSN {lsn} beyond what was written")
        return
    fig.recovered += 1
    writer = outcomes[1]
    if isinstance(writer, tuple) and not writer[2]:
        fig.verify_flagged += 1
    lost = max(0, cut.acknowledged - lsn)
    fig.lost_commits_total += lost
    if lost == 0:
        fig.recovered_all_acknowledged += 1
    elif run.sync == "always":
        fig.fail("lost_acknowledged", f"{label}: LSN {lsn} after acknowledging {cut.acknowledged}")


def simulate(
    workdir: str | os.PathLike[str] | None,
    sync: str,
    steps: int = 60,
    images_per_cut: int = 4,
    seed: int = 0,
) -> PowerLossFigures:
    """Record a workload of ``steps`` operations, then check ``images_per_cut`` power-cut
    images at every cut point."""
    if sync not in ("always", "normal", "off"):
        raise InvalidArgumentError(f"unknown sync mode {sync!r}")
    own = workdir is None
    root = tempfile.mkdtemp(prefix="mmsb-powerloss-") if workdir is None else os.fspath(workdir)
    # images carry the recording process's pid in LOCK (possibly cut short): opening them
    # takes over a "stale" lock every time, which is not news here
    lock_log = logging.getLogger("mmsb.storage.lock")
    level = lock_log.level
    lock_log.setLevel(logging.ERROR)
    try:
        run = run_workload(os.path.join(root, "bus"), sync, steps, seed)
        fig = PowerLossFigures(sync, cuts=len(run.cuts))
        rng = random.Random(seed + 1)
        for c, cut in enumerate(run.cuts):
            for i, image in enumerate(power_cut_images(cut, rng, images_per_cut)):
                target = os.path.join(root, "img")
                write_image(image, target)
                try:
                    check_image(target, cut, run, fig, f"cut {c} ({cut.where}) image {i}")
                finally:
                    shutil.rmtree(target)
        return fig
    finally:
        lock_log.setLevel(level)
        if own:
            shutil.rmtree(root, ignore_errors=True)
