"""What one tick did and how long each phase took."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PHASES = ("commit", "propagate", "maintenance", "invariants")


@dataclass(frozen=True)
class TickReport:
    """One tick: commit -> propagate -> maintenance -> sampled invariants -> events.

    ``phases_ns`` holds each phase's wall time; ``total_ns`` the whole tick's. ``overrun``
    is set when ``total_ns`` exceeded ``budget_ns``.
    """

    tick: int
    lsn: int  # the LSN after the tick
    input_deltas: int
    derived_deltas: int
    pages_recomputed: int
    pages_changed: int  # derived pages whose bytes changed
    flagged: int  # pages newly marked stale / gpu-sync-needed / invalidated
    phases_ns: dict[str, int]
    total_ns: int
    budget_ns: int
    overrun: bool
    invariants_checked: bool = False
    invariant_failures: list[str] = field(default_factory=list)
    maintenance: Any = None  # the GC step's report, when the bus has one

    def summary(self) -> str:
        phases = ", ".join(f"{k} {v / 1e6:.3f} ms" for k, v in self.phases_ns.items())
        flag = " OVERRUN" if self.overrun else ""
        return (
            f"tick {self.tick}: {self.total_ns / 1e6:.3f} ms{flag} (budget "
            f"{self.budget_ns / 1e6:.1f} ms; {phases}); {self.input_deltas} input deltas, "
            f"{self.pages_recomputed} recomputed, {self.derived_deltas} derived deltas"
        )
