"""The multi-worker driver: run one compiled kernel per share on worker threads.

Threads, not processes: every kernel of the commit path releases the GIL (``nogil``), the
arena and page table are already in this process, and handing a share to a thread costs
tens of microseconds, where a process would need the batch columns copied or placed in
shared memory first. ``docs/performance.md`` has the measurements behind the choice.

The calling thread always runs share 0 itself, so ``workers=1`` never touches a pool, and
a pool of ``workers - 1`` threads per worker count is created on first use and kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from mmsb.errors import InvalidArgumentError

MAX_WORKERS = 64
# below this many rows per worker a share costs more to hand over than it saves
MIN_ROWS_PER_WORKER = 8192

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def check_workers(workers: Any) -> int:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
        raise InvalidArgumentError(f"workers must be an integer, got {workers!r}")
    if not 1 <= int(workers) <= MAX_WORKERS:
        raise InvalidArgumentError(f"workers must be in [1, {MAX_WORKERS}], got {workers}")
    return int(workers)


def effective_workers(workers: int, rows: int) -> int:
    """How many shares a batch of ``rows`` rows is cut into (never more than asked)."""
    return max(1, min(workers, rows // MIN_ROWS_PER_WORKER))


def _pool(extra: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(extra)
        if pool is None:
            pool = _pools[extra] = ThreadPoolExecutor(extra, thread_name_prefix="mmsb-worker")
        return pool


def run_shares(fn: Callable[..., Any], shares: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``[fn(*s) for s in shares]``, with shares 1.. on pool threads and share 0 here.

    Every share runs to completion before this returns (also when one raises), so no
    worker is still writing when the caller goes on.
    """
    if len(shares) == 1:
        return [fn(*shares[0])]
    pool = _pool(len(shares) - 1)
    futures: list[Future[Any]] = [pool.submit(fn, *s) for s in shares[1:]]
    first: list[Any] = []
    error: BaseException | None = None
    try:
        first.append(fn(*shares[0]))
    except BaseException as exc:
        error = exc
    rest = []
    for f in futures:
        try:
            rest.append(f.result())
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error
    return first + rest


def row_splits(rows: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges covering ``[0, rows)`` (the first ones longer)."""
    edges = [rows * k // parts for k in range(parts + 1)]  # integers: no float rounding
    return [(edges[i], edges[i + 1]) for i in range(parts)]
