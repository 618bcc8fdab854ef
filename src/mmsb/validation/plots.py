"""The plots of the HTML validation report, drawn with matplotlib on its Agg canvas (a
:class:`matplotlib.figure.Figure` without pyplot) from the series each target measured
(``figures["series"]``, see :mod:`mmsb.validation.series`). A target that did not run
gives a short note in place of its plot. matplotlib is imported only when a plot is drawn;
it is optional (the ``report`` extra), and :func:`require_matplotlib` says so when it is
missing.
"""

from __future__ import annotations

import importlib
import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmsb.validation.runner import TargetResult, ValidationReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MIB = 1 << 20
GIB = 1 << 30
SEED_SINGLE = 1e6  # the seed's throughput floors (deltas/s), drawn for reference
SEED_MULTI = 1e7
TICK_FLOOR_MS = 16.0
GC_FLOOR_MS = 3.0

BLUE, ORANGE, GREY, RED = "#1f77b4", "#ff7f0e", "#555555", "#c0392b"
REPORT_EXTRA = "pip install 'mmsb[report]'"


def require_matplotlib() -> None:
    """Import the parts of matplotlib the plots use; when that fails, raise ImportError
    naming the ``report`` extra that installs it (``mmsb validate --html`` calls this before
    its long run)."""
    try:
        for name in ("matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.ticker"):
            importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"the HTML report draws its plots with matplotlib, which is not importable here "
            f"({e}); install the report extra: {REPORT_EXTRA}"
        ) from e


@dataclass
class Plot:
    """One figure of the report: a PNG, or the reason there is none."""

    key: str
    title: str
    caption: str  # what was measured and under which conditions
    png: bytes | None = None
    missing: str | None = None


def _series(result: TargetResult | None, *keys: str) -> dict[str, list[float]] | None:
    """The named lists of ``result.figures["series"]`` when all are present, numeric and
    non-empty; None otherwise."""
    if result is None:
        return None
    series = result.figures.get("series")
    if not isinstance(series, dict):
        return None
    out: dict[str, list[float]] = {}
    for key in keys:
        values = series.get(key)
        if not isinstance(values, list) or not values:
            return None
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return None
        out[key] = [float(v) for v in values]
    return out


def _absent(result: TargetResult | None, target: str) -> str:
    if result is None:
        return f"{target} was not run"
    return f"{target} ran but recorded no samples for this plot"


def _figure(width: float = 7.2, height: float = 3.4) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches itself to the figure: raster output, no GUI
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _style(ax: Axes) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)


def _plain_log_axis(
    ax: Axes, axis: str, ticks: list[float] | None = None, subs: tuple[float, ...] = (1.0,)
) -> None:
    """Label a log axis with plain numbers (1,000 and 0.01 rather than 10³ and 10⁻²): at
    ``ticks`` when given, else at ``subs`` times each power of ten."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    if ticks is not None:
        target.set_major_locator(FixedLocator(sorted(set(ticks))))
    else:
        target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def _num(figures: dict[str, object], key: str) -> float | None:
    """A numeric figure, or None where the runner did not report it."""
    value = figures.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _load_note(result: TargetResult) -> str:
    """The load-average remark a runner put in its notes, if any."""
    for note in result.notes:
        at = note.find("load average")
        if at >= 0:
            text = note[at:].split(";")[0]
            return text[:1].upper() + text[1:] + "."
    return ""


# -- the plots ------------------------------------------------------------------------------


def plot_throughput(result: TargetResult | None) -> Plot:
    title = "Throughput against batch size and worker count"
    s = _series(result, "batch", "workers", "deltas", "deltas_per_s")
    if result is None or s is None:
        return Plot("throughput", title, "", missing=_absent(result, "target #5 (throughput)"))
    runs = result.figures.get("runs") or [{}]
    cond = runs[0].get("conditions", {}) if isinstance(runs[0], dict) else {}
    fig = _figure()
    ax = fig.add_subplot()
    for workers, colour in zip(sorted(set(s["workers"])), (BLUE, ORANGE, GREY), strict=False):
        pts = sorted(
            (b, v)
            for b, w, v in zip(s["batch"], s["workers"], s["deltas_per_s"], strict=True)
            if w == workers
        )
        ax.plot([p[0] for p in pts], [p[1] / 1e6 for p in pts], "o-", color=colour,
                label=f"{workers:.0f} worker{'s' if workers != 1 else ''}")  # fmt: skip
    ax.axhline(SEED_SINGLE / 1e6, color=GREY, ls=":", lw=1)
    ax.axhline(SEED_MULTI / 1e6, color=RED, ls="--", lw=1)
    ax.annotate("seed floor, 1 worker", (0.01, SEED_SINGLE / 1e6), xycoords=("axes fraction",
                "data"), va="bottom", fontsize=8, color=GREY)  # fmt: skip
    ax.annotate("seed floor, multi", (0.01, SEED_MULTI / 1e6), xycoords=("axes fraction",
                "data"), va="bottom", fontsize=8, color=RED)  # fmt: skip
    ax.set_xscale("log")
    _plain_log_axis(ax, "x", s["batch"])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("deltas per apply_batch call (batch size)")
    ax.set_ylabel("million deltas/s")
    ax.legend(loc="lower right")
    _style(ax)
    counts = ", ".join(
        f"{d:,.0f} at batch {b:,.0f}"
        for b, d in sorted({(b, d) for b, d in zip(s["batch"], s["deltas"], strict=True)})
    )
    caption = (
        f"{cond.get('payload_bytes', 16)} B range deltas over {cond.get('pages', 4096):,} pages "
        f"of {cond.get('page_size', 1024):,} B, sync={cond.get('sync', 'normal')}, log on; "
        f"wall time of the whole apply_batch loop on a fresh on-disk bus per point; deltas per "
        f"point: {counts}. {_load_note(result)}"
    )
    return Plot("throughput", title, caption.strip(), _png(fig))


def plot_ticks(result: TargetResult | None) -> Plot:
    title = "Tick latency distribution"
    s = _series(result, "tick_ms")
    if result is None or s is None:
        return Plot("ticks", title, "", missing=_absent(result, "target #6 (tick latency)"))
    import numpy as np

    ms = np.asarray(s["tick_ms"])
    p50, p99 = np.percentile(ms, [50, 99])
    fig = _figure(height=3.2)
    hist, seq = fig.subplots(1, 2, width_ratios=[3, 2])
    # the histogram's axis ends a little past p99 (and the floor): a rare long tick would
    # squeeze every other bar into one; the ticks beyond it are counted in a note
    right = max(TICK_FLOOR_MS, float(p99)) * 1.25
    beyond = ms[ms > right]
    hist.hist(ms[ms <= right], bins=min(60, max(10, ms.size // 5)), range=(0, right),
              color=BLUE, alpha=0.85)  # fmt: skip
    if beyond.size:
        plural = "s" if beyond.size != 1 else ""
        hist.set_title(f"{beyond.size:,} tick{plural} beyond {right:.0f} ms (max "
                       f"{beyond.max():.0f} ms) not shown", fontsize=8, loc="right",
                       color=GREY)  # fmt: skip
    for x, label, colour, ls in ((p50, "p50", GREY, "-"), (p99, "p99", ORANGE, "-"),
                                 (TICK_FLOOR_MS, "seed floor", RED, "--")):  # fmt: skip
        hist.axvline(x, color=colour, ls=ls, lw=1.2, label=f"{label} {x:.2f} ms")
    hist.set_xlabel("tick wall time (ms)")
    hist.set_ylabel("ticks")
    hist.set_xlim(0, right)
    hist.legend(fontsize=8)
    seq.plot(np.arange(ms.size), ms, ".", ms=3, color=BLUE)
    seq.axhline(TICK_FLOOR_MS, color=RED, ls="--", lw=1.2)
    seq.set_xlabel("tick")
    seq.set_ylabel("ms")
    seq.set_ylim(bottom=0)
    for ax in (hist, seq):
        _style(ax)
    f = result.figures
    workload = ", ".join(
        text.format(_num(f, key))
        for key, text in (
            ("pages", "{:,.0f} pages of 1 KiB"),
            ("derived", "{:,.0f} derived pages"),
            ("deltas_per_tick", "{:,.0f} input deltas of 16–64 B per tick"),
        )
        if _num(f, key) is not None
    )
    warmup = _num(f, "warmup_ticks")
    caption = (
        f"{ms.size:,} measured ticks"
        + (f" after {warmup:,.0f} warm-up ticks" if warmup is not None else "")
        + (f": {workload}" if workload else "")
        + f", sync={f.get('sync', 'normal')}; each tick commits, propagates and runs its "
        "maintenance step. Right: the same ticks in order."
    )
    return Plot("ticks", title, caption, _png(fig))


def plot_memory(result: TargetResult | None) -> Plot:
    title = "Memory growth against page count"
    s = _series(result, "pages_written", "rss_growth_bytes")
    if result is None or s is None or len(s["pages_written"]) != len(s["rss_growth_bytes"]):
        return Plot("memory", title, "", missing=_absent(result, "target #7 (memory and GC)"))
    f = result.figures
    size = int(f.get("page_size", 1024))
    pages = [p / 1e3 for p in s["pages_written"]]
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(pages, [b / MIB for b in s["rss_growth_bytes"]], "o-", ms=3, color=BLUE,
            label="measured RSS growth")  # fmt: skip
    top = s["pages_written"][-1]
    ax.plot([0, top / 1e3], [0, top * size / MIB], ":", color=GREY,
            label=f"the page data alone ({size:,} B per page)")  # fmt: skip
    ax.plot([0, top / 1e3], [0, top / 1e6 * GIB / MIB], "--", color=RED,
            label="seed floor: 1 GiB per million pages")  # fmt: skip
    ax.set_xlabel("pages written (thousands)")
    ax.set_ylabel("RSS growth (MiB)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper left")
    _style(ax)
    caption = (
        f"{int(f.get('pages', top)):,} pages of {size:,} B created in one call, then each "
        f"written once in chunks; the process's resident memory (from /proc) over its value "
        f"just before the pages were created, sampled after each chunk written (the first "
        f"sample already holds the page table of every page)."
    )
    growth, overhead = _num(f, "rss_growth_bytes"), _num(f, "bookkeeping_bytes_per_page")
    if growth is not None and overhead is not None:
        caption += (
            f" At the end of the run: {growth / MIB:,.0f} MiB, {overhead:.0f} B of "
            "bookkeeping per page."
        )
    return Plot("memory", title, caption, _png(fig))


def plot_gc(result: TargetResult | None) -> Plot:
    title = "GC pause distribution"
    s = _series(result, "pause_edges_ms", "gc_pause_counts")
    if result is None or s is None or len(s["pause_edges_ms"]) != len(s["gc_pause_counts"]) + 1:
        return Plot("gc", title, "", missing=_absent(result, "target #7 (memory and GC)"))
    edges, counts = s["pause_edges_ms"], s["gc_pause_counts"]
    cpython = (result.figures.get("series") or {}).get("cpython_gc_pause_counts") or []
    fig = _figure()
    ax = fig.add_subplot()
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", log=True, color=BLUE, alpha=0.8,
           edgecolor="white", label=f"bus GC steps ({sum(counts):,.0f})")  # fmt: skip
    if len(cpython) == len(counts) and sum(cpython):
        ax.bar(edges[:-1], cpython, width=widths, align="edge", log=True, color=ORANGE,
               alpha=0.6, edgecolor="white",
               label=f"CPython gc collections ({sum(cpython):,.0f})")  # fmt: skip
    f = result.figures
    budget = float(result.parameters.get("gc_budget_ms", 1.0))
    ax.axvline(budget, color=GREY, ls=":", lw=1.2, label=f"step budget {budget:g} ms")
    ax.axvline(GC_FLOOR_MS, color=RED, ls="--", lw=1.2, label=f"seed floor {GC_FLOOR_MS:g} ms")
    ax.set_xscale("log")
    _plain_log_axis(ax, "x")
    _plain_log_axis(ax, "y")
    ax.set_xlabel("pause (ms)")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    _style(ax)
    p99, top, cpython_max = (_num(f, k) for k in ("gc_pause_p99_ms", "gc_pause_max_ms",
                                                  "cpython_gc_max_ms"))  # fmt: skip
    step_figures = f"; p99 {p99:.3f} ms, max {top:.3f} ms" if p99 is not None and top else ""
    caption = (
        f"Every GC step's pause through writing {_num(f, 'pages') or 0:,.0f} pages, compacting "
        f"the arena after half of them are deleted and evicting cold pages (budget {budget:g} "
        f"ms per step{step_figures}), and every CPython cyclic collection timed with "
        "gc.callbacks"
        + (f" (max {cpython_max:.3f} ms)" if cpython_max is not None else "")
        + "; counts over logarithmic bins (the first bin also holds shorter pauses)."
    )
    return Plot("gc", title, caption, _png(fig))


def plot_recovery(result: TargetResult | None) -> Plot:
    title = "Recovery time against log-tail length"
    s = _series(result, "tail_deltas", "frames_replayed", "open_ms", "replay_ms")
    if result is None or s is None:
        return Plot(
            "recovery", title, "", missing=_absent(result, "target #1 (replay determinism)")
        )
    from mmsb.validation import series as measured

    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(s["tail_deltas"], s["open_ms"], "o-", color=BLUE, label="mmsb.open, whole call")
    ax.plot(s["tail_deltas"], s["replay_ms"], "s--", color=ORANGE, ms=4,
            label="of which recovery (checkpoint load + replay)")  # fmt: skip
    for x, y, n in zip(s["tail_deltas"], s["open_ms"], s["frames_replayed"], strict=True):
        label = f"{n:,.0f} frame" + ("s" if n != 1 else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7,
                    color=GREY)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_axis(ax, "x", s["tail_deltas"])
    _plain_log_axis(ax, "y", subs=(1.0, 2.0, 5.0))
    ax.set_xlabel("log tail past the last checkpoint (deltas)")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8, loc="upper left")
    _style(ax)
    caption = (
        f"A writer (sync=normal) takes a checkpoint over {measured.RECOVERY_PAGES:,} pages of "
        f"{measured.RECOVERY_PAGE_SIZE:,} B, then commits {measured.RECOVERY_PAYLOAD} B range "
        f"deltas in batches of {measured.RECOVERY_BATCH:,}; at each tail length its directory "
        f"is copied while it is still open (no clean shutdown, as a crash leaves it) and "
        f"mmsb.open of the copy is timed; every recovery replays from that checkpoint and "
        f"ends with the writer's state hash. Files just copied: the page cache is warm."
    )
    return Plot("recovery", title, caption, _png(fig))


PLOTS: tuple[tuple[str, Callable[[TargetResult | None], Plot]], ...] = (
    ("throughput", plot_throughput),
    ("tick", plot_ticks),
    ("memory", plot_memory),
    ("memory", plot_gc),
    ("replay", plot_recovery),
)


def draw_plots(report: ValidationReport) -> list[Plot]:
    """Every plot of the report, in order (a missing series gives a plot without a PNG).
    Raises ImportError naming the ``report`` extra when matplotlib is missing."""
    require_matplotlib()
    by_key = {r.key: r for r in report.results}
    return [draw(by_key.get(key)) for key, draw in PLOTS]


# -- the page -------------------------------------------------------------------------------
