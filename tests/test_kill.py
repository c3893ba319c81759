"""The CLI in a subprocess, stopped the hard way (kill -9), the polite way (SIGINT/SIGTERM), and
started twice on one folder: nothing lost, nothing corrupt, nothing asked twice."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from downloader.simulator import Simulator

from .support import (
    SETTLED_STATUSES,
    Cli,
    check_downloads,
    cli_args,
    downloaded_files,
    image_files,
    leftovers,
    manifest,
    numbers,
    one_clear_line,
    run,
    run_cli,
    state_rows,
    write_csv,
)

pytestmark = pytest.mark.slow


def comparable(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    """Manifest rows without `path`: signed URLs carry the time they were issued."""
    return [tuple(v for k, v in row.items() if k != "path") for row in rows]


def settled_snapshot(out: Path, sim: Simulator) -> dict[str, int]:
    """Ask counts of the keys the state store calls settled (read after a kill)."""
    try:
        rows = state_rows(out)
    except sqlite3.Error:  # killed before the schema was committed
        return {}
    return {key: sim.counters.asks[key] for _, key, status in rows if status in SETTLED_STATUSES}


# --- 5. kill -9 ---------------------------------------------------------------------------------


def test_kill_9_at_many_moments_then_rerun_equals_an_uninterrupted_run(tmp_path, sim_config, threaded_simulator):
    """Killed at 6 moments (state writes, API phase, downloads), rerun each time: same result as no kill."""
    sim = threaded_simulator
    source = write_csv(tmp_path / "in.csv", numbers(3000) + ["not a patent"])
    reference = tmp_path / "reference"
    started = time.monotonic()
    ref = run([source], reference, sim, download_concurrency=16)
    ref_seconds = time.monotonic() - started
    assert ref["exit_code"] == 0
    sim_config.cdn_latency = 0.01  # downloads take a few seconds: room for kills among them

    out = tmp_path / "out"
    args = cli_args(sim, [source], out, "--download-concurrency", "16", "--rate", "500")
    dice = random.Random(20240601)
    moments: list[tuple[str, Callable[[], bool]]] = [
        ("state store created (ingest)", lambda: (out / "state.sqlite").exists()),
        ("first images on disk", lambda: len(image_files(out)) >= 20),
        ("random 1-3 s", _after(dice.uniform(1.0, 3.0))),
        ("300 more images", _more_images(out, 300)),
        ("random 1.5-3 s", _after(dice.uniform(1.5, 3.0))),
        ("500 more images", _more_images(out, 500)),
    ]
    snapshots: list[dict[str, int]] = []
    report = []
    for i, (name, condition) in enumerate(moments):
        with Cli(args, tmp_path / f"kill{i}.log") as cli:
            if hasattr(condition, "start"):
                condition.start()  # type: ignore[attr-defined]
            reached = cli.wait_for(condition)
            cli.proc.send_signal(signal.SIGKILL)
            code = cli.proc.wait(timeout=30)
        snapshots.append(settled_snapshot(out, sim))
        report.append(f"{name}: {'killed' if reached else 'finished first'} (rc {code}) after "
                      f"{time.monotonic() - cli.started:.2f} s, {len(snapshots[-1])} settled, "
                      f"{len(image_files(out))} files")
    final = run_cli(*args, timeout=120)
    extra = sim.counters.charged - 2 * ref["charged"]  # beyond the reference's own and one more full set
    print(f"\n[kill -9] reference run {ref_seconds:.1f} s, {ref['api_calls']} calls, {ref['charged']} charged; "
          + "; ".join(report) + f"; final run exit {final.returncode}; the killed runs and the final one made "
          f"{sim.counters.api_requests - ref['api_calls']} API calls, {extra} extra charged results")

    assert final.returncode == 0, final.stderr
    assert comparable(manifest(out)) == comparable(manifest(reference))
    assert check_downloads(out, sim) == ref["by_status"]["downloaded"]
    assert not leftovers(out) and not (out / ".partial").exists()
    assert image_files(out) == downloaded_files(out)
    for i, snapshot in enumerate(snapshots):
        grown = {k: (n, sim.counters.asks[k]) for k, n in snapshot.items() if sim.counters.asks[k] != n}
        assert not grown, f"settled after kill {i} yet asked again: {list(grown.items())[:5]}"
    assert sum(1 for s in snapshots if s) >= 3  # the kills did land at different stages


def _after(seconds: float) -> Callable[[], bool]:
    """A condition true `seconds` after its `start()`."""
    box = [0.0]

    def condition() -> bool:
        return time.monotonic() >= box[0]

    condition.start = lambda: box.__setitem__(0, time.monotonic() + seconds)  # type: ignore[attr-defined]
    return condition


def _more_images(out: Path, n: int) -> Callable[[], bool]:
    box = [0]

    def condition() -> bool:
        return len(image_files(out)) >= box[0] + n

    condition.start = lambda: box.__setitem__(0, len(image_files(out)))  # type: ignore[attr-defined]
    return condition


# --- 6. SIGINT / SIGTERM ------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "phase"), [(signal.SIGINT, "downloads"), (signal.SIGTERM, "downloads"),
                                               (signal.SIGTERM, "hung API call")],
                         ids=["SIGINT-downloads", "SIGTERM-downloads", "SIGTERM-hung-api-call"])
def test_a_signal_stops_the_run_within_seconds_with_state_saved(tmp_path, sim_config, threaded_simulator,
                                                                signum, phase):
    """SIGINT/SIGTERM mid-run: exit 130 within 5 s, manifest and summary written; the rerun ends 0."""
    sim = threaded_simulator
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(300))
    args = cli_args(sim, [source], out, "--download-concurrency", "4", "--batch-size", "50")
    if phase == "downloads":
        sim_config.cdn_latency = 0.05
        condition = lambda: len(image_files(out)) >= 20  # noqa: E731
    else:
        sim_config.api_latency = 30.0
        condition = lambda: sim.counters.api_in_flight >= 1  # noqa: E731
    with Cli(args, tmp_path / "cli.log") as cli:
        assert cli.wait_for(condition), cli.stderr()
        time.sleep(0.05)
        sent = time.monotonic()
        cli.proc.send_signal(signum)
        code = cli.proc.wait(timeout=30)
        seconds = time.monotonic() - sent
        err = cli.stderr()
    print(f"\n[{signal.Signals(signum).name} during {phase}] exit {code} {seconds:.2f} s after the signal, "
          f"{len(image_files(out))} images kept; stderr: {err.strip()}")
    assert code == 130 and seconds < 5
    assert "interrupted" in one_clear_line(err)
    assert json.loads((out / "summary.json").read_text())["exit_code"] == 130
    rows = manifest(out)
    assert len(rows) == 300 and {r["status"] for r in rows} & {"pending", "resolved"}
    assert image_files(out) == downloaded_files(out)  # stopped cleanly: every finished file is recorded
    assert not leftovers(out)
    sim_config.api_latency = sim_config.cdn_latency = 0.0
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    check_downloads(out, sim)
    assert image_files(out) == downloaded_files(out) and not leftovers(out)


# --- 7. one run per folder ----------------------------------------------------------------------


def test_a_second_run_on_a_busy_folder_is_refused_and_a_dead_runs_lock_is_taken_over(
        tmp_path, sim_config, threaded_simulator):
    """A live run's DIR: the second run exits 2 naming the holder; after kill -9 the lock is taken over."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.2
    out = tmp_path / "out"
    args = cli_args(sim, [write_csv(tmp_path / "in.csv", numbers(300))], out, "--download-concurrency", "2")
    with Cli(args, tmp_path / "first.log") as first:
        assert first.wait_for(lambda: (out / ".lock").exists() and (out / ".lock").read_text().strip() != "")
        assert first.wait_for(lambda: len(image_files(out)) >= 1)
        second = run_cli(*args)
        line = one_clear_line(second.stderr)
        print(f"\n[lock] second run: exit {second.returncode}: {line}")
        assert second.returncode == 2
        assert "in use" in line and str(first.proc.pid) in line
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=30)
    sim_config.cdn_latency = 0.0
    third = run_cli(*args)
    assert third.returncode == 0, third.stderr
    check_downloads(out, sim)
    assert image_files(out) == downloaded_files(out)
