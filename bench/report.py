"""Results: one row per measured run, machine facts, ratios; written as Markdown and JSON."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One measured run of one client in one mode."""

    mode: str
    client: str
    images: int  # images it was asked for
    verified: int  # files whose SHA-256 equals the corpus file's
    bytes: int  # bytes of the verified files
    wall_s: float
    cpu_s: float
    rss_mb: float
    exit_code: int
    nginx_cpu_s: float = 0.0
    other_cpu_s: float = 0.0  # CPU the rest of the machine used meanwhile (other users, kernel threads)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.verified / self.wall_s if self.wall_s else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000 * self.cpu_s / self.verified if self.verified else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_s": round(self.images_per_s, 1), "mb_per_s": round(self.mb_per_s, 1),
                "cpu_ms_per_image": round(self.cpu_ms_per_image, 3)}


# --- machine facts ------------------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return found.group(1).strip() if found else platform.processor()


def _memory_gib() -> float:
    found = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return round(int(found.group(1)) / 2**20, 1) if found else 0.0


def machine_facts(img2dataset: Path | None) -> dict[str, str]:
    facts = {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory_gib": str(_memory_gib()),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "aiohttp": metadata.version("aiohttp"),
        "patent-images": metadata.version("patent-images"),
        "uvloop (the tool uses it when installed)": _version("uvloop"),
        "nginx": _first_line(["nginx", "-v"]).removeprefix("nginx version: "),
        "curl": _first_line(["curl", "--version"]).split(" (")[0],
        "aria2c": _first_line(["aria2c", "--version"]),
        "wget": _first_line(["wget", "--version"]).split(" built")[0],
    }
    if img2dataset is not None:
        python = str(img2dataset.with_name("python"))
        facts["img2dataset"] = _first_line([python, "-c", "import importlib.metadata as m; "
                                            "print(m.version('img2dataset'))"])
    return facts


def package_revision() -> str:
    """The project's git commit, and "+ local changes" when downloader/ differs from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    head = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "downloader", "pyproject.toml"],
                           capture_output=True, text=True).stdout.strip()
    return f"{head} + local changes" if dirty else head


# --- Markdown ------------------------------------------------------------------------------------

_HEAD = ("| client | images ok / asked | wall s | images/s | MB/s | CPU s | CPU ms/image | peak RSS MB "
         "| nginx CPU s | rest of machine CPU s | note |\n|---|---|---|---|---|---|---|---|---|---|---|\n")


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"  # NaN → dash


def image_table(rows: list[Row]) -> str:
    lines = [_HEAD]
    for r in rows:
        flag = "" if r.exit_code == 0 else f" (exit {r.exit_code})"
        lines.append(f"| {r.client} | {r.verified:,} / {r.images:,}{flag} | {_fmt(r.wall_s, 2)} "
                     f"| {_fmt(r.images_per_s, 0)} | {_fmt(r.mb_per_s)} | {_fmt(r.cpu_s, 2)} "
                     f"| {_fmt(r.cpu_ms_per_image, 2)} | {_fmt(r.rss_mb, 0)} | {_fmt(r.nginx_cpu_s, 2)} "
                     f"| {_fmt(r.other_cpu_s, 2)} | {r.note} |\n")
    return "".join(lines)


def write_results(folder: Path, stem: str, text: str, data: dict[str, Any], dated: bool) -> list[Path]:
    """`stem`.md and `stem`.json (and a dated copy of each when `dated`)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    names = [stem] + ([f"{stem}-{date.today().isoformat()}"] if dated else [])
    for name in names:
        md, js = folder / f"{name}.md", folder / f"{name}.json"
        md.write_text(text)
        js.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        written += [md, js]
    return written
