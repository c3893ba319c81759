"""Helpers for end-to-end tests: CSV inputs, running a job against the simulator, checking files."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from downloader.config import Settings
from downloader.job import run_job
from downloader.simulator import Simulator, generate_numbers


def write_csv(path: Path, values: Iterable[str], header: str = "patent_number") -> Path:
    """A one-column CSV with a header."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([header])
        writer.writerows([v] for v in values)
    return path


def numbers(n: int, seed: int = 7) -> list[str]:
    """n distinct realistic publication numbers."""
    return generate_numbers(n, seed=seed)


def settings_for(sim: Simulator, **overrides: Any) -> Settings:
    """Settings that talk to the simulator quickly (high rate, small backoffs)."""
    values: dict[str, Any] = {"api_base": sim.base_url, "token": "demo-token", "api_key": "demo-key",
                              "rate": 500.0, "progress": False, "backoff_initial": 0.01, "backoff_max": 0.05,
                              "expiry_margin": 1.0}
    values.update(overrides)
    return Settings(**values)


def run(inputs: list[Path], out: Path, sim: Simulator, **overrides: Any) -> dict[str, Any]:
    """Run a whole job in this process; returns its summary."""
    return run_job(inputs, out, settings_for(sim, **overrides))


def manifest(out: Path) -> list[dict[str, str]]:
    """manifest.csv as dicts."""
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


def check_downloads(out: Path, sim: Simulator) -> int:
    """Every `downloaded` row's file holds exactly the CDN's bytes; returns how many were checked."""
    checked = 0
    for row in manifest(out):
        if row["status"] != "downloaded":
            continue
        data = (out / row["local_file"]).read_bytes()
        assert sha256(data) == row["sha256"], row
        assert data == sim.expected_image(row["pn"], row["num"]), row
        assert int(row["bytes"]) == len(data)
        checked += 1
    return checked


def leftovers(out: Path) -> list[Path]:
    """Temporary or partial files anywhere under the output folder."""
    return [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp"))]
