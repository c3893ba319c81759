"""The tool under test: the simulator in its own process, `patent-images run` measured like a peer.

The simulator runs as `patent-images simulate --port 0 --cdn-base NGINX` (instant: no QPS limit,
no latency), a separate process so that its CPU is not counted as the tool's; its image URLs
point at nginx. Files are verified from the tool's manifest.csv by hashing them again.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus import Corpus
from measure import Measured, clean_env, process_cpu_s, run_measured, stop_group, verify_files

PATENT_IMAGES = Path(sys.executable).with_name("patent-images")
_URL = re.compile(r"on (http://\S+)")


@dataclass
class Simulator:
    """`patent-images simulate` on a free port, pointing image URLs at `cdn_base`."""

    cdn_base: str
    log: Path
    base_url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [str(PATENT_IMAGES), "simulate", "--port", "0", "--cdn-base", self.cdn_base]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log.open("wb"),
                                     stdin=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        found = _URL.search(line)
        if not found:
            raise RuntimeError(f"the simulator did not start: {line!r}; see {self.log}")
        self.base_url = found.group(1)

    def cpu_s(self) -> float:
        return process_cpu_s([self.proc.pid]) if self.proc else 0.0

    def counters(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{self.base_url}/_sim/counters?", timeout=30) as resp:
            data: dict[str, Any] = json.load(resp)
        data.pop("asks", None)
        return data

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)


@dataclass
class ToolRun:
    """One `patent-images run`: its cost, its summary, and what was verified."""

    measured: Measured
    summary: dict[str, Any]
    simulator: dict[str, Any] = field(default_factory=dict)
    simulator_cpu_s: float = 0.0


@dataclass(frozen=True)
class Variant:
    """One way to run the tool: --workers (None: its default), the event loop, --io; or an older tree's
    default (`tree`, an export of it), whose processes are `split` (the in-flight count is divided among them)."""

    workers: int | None = None
    loop: str = "auto"  # PATENT_IMAGES_LOOP: auto is uvloop when installed (the machine table says)
    io: str | None = None
    tree: Path | None = None
    split: int | None = None

    @property
    def name(self) -> str:
        if self.tree is not None:
            one = " --workers 1" if self.workers == 1 else ""  # ratios.BEFORE_ONE
            return f"patent-images before issue 19 ({self.tree.name}){one}"
        flags = "".join(f" {flag}" for flag in (self.workers and f"--workers {self.workers}",
                                                 self.io and f"--io {self.io}") if flag)
        return f"patent-images{flags}" + ("" if self.loop == "auto" else f", {self.loop} loop")

    @property
    def processes(self) -> int:
        """How many processes share the mode's in-flight count at the start (the default starts alone)."""
        return self.split or self.workers or 1

    def args(self) -> list[str]:
        return ([] if self.workers is None else ["--workers", str(self.workers)]) + (
            [] if self.io is None else ["--io", self.io])

    def env(self) -> dict[str, str]:
        return clean_env({"PATENT_IMAGES_LOOP": self.loop})


DEFAULT = Variant()


def variants(disk: bool, uvloop: bool, before: Path | None = None) -> list[Variant]:
    """The tool's rows of an image mode: default workers and --workers 1, on the default loop (uvloop when
    installed) and on asyncio's, and in the disk mode --io threads (the path for NFS/SMB/FUSE folders); with
    `before` (an export of the tree issue 19 was filed against) that tree's default and its `--workers 1` too."""
    loops = ("auto", "asyncio") if uvloop else ("auto",)
    found = [Variant(workers, loop) for loop in loops for workers in (None, 1)]
    found.append(Variant(2, loops[0]))  # the default before issue 19 on 2 cores: two processes from the start
    if before is not None:  # that tree's own default (one process per core, 2 here, from the start), and one process
        found += [Variant(None, loops[0], tree=before, split=2), Variant(1, loops[0], tree=before)]
    if disk:
        found.append(Variant(None, loops[0], "threads"))
    return found


def tool_command(csv_path: Path, out: Path, api_base: str, rate: float, api_concurrency: int,
                 download_concurrency: int, variant: Variant = DEFAULT) -> list[str]:
    # An older tree runs as `python -m downloader` from its folder (its helpers inherit the folder).
    program = [str(PATENT_IMAGES)] if variant.tree is None else [sys.executable, "-m", "downloader"]
    return [*program, "run", str(csv_path), "--out", str(out), "--api-base", api_base,
            "--token", "demo-token", "--api-key", "demo-key", "--rate", str(rate),
            "--api-concurrency", str(api_concurrency), "--download-concurrency", str(download_concurrency),
            "--no-progress", *variant.args()]


def run_tool(cmd: list[str], out: Path, log: Path, timeout: float, sim: Simulator,
             variant: Variant = DEFAULT) -> ToolRun:
    """Run the tool (under an optional wrapper, e.g. py-spy, as a prefix of `cmd`)."""
    cpu_before = sim.cpu_s()
    measured = run_measured(cmd, log, timeout=timeout, env=variant.env(), cwd=variant.tree)
    return ToolRun(measured, last_summary(out), simulator=sim.counters(), simulator_cpu_s=sim.cpu_s() - cpu_before)


def last_summary(out: Path) -> dict[str, Any]:
    """The summary of the latest run in the folder's state store (summary.json keeps the last run that had work
    to do, so a rerun with nothing to do is read from the store's run history)."""
    db = out / "state.sqlite"
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT summary FROM runs WHERE ended IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            conn.close()
        if row:
            return dict(json.loads(row[0]))
    summary_file = out / "summary.json"
    return json.loads(summary_file.read_text()) if summary_file.exists() else {}


def verify_manifest(out: Path, corpus: Corpus) -> tuple[int, int, dict[str, int]]:
    """(files, bytes) whose SHA-256 (in the manifest and on disk) equals the corpus file's,
    and the manifest's counts by status."""
    expected = corpus.by_stem()
    statuses: dict[str, int] = {}
    triples = []
    manifest = out / "manifest.csv"
    if not manifest.exists():
        return 0, 0, statuses
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            img = expected.get(f"{row['pn']}_{row['num']}")
            if row["status"] == "downloaded" and img is not None and row["sha256"] == img.sha256:
                triples.append((out / row["local_file"], img.sha256, img.size))
    return (*verify_files(triples), statuses)
