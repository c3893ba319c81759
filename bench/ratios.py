"""The ratios that answer the issue, and the whole results document around them."""

from __future__ import annotations

import statistics
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from modes import IMAGE_MODES, MODES
from report import Row

if TYPE_CHECKING:
    from run import Bench

TOOL = "patent-images"
LATENCY_TARGET = 0.85


def _rows(b: Bench, mode: str) -> dict[str, Row]:
    return {r.client: r for r in b.rows if r.mode == mode}


def _times(x: float, y: float) -> str:
    return f"{x / y:.2f}×" if y else "–"


def ratio_lines(b: Bench) -> list[str]:
    lines = []
    for mode in (m for m in IMAGE_MODES if m in b.args.modes):
        rows = _rows(b, mode)
        tool = rows.get(TOOL)
        if tool is None:
            continue
        parts = [f"{name} {_times(tool.images_per_s, r.images_per_s)}" for name, r in rows.items() if name != TOOL]
        lines.append(f"{mode}: tool {tool.images_per_s:,.0f} images/s ÷ peers': " + ", ".join(parts))
        lines += _latency_lines(mode, rows)
    tmpfs = _rows(b, "tmpfs")
    if TOOL in tmpfs and "bare aiohttp" in tmpfs:
        t, bare = tmpfs[TOOL], tmpfs["bare aiohttp"]
        lines.append(f"tmpfs: tool CPU {t.cpu_ms_per_image:.2f} ms/image ÷ bare aiohttp's {bare.cpu_ms_per_image:.2f} "
                     f"= {_times(t.cpu_ms_per_image, bare.cpu_ms_per_image)}")
    lines += _meta_lines(b) + _scale_lines(b)
    return lines


def _latency_lines(mode: str, rows: dict[str, Row]) -> list[str]:
    spec = MODES[mode]
    if not spec.latency_ms:
        return []
    out = []
    for name in (TOOL, "bare aiohttp"):
        if name in rows:
            share = rows[name].images_per_s / spec.bound
            verdict = "meets" if share >= LATENCY_TARGET else "MISSES"
            out.append(f"{mode}: {name} {rows[name].images_per_s:,.0f} images/s = {share:.0%} of the bound "
                       f"{spec.concurrency}/{spec.latency_ms / 1000:g} s = {spec.bound:,.0f}/s: {verdict} "
                       f"{LATENCY_TARGET:.0%}")
    return out


def _meta_lines(b: Bench) -> list[str]:
    meta = b.data.get("meta")
    if not meta:
        return []
    return [f"meta: {meta['patents_per_s']:,.0f} patents/s (run time; {meta['patents_per_s_wall']:,.0f} on the wall "
            f"clock) = {meta['patents_per_s'] / meta['bound']:.0%} of the bound {meta['bound']:,.0f}/s (rate × 100)"]


def _scale_lines(b: Bench) -> list[str]:
    scale = [r for r in b.data.get("scale", []) if r["label"].endswith("first run")]
    if len(scale) < 2:
        return []
    small, big = scale[0], scale[-1]
    rerun = next((r for r in b.data["scale"] if "rerun" in r["label"]), None)
    lines = [f"scale: peak RSS {big['rss_mb']:.0f} MB at {big['patents']:,} patents vs {small['rss_mb']:.0f} MB at "
             f"{small['patents']:,} = {_times(big['rss_mb'], small['rss_mb'])}; wall {big['wall_s']:.0f} s vs "
             f"{small['wall_s']:.0f} s"]
    if rerun:
        lines.append(f"scale: rerun of the finished {rerun['patents']:,} list: {rerun['wall_s']:.1f} s, "
                     f"{rerun['api_calls']} API calls")
    return lines


def ratio_text(b: Bench) -> str:
    return "Ratios\n" + "\n".join(f"  {line}" for line in ratio_lines(b))


# --- the document ---------------------------------------------------------------------------------


def _method(b: Bench, skipped: str) -> str:
    sizes = [img.size for img in b.corpus.images]
    peers = ", ".join(p.name for p in b.peers)
    lines = [
        f"- Corpus: {len(sizes):,} abstract images of the simulator universe (seed 0), "
        f"{sum(sizes) / 1e6:,.0f} MB, median {statistics.median(sizes) / 1e3:.0f} KB, "
        f"{min(sizes) / 1e3:.0f}–{max(sizes) / 1e3:.0f} KB; served by nginx (1 worker, sendfile, no access log, "
        "keep-alive) on 127.0.0.1.",
        f"- {TOOL}: `patent-images run` on a CSV of the {len(sizes):,} numbers against `patent-images simulate "
        "--cdn-base <nginx>` (a separate process; its CPU is not the tool's), `--rate 50 --api-concurrency 4 "
        "--download-concurrency <in flight> --no-progress`; files verified by hashing what manifest.csv names.",
        f"- Peers ({peers}) fetch the same images from plain nginx URLs into a fresh folder; a file counts when "
        "its SHA-256 equals the corpus file's. images/s and MB/s count verified files over the process's wall time.",
        "- CPU = user+sys of the process tree and peak RSS = largest process, from `/usr/bin/time -v`; "
        "nginx CPU = its worker's, over the same run; rest of machine = all other CPU meanwhile (other sessions "
        "on this machine, and in disk mode the kernel's writeback threads). "
        f"{'One run per cell' if b.args.repeat == 1 else f'Fastest of {b.args.repeat} runs per cell'}; "
        "2 cores shared by client, nginx (and the simulator for the tool).",
        f"- Latency: {b.latency.method}.",
        "- wget fetches one file at a time (that is wget); under latency it gets only the first files that fit "
        "in its time budget.",
    ]
    if skipped:
        lines.append(f"- img2dataset skipped: {skipped}")
    return "\n".join(lines) + "\n"


def render(b: Bench, facts: dict[str, str], skipped: str, elapsed: float) -> tuple[str, dict[str, Any]]:
    """The Markdown document and the JSON data of this run."""
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    machine = "".join(f"| {k} | {v} |\n" for k, v in facts.items())
    parts = [
        f"# patent-images benchmark\n\n`{command.strip()}` — {when}, {elapsed / 60:.1f} min.\n",
        f"## Machine\n\n| fact | value |\n|---|---|\n{machine}",
        f"## Method\n\n{_method(b, skipped)}",
        *(f"## {title}\n\n{body}" for title, body in b.sections.items()),
        "## Ratios\n\n" + "".join(f"- {line}\n" for line in ratio_lines(b)),
    ]
    data = {"command": command, "date": when, "elapsed_s": round(elapsed, 1), "machine": facts,
            "latency_method": b.latency.method, "img2dataset_skipped": skipped,
            "corpus": {"images": len(b.corpus.images), "bytes": b.corpus.total_bytes},
            "modes": list(b.args.modes), "rows": [r.as_json() for r in b.rows], **b.data,
            "ratios": ratio_lines(b)}
    return "\n".join(parts), data
