"""--workers N on one machine: several processes share one job through the SQLite store's claims."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from downloader.core.settings import Settings
from downloader.workers import KEYS_PER_WORKER, default_workers

from .support import check_downloads, cli_args, cli_command, leftovers, manifest, numbers, run_cli, write_csv


def test_default_workers_follow_the_cores_but_not_past_the_work():
    assert default_workers(Settings(workers=3), 10) == 3
    assert default_workers(Settings(), 10) == 1  # a small job is not worth another process
    assert 1 <= default_workers(Settings(), 100 * KEYS_PER_WORKER) <= 8


@pytest.mark.slow
def test_three_processes_share_one_job_and_each_patent_is_paid_once(tmp_path, threaded_simulator):
    """3 processes over 3,000 patents: every key asked once, one manifest, every file right, 3 workers seen."""
    sim = threaded_simulator
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(3000))
    started = time.monotonic()
    done = run_cli(*cli_args(sim, [source], out, "--workers", "3", "--batch-size", "50", "--rate", "200", "--json"))
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    print(f"\n[workers 3] {seconds:.1f} s, {summary['api_calls']} calls, {summary['charged']} charged, "
          f"{summary['images']} images, workers {summary['workers']}")
    assert summary["workers"] == 3
    assert max(sim.counters.asks.values()) == 1, "a key was asked twice"
    assert summary["charged"] == sim.counters.charged and summary["api_calls"] == sim.counters.api_requests
    rows = manifest(out)
    assert len(rows) == 3000 and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == summary["by_status"]["downloaded"] == summary["images"]
    assert not leftovers(out) and not (out / ".partial").exists()


@pytest.mark.slow
def test_sigterm_stops_every_worker_and_the_rerun_finishes(tmp_path, sim_config, threaded_simulator):
    """SIGTERM to the first process stops the helpers too: exit 130, then a rerun completes, nothing paid twice."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.05
    out = tmp_path / "out"
    args = cli_args(sim, [write_csv(tmp_path / "in.csv", numbers(2000))], out, "--workers", "2",
                    "--download-concurrency", "4", "--batch-size", "50")
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while sim.counters.image_requests < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    conn = sqlite3.connect(out / "state.sqlite")
    pids = [int(worker.rsplit(":", 1)[1]) for (worker,) in conn.execute("SELECT worker FROM workers")]
    conn.close()
    assert len(pids) == 2, pids  # the first process and its helper both worked on the run
    time.sleep(0.5)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)]
    assert not alive, f"a worker outlived the stop: {alive}"
    sim_config.cdn_latency = 0.0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert max(sim.counters.asks.values()) == 1
    assert check_downloads(out, sim) > 1000


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (OSError, IndexError):
        return "zombie"
