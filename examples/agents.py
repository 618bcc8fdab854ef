"""Foraging agents that share what they learn through derived pages.

A ring of cells holds food the agents cannot see directly. Each agent has a *belief* page
(its estimate of the food in every cell) and walks the ring, sampling the cell it stands on.
The bus derives the shared picture from the beliefs on every tick:

* ``best``      = max over the agents' beliefs, per cell  (built-in MAX_PLUS semiring)
* ``consensus`` = mean of the agents' beliefs, per cell    (built-in SUM_PRODUCT, weights 1/n)
* ``contested`` = best - consensus: where the agents disagree  (a Python function)
* ``summary``   = a few numbers drawn from best and contested  (a Python function)

Each tick the agents read the derived pages, decide where to step, and hand their
observations and new positions to ``bus.tick`` as one batch; the tick commits the batch and
recomputes the derived pages in the same commit. At the end ``bus.provenance`` explains
where the summary's value came from.

    python examples/agents.py                   # an ephemeral bus, removed at exit
    python examples/agents.py --dir /tmp/agents --ticks 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt

import mmsb
from mmsb import semiring

F64 = npt.NDArray[np.float64]


def contested(best: F64, consensus: F64) -> F64:
    """Where one agent knows of much more food than the average agent believes."""
    return best - consensus


def summarize(best: F64, disagreement: F64) -> F64:
    """Eight numbers: the best cell and its food, the most contested cell and how much, the
    number of cells anyone has found food in, and the total food believed in."""
    out = np.zeros(8, dtype=np.float64)
    out[:6] = [
        np.argmax(best),
        best.max(),
        np.argmax(disagreement),
        disagreement.max(),
        np.count_nonzero(best > 0.05),
        best.sum(),
    ]
    return out


def run(path: Path | None, cells: int, agents: int, ticks: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    food = np.clip(rng.normal(0.3, 0.25, cells), 0.0, 1.0)  # the hidden truth
    food[rng.integers(cells)] = 1.0  # one rich cell to be found
    with mmsb.open(path) as bus:  # None: an ephemeral bus in a temporary directory
        size = cells * 8
        beliefs = [int(i) for i in bus.create_pages(agents, size, dtype="float64")]
        best, consensus, disagree = (int(i) for i in bus.create_pages(3, size, dtype="float64"))
        summary = bus.create_page(64, dtype="float64")
        positions = bus.create_page(agents * 8, dtype="int64")

        # the derived pages: two compiled semiring folds, two Python functions
        bus.derive_semiring(best, beliefs, semiring.MAX_PLUS, name="best")
        bus.derive_semiring(
            consensus,
            beliefs,
            semiring.SUM_PRODUCT,
            weights=[1.0 / agents] * agents,
            name="consensus",
        )
        bus.derive(disagree, contested, parents=[best, consensus])
        bus.derive(summary, summarize, parents=[best, disagree])

        pos = rng.integers(0, cells, agents).astype(np.int64)
        tick_ns: list[int] = []
        for t in range(1, ticks + 1):
            # decide: mostly a random step; sometimes head for the most contested cell, where
            # another agent has seen more than this one believes
            target = int(bus.read(summary)[2])
            toward = np.sign(((target - pos + cells // 2) % cells) - cells // 2)
            steps = np.where(rng.random(agents) < 0.3, toward, rng.choice([-1, 1], agents))
            pos = (pos + steps) % cells
            seen = np.clip(food[pos] + rng.normal(0.0, 0.02, agents), 0.0, None)
            # the inputs of this tick: each agent writes one float64 into its own belief page
            # (at its cell), plus the positions page
            batch = mmsb.DeltaBatch.concat(
                [
                    mmsb.DeltaBatch.from_ranges(
                        beliefs, pos * 8, seen.reshape(agents, 1), source="observe"
                    ),
                    mmsb.DeltaBatch.from_ranges([positions], [0], [pos], source="move"),
                ]
            )
            report = bus.tick(batch)  # commit, then recompute the derived pages, one commit
            tick_ns.append(report.total_ns)
            if t % (ticks // 4) == 0 or t == ticks:
                s = bus.read(summary)
                print(
                    f"tick {t:4d}: best cell {int(s[0]):3d} ({s[1]:.2f} food), "
                    f"{int(s[4]):3d}/{cells} cells known to hold food, most contested "
                    f"cell {int(s[2]):3d} (+{s[3]:.2f}); {report.pages_recomputed} pages "
                    f"recomputed, median tick {np.median(tick_ns) / 1e6:.2f} ms"
                )

        s = bus.read(summary)
        truth = int(np.argmax(food))
        found = "found it" if int(s[0]) == truth else "not found yet"
        print(f"richest cell: {truth} ({food[truth]:.2f} food); the agents {found}")
        print(f"derivations: {describe(bus.derivations())}")
        print(
            f"graph valid: {bus.graph.validate().ok}, topological order ends "
            f"{bus.graph.topo_order()[-3:].tolist()}"
        )

        # why does the summary hold what it holds? the last write of the summary, the
        # writes of its parents that fed it, and theirs, two levels down
        why = bus.provenance(summary, depth=2)
        print(f"provenance of page {summary} (summary), {why.steps} steps:")
        print(why.explain())


def describe(derivations: dict[int, str]) -> str:
    return ", ".join(f"{page} = {name}" for page, name in derivations.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, help="keep the bus in this new directory (default: an ephemeral bus)"
    )
    parser.add_argument("--cells", type=int, default=256, help="cells on the ring (256)")
    parser.add_argument("--agents", type=int, default=8, help="number of agents (8)")
    parser.add_argument("--ticks", type=int, default=400, help="ticks to run (400)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    args = parser.parse_args()
    if args.cells < 8 or args.agents < 1 or args.ticks < 4:
        parser.error("need --cells >= 8, --agents >= 1 and --ticks >= 4")
    run(args.dir, args.cells, args.agents, args.ticks, args.seed)


if __name__ == "__main__":
    main()
