"""Pinned snapshots across processes: the reader table and the before-image ring.

The bus is updated in place, so a reader that wants every read of a multi-page view to
come from one commit needs the writer's help. The design follows LMDB's reader table: a
reader registers the LSN it pins in a shared table, and the writer keeps what pinned
readers still need. Where LMDB keeps old B-tree pages (copy-on-write), MMSB keeps
*before-images*: just before a commit overwrites or deletes a page that some pinned
snapshot can still see, the writer copies the page's bytes into a ring in the same shared
file. A snapshot at LSN ``L`` reads page ``p`` from the first before-image of ``p`` saved
by a commit after ``L`` if there is one (that is ``p`` as of ``L``), and from the arena
otherwise (``p`` has not changed since ``L``).

File ``SNAPSHOTS`` (little-endian u64 words; created and sized by the writer)::

    header    64 words: magic, version, generation, active slots, entries published,
              expired_below, slot count, entry capacity, data bytes, entries reclaimed
    slots     SLOTS x 2 words: pinned (0 free, CLAIMED, or LSN + 1), owner pid
    entries   capacity x 8 words: index, page, commit, epoch, data position, bytes,
              metadata bytes, flags
    data      the before-image bytes, a ring

Rules that make it safe without locks (x86-64; atomics from :mod:`mmsb.engine.atomics`):

* **Registration** (Dekker's pattern with ``SEQ``): the reader stores ``L + 1`` in its slot
  and fences, then checks that ``SEQ``'s counter did not move since it saw LSN ``L``
  published. The writer stores ``seq`` odd and fences before it reads the table. Either the
  writer sees the pin, or the reader sees the counter move and pins again.
* **Publication**: an entry's words are written with its ``index`` word invalid, then the
  index, then the published count; its bytes are copied before the index is written. The
  writer overwrites the page only after that. Readers read an entry's index before and
  after its fields.
* **Reclaiming**: an entry saved by commit ``c`` is needed only by snapshots pinned below
  ``c``. Entries are reclaimed in order once every pin is at or above their commit. When
  the ring is full and the oldest entry is still needed, the writer first clears the slots
  of dead processes, then *expires* the snapshots that need it: it raises
  ``expired_below`` (with a fence) before reusing any byte, and a snapshot pinned below it
  raises :class:`~mmsb.errors.SnapshotTooOldError` on its next read (the "snapshot too
  old" rule of PostgreSQL and Oracle: the writer never waits for a reader).
* A new writer generation (the writer reopened) clears the table; snapshots pinned on the
  old one see the generation change and are too old.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Any

import numpy as np
import numpy.typing as npt

from mmsb.engine import atomics
from mmsb.errors import CorruptStateError, MMSBError, SnapshotTooOldError, storage_error
from mmsb.storage import layout
from mmsb.storage.state import State

I64 = npt.NDArray[np.int64]
SNAPSHOTS_FILE = layout.SNAPSHOTS_FILE
MAGIC = int.from_bytes(b"MMSBSNP1", "little")
VERSION = 1
SLOTS = 256
HEAD_WORDS = 64
ENTRY_WORDS = 8
CLAIMED = 1 << 63  # a slot taken, its pin not set yet
INVALID = (1 << 64) - 1  # an entry's index while its words are being written
DELETED = 1  # entry flag: the commit deleted the page
_U = np.uint64
DEFAULT_DATA_BYTES = 16 << 20

# header words
_MAGIC, _VERSION, _GEN, _ACTIVE, _PUBLISHED, _EXPIRED, _NSLOTS, _CAP, _DATA, _RECLAIMED = range(10)
# entry words
_E_INDEX, _E_PAGE, _E_COMMIT, _E_EPOCH, _E_POS, _E_BYTES, _E_META, _E_FLAGS = range(8)


def file_size(capacity: int, data_bytes: int) -> int:
    return 8 * (HEAD_WORDS + 2 * SLOTS + ENTRY_WORDS * capacity) + data_bytes


class _Mapped:
    """The file mapped: header, slots and entries as u64 word arrays, data as bytes."""

    def __init__(self, fd: int, size: int, *, writable: bool) -> None:
        self._fd = fd
        self._mm: mmap.mmap | None = mmap.mmap(fd, size)
        words = np.frombuffer(self._mm, np.uint64, count=(size // 8))
        self.head = words[:HEAD_WORDS]
        self.capacity = int(self.head[_CAP]) if not writable else 0
        self.words = words

    def layout(self, capacity: int, data_bytes: int) -> None:
        base = HEAD_WORDS + 2 * SLOTS
        self.capacity = capacity
        self.slots = self.words[HEAD_WORDS:base]
        self.entries = self.words[base : base + ENTRY_WORDS * capacity].reshape(
            capacity, ENTRY_WORDS
        )
        assert self._mm is not None
        start = 8 * (base + ENTRY_WORDS * capacity)
        self.data = np.frombuffer(self._mm, np.uint8, count=data_bytes, offset=start)
        self.data_bytes = data_bytes

    def close(self) -> None:
        if self._mm is None:
            return
        for name in ("head", "words", "slots", "entries", "data"):
            self.__dict__.pop(name, None)
        self._mm.close()
        self._mm = None
        os.close(self._fd)


class SnapWriter:
    """The writer's side: initialises the file for its generation and saves before-images
    (:meth:`before_change`, called by the committer with ``seq`` odd)."""

    def __init__(self, directory: str, state: State,
                 data_bytes: int = DEFAULT_DATA_BYTES) -> None:  # fmt: skip
        self.state = state
        self.path = os.path.join(directory, SNAPSHOTS_FILE)
        capacity = max(1024, min(1 << 16, data_bytes // 512))
        size = file_size(capacity, data_bytes)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, layout.FILE_MODE)
        except OSError as exc:
            raise storage_error(f"cannot open the snapshot file {self.path}", exc) from exc
        old = 0
        try:
            old = os.fstat(fd).st_size
            size = max(size, old)  # never shorter under a reader's mapping
            if old < size:
                os.posix_fallocate(fd, 0, size)  # a full disk fails here, not as SIGBUS
            self._m = _Mapped(fd, size, writable=True)
        except (OSError, MemoryError) as exc:
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size > old:
                    os.ftruncate(fd, old)  # no half-reserved file left behind
            os.close(fd)
            raise storage_error(f"cannot create the snapshot file {self.path}", exc) from exc
        m = self._m
        gen = int(m.head[_GEN]) + 1 if int(m.head[_MAGIC]) == MAGIC else 1
        m.layout(capacity, size - 8 * (HEAD_WORDS + 2 * SLOTS + ENTRY_WORDS * capacity))
        m.head[_ACTIVE] = 0
        m.slots[:] = 0  # pins of the previous generation are void (readers see _GEN move)
        # the entries are left as they are: readers only look at [_RECLAIMED, _PUBLISHED),
        # every one of which this generation writes (INVALID first) before it publishes it;
        # a reader of an older generation may read this one's entries, and check() then
        # refuses its copy because _GEN moved (clearing 2 MiB of entries cost ~1.5 ms a open)
        m.head[_PUBLISHED] = m.head[_RECLAIMED] = m.head[_EXPIRED] = 0
        m.head[_NSLOTS], m.head[_CAP], m.head[_DATA] = SLOTS, capacity, m.data_bytes
        m.head[_VERSION] = VERSION
        m.head[_GEN] = gen
        m.head[_MAGIC] = MAGIC
        atomics.fence()
        self.generation = gen
        self._head = m.head
        self._saved_at = np.zeros(1024, np.int64)  # page -> commit of its newest entry
        self._pos = 0  # data bytes ever allocated (positions are taken modulo the size)
        self._oldest_pos = 0  # data position of the oldest live entry
        self.saved = 0  # before-images saved, bytes saved, snapshots expired (counters)
        self.saved_bytes = 0
        self.expired = 0

    # -- pins -------------------------------------------------------------------------------

    def pins(self) -> I64:
        """The LSNs pinned now. Call after the fence that follows ``seq`` going odd
        (:meth:`before_change` makes it), so no pin registered before can be missed."""
        m = self._m
        v = m.slots[0::2]
        # claimed slots have no pin yet; pins below expired_below can no longer be served
        live = (v != 0) & (v < CLAIMED) & (v > m.head[_EXPIRED])
        out: I64 = (v[live] - 1).astype(np.int64)
        return out

    @property
    def active(self) -> int:
        return int(self._m.head[_ACTIVE])

    # -- before-images --------------------------------------------------------------------

    def before_change(self, pages: I64, commit: int, *, deleted: bool) -> None:
        """Save the bytes of ``pages`` (about to be overwritten or deleted by ``commit``)
        that a pinned snapshot can still see."""
        if not atomics.fence_load(self._head, _ACTIVE):  # nobody pinned: one fence, one load
            return
        state = self.state
        pins = self.pins()
        if pins.size == 0 or pages.size == 0:
            return
        top = int(pins.max())
        if self._saved_at.size < state.next_page_id:
            grown = np.zeros(max(state.next_page_id, 2 * self._saved_at.size), np.int64)
            grown[: self._saved_at.size] = self._saved_at
            self._saved_at = grown
        ids = np.unique(pages)
        # pages changed after every pin already have their pinned version saved
        ids = ids[(self._saved_at[ids] <= top) & state.live[ids]]
        if ids.size == 0:
            return
        self._reclaim(int(pins.min()))
        if deleted and state.metadata:  # images that carry metadata: one at a time (rare)
            for pid in ids.tolist():
                self._save(state, pid, commit, deleted)
        else:
            self._save_many(state, ids, commit, deleted)
        self._saved_at[ids] = commit

    def _save_many(self, state: State, ids: I64, commit: int, deleted: bool) -> None:
        """Images of ``ids`` (no metadata) in chunks of contiguous ring space: one compiled
        gather and one vectorised write of the entry records per chunk."""
        m = self._m
        sizes = state.size[ids]
        ends = np.cumsum(sizes)
        limit_bytes, limit_rows = m.data_bytes // 2, m.capacity // 2
        i = 0
        while i < ids.size:
            if int(sizes[i]) > limit_bytes:  # a big page goes alone (it may expire pins)
                self._save(state, int(ids[i]), commit, deleted)
                i += 1
                continue
            base = int(ends[i - 1]) if i else 0
            j = int(np.searchsorted(ends, base + limit_bytes, side="right"))
            j = max(i + 1, min(j, i + limit_rows, ids.size))
            chunk, n = ids[i:j], sizes[i:j]
            total = int(n.sum())
            pos = self._room(total, commit, len(chunk))
            o = pos % m.data_bytes
            state.gather_into(chunk, n, m.data[o : o + total])  # device pages too
            starts = np.zeros(len(chunk), np.int64)
            np.cumsum(n[:-1], out=starts[1:])
            self._publish(chunk, commit, state.epoch[chunk], pos + starts, n, 0, deleted)
            self.saved += len(chunk)
            self.saved_bytes += total
            i = j

    def _publish(
        self, pages: I64, commit: int, epochs: Any, pos: I64, n: I64, meta: int, deleted: bool
    ) -> None:
        """Write the entry records of images already copied into the ring, then publish
        them: for each record its index word invalid, its fields, its index (readers check
        the index before and after reading a record), and last the published count."""
        m = self._m
        first = int(m.head[_PUBLISHED])
        idx = np.arange(first, first + pages.size, dtype=np.int64)
        at = idx % m.capacity
        fields = np.empty((pages.size, ENTRY_WORDS - 1), np.uint64)
        fields[:, _E_PAGE - 1], fields[:, _E_COMMIT - 1], fields[:, _E_EPOCH - 1] = (
            pages, commit, epochs,
        )  # fmt: skip
        fields[:, _E_POS - 1], fields[:, _E_BYTES - 1], fields[:, _E_META - 1] = pos, n, meta
        fields[:, _E_FLAGS - 1] = DELETED if deleted else 0
        m.entries[at, _E_INDEX] = INVALID
        m.entries[at, 1:] = fields
        m.entries[at, _E_INDEX] = idx.astype(np.uint64)
        m.head[_PUBLISHED] = first + pages.size

    def _save(self, state: State, pid: int, commit: int, deleted: bool) -> None:
        m = self._m
        n = int(state.size[pid])
        meta = state.metadata.get(pid) if deleted else None
        mb = b"" if meta is None else meta.encode()
        need = n + len(mb)
        if need > m.data_bytes:
            # cannot be kept at all: every snapshot that could see this page is too old
            self._expire(commit)
            return
        pos = self._room(need, commit)
        o = pos % m.data_bytes
        state.gather_into(np.array([pid]), np.array([n]), m.data[o : o + n])
        if mb:
            m.data[o + n : o + need] = np.frombuffer(mb, np.uint8)
        self._publish(np.array([pid]), commit, state.epoch[pid : pid + 1], np.array([pos]),
                      np.array([n]), len(mb), deleted)  # fmt: skip
        self.saved += 1
        self.saved_bytes += need

    def _room(self, need: int, commit: int, entries: int = 1) -> int:
        """A data position with ``need`` contiguous bytes free (and ``entries`` entry
        slots), reclaiming, then expiring, the oldest entries as needed."""
        m = self._m
        size = m.data_bytes
        pos = self._pos
        if pos % size + need > size:
            pos += size - pos % size  # do not wrap inside one image
        while True:
            live = int(m.head[_PUBLISHED]) - int(m.head[_RECLAIMED])
            if live == 0:
                self._oldest_pos = pos
            if live + entries <= m.capacity and pos + need - self._oldest_pos <= size:
                break
            if not self._reclaim(self._min_pin()):
                self._drop_oldest()
        self._pos = pos + need
        return pos

    def _min_pin(self) -> int:
        pins = self.pins()
        return int(pins.min()) if pins.size else 1 << 62

    def _reclaim(self, floor: int) -> bool:
        """Drop the oldest entries whose commit is at or below every pin (``floor``);
        False when none could be dropped."""
        m = self._m
        first, end = int(m.head[_RECLAIMED]), int(m.head[_PUBLISHED])
        i = first
        while i < end and int(m.entries[i % m.capacity, _E_COMMIT]) <= floor:
            i += 1
        self._set_reclaimed(i, end)
        return i > first

    def _set_reclaimed(self, i: int, end: int) -> None:
        m = self._m
        m.head[_RECLAIMED] = i
        if i < end:
            self._oldest_pos = int(m.entries[i % m.capacity, _E_POS])

    def _drop_oldest(self) -> None:
        """Make room although a pin still needs the oldest entry: clear dead readers'
        slots first; if that frees nothing, expire the snapshots below its commit."""
        m = self._m
        first, end = int(m.head[_RECLAIMED]), int(m.head[_PUBLISHED])
        if first == end:
            return
        if self.clear_dead() and self._reclaim(self._min_pin()):
            return
        self._expire(int(m.entries[first % m.capacity, _E_COMMIT]))
        self._set_reclaimed(first + 1, end)

    def _expire(self, commit: int) -> None:
        """Snapshots pinned below ``commit`` can no longer be served: say so before any of
        their bytes are reused."""
        m = self._m
        if commit > int(m.head[_EXPIRED]):
            m.head[_EXPIRED] = commit
            atomics.fence()
            self.expired += 1

    def clear_dead(self) -> int:
        """Free the slots of processes that no longer exist; return how many."""
        m = self._m
        freed = 0
        for i in range(SLOTS):
            v, pid = int(m.slots[2 * i]), int(m.slots[2 * i + 1])
            if v == 0 or v == CLAIMED or pid <= 0 or _alive(pid):
                continue
            if atomics.compare_exchange(m.slots, 2 * i, _U(v), _U(0)) == v:
                atomics.fetch_add(m.head, _ACTIVE, -1)
                freed += 1
        return freed

    def close(self) -> None:
        self.__dict__.pop("_head", None)  # the mapping closes only with no view left
        self._m.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SnapTable:
    """A process's view of ``SNAPSHOTS``, shared by its snapshots (readers and the
    writer's own process alike). None of its methods blocks the writer."""

    def __init__(self, directory: str) -> None:
        path = os.path.join(directory, SNAPSHOTS_FILE)
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise storage_error(f"cannot open the snapshot file {path}", exc) from exc
        try:
            size = os.fstat(fd).st_size
            if size < 8 * HEAD_WORDS:
                raise CorruptStateError(f"{path} is too short to be a snapshot table")
            m = self._m = _Mapped(fd, size, writable=False)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, MMSBError):
                raise
            raise storage_error(f"cannot map the snapshot file {path}", exc) from exc
        if int(m.head[_MAGIC]) != MAGIC or int(m.head[_VERSION]) != VERSION:
            m.close()
            raise CorruptStateError(f"{path} is not a snapshot table of this version")
        cap, data = int(m.head[_CAP]), int(m.head[_DATA])
        if file_size(cap, data) > size:
            m.close()
            raise CorruptStateError(f"{path} is shorter than its header says")
        m.layout(cap, data)

    @property
    def generation(self) -> int:
        return int(self._m.head[_GEN])

    def claim(self) -> int:
        """Take a free slot; return its number."""
        m = self._m
        pid = os.getpid()
        for i in range(SLOTS):
            if int(m.slots[2 * i]) != 0:
                continue
            if atomics.compare_exchange(m.slots, 2 * i, _U(0), _U(CLAIMED)) == 0:
                m.slots[2 * i + 1] = pid
                atomics.fetch_add(m.head, _ACTIVE, 1)
                return i
        raise MMSBError(f"all {SLOTS} snapshot slots are in use; close some snapshots")

    def pin(self, slot: int, lsn: int) -> None:
        """Publish the pin, then fence (the caller rechecks ``SEQ`` after this)."""
        atomics.store_fenced(self._m.slots, 2 * slot, _U(lsn + 1))

    def release(self, slot: int, lsn: int) -> None:
        """Unpin ``slot`` if it still holds this process's pin of ``lsn`` (a new writer
        generation or the dead-reader sweep may have cleared it, and someone else may
        hold it now)."""
        m = self._m
        v = lsn + 1
        if int(m.slots[2 * slot + 1]) != os.getpid() or int(m.slots[2 * slot]) != v:
            return
        if atomics.compare_exchange(m.slots, 2 * slot, _U(v), _U(0)) == v:
            atomics.fetch_add(m.head, _ACTIVE, -1)

    def unclaim(self, slot: int) -> None:
        """Give back a slot this process claimed, pinned or not (an open that failed)."""
        m = self._m
        v = int(m.slots[2 * slot])
        if v == 0 or int(m.slots[2 * slot + 1]) != os.getpid():
            return
        if atomics.compare_exchange(m.slots, 2 * slot, _U(v), _U(0)) == v:
            atomics.fetch_add(m.head, _ACTIVE, -1)

    def published(self) -> int:
        return int(self._m.head[_PUBLISHED])

    def oldest(self) -> int:
        """The index of the oldest entry still kept."""
        return int(self._m.head[_RECLAIMED])

    def entries_since(self, start: int, end: int) -> tuple[I64, I64, I64]:
        """(index, page, commit) of entries ``[start, end)`` still intact (an entry
        overwritten meanwhile was reclaimed, so no pinned snapshot needs it)."""
        m = self._m
        start = max(start, end - m.capacity)
        idx = np.arange(start, end, dtype=np.int64)
        rows = m.entries[idx % m.capacity]
        first = rows[:, _E_INDEX].astype(np.int64)
        again = m.entries[idx % m.capacity, _E_INDEX].astype(np.int64)
        ok = (first == idx) & (again == idx)
        return idx[ok], rows[ok, _E_PAGE].astype(np.int64), rows[ok, _E_COMMIT].astype(np.int64)

    def entry(self, index: int) -> tuple[int, int, int, int, int]:
        """(epoch, data position, bytes, metadata bytes, flags) of a live entry."""
        row = self._m.entries[index % self._m.capacity]
        return (int(row[_E_EPOCH]), int(row[_E_POS]), int(row[_E_BYTES]), int(row[_E_META]),
                int(row[_E_FLAGS]))  # fmt: skip

    def copy(self, pos: int, n: int) -> npt.NDArray[np.uint8]:
        o = pos % self._m.data_bytes
        return self._m.data[o : o + n].copy()

    def check(self, lsn: int, generation: int) -> None:
        """Raise :class:`SnapshotTooOldError` if a snapshot at ``lsn`` of ``generation``
        can no longer be served (call after copying, before trusting the copy)."""
        head = self._m.head
        if int(head[_GEN]) != generation:
            raise SnapshotTooOldError(
                f"the snapshot at LSN {lsn} ended: the writer reopened the bus since"
            )
        if int(head[_EXPIRED]) > lsn:
            raise SnapshotTooOldError(
                f"the snapshot at LSN {lsn} is too old: the writer needed the memory that "
                f"kept its pages (snapshot_memory) and expired snapshots below LSN "
                f"{int(head[_EXPIRED])}"
            )

    def stats(self) -> dict[str, Any]:
        h = self._m.head
        return {"active": int(h[_ACTIVE]), "published": int(h[_PUBLISHED]),
                "reclaimed": int(h[_RECLAIMED]), "expired_below": int(h[_EXPIRED])}  # fmt: skip

    def close(self) -> None:
        self._m.close()
