"""2-D heat diffusion on a bus, then a look back in time.

A square float64 grid is stored in row blocks, one page per block. Each step reads every
block (one ``read_many``), applies the explicit five-point stencil with numpy, and commits
the new grid as one batch: one commit per step, so every step has its own LSN. At the end
the program goes back to an early step with ``bus.at(lsn)``, checks that it reads exactly
the grid it had then, lists what changed since with ``bus.diff``, and shows the last writes
of the hottest block with ``bus.history``.

    python examples/heat_diffusion.py                 # a bus in a temporary directory
    python examples/heat_diffusion.py --dir /tmp/heat --steps 500

With ``--dir`` the bus is kept: ``mmsb info DIR`` and ``mmsb log DIR`` show its history.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import mmsb

Grid = npt.NDArray[np.float64]


def initial_grid(n: int) -> Grid:
    """A cold plate (0 °C) with a hot square (100 °C) off its centre."""
    grid = np.zeros((n, n), dtype=np.float64)
    grid[n // 4 : n // 4 + n // 8, n // 3 : n // 3 + n // 8] = 100.0
    return grid


def step(grid: Grid, alpha: float) -> Grid:
    """One explicit Euler step of du/dt = alpha * laplacian(u); the edges stay at 0 °C."""
    new = grid.copy()
    new[1:-1, 1:-1] += alpha * (
        grid[:-2, 1:-1] + grid[2:, 1:-1] + grid[1:-1, :-2] + grid[1:-1, 2:] - 4 * grid[1:-1, 1:-1]
    )
    return new


def run(path: Path, n: int, block_rows: int, steps: int, early: int) -> None:
    blocks = n // block_rows
    with mmsb.open(path, sync="normal") as bus:
        # one page per block of rows: block_rows * n float64 values each
        ids = bus.create_pages(
            blocks,
            block_rows * n * 8,
            dtype="float64",
            metadata={"model": "heat", "rows": block_rows},
        )
        offsets = np.zeros(blocks, dtype=np.int64)

        def commit(grid: Grid) -> int:
            # each row of the payload array is one block's bytes: one range delta per page,
            # all of them committed atomically as one log frame
            rows = grid.reshape(blocks, block_rows * n)
            batch = mmsb.DeltaBatch.from_ranges(ids, offsets, rows, source="heat")
            return bus.apply_batch(batch).lsn

        grid = initial_grid(n)
        lsns = [commit(grid)]  # lsns[k] is the commit holding the grid after k steps
        kept = grid.copy() if early == 0 else None
        t0 = time.perf_counter()
        for k in range(1, steps + 1):
            current = bus.read_many(ids).reshape(n, n)  # the grid as the bus holds it
            grid = step(current, alpha=0.2)
            lsns.append(commit(grid))
            if k == early:
                kept = grid.copy()
            if k == steps // 2:
                bus.checkpoint()  # later time travel starts from here instead of LSN 0
        elapsed = time.perf_counter() - t0
        print(
            f"{steps} steps of a {n}x{n} grid in {blocks} pages: {elapsed:.2f} s "
            f"({steps / elapsed:,.0f} steps/s), LSN {bus.lsn}"
        )

        # -- time travel: the grid as it was after step `early` -----------------------------
        with bus.at(lsns[early]) as past:  # rebuilt from a checkpoint and the log
            then = np.concatenate([past.read(int(i)) for i in ids]).reshape(n, n)
        now = bus.read_many(ids).reshape(n, n)
        assert kept is not None
        same = bool(np.array_equal(then, kept))
        print(
            f"time travel to step {early} (LSN {lsns[early]}): "
            f"{'OK, identical to the grid of that step' if same else 'MISMATCH'}"
        )
        for label, g in ((f"step {early}", then), (f"step {steps}", now)):
            row, col = divmod(int(np.argmax(g)), n)
            print(
                f"  {label:>10}: heat {g.sum():9.1f}, peak {g.max():6.2f} °C at ({row}, {col}), "
                f"cells above 1 °C: {int((g > 1.0).sum())}"
            )

        # -- what changed between the two steps -----------------------------------------
        changes = bus.diff(lsns[early], lsns[-1])
        changed_bytes = sum(end - start for d in changes for start, end in d.ranges)
        print(
            f"diff step {early} -> {steps}: {len(changes)} of {blocks} pages changed, "
            f"{changed_bytes:,} of {n * n * 8:,} bytes"
        )

        # -- the history of the block that was hottest at the start --------------------------
        block = int(np.argmax(initial_grid(n).max(axis=1))) // block_rows
        hot = int(ids[block])
        records = bus.history(hot, limit=3)
        print(
            f"page {hot} (rows {block * block_rows}..{(block + 1) * block_rows - 1}): "
            f"{bus.page(hot).epoch} writes; the newest three:"
        )
        for r in records:
            print(
                f"  delta {r.delta_id} at LSN {r.lsn} from {r.source!r}, "
                f"bytes {r.offset}..{r.offset + r.length}"
            )
        if not same:
            raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        help="keep the bus in this directory, new or a "
        "bus (default: a temporary directory removed at exit)",
    )
    parser.add_argument("--size", type=int, default=128, help="grid side (default 128)")
    parser.add_argument("--block-rows", type=int, default=16, help="rows per page (default 16)")
    parser.add_argument("--steps", type=int, default=500, help="time steps (default 500)")
    parser.add_argument("--early", type=int, default=10, help="step to go back to (default 10)")
    args = parser.parse_args()
    if args.size % args.block_rows or not 0 <= args.early <= args.steps:
        parser.error("--size must be a multiple of --block-rows, and 0 <= --early <= --steps")
    if args.dir is not None:
        run(args.dir, args.size, args.block_rows, args.steps, args.early)
        return
    with tempfile.TemporaryDirectory(prefix="mmsb-heat-") as tmp:
        run(Path(tmp) / "heat", args.size, args.block_rows, args.steps, args.early)


if __name__ == "__main__":
    main()
