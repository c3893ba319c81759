"""The report's chart: charged results and images of each run as a pair of bars, one group per run.

Runs are events, not a continuous quantity, so they are drawn as bars side by side in run order,
evenly spaced whatever the clock time between them (a line over clock time would join a capped
night to the next and suggest values in between). Inline SVG only: the report works offline.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

SERIES = (("charged", "charged results", "#2563eb"), ("images", "images downloaded", "#16a34a"))


def chart_svg(runs: Sequence[Mapping[str, Any]], width: int = 1100, height: int = 280) -> str:
    """An SVG bar chart: for each run (oldest first), its charged results and its images, with axes and legend."""
    left, right, top, bottom = 64, 16, 34, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([_int(r["summary"].get(key)) for r in runs for key, _, _ in SERIES] + [1])
    step = max(1, _nice_step(peak / 4))
    ymax = step * math.ceil(peak / step)
    slot = plot_w / max(len(runs), 1)
    bar = min(28.0, slot * 0.36)

    def y(v: float) -> float:
        return top + plot_h * (1 - v / ymax)

    parts = [f'<svg id="runs-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             'aria-label="charged results and images downloaded, one pair of bars per run">']
    for i in range(round(ymax / step) + 1):  # horizontal grid with y labels
        v = step * i
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e7eb"/>'
                     f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
    label_every = max(1, math.ceil(len(runs) / 20))
    for i, run in enumerate(runs):
        centre = left + slot * (i + 0.5)
        parts += _group(run, centre, bar, y, show_values=len(runs) <= 16)
        if i % label_every == 0 or i == len(runs) - 1:
            parts.append(f'<text x="{centre:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                         f'#{escape(run["id"])}</text>')
            if len(runs) <= 12:
                parts.append(f'<text x="{centre:.1f}" y="{height - bottom + 30}" text-anchor="middle">'
                             f'{escape(time.strftime("%m-%d %H:%M", time.localtime(float(run["started"]))))}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#9ca3af"/>')
    for i, (_, label, color) in enumerate(SERIES):  # legend, top left
        lx = left + i * 170
        parts.append(f'<rect x="{lx}" y="8" width="12" height="12" rx="2" fill="{color}"/>'
                     f'<text x="{lx + 18}" y="18" style="fill:#1f2937">{escape(label)}</text>')
    return "".join(parts) + "</svg>"


def _group(run: Mapping[str, Any], centre: float, bar: float, y: Any, show_values: bool) -> list[str]:
    """One run's pair of bars (a zero is a hairline, so a run with nothing to do still shows)."""
    parts = []
    tip = escape(tooltip(run))
    for j, (key, _, color) in enumerate(SERIES):
        value = _int(run["summary"].get(key))
        x = centre - bar - 1 + j * (bar + 2)
        top = min(y(value), y(0) - 1)
        parts.append(f'<rect class="bar {key}" x="{x:.1f}" y="{top:.1f}" width="{bar:.1f}" '
                     f'height="{y(0) - top:.1f}" fill="{color}"><title>{tip}</title></rect>')
        if show_values:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{top - 4:.1f}" text-anchor="middle" '
                         f'style="fill:#1f2937">{value:,}</text>')
    return parts


def tooltip(run: Mapping[str, Any]) -> str:
    """The words shown when hovering a run's bars."""
    s = run["summary"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(run["started"])))
    return (f"run #{run['id']}, {when}: {_int(s.get('charged')):,} charged results, {_int(s.get('images')):,} images, "
            f"{_int(s.get('api_calls')):,} API calls, exit {run.get('exit_code')}")


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least `raw` (grid steps people read easily)."""
    power = 10 ** math.floor(math.log10(max(raw, 1e-9)))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def escape(value: Any) -> str:
    """`value` as HTML text or attribute (quotes escaped too); the report uses it as well."""
    return html.escape(str(value), quote=True)
