"""The HTML validation report (``mmsb validate --html``) and the series behind its plots.

The page is parsed with the standard library's HTML parser (every plot an inline PNG that
decodes, one table row per target, nothing loaded from elsewhere), rendered by headless
Chromium where it can be had (every plot image decoded by the browser, a non-blank
screenshot), and produced end to end by the command. The measured series are checked against
plain recomputations (histogram counts) and against the bus (recovered states).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import mmsb.storage.recovery
from mmsb.cli import cli
from mmsb.validation import Context, TargetResult, ValidationReport
from mmsb.validation import series as measured
from mmsb.validation.html import render_html, write_html
from mmsb.validation.plots import PLOTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOT_COUNT = len(PLOTS)


# -- reading the page back ------------------------------------------------------------------


class Page(HTMLParser):
    """What a reader of the report sees: images, figures, captions, table rows, and every
    reference to another resource."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[dict[str, str]] = []
        self.figures: list[dict[str, str]] = []
        self.captions: list[str] = []
        self.rows: list[list[str]] = []
        self.external: list[str] = []
        self.missing_notes: list[str] = []
        self._in: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._caption: list[str] | None = None
        self._missing: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        if tag == "figure":
            self.figures.append(a)
        if tag in ("link", "script", "iframe", "object", "embed") or (
            tag == "img" and not a.get("src", "").startswith("data:image/png;base64,")
        ):
            self.external.append(f"<{tag} {a}>")
        if tag == "tr" and "tbody" in self._in:
            self._row = []
        if tag == "td" and self._row is not None:
            self._cell = []
        if tag == "figcaption":
            self._caption = []
        if tag == "p" and self.figures and "missing" in self.figures[-1].get("class", ""):
            self._missing = []
        if tag not in ("img", "br", "meta"):
            self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        if tag == "figcaption" and self._caption is not None:
            self.captions.append("".join(self._caption).strip())
            self._caption = None
        if tag == "p" and self._missing is not None:
            self.missing_notes.append("".join(self._missing).strip())
            self._missing = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._caption, self._missing):
            if part is not None:
                part.append(data)
        if self._in and self._in[-1] == "style" and "url(" in data:
            self.external.append("url() in a style sheet")

    def plot_images(self) -> list[bytes]:
        return [base64.b64decode(i["src"].split(",", 1)[1], validate=True) for i in self.images]


# -- synthetic reports ----------------------------------------------------------------------


def _result(id: int, key: str, name: str, figures: dict[str, Any], **kw: Any) -> TargetResult:
    args: dict[str, Any] = dict(
        passed=True, parameters={"gc_budget_ms": 1.0} if key == "memory" else {},
        reduced=False, reductions=[], summary=f"figures of #{id}", notes=[], seconds=1.5,
        floor=f"floor of #{id}", goal=f"goal of #{id}", units={},
    )  # fmt: skip
    args.update(kw)
    return TargetResult(id=id, key=key, name=name, figures=figures, **args)


def _full_series() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(5)
    edges = [0.001 * 10 ** (i / 5) for i in range(21)]
    return {
        "replay": {
            "tail_deltas": [1000, 10000, 100000],
            "frames_replayed": [1, 10, 100],
            "deltas_replayed": [1000, 10000, 100000],
            "open_ms": [10.0, 18.5, 60.2],
            "replay_ms": [9.1, 17.0, 58.8],
        },
        "throughput": {
            "batch": [1000, 1000, 10000, 10000, 100000, 100000],
            "workers": [1, 2, 1, 2, 1, 2],
            "deltas": [200000, 200000, 1000000, 1000000, 2000000, 2000000],
            "deltas_per_s": [3e6, 2.8e6, 9e6, 9.5e6, 10.2e6, 13.9e6],
        },
        "tick": {"tick_ms": rng.gamma(9.0, 0.6, 200).round(3).tolist()},
        "memory": {
            "pages_written": [8192, 16384, 24576],
            "rss_growth_bytes": [20_000_000, 29_000_000, 38_000_000],
            "pause_edges_ms": edges,
            "gc_pause_counts": [0] * 8 + [5, 40, 80, 60, 30, 10, 3, 1] + [0] * 4,
            "cpython_gc_pause_counts": [0] * 9 + [2, 1] + [0] * 9,
        },
    }


TARGETS = [
    (1, "replay", "Replay determinism"),
    (2, "integrity", "Delta integrity"),
    (5, "throughput", "Throughput"),
    (6, "tick", "Tick latency"),
    (7, "memory", "Memory and GC"),
]


def _report(with_series: bool) -> ValidationReport:
    series = _full_series() if with_series else {}
    results = []
    for id, key, name in TARGETS:
        figures: dict[str, Any] = {"pages": 24576, "page_size": 1024, "derived": 1000,
                                   "deltas_per_tick": 1000, "warmup_ticks": 10}  # fmt: skip
        if key in series:
            figures["series"] = series[key]
        results.append(_result(id, key, name, figures, passed=id != 7, correct=True))
    return ValidationReport("quick", 3, "2026-01-01T00:00:00+00:00", 12.0, results)


# -- the page, parsed -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_html() -> str:
    """A report with every series, drawn once for the module (drawing takes a second or two)."""
    report = _report(with_series=True)
    report.results[3].goal_met = True
    return render_html(report)


def test_full_report_has_every_plot_inline_and_one_row_per_target(full_html: str) -> None:
    page = Page(full_html)
    assert len(page.images) == len(page.figures) == PLOT_COUNT
    for png in page.plot_images():
        assert png.startswith(PNG_MAGIC) and len(png) > 5_000
    assert page.missing_notes == []
    assert page.external == []
    titles = [c.split(".")[0] for c in page.captions]
    assert titles == [
        "Throughput against batch size and worker count",
        "Tick latency distribution",
        "Memory growth against page count",
        "GC pause distribution",
        "Recovery time against log-tail length",
    ]
    # each caption carries the conditions it was measured under
    assert "4,096 pages" in page.captions[0] and "200,000 at batch 1,000" in page.captions[0]
    assert "200 measured ticks" in page.captions[1]
    assert "batches of 1,000" in page.captions[4]
    assert [r[0] for r in page.rows] == [f"#{id}" for id, _, _ in TARGETS]
    marks = {r[0]: r[2] for r in page.rows}
    assert marks == {"#1": "✓", "#2": "✓", "#5": "✓", "#6": "✓ ★", "#7": "✗"}
    row7 = page.rows[-1]
    assert row7[1] == "Memory and GC" and row7[4] == "floor of #7"
    assert "correct; a floor was missed" in row7[3]


def test_report_without_series_says_what_was_not_measured() -> None:
    report = _report(with_series=False)
    report.results = report.results[:2]  # as after --target 1 --target 2, #1 without samples
    page = Page(render_html(report))
    assert page.images == []
    assert len(page.figures) == PLOT_COUNT
    assert page.missing_notes == [
        "Not measured in this run: target #5 (throughput) was not run.",
        "Not measured in this run: target #6 (tick latency) was not run.",
        "Not measured in this run: target #7 (memory and GC) was not run.",
        "Not measured in this run: target #7 (memory and GC) was not run.",
        "Not measured in this run: target #1 (replay determinism) ran but recorded no "
        "samples for this plot.",
    ]
    assert [r[0] for r in page.rows] == ["#1", "#2"]


def test_malformed_series_and_markup_in_text_are_handled(tmp_path: Path) -> None:
    report = _report(with_series=False)
    tick = report.results[3]
    tick.figures["series"] = {"tick_ms": ["not", "numbers"]}
    report.results[4].figures["series"] = {"pages_written": [1, 2], "rss_growth_bytes": [5]}
    tick.summary = "<script>alert(1)</script> & more"
    path = tmp_path / "deep" / "report.html"
    write_html(report, path)
    text = path.read_text("utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in text
    page = Page(text)
    assert page.images == []
    assert page.missing_notes[1:3] == [
        "Not measured in this run: target #6 (tick latency) ran but recorded no samples for "
        "this plot.",
        "Not measured in this run: target #7 (memory and GC) ran but recorded no samples for "
        "this plot.",
    ]
    assert not list(tmp_path.glob("deep/*.tmp"))


def test_importing_mmsb_and_its_cli_does_not_load_matplotlib() -> None:
    code = (
        "import sys, mmsb, mmsb.cli, mmsb.validation, mmsb.validation.html\n"
        "print(any(m.split('.')[0] == 'matplotlib' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the series, against plain recomputations -----------------------------------------------


@pytest.mark.parametrize("per_decade", [1, 5])
def test_log_histogram_counts_every_value_in_its_bin(per_decade: int) -> None:
    rng = np.random.default_rng(11)
    values = np.concatenate([rng.lognormal(-2, 2, 3000), [1e-6, 0.001, 0.5, 3.0]])
    h = measured.log_histogram(values, lo=1e-3, per_decade=per_decade)
    edges, counts = h["edges"], h["counts"]
    assert len(edges) == len(counts) + 1 and edges[0] == 1e-3 and edges[-1] >= values.max()
    naive = [0] * len(counts)
    for v in values.tolist():  # the oracle: a linear search per value
        i = 0
        while i < len(counts) - 1 and v >= edges[i + 1]:
            i += 1
        naive[i] += 1
    assert counts == naive and sum(counts) == values.size


def test_log_histogram_shares_bins_up_to_top() -> None:
    a = measured.log_histogram([0.01], top=50.0)
    b = measured.log_histogram([20.0, 45.0], top=50.0)
    assert a["edges"] == b["edges"] and a["edges"][-1] >= 50.0
    assert sum(a["counts"]) == 1 and sum(b["counts"]) == 2
    assert measured.log_histogram([])["counts"] == [0] * 5


def test_recovery_sweep_times_replays_that_match_the_writer(ctx: Context) -> None:
    seen: list[tuple[str, int, int]] = []
    out, problems = measured.recovery_sweep(
        ctx.path, [5000, 1000], seed=1, progress=lambda *a: seen.append(a)
    )
    assert problems == []
    assert out["tail_deltas"] == [1000, 5000]
    assert out["frames_replayed"] == [1, 5] and out["deltas_replayed"] == [1000, 5000]
    assert all(o >= r > 0 for o, r in zip(out["open_ms"], out["replay_ms"], strict=True))
    assert seen == [("recovery sweep", 1, 2), ("recovery sweep", 2, 2)]
    assert os.listdir(ctx.workdir) == []  # copies removed as it goes
    with pytest.raises(ValueError, match="tail lengths must be positive"):
        measured.recovery_sweep(ctx.path, [0])


def test_recovery_sweep_reports_a_recovery_that_differs(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = mmsb.storage.recovery.apply_frame

    def corrupting(state: Any, frame: Any) -> int:
        n = int(real(state, frame))
        if n:  # every replayed batch adds one to the first byte of the first live page
            at = int(state.slot[int(state.live_ids()[0])])
            state.arena.buf[at] = (int(state.arena.buf[at]) + 1) % 256
        return n

    monkeypatch.setattr(mmsb.storage.recovery, "apply_frame", corrupting)
    _, problems = measured.recovery_sweep(ctx.path, [1000, 2000], seed=1)
    assert problems == [
        "tail of 1,000 deltas: recovered state differs",
        "tail of 2,000 deltas: recovered state differs",
    ]


def test_throughput_sweep_measures_each_point() -> None:
    out = measured.throughput_sweep([(1000, 1, 3000), (1000, 2, 3000)], seed=2)
    assert out["batch"] == [1000, 1000] and out["workers"] == [1, 2]
    assert out["deltas"] == [3000, 3000]
    assert all(v > 0 for v in out["deltas_per_s"])


# -- the command ----------------------------------------------------------------------------


def _run_cli(tmp_path: Path, *targets: int) -> tuple[Page, dict[str, Any]]:
    out_html, out_json = tmp_path / "out.html", tmp_path / "out.json"
    args = ["validate", "--quick", "--no-history", "--speed-advisory"]
    for t in targets:
        args += ["--target", str(t)]
    args += ["--html", str(out_html), "--json", str(out_json)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"HTML report written to {out_html}" in result.stderr
    return Page(out_html.read_text("utf-8")), json.loads(out_json.read_text("utf-8"))


def test_validate_html_tick_target(tmp_path: Path) -> None:
    page, doc = _run_cli(tmp_path, 6)
    assert [f["data-plot"] for f in page.figures if "missing" not in f["class"]] == ["ticks"]
    assert len(page.images) == 1 and page.plot_images()[0].startswith(PNG_MAGIC)
    assert len(page.missing_notes) == PLOT_COUNT - 1 and page.external == []
    assert [r[0] for r in page.rows] == ["#6"]
    samples = doc["targets"][0]["figures"]["series"]["tick_ms"]
    assert len(samples) == doc["targets"][0]["parameters"]["ticks"]
    assert f"{len(samples):,} measured ticks" in page.captions[1]


@pytest.mark.slow
def test_validate_html_throughput_ticks_memory(tmp_path: Path) -> None:
    page, doc = _run_cli(tmp_path, 5, 6, 7)
    assert len(page.images) == PLOT_COUNT - 1  # all but recovery (target #1 not run)
    assert page.missing_notes == [
        "Not measured in this run: target #1 (replay determinism) was not run."
    ]
    figures = {t["id"]: t["figures"] for t in doc["targets"]}
    tp = figures[5]["series"]
    assert sorted(set(tp["batch"])) == [1000, 10000, 100000] and len(tp["batch"]) == 6
    assert tp["deltas_per_s"][-2:] == [
        figures[5]["single_deltas_per_s"],
        figures[5]["two_workers_deltas_per_s"],
    ]
    mem = figures[7]["series"]
    pages = doc["targets"][2]["parameters"]["pages"]
    assert mem["pages_written"][-1] == pages
    assert len(mem["pages_written"]) == len(mem["rss_growth_bytes"])
    assert sum(mem["gc_pause_counts"]) == figures[7]["gc_steps"]
    assert len(mem["pause_edges_ms"]) == len(mem["gc_pause_counts"]) + 1


# -- a real browser -------------------------------------------------------------------------

CHECK_SCRIPT = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.querySelectorAll("figure.plot img"));
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify(imgs.map((i) => [i.complete, i.naturalWidth,
                                                    i.naturalHeight]));
  document.body.appendChild(out);
});
</script>"""


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt when missing (as root, e.g. in CI)."""
    path = _find_chromium()
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "chromium"], env=env,
                           capture_output=True, timeout=600)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            pass
        path = _find_chromium()
    if path is None:
        pytest.skip("no chromium and it could not be installed: the page was checked with "
                    "html.parser only")  # fmt: skip
    return path


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--disable-dev-shm-usage", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_chromium_renders_every_plot(chromium: str, full_html: str, tmp_path: Path) -> None:
    text = full_html
    page = tmp_path / "report.html"
    page.write_text(text.replace("</body>", CHECK_SCRIPT + "\n</body>"), "utf-8")
    shot = tmp_path / "report.png"
    dom = _headless(chromium, "--window-size=1200,4200", f"--screenshot={shot}",
                    "--virtual-time-budget=5000", "--dump-dom", page.as_uri())  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    seen = Page(dom.stdout)
    assert len(seen.images) == PLOT_COUNT
    start = dom.stdout.index('<pre id="image-check">') + len('<pre id="image-check">')
    decoded = json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)])
    assert len(decoded) == PLOT_COUNT
    for complete, width, height in decoded:
        assert complete and width > 300 and height > 200  # decoded by the browser
    if not shot.exists():  # a browser that does not take both in one run
        res = _headless(chromium, "--window-size=1200,4200", f"--screenshot={shot}",
                        page.as_uri())  # fmt: skip
        assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    from PIL import Image  # pillow comes with matplotlib

    with Image.open(shot) as im:
        grey = np.asarray(im.convert("L"))
    assert grey.shape == (4200, 1200)
    dark = grey < 128
    assert dark.mean() > 0.01  # text and plot lines, not a blank page
    rows_with_ink = np.flatnonzero(dark.any(axis=1))
    assert rows_with_ink[-1] - rows_with_ink[0] > 2000  # the plots are laid out down the page
