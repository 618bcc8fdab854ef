"""The writer process of the libfiu campaign (``test_fault_injection.py``).

Run as ``fiu-run -x python fiu_writer.py DIR``. It opens the bus at ``DIR`` with
``sync="always"``, goes once through every kind of step the loop takes (so that nothing is
imported or set up lazily once faults are on), prints ``READY <pid>`` and waits for a line
on stdin; the test enables a libfiu failure point meanwhile. Then it runs the loop, one
line per step on stdout:

* ``TRY <n>`` before step ``n`` changes anything;
* ``ACK <lsn> <page> <value>`` once commit ``lsn`` wrote ``value`` into the counter page
  (acknowledged: with ``sync="always"`` its frame was fsynced);
* ``NEW <lsn> <page>`` once commit ``lsn`` created page ``page``;
* ``CKPT`` / ``REOPEN`` after a checkpoint / a close and reopen of the bus;
* ``ERR <json>`` for the first exception, which ends the run: its class, whether it is an
  ``MMSBError`` and an ``OSError``, and the chain of causes;
* ``DONE`` when the loop ran out without one.

It leaves with ``os._exit``, as a crash would: nothing is closed or flushed on the way out.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

import mmsb

STEPS = 120
CHECKPOINT_EVERY = 7  # steps: rename, fsync (checkpoint file, directory, new segment)
CREATE_EVERY = 5  # steps: a 256 KiB page, so the arena grows (reserve + remap, ftruncate)
REOPEN_EVERY = 17  # steps: close (clean-shutdown file) and open (mmap, recovery)
OPTIONS = {"sync": "always", "checkpoint_every": None, "segment_size": 16384}


def describe(exc: BaseException) -> dict[str, object]:
    chain = []
    cause: BaseException | None = exc.__cause__
    while cause is not None and len(chain) < 8:
        chain.append({
            "type": type(cause).__name__,
            "mmsb": isinstance(cause, mmsb.MMSBError),
            "original": isinstance(cause, (OSError, MemoryError)),
            "errno": getattr(cause, "errno", None),
        })  # fmt: skip
        cause = cause.__cause__
    return {
        "type": type(exc).__name__,
        "mmsb": isinstance(exc, mmsb.MMSBError),
        "os": isinstance(exc, OSError),
        "errno": getattr(exc, "errno", None),
        "message": str(exc)[:300],
        "chain": chain,
        "where": [f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                  for f in traceback.extract_tb(exc.__traceback__)[-4:]],
    }  # fmt: skip


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def step(bus: mmsb.Bus, path: str, counter: int, n: int) -> mmsb.Bus:
    if n % REOPEN_EVERY == 0:
        bus.close()
        bus = mmsb.open(path, **OPTIONS)
        say("REOPEN")
    elif n % CHECKPOINT_EVERY == 0:
        bus.checkpoint()
        say("CKPT")
    elif n % CREATE_EVERY == 0:
        page = bus.create_page(256 << 10)
        say(f"NEW {bus.lsn} {page}")
    else:
        bus.write(counter, np.full(8, n, dtype=np.int64))
        say(f"ACK {bus.lsn} {counter} {n}")
    return bus


def main(path: str) -> None:
    bus = mmsb.open(path, **OPTIONS)
    counter = bus.create_page(64, dtype="int64")
    for n in (1, CREATE_EVERY, CHECKPOINT_EVERY, REOPEN_EVERY):  # warm up every kind of step
        bus = step(bus, path, counter, n)
    say(f"READY {os.getpid()} {counter}")
    if sys.stdin.readline().strip() != "GO":
        os._exit(2)
    try:
        for n in range(REOPEN_EVERY + 1, REOPEN_EVERY + 1 + STEPS):
            say(f"TRY {n}")
            bus = step(bus, path, counter, n)
        bus.close()
        say("DONE")
    except BaseException as exc:  # reported, then the process ends
        say("ERR " + json.dumps(describe(exc)))
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
