"""`Job.report` (and `patent-images report`): one self-contained `report.html` describing a job folder.

The page works offline and from any copy of DIR: inline CSS, JS and SVG only, no fonts, CDNs or
inlined image bytes; thumbnails are `<img loading="lazy">` pointing at DIR/images relative to the
report. It stays small and quick at millions of patents because every list is capped: failures
(at most `FAILURES_PER_GROUP` keys per error type), the contact sheet (the `SHEET_LIMIT` most
recent drawings, embedded as a compact JSON array and paged by script; with --drawings all the
drawings of the first patents, grouped by patent with its figure count), the chart (the last
`CHART_RUNS` runs). Rows are streamed from the state store straight into a temporary file,
which is renamed into place at the end.

Everything from data is escaped: `html.escape` for markup, and JSON in `<script>` blocks has
`<`, `>` and `&` written as `\\u003c`-style escapes, so no value can close the block.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from downloader.core.model import Status
from downloader.report.advice import advice_for
from downloader.report.assets import CSS, SCRIPT
from downloader.report.chart import chart_svg, escape
from downloader.report.words import count, stop_words
from downloader.sinks import is_remote, open_sink
from downloader.state import open_existing, state_folder
from downloader.state.base import PatentRow, StateStore
from downloader.state.sqlite import STATE_FILE

REPORT_FILE = "report.html"
SHEET_LIMIT = 5000
SHEET_PAGE = 200
FAILURES_PER_GROUP = 200
CHART_RUNS = 60  # runs in the chart (one pair of bars each); the table lists the last 10
STATUSES = (("downloaded", "Downloaded"), ("no_image", "No image"), ("not_found", "Not found"),
            ("failed", "Failed"), ("pending", "Pending"), ("resolved", "Resolved, not downloaded"))


@dataclass
class ReportData:
    """What the page shows, read from the store before any HTML is written."""

    counts: dict[str, int]
    runs: list[dict[str, Any]]
    failures: list[tuple[str, int, str, str, str]]
    recent: list[tuple[str, str, str, str]] | list[tuple[str, str, str, str, int]]
    figures: dict[int, int] | None = None  # --drawings all: patents by how many drawings they have
    drawings: dict[str, int] | None = None  # --drawings all: drawings by status


async def write_report(out: str, to: Path | None = None, *, state_url: str | None = None,
                       endpoint_url: str | None = None) -> str:
    """Write `report.html` for the job at `out` (a folder or s3://…) into `to` (default: beside the
    manifest); returns where it went. `Job.report` is the public way in."""
    store = await open_existing(state_url, state_folder(out) / STATE_FILE)
    try:
        data = await _read(store)
    finally:
        await store.close()
    if to is not None or not is_remote(out):
        folder = Path(out) if not is_remote(out) else Path(".")
        target_dir = to or folder
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / REPORT_FILE
        temp = target.with_name(f".{REPORT_FILE}.{os.getpid()}.tmp")
        try:
            with temp.open("w", encoding="utf-8") as page:
                _write_page(page, data, Path(out) if not is_remote(out) else Path(out.rstrip("/").rsplit("/", 1)[-1]),
                            target_dir if not is_remote(out) else folder)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return str(target)
    sink = open_sink(out, endpoint_url=endpoint_url)
    await sink.prepare(clean=False)  # a run may be writing here: leave its uploads be
    try:
        staged = sink.staging(REPORT_FILE)
        with staged.open("w", encoding="utf-8") as page:
            _write_page(page, data, Path(out.rstrip("/").rsplit("/", 1)[-1]), Path(out.rstrip("/").rsplit("/", 1)[-1]))
        await sink.publish(REPORT_FILE, staged, content_type="text/html")
        return sink.url_of(REPORT_FILE)
    finally:
        await sink.close()


async def _read(store: StateStore) -> ReportData:
    counts = await store.counts()
    runs = [asdict(r) for r in reversed(await store.runs(CHART_RUNS))
            if r.summary and not r.summary.get("nothing_to_do")]
    failures = await failure_groups(store.rows(status=Status.FAILED))
    if await store.drawings_kind(None) == "all":
        return ReportData(counts, runs, failures, await drawing_sheet(store.rows(status=Status.DOWNLOADED)),
                          await store.figure_counts(), await store.drawing_counts())
    recent = [(r.key, r.pn or "", r.num or "", r.local_file or "")
              for r in await store.latest(Status.DOWNLOADED, SHEET_LIMIT) if r.local_file]
    return ReportData(counts, runs, failures, recent)


async def drawing_sheet(rows: AsyncIterator[PatentRow],
                        limit: int = SHEET_LIMIT) -> list[tuple[str, str, str, str, int]]:
    """--drawings all: the drawings of the first downloaded patents, whole patents only, at most `limit`
    drawings: (key, pn, figure, file, the patent's figure count), in input and figure order."""
    sheet: list[tuple[str, str, str, str, int]] = []
    patent: list[PatentRow] = []

    def close() -> bool:
        if patent and len(sheet) + len(patent) > limit:
            return False
        sheet.extend((r.key, r.pn or "", str(r.figure), r.local_file or "", len(patent)) for r in patent)
        patent.clear()
        return True

    try:
        async for row in rows:
            if patent and row.key != patent[0].key and not close():
                break
            if row.local_file and row.figure is not None:
                patent.append(row)
        else:
            close()
    finally:  # a stream left early closes its cursor now, not when collected
        aclose = getattr(rows, "aclose", None)
        if aclose is not None:
            await aclose()
    return sheet


async def failure_groups(rows: AsyncIterator[PatentRow], cap: int = FAILURES_PER_GROUP
                         ) -> list[tuple[str, int, str, str, str]]:
    """Failed keys grouped by error type (the `error` up to its first ':'), biggest group first.

    (type, group size, key, pn, error), at most `cap` keys per group, in input order: memory is
    bounded by the number of error types, not of failures.
    """
    groups: dict[str, tuple[list[tuple[str, int, str, str, str]], list[int]]] = {}
    async for row in rows:
        error = row.error or ""
        kind = error.split(":", 1)[0] if ":" in error else (error or "unknown")
        shown, size = groups.setdefault(kind, ([], [0]))
        size[0] += 1
        if len(shown) < cap:
            shown.append((kind, 0, row.key, row.pn or "", error))
    ordered = sorted(groups.items(), key=lambda item: (-item[1][1][0], item[0]))
    return [(kind, size[0], key, pn, err) for kind, (shown, size) in ordered for _, _, key, pn, err in shown]


def _write_page(out: TextIO, data: ReportData, folder: Path, target_dir: Path) -> None:
    """The whole page, top to bottom."""
    counts, runs = data.counts, data.runs
    out.write('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
              '<meta name="viewport" content="width=device-width,initial-scale=1">'
              # Offline by construction: nothing but inline code and local images may load.
              '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
              "img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
              f"<title>patent-images report — {escape(folder.name)}</title><style>{CSS}</style></head><body>\n")
    out.write(_header(folder, runs))
    files = _files(folder, target_dir)
    if data.drawings is not None:
        files = files.replace("one row per patent:", "one row per drawing (one for a patent without any):")
    out.write("<main>\n" + _cards(counts, runs, data.drawings) + files)
    if data.figures is not None:
        out.write(_figures_section(data.figures))
    out.write(_runs_section(runs))
    _write_failures(out, data.failures, counts.get("failed", 0))
    downloaded = counts.get("downloaded", 0) if data.drawings is None else data.drawings.get("downloaded", 0)
    _write_sheet(out, data.recent, downloaded, _relative_base(folder, target_dir), grouped=data.drawings is not None)
    out.write(f"</main>\n<script>{SCRIPT}</script>\n</body></html>\n")


def _header(folder: Path, runs: list[dict[str, Any]]) -> str:
    if runs:
        last = runs[-1]
        when = (f"last run #{last['id']} started {escape(_when(last['started']))}, "
                f"exit {escape(last['exit_code'])}" + (f" ({escape(last['summary'].get('stop_reason'))})"
                                                   if last["summary"].get("stop_reason") else ""))
    else:
        when = "no finished run yet"
    return (f"<header><h1>patent-images report</h1><p><code id=\"folder\">{escape(folder.resolve())}</code> · "
            f'<span id="last-run">{when}</span> · generated {escape(_when(time.time()))}</p></header>\n')


def _figures_section(figures: dict[int, int]) -> str:
    """--drawings all: how many drawings patents have, as a table of bars (patents per bucket)."""
    buckets = ((0, 0, "none"), (1, 1, "1"), (2, 5, "2–5"), (6, 10, "6–10"), (11, 20, "11–20"), (21, 30, "21–30"),
               (31, 100, "31–100"), (101, 10**9, "over 100"))
    counted = [(label, sum(n for f, n in figures.items() if low <= f <= high)) for low, high, label in buckets]
    most = max((n for _, n in counted), default=0) or 1
    patents, drawings = sum(figures.values()), sum(f * n for f, n in figures.items())
    rows = "".join(f'<tr><td class="l">{label}</td><td>{n:,}</td><td class="bar"><i style="width:'
                   f'{100 * n / most:.1f}%"></i></td></tr>' for label, n in counted)
    mean = f"{drawings / patents:.1f}" if patents else "0"
    return (f'<section id="figures"><h2>Drawings per patent <span class="muted">({drawings:,} drawings listed for '
            f'{patents:,} patents, {mean} on average)</span></h2><table class="figures"><tr><th class="l">drawings'
            f'</th><th>patents</th><th class="l"></th></tr>{rows}</table></section>\n')


def _cards(counts: dict[str, int], runs: list[dict[str, Any]], drawings: dict[str, int] | None = None) -> str:
    # `resolved` (URL known, image not yet fetched) only lingers after an interrupted run: shown then.
    shown = [(s, label) for s, label in STATUSES if s != "resolved" or counts.get(s)]
    cards = [_card("total", "All patents", sum(counts.values()), "")]
    cards += [_card(s, label, counts.get(s, 0), f"status <code>{escape(s)}</code>") for s, label in shown]
    # Input rows that never became patents: the last run's (they are counted per run, not kept in the state).
    last = runs[-1]["summary"] if runs else {}
    if drawings is not None:  # --drawings all: the drawings themselves, beside their patents
        cards += [_card("drawings", "Drawings downloaded", drawings.get("downloaded", 0),
                        f"of {sum(drawings.values()):,} listed")]
    cards += [_card("rejected", "Rejected rows", last.get("rejected") or 0, "last run; see <code>rejects.csv</code>"),
              _card("duplicates", "Duplicate rows", last.get("duplicates") or 0, "last run; read once")]
    return '<section class="cards" aria-label="totals by status">' + "".join(cards) + "</section>\n"


def _card(key: str, label: str, value: int, note: str) -> str:
    code = f'<div class="code">{note}</div>' if note else ""
    return (f'<div class="card {key}"><div class="label">{escape(label)}</div>'
            f'<div class="value"><span id="count-{key}" data-count="{value}">{value:,}</span></div>{code}</div>')


def _runs_section(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return '<section><h2>Runs</h2><p class="muted">No finished run yet.</p></section>\n'
    rows = "".join(_run_row(r) for r in reversed(runs[-10:]))
    shown = f"last {len(runs)} runs" if len(runs) >= CHART_RUNS else count(len(runs), "run")
    return (f'<section><h2>Charged results and images per run <span class="muted">({shown})</span></h2>'
            + chart_svg(runs) +
            '<h2 style="margin-top:16px">Last runs</h2><table id="runs"><tr><th>run</th><th class="l">started</th>'
            "<th>seconds</th><th>exit</th><th>rejected</th><th>duplicates</th><th>API calls</th><th>charged</th>"
            "<th>images</th><th>MB</th>"
            f'<th class="l">stop</th></tr>{rows}</table></section>\n')


def _run_row(run: dict[str, Any]) -> str:
    s = run["summary"]
    code = run["exit_code"]
    return (f"<tr><td>{run['id']}</td><td class=\"l\">{escape(_when(run['started']))}</td>"
            f"<td>{_num(s.get('seconds'), 1)}</td><td><span class=\"exit e{escape(code)}\">{escape(code)}</span></td>"
            f"<td>{_num(s.get('rejected'))}</td><td>{_num(s.get('duplicates'))}</td>"
            f"<td>{_num(s.get('api_calls'))}</td><td>{_num(s.get('charged'))}</td><td>{_num(s.get('images'))}</td>"
            f"<td>{_num((s.get('bytes') or 0) / 1e6, 1)}</td>"
            f"<td class=\"l\">{escape(stop_words(s))}</td></tr>")


def _write_failures(out: TextIO, rows: Iterable[tuple[str, int, str, str, str]], failed: int) -> None:
    """Failure groups as <details>, one per error type, written as the rows stream in."""
    out.write(f'<section id="failures"><h2>Failures by reason <span class="muted">({failed:,} failed)</span></h2>\n')
    if not failed:
        out.write('<p class="ok">No failed patents.</p>')
    else:
        out.write('<p class="muted">Each group shows its reason and what to do about it; open it for up to '
                  f'{FAILURES_PER_GROUP:,} of its patents; the manifest\'s <code>error</code> column has them '
                  'all.</p>')
    group: str | None = None
    shown = total = 0
    for kind, size, key, pn, error in rows:
        if kind != group:
            _close_group(out, group, shown, total)
            group, shown, total = kind, 0, size
            # The advice sits in the summary line, so it shows while the list of keys stays folded.
            out.write(f'<details class="failure-group"><summary>{escape(kind)}<span class="n">{size:,} patents</span>'
                      f'<span class="advice"><b>What to do:</b> {escape(advice_for(kind))}</span></summary><ul>')
        shown += 1
        detail = error.partition(":")[2].strip() if ":" in error else ""
        label = key if not pn or pn == key else f"{key} ({pn})"
        out.write(f'<li><code>{escape(label)}</code><span class="err">{escape(detail)}</span></li>')
    _close_group(out, group, shown, total)
    out.write("</section>\n")


def _close_group(out: TextIO, group: str | None, shown: int, total: int) -> None:
    if group is None:
        return
    if total > shown:
        out.write(f'<li class="more">+{total - shown} more</li>')
    out.write("</ul></details>\n")


def _write_sheet(out: TextIO, rows: Iterable[tuple[Any, ...]], downloaded: int, base: str,
                 grouped: bool = False) -> None:
    """The contact sheet: controls, an empty grid, and its rows as JSON for the script to page
    (with `grouped`, the drawings of whole patents, each under its name and figure count)."""
    shown = min(downloaded, SHEET_LIMIT)
    scope = (f'<span id="sheet-total">{downloaded:,}</span> downloaded' if shown == downloaded else
             f'<span id="sheet-total">{shown:,}</span> newest of {downloaded:,} downloaded')
    title = "Most recent drawings"
    if grouped:
        rows = list(rows)
        patents = len({r[0] for r in rows})
        title = "Drawings by patent"
        scope = f'<span id="sheet-total">{len(rows):,}</span> drawings of the first {patents:,} patents downloaded'
    out.write(f'<section id="contact-sheet"><h2>{title} <span class="muted">({scope})</span></h2>'
              '<div class="tools"><input id="filter" type="search" '
              'placeholder="Filter by publication number" aria-label="filter by publication number">'
              '<button id="prev" type="button">&larr; Prev</button><button id="next" type="button">Next &rarr;'
              '</button><span id="page-info" class="muted"></span></div><div id="sheet"></div>'
              '<noscript>The contact sheet needs JavaScript.</noscript></section>\n'
              f'<script type="application/json" id="sheet-data">{{"base":{_json(base)},"page":{SHEET_PAGE},'
              '"rows":[')
    for i, (key, pn, num, local_file, *figures) in enumerate(rows):
        out.write(("," if i else "") + _json([pn or key, num, quote(Path(local_file).as_posix()), *figures]))
    out.write("]}</script>\n")


_FILES = (("manifest.csv", "one row per patent: status, file, bytes, sha256, error (for spreadsheets)"),
          ("manifest.jsonl", "the same rows as JSON lines (for pandas, DuckDB, jq)"),
          ("rejects.csv", "input rows that could not be used, with the reason"),
          ("summary.json", "the last run's figures"))


def _files(folder: Path, target_dir: Path) -> str:
    """Links to the job's own files (those that exist), relative to the report."""
    base = _relative_base(folder, target_dir)
    items = [f'<li><a href="{escape(base + quote(name))}"><code>{escape(name)}</code></a> '
             f'<span class="muted">{escape(text)}</span></li>' for name, text in _FILES if (folder / name).exists()]
    if not items:
        return ""
    return '<section id="files"><h2>Files</h2><ul class="files">' + "".join(items) + "</ul></section>\n"


def _relative_base(folder: Path, target_dir: Path) -> str:
    """The URL prefix from the report's folder to the job folder (images are `local_file` below it)."""
    try:
        rel = os.path.relpath(folder.resolve(), target_dir.resolve())
    except ValueError:  # another drive on Windows: no relative path exists
        return folder.resolve().as_uri() + "/"
    return "" if rel == "." else quote(Path(rel).as_posix()) + "/"


def _json(value: Any) -> str:
    """JSON safe inside <script>: nothing in it can end the block or open a comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _num(value: Any, digits: int = 0) -> str:
    if not isinstance(value, int | float):
        return ""
    return f"{value:,.{digits}f}"


def _when(stamp: float, with_time: bool = True) -> str:
    return time.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d", time.localtime(stamp))
