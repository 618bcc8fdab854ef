"""The HTML validation report: one self-contained file with the target table and the plots.

Plots are drawn with matplotlib on its Agg canvas (a :class:`matplotlib.figure.Figure`
without pyplot, so no GUI backend is ever chosen and the caller's pyplot state is left
alone) and embedded as base64 PNG ``<img>`` elements; the page loads nothing from anywhere
else. matplotlib is imported only when a report is drawn, so ``import mmsb`` does not pull it;
it is an optional dependency (``pip install 'mmsb[report]'``), and without it
:func:`render_html` and :func:`write_html` raise ImportError naming that extra.

Each plot reads the series its target measured (``figures["series"]``, see
:mod:`mmsb.validation.series`): throughput against batch size and workers (target #5),
the tick latency distribution (#6), RSS growth against pages written and the GC pause
distribution (#7), and crash recovery time against the length of the log tail (#1). A
target that did not run gives a short note in place of its plot.
"""

from __future__ import annotations

import base64
import html
import os

from mmsb.validation.plots import Plot, draw_plots
from mmsb.validation.runner import TargetResult, ValidationReport

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2rem; } .meta { color: #555; margin-top: 0; }
.verdict { font-size: 1.2rem; font-weight: 600; }
.pass { color: #1e7b34; } .fail { color: #c0392b; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.4rem 0.5rem; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; } td.mark { font-size: 1.1rem; text-align: center; }
.notes, .checks { color: #666; font-size: 0.85rem; } .checks { margin-top: 0.3rem; }
.reduced { color: #8a6d00; font-size: 0.85rem; }
figure { margin: 1.5rem 0; border: 1px solid #e3e3e3; border-radius: 6px; padding: 0.8rem; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: 0.85rem; color: #444; margin-top: 0.4rem; }
figcaption b { color: #222; } .missing p { color: #8a6d00; margin: 0.2rem 0; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _goal_met(result: TargetResult) -> bool | None:
    met = getattr(result, "goal_met", None)
    if met is None:
        met = result.figures.get("goal_met")
    return met if isinstance(met, bool) else None


def _checks(result: TargetResult, kind: str) -> str:
    """The registry's checks of one kind ("floor" or "goal") evaluated on the result's
    figures, one line each with its mark (none where the result carries no checks)."""
    lines = []
    for check in getattr(result, "checks", None) or []:
        if getattr(check, "kind", None) != kind:
            continue
        met = getattr(check, "met", None)
        mark = {True: "✓", False: "✗", None: "–"}.get(met, "–")
        text = check.text() if callable(getattr(check, "text", None)) else str(check)
        lines.append(f"{mark} {_esc(text)}")
    return f'<div class="checks">{"<br>".join(lines)}</div>' if lines else ""


def _row(result: TargetResult, size: str) -> str:
    mark = "✓" if result.passed else "✗"
    star = {True: " ★", False: "", None: ""}[_goal_met(result)]
    cls = "pass" if result.passed else "fail"
    reduced = (
        f'<div class="reduced">[{_esc(size)}: {_esc("; ".join(result.reductions))}]</div>'
        if result.reductions
        else ""
    )
    notes = list(result.notes)
    if not result.passed and result.is_correct:
        notes.insert(0, "correct; a floor was missed")
    if result.error:
        notes.append(result.error)
    note_html = f'<div class="notes">{_esc("; ".join(notes))}</div>' if notes else ""
    goal = _goal_met(result)
    goal_text = {True: "met", False: "not met", None: "—"}[goal]
    return (
        f'<tr id="target-{result.id}"><td>#{result.id}</td><td>{_esc(result.name)}{reduced}</td>'
        f'<td class="mark {cls}" title="{"floor met" if result.passed else "floor missed"}">'
        f"{mark}{star}</td><td>{_esc(result.summary)}{note_html}</td>"
        f"<td>{_esc(result.floor)}{_checks(result, 'floor')}</td><td>{_esc(result.goal)}"
        f'{_checks(result, "goal")}<div class="notes">goal: {goal_text}</div></td>'
        f"<td>{result.seconds:.1f}</td></tr>"
    )


def _figure_html(plot: Plot) -> str:
    if plot.png is None:
        return (
            f'<figure class="plot missing" data-plot="{plot.key}"><p>Not measured in this run: '
            f"{_esc(plot.missing or 'no samples')}.</p>"
            f"<figcaption><b>{_esc(plot.title)}</b></figcaption></figure>"
        )
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure class="plot" data-plot="{plot.key}">'
        f'<img src="data:image/png;base64,{data}" alt="{_esc(plot.title)}">'
        f"<figcaption><b>{_esc(plot.title)}.</b> {_esc(plot.caption)}</figcaption></figure>"
    )


def render_html(report: ValidationReport) -> str:
    """The whole report as one HTML document (no external resources)."""
    doc = report.to_json()
    machine = doc["machine"]
    verdict = f"Result: {report.passed}/{len(report.results)} {'PASS' if report.ok else 'FAIL'}"
    reduced = " (reduced sizes: each reduced target says so)" if doc["reduced"] else ""
    rows = "\n".join(_row(r, report.size) for r in report.results)
    flags = [str(f.get("text", f)) for f in getattr(report, "regressions", None) or []]
    since = getattr(report, "compared_with", None)
    regressions = (
        f'<p class="fail">Regressions against the previous run ({_esc(since)}):</p><ul>'
        + "".join(f"<li>{_esc(f)}</li>" for f in flags)
        + "</ul>"
        if flags
        else ""
    )
    plots = "\n".join(_figure_html(p) for p in draw_plots(report))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MMSB validation report, {_esc(report.started)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>MMSB validation report</h1>
<p class="meta">mmsb {_esc(doc["mmsb_version"])} · size {_esc(report.size)}{_esc(reduced)} ·
seed {report.seed} · started {_esc(report.started)} · {report.seconds:.1f} s ·
Python {_esc(machine["python"])} on {_esc(machine["platform"])}, {machine["cpus"]} CPUs</p>
<p class="verdict {"pass" if report.ok else "fail"}">{_esc(verdict)}</p>
{regressions}
<h2>Targets</h2>
<table>
<thead><tr><th>#</th><th>Target</th><th>Met</th><th>Figures</th><th>Seed's floor</th>
<th>Our goal</th><th>s</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
<p class="notes">✓: the seed's floor is met; ✗: missed; ★: our goal is met as well.</p>
<h2>Plots</h2>
{plots}
</body>
</html>
"""


def write_html(report: ValidationReport, path: str | os.PathLike[str]) -> None:
    """Write :func:`render_html` to ``path`` (temporary name, then rename)."""
    path = os.fspath(path)
    text = render_html(report)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
