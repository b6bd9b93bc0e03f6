"""An exploration's report for people: one self-contained HTML file (no scripts, no external assets).

It shows the outcome, the failing schedule as found and as shrunk, each drawn as a timeline (a held
fault a bar from its start to its end, an instantaneous one a tick), every shrink step with the
verdicts of its runs, and every run with its execution id (``coordinator report ID`` shows one).
"""

from __future__ import annotations

import html
import json

from agent.explore import schedule as sched
from agent.explore.explorer import Report
from agent.explore.schedule import Schedule
from agent.reports import _CSS

_COLOURS = {"FAILURE_FOUND": "FAILED", "NO_FAILURE": "PASSED", "HALTED": "ABORTED", "ERROR": "INCONCLUSIVE"}
_EXTRA_CSS = """
svg text{font:12px ui-monospace,monospace;fill:#1d232a}.held{fill:#cf222e;opacity:.75}.instant{fill:#9a6700}
pre{background:#f6f8fa;padding:.75rem;overflow:auto;border:1px solid #d0d7de;border-radius:.3rem}
"""


def to_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2) + "\n"


def to_html(report: Report) -> str:
    e = html.escape
    badge = _COLOURS.get(report.outcome, "INCONCLUSIVE")
    width = max((p.end for s in (report.found, report.minimal) for p in s), default=1.0) or 1.0
    trials = "".join(
        f"<tr><td>{e(t.phase)}</td><td>{e(sched.describe(t.schedule))}</td><td>{', '.join(map(str, t.runs))}</td>"
        f"<td>{' '.join(_badge(s) for s in t.statuses)}</td><td>{'still fails' if t.fails else 'passes'}</td></tr>"
        for t in report.trials)
    runs = "".join(
        f"<tr><td>{r.number}</td><td>{e(r.phase)}</td><td>{e(sched.describe(r.schedule))}</td><td>{_badge(r.status)}"
        f"</td><td>{r.seconds:.1f}s</td><td>{e(r.reason)}</td><td><code>{e(r.execution_id)}</code></td></tr>"
        for r in report.runs)
    found = ""
    if report.found:
        found = f"<h2>As found (run {report.first_failure_run})</h2>{_timeline(report.found, width)}"
    minimal = ""
    if report.minimal:
        minimal = (f"<h2>Minimal failing schedule</h2>{_timeline(report.minimal, width)}"
                   f"<pre>{e(report.minimal_yaml)}</pre>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>explore {e(report.name)}: {e(report.outcome)}</title>
<style>{_CSS}{_EXTRA_CSS}</style></head><body>
<h1>explore {e(report.name)} <span class="badge {badge}">{e(report.outcome.replace('_', ' '))}</span></h1>
<div class="meta">seed {report.seed} · {len(report.runs)} runs ({report.count('search')} searching,
 {report.count('confirm', 'shrink')} confirming and shrinking) · {report.wall_seconds:.0f}s</div>
<p>{e(report.reason)}</p>
{found}{minimal}
<h2>Shrink steps</h2><table><tr><th>phase</th><th>schedule</th><th>runs</th><th>verdicts</th><th>answer</th></tr>
{trials}</table>
<h2>Runs</h2><table><tr><th>#</th><th>phase</th><th>schedule</th><th>status</th><th>took</th><th>why</th>
<th>execution</th></tr>{runs}</table>
</body></html>
"""


def _badge(status: str) -> str:
    return f'<span class="badge {html.escape(status)}">{html.escape(status)}</span>'


def _timeline(schedule: Schedule, width: float) -> str:
    """The schedule as an SVG picture: one row per fault, time running right."""
    left, scale, row = 170, 560 / width, 22
    parts = []
    for index, placed in enumerate(schedule):
        y = 8 + index * row
        parts.append(f'<text x="0" y="{y + 12}">{html.escape(placed.name)}</text>')
        x = left + placed.start * scale
        if placed.hold is None:
            parts.append(f'<rect class="instant" x="{x:.1f}" y="{y}" width="4" height="16"><title>'
                         f'{html.escape(placed.describe())}</title></rect>')
        else:
            parts.append(f'<rect class="held" x="{x:.1f}" y="{y}" width="{max(placed.hold * scale, 2):.1f}" '
                         f'height="16" rx="3"><title>{html.escape(placed.describe())}</title></rect>')
    axis_y = 8 + len(schedule) * row + 4
    ticks = "".join(f'<text x="{left + t * scale:.1f}" y="{axis_y + 12}">{t:g}s</text>'
                    for t in _ticks(width))
    height = axis_y + 20
    return (f'<svg role="img" aria-label="{html.escape(sched.describe(schedule))}" width="760" height="{height}" '
            f'viewBox="0 0 760 {height}">{"".join(parts)}<line x1="{left}" y1="{axis_y}" x2="{left + 560}" '
            f'y2="{axis_y}" stroke="#8c959f"/>{ticks}</svg>')


def _ticks(width: float) -> list[float]:
    step = next(s for s in (0.5, 1, 2, 5, 10, 30, 60, 300) if width / s <= 8)
    return [round(i * step, 1) for i in range(int(width / step) + 1)]
