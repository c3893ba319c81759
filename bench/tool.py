"""The tool under test: the simulator in its own process, `patent-images run` measured like a peer.

The simulator runs as `patent-images simulate --port 0 --cdn-base NGINX` (instant: no QPS limit,
no latency), a separate process so that its CPU is not counted as the tool's; its image URLs
point at nginx. Files are verified from the tool's manifest.csv by hashing them again.
"""

from __future__ import annotations

import csv
import json
import re
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


def tool_command(csv_path: Path, out: Path, api_base: str, rate: float, api_concurrency: int,
                 download_concurrency: int) -> list[str]:
    return [str(PATENT_IMAGES), "run", str(csv_path), "--out", str(out), "--api-base", api_base,
            "--token", "demo-token", "--api-key", "demo-key", "--rate", str(rate),
            "--api-concurrency", str(api_concurrency), "--download-concurrency", str(download_concurrency),
            "--no-progress"]


def run_tool(cmd: list[str], out: Path, log: Path, timeout: float, sim: Simulator) -> ToolRun:
    """Run the tool (under an optional wrapper, e.g. py-spy, as a prefix of `cmd`)."""
    cpu_before = sim.cpu_s()
    measured = run_measured(cmd, log, timeout=timeout)
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    return ToolRun(measured, summary, simulator=sim.counters(), simulator_cpu_s=sim.cpu_s() - cpu_before)


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
