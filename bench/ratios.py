"""The ratios that answer the issue, and the whole results document around them."""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import apibound
from modes import IMAGE_MODES, MODES
from report import Row

if TYPE_CHECKING:
    from run import Bench

TOOL = "patent-images"  # the default: one worker per core (capped by the work), uvloop when installed
ONE_ASYNCIO = "patent-images --workers 1, asyncio loop"
ONE_DEFAULT_LOOP = "patent-images --workers 1"
THREADS = "patent-images --io threads"
OLD_DEFAULT = "patent-images --workers 2"  # the default before issue 19 on these 2 cores: two processes from the start
BEFORE_TREE = "patent-images before issue 19"  # bench/run.py --before DIR: that export's rows (tool.Variant)
BEFORE_ONE = " --workers 1"  # the end of the name of its one-process row
BARE, BARE_UVLOOP = "bare aiohttp", "bare aiohttp + uvloop"
RSS_CAP_MB = 150.0
RSS_FLAT = 1.10  # "flat from 100,000": at most this much more at 1,000,000
RERUN_CAP_S = 20.0


@dataclass
class Target:
    """One target of the issue: the measured ratio, the goal, and what the ratio is made of."""

    name: str
    ratio: float
    goal: float
    at_most: bool  # the ratio must stay at or below the goal (CPU, memory, time), else reach it
    measured: str
    context: str = ""

    @property
    def met(self) -> bool:
        return self.ratio <= self.goal if self.at_most else self.ratio >= self.goal

    def line(self) -> str:
        verdict = "met" if self.met else "MISSED"
        goal = f"{'≤' if self.at_most else '≥'} {self.goal:g}"
        return f"{self.name}: {self.measured} = {self.ratio:.2f} ({goal}): {verdict}" + (
            f" — {self.context}" if self.context else "")


def _rows(b: Bench, mode: str) -> dict[str, Row]:
    return {r.client: r for r in b.rows if r.mode == mode}


def _is_peer(name: str) -> bool:
    return not name.startswith(TOOL) and not name.startswith(BARE)


def _times(x: float, y: float) -> str:
    return f"{x / y:.2f}×" if y else "–"


def _cpu_need(mode: str, rows: dict[str, Row], rate: float) -> str:
    """What the tool, nginx and the simulator would burn at `rate` images/s, in cores (2 here)."""
    t = rows[TOOL]
    if not t.verified:
        return ""
    nginx = 1000 * t.nginx_cpu_s / t.verified
    sim = 1000 * float(t.extra.get("simulator_cpu_s", 0.0)) / t.verified
    need = rate * (t.cpu_ms_per_image + nginx + sim) / 1000
    return (f"at {rate:,.0f} images/s the tool ({t.cpu_ms_per_image:.2f} ms CPU/image), nginx ({nginx:.2f}) and the "
            f"simulator ({sim:.2f}) would need {need:.2f} of the {os.cpu_count()} cores")


def targets(b: Bench) -> list[Target]:
    """Every target of the issue this run measured, met or missed."""
    found: list[Target] = []
    found += _latency_targets(b, "lat30", 0.85, best_peer=1.2)
    found += _latency_targets(b, "lat200", 0.9)
    for mode, peer, goal in (("disk", "curl", 1.1), ("tmpfs", "aria2c", 1.0)):
        rows = _rows(b, mode)
        if TOOL in rows and peer in rows:
            t, p = rows[TOOL], rows[peer]
            found.append(Target(f"{mode}: tool ÷ {peer}", t.images_per_s / p.images_per_s, goal, False,
                                f"{t.images_per_s:,.0f} ÷ {p.images_per_s:,.0f} images/s"))
    tmpfs = _rows(b, "tmpfs")
    # Same event loop on both sides: --workers 1 on asyncio's against the bare loop, and on uvloop against
    # the bare loop on uvloop (the default loop is asyncio's when uvloop is not installed).
    for tool, bare in ((ONE_ASYNCIO, BARE), (ONE_DEFAULT_LOOP, BARE_UVLOOP if BARE_UVLOOP in tmpfs else BARE)):
        if tool in tmpfs and bare in tmpfs:
            t, r = tmpfs[tool], tmpfs[bare]
            # Issue 10 set 1.3 as where to go; issue 19 set 2.0 as this turn's step: both shown.
            for goal, which in ((1.3, ""), (2.0, " (issue 19's step)")):
                found.append(Target(f"tmpfs: CPU per image, {tool} ÷ {bare}{which}",
                                    t.cpu_ms_per_image / r.cpu_ms_per_image, goal, True,
                                    f"{t.cpu_ms_per_image:.3f} ÷ {r.cpu_ms_per_image:.3f} ms"))
    return found + _before_cpu_targets(b) + _helper_targets(b) + _scale_targets(b) + _api_targets(b)


def _before_rows(rows: dict[str, Row], one: bool) -> list[tuple[str, Row]]:
    """With --before DIR: that tree's rows (tool.Variant names them), its `--workers 1` one or its default."""
    return [(name, row) for name, row in rows.items()
            if name.startswith(BEFORE_TREE) and name.endswith(BEFORE_ONE) == one]


def _before_cpu_targets(b: Bench) -> list[Target]:
    """With --before DIR: one process of this code against one of that tree, CPU per image (no more than it)."""
    found = []
    for mode in ("tmpfs", "tmpfs200"):
        rows = _rows(b, mode)
        if ONE_DEFAULT_LOOP not in rows:
            continue
        t = rows[ONE_DEFAULT_LOOP]
        for name, o in _before_rows(rows, one=True):
            found.append(Target(f"{mode}: CPU per image, {ONE_DEFAULT_LOOP} ÷ {name}",
                                t.cpu_ms_per_image / o.cpu_ms_per_image, 1.0, True,
                                f"{t.cpu_ms_per_image:.3f} ÷ {o.cpu_ms_per_image:.3f} ms"))
    return found


def _helper_targets(b: Bench) -> list[Target]:
    """Issue 19 §2: the default (one process, a helper only while it is CPU-bound) stays at the old default's
    figure (two processes from the start) or better where the work is CPU-bound."""
    found = []
    for mode in ("tmpfs", "disk", "tmpfs200"):
        rows = _rows(b, mode)
        if TOOL in rows and OLD_DEFAULT in rows:
            t, o = rows[TOOL], rows[OLD_DEFAULT]
            found.append(Target(f"{mode}: default ÷ {OLD_DEFAULT} (the default before issue 19)",
                                t.images_per_s / o.images_per_s, 1.0, False,
                                f"{t.images_per_s:,.0f} ÷ {o.images_per_s:,.0f} images/s"))
        # --before DIR: the default of the code the issue was filed against ("today's figure" in its words)
        for name, o in _before_rows(rows, one=False) if TOOL in rows else []:
            t = rows[TOOL]
            found.append(Target(f"{mode}: default ÷ {name}'s default", t.images_per_s / o.images_per_s, 1.0,
                                False, f"{t.images_per_s:,.0f} ÷ {o.images_per_s:,.0f} images/s"))
    return found


def _api_targets(b: Bench) -> list[Target]:
    """The api mode (issue 19): each run's sustained share of --rate, and its busiest second against ⌊R⌋."""
    return [Target(name, ratio, goal, at_most, measured)
            for name, ratio, goal, at_most, measured in apibound.targets(b.data.get("api", {}))]


def _latency_targets(b: Bench, mode: str, share: float, best_peer: float | None = None) -> list[Target]:
    rows = _rows(b, mode)
    if TOOL not in rows:
        return []
    spec, t = MODES[mode], rows[TOOL]
    bound = f"bound {spec.concurrency}/{spec.latency_ms / 1000:g} s"
    found = [Target(f"{mode}: tool ÷ {bound}", t.images_per_s / spec.bound, share, False,
                    f"{t.images_per_s:,.0f} ÷ {spec.bound:,.0f} images/s", _cpu_need(mode, rows, share * spec.bound))]
    peers = {name: r for name, r in rows.items() if _is_peer(name) and r.verified == r.images}
    if best_peer is not None and peers:
        name, p = max(peers.items(), key=lambda item: item[1].images_per_s)
        found.append(Target(f"{mode}: tool ÷ best peer ({name})", t.images_per_s / p.images_per_s, best_peer, False,
                            f"{t.images_per_s:,.0f} ÷ {p.images_per_s:,.0f} images/s",
                            _cpu_need(mode, rows, best_peer * p.images_per_s)))
    return found


def _scale_targets(b: Bench) -> list[Target]:
    runs = b.data.get("scale", [])
    first = [r for r in runs if r["label"].endswith("first run")]
    rerun = next((r for r in runs if "rerun" in r["label"]), None)
    found = []
    if first:
        big = first[-1]
        found.append(Target(f"scale: peak RSS per process at {big['patents']:,} patents ÷ {RSS_CAP_MB:.0f} MB",
                            big["rss_mb"] / RSS_CAP_MB, 1.0, True, f"{big['rss_mb']:.0f} MB ÷ {RSS_CAP_MB:.0f} MB"))
    if len(first) >= 2:
        small, big = first[0], first[-1]
        found.append(Target(f"scale: peak RSS at {big['patents']:,} ÷ at {small['patents']:,} patents",
                            big["rss_mb"] / small["rss_mb"], RSS_FLAT, True,
                            f"{big['rss_mb']:.0f} ÷ {small['rss_mb']:.0f} MB"))
    if rerun:
        found.append(Target(f"scale: rerun of the finished {rerun['patents']:,} ÷ {RERUN_CAP_S:.0f} s",
                            rerun["wall_s"] / RERUN_CAP_S, 1.0, True,
                            f"{rerun['wall_s']:.1f} s on the wall clock ÷ {RERUN_CAP_S:.0f} s",
                            f"summary seconds {rerun['run_s']} (manifest included), {rerun['api_calls']} API calls, "
                            f"nothing to do: {rerun.get('nothing_to_do')}, manifest rewritten: "
                            f"{rerun.get('manifest_rewritten')}"))
    return found


def peer_lines(b: Bench) -> list[str]:
    """Per image mode: the default tool's images/s ÷ every other client's."""
    lines = []
    for mode in (m for m in IMAGE_MODES if m in b.args.modes):
        rows = _rows(b, mode)
        if TOOL not in rows:
            continue
        tool = rows[TOOL]
        parts = [f"{name} {_times(tool.images_per_s, r.images_per_s)}" for name, r in rows.items() if name != TOOL]
        lines.append(f"{mode}: tool {tool.images_per_s:,.0f} images/s ÷ " + ", ".join(parts))
    threads = _rows(b, "disk")
    if THREADS in threads and TOOL in threads:
        t, d = threads[THREADS], threads[TOOL]
        lines.append(f"disk: --io threads costs {t.cpu_ms_per_image - d.cpu_ms_per_image:+.3f} ms CPU per image "
                     f"({t.cpu_ms_per_image:.3f} vs {d.cpu_ms_per_image:.3f} direct, "
                     f"{_times(t.cpu_ms_per_image, d.cpu_ms_per_image)}) and runs at "
                     f"{_times(t.images_per_s, d.images_per_s)} the images/s")
    return lines + _meta_lines(b)


def ratio_lines(b: Bench) -> list[str]:
    return [t.line() for t in targets(b)] + peer_lines(b)


def variants_table(b: Bench) -> str:
    """images/s (CPU ms per image) of every way of running the tool, mode by mode."""
    modes = [m for m in IMAGE_MODES if m in b.args.modes]
    names = list(dict.fromkeys(r.client for r in b.rows if r.client.startswith(TOOL)))
    if not names or not modes:
        return ""
    head = "| tool | " + " | ".join(modes) + " |\n|---|" + "---|" * len(modes) + "\n"
    body = ""
    for name in names:
        cells = []
        for mode in modes:
            r = _rows(b, mode).get(name)
            cells.append("" if r is None else f"{r.images_per_s:,.0f} /s ({r.cpu_ms_per_image:.2f} ms)")
        body += f"| {name} | " + " | ".join(cells) + " |\n"
    return head + body


def targets_table(b: Bench) -> str:
    rows = "".join(f"| {t.name} | {t.measured} | {t.ratio:.2f} | {'≤' if t.at_most else '≥'} {t.goal:g} "
                   f"| {'met' if t.met else '**missed**'} | {t.context} |\n" for t in targets(b))
    return "| target | measured | ratio | goal | verdict | context |\n|---|---|---|---|---|---|\n" + rows


def _meta_lines(b: Bench) -> list[str]:
    meta = b.data.get("meta")
    if not meta:
        return []
    return [f"meta: {meta['patents_per_s']:,.0f} patents/s (run time; {meta['patents_per_s_wall']:,.0f} on the wall "
            f"clock) = {meta['patents_per_s'] / meta['bound']:.0%} of the bound {meta['bound']:,.0f}/s (rate × 100)"]


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
        f"{'One run per cell' if b.args.repeat == 1 else _rounds(b.args.repeat)}; "
        "2 cores shared by client, nginx (and the simulator for the tool).",
        "- Tool rows: `patent-images` is the default (one process, which adds a helper only while its event loop "
        "is CPU-bound, up to one per core and one per 5,000 unsettled keys; uvloop when installed, see the machine "
        "table), its first process given the mode's whole in-flight count; `--workers 2` is the default before "
        "issue 19 on these 2 cores (two processes from the start, each with half the in-flight count); "
        "`--workers 1` is one process; `patent-images before issue 19 (DIR)` (with `--before DIR`) is the default "
        "of an export of an older tree (run as `python -m downloader` from DIR), two processes each with half "
        "the in-flight count, and `… --workers 1` that tree as one process; `asyncio loop` sets "
        "`PATENT_IMAGES_LOOP=asyncio`; `--io threads` writes each image in one worker-thread hop (the path taken "
        "on NFS/SMB/FUSE folders). `bare aiohttp + uvloop` is the bare loop on uvloop's event loop.",
        f"- Latency: {b.latency.method}.",
        "- wget fetches one file at a time (that is wget); under latency it gets only the first files that fit "
        "in its time budget.",
    ]
    if skipped:
        lines.append(f"- img2dataset skipped: {skipped}")
    return "\n".join(lines) + "\n"


def _rounds(repeat: int) -> str:
    return (f"{repeat} rounds, each running every client once (a disturbance hits one round of many clients, not "
            "every round of one); each cell is the median of its rounds (images/s = verified files ÷ median wall)")


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
        "## Targets\n\n" + targets_table(b),
        "## The tool's variants\n\nimages/s (CPU ms per image), medians.\n\n" + variants_table(b),
        "## Ratios\n\n" + "".join(f"- {line}\n" for line in ratio_lines(b)),
    ]
    data = {"command": command, "date": when, "elapsed_s": round(elapsed, 1), "machine": facts,
            "latency_method": b.latency.method, "img2dataset_skipped": skipped,
            "corpus": {"images": len(b.corpus.images), "bytes": b.corpus.total_bytes},
            "modes": list(b.args.modes), "rows": [r.as_json() for r in b.rows], **b.data,
            "ratios": ratio_lines(b),
            "targets": [{**asdict(t), "met": t.met} for t in targets(b)]}
    return "\n".join(parts), data
