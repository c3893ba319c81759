"""Nothing lost, nothing corrupt: transient faults, rate limits, token expiry, fatal answers,
failed patents and crash-safe writes, each checked on outcomes (files, hashes, counters, exit codes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from downloader.cli import app as cli
from downloader.core.model import Downloaded, Kind, PatentKey, Resolved, Status
from downloader.machine import RESERVE_FILE
from downloader.outputs import write_manifest
from downloader.simulator import SimulatorConfig, simulator_in_thread
from downloader.sinks.local import LocalSink
from downloader.state.base import PatentRow
from downloader.state.sqlite import SqliteStore

from .support import (
    check_downloads,
    cli_args,
    leftovers,
    manifest,
    numbers,
    one_clear_line,
    run,
    run_summary,
    settled_keys,
    when,
    write_csv,
)


@pytest.fixture
def restore_sigterm() -> Iterator[None]:
    """`cli.main` installs a SIGTERM handler in this process; put the old one back."""
    old = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, old)


# --- 1. transient faults ------------------------------------------------------------------------


@pytest.mark.slow
def test_transient_faults_of_every_kind_end_with_every_file_right(tmp_path, sim_config, threaded_simulator):
    """10% API and 10% CDN faults of all kinds ("slow" = past the client timeouts): exit 0, hashes right."""
    sim = threaded_simulator
    sim_config.api_fault_rate = 0.1
    sim_config.image_fault_rate = 0.1
    sim_config.slow_seconds = 2.0
    source = write_csv(tmp_path / "in.csv", numbers(2000))
    started = time.monotonic()
    summary = run([source], tmp_path / "out", sim, batch_size=25, api_timeout=1.0, stall_timeout=1.0,
                  download_timeout=1.5)
    seconds = time.monotonic() - started
    c = sim.counters
    print(f"\n[faults] api faults injected {c.api_faults_injected} of {c.api_requests} API requests, "
          f"image faults injected {c.image_faults_injected} of {c.image_requests} image requests; "
          f"tool: {summary['retries']} retries, {summary['api_calls']} API calls, "
          f"{summary['charged']} charged ({c.charged} at the simulator, "
          f"{c.charged - (2000 - summary['by_status'].get('not_found', 0))} extra), {seconds:.1f} s")
    assert summary["exit_code"] == 0, summary["by_status"]
    assert c.api_faults_injected >= 3 and c.image_faults_injected >= 100
    assert set(summary["by_status"]) <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(tmp_path / "out", sim) == summary["by_status"]["downloaded"] > 1500
    assert not leftovers(tmp_path / "out")
    assert summary["retries"] >= c.api_faults_injected  # every fault cost a retry, none was fatal
    assert max(c.asks.values()) <= 2  # a key is asked again only when its answer was lost


async def test_results_are_recorded_in_the_order_they_happened(tmp_path):
    """A `resolved` and its `downloaded` flushed together after another download: none is lost."""
    store = await SqliteStore.open(tmp_path / "state.sqlite")
    try:
        run_id = await store.start_run({})
        a, b = PatentKey(Kind.NUMBER, "US1111111"), PatentKey(Kind.NUMBER, "US2222222")
        await store.ingest([a, b], run_id)
        await store.apply([Resolved(a, "US1111111B2", "id-a", "0001", "http://x/a", 2e9)])
        await store.apply([Downloaded(a, "images/a.png", 1, "aa"),
                           Resolved(b, "US2222222B2", "id-b", "0001", "http://x/b", 2e9),
                           Downloaded(b, "images/b.png", 2, "bb")])
        assert await store.counts(run_id) == {"downloaded": 2}
    finally:
        await store.close()


# --- 2. rate limits -----------------------------------------------------------------------------


def _throttled_run(tmp: Path, mode: str) -> tuple[dict, int, float]:
    with simulator_in_thread(SimulatorConfig(seed=0, qps_limit=3, throttle_mode=mode)) as sim:
        source = write_csv(tmp / f"{mode}.csv", numbers(500))
        started = time.monotonic()
        summary = run([source], tmp / f"out-{mode}", sim, rate=50.0, batch_size=25)
        return summary, sim.counters.throttled, time.monotonic() - started


@pytest.mark.slow
def test_a_rate_limit_far_below_the_tools_rate_costs_few_limit_answers(tmp_path):
    """qps 3 at the API, --rate 50 in the tool, 20 calls: exit 0 and fewer than 30 limit answers."""
    with ThreadPoolExecutor(2) as pool:  # both modes at once: each run is paced by the limit, not CPU
        results = dict(zip(("code", "429"), pool.map(lambda m: _throttled_run(tmp_path, m), ("code", "429")),
                           strict=True))
    for mode, (summary, throttled, seconds) in results.items():
        print(f"\n[rate {mode}] {throttled} limit answers for {summary['api_calls']} API calls "
              f"({summary['retries']} retries), {seconds:.1f} s, exit {summary['exit_code']}")
    for summary, throttled, _ in results.values():
        assert summary["exit_code"] == 0
        assert summary["api_calls"] - summary["throttled"] == 20
        assert throttled == summary["throttled"] < 30


# --- 3. token expiry ----------------------------------------------------------------------------


@pytest.mark.slow
def test_short_lived_oauth_tokens_are_renewed_ahead_not_per_call(tmp_path, sim_config, threaded_simulator):
    """token_lifetime 2 s over a ~6 s run: exit 0, about one token per lifetime, not one per call."""
    sim = threaded_simulator
    sim_config.token_lifetime = 2
    sim_config.api_latency = 0.2
    source = write_csv(tmp_path / "in.csv", numbers(300))
    started = time.monotonic()
    summary = run([source], tmp_path / "out", sim, token=None, api_key=None, client_id="demo-client",
                  client_secret="demo-secret", rate=5.0, batch_size=10, api_concurrency=2)
    seconds = time.monotonic() - started
    c = sim.counters
    print(f"\n[token] {c.token_requests} token requests, {c.auth_refused} refused calls, "
          f"{summary['api_calls']} API calls, {seconds:.1f} s")
    assert summary["exit_code"] == 0
    assert seconds >= 5.0
    assert seconds / 2 - 1 <= c.token_requests <= seconds / 1.6 + 3
    assert c.token_requests < summary["api_calls"] / 2
    assert c.auth_refused <= 3  # renewed ahead of expiry, so the API almost never sees a stale token


# --- 4. fatal conditions ------------------------------------------------------------------------


def _run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.monotonic()
    code = cli.main(args)
    seconds = time.monotonic() - started
    return code, capsys.readouterr().err, seconds


def _assert_saved(out: Path, code: int) -> None:
    assert (out / "manifest.csv").exists() and (out / "manifest.jsonl").exists()
    assert json.loads((out / "summary.json").read_text())["exit_code"] == code


@pytest.mark.slow
@pytest.mark.parametrize(("code", "words"), [(67200004, "permission"), (67200005, "balance"),
                                             (67200006, "expired")])
def test_fatal_answer_stops_within_a_few_calls_and_the_same_command_resumes(
        tmp_path, sim_config, threaded_simulator, capsys, restore_sigterm, code, words):
    """A fatal code mid-run: exit 3 at once, one line saying what to do; lifted, the rerun ends 0."""
    sim = threaded_simulator
    out = tmp_path / "out"
    args = cli_args(sim, [write_csv(tmp_path / "in.csv", numbers(300))], out, "--batch-size", "20",
                    "--rate", "20")
    first_fatal: list[float] = []
    when(lambda: sim.counters.api_ok >= 3,
         lambda: (setattr(sim_config, "fatal_code", code), first_fatal.append(time.monotonic())))
    exit_code, err, _ = _run_main(args, capsys)
    stop_seconds = time.monotonic() - first_fatal[0]
    c = sim.counters
    with capsys.disabled():
        print(f"\n[fatal {code}] {c.fatal_answers} fatal answers, {c.api_requests} API requests, "
              f"exit {exit_code} {stop_seconds:.2f} s after the switch; stderr: {err.strip()}")
    assert exit_code == 3
    line = one_clear_line(err)
    assert str(code) in line and words in line.lower() and "rerun" in line
    assert 1 <= c.fatal_answers <= 4 + 1  # api_concurrency + 1
    assert stop_seconds < 5
    _assert_saved(out, 3)
    settled = settled_keys(out)
    asked_before = {k: c.asks[k] for k in settled}
    assert settled and len(manifest(out)) == 300

    sim_config.fatal_code = None
    exit_code, err, _ = _run_main(args, capsys)
    assert exit_code == 0, err
    assert {k: c.asks[k] for k in settled} == asked_before
    assert max(c.asks.values()) == 1
    check_downloads(out, sim)


@pytest.mark.slow
def test_refused_client_credentials_stop_at_once(tmp_path, sim_config, threaded_simulator, capsys,
                                                 restore_sigterm):
    """The token endpoint refuses the client: exit 3, one line naming the credentials; fixed, exit 0."""
    sim = threaded_simulator
    sim_config.refuse_credentials = True
    out = tmp_path / "out"
    args = cli_args(sim, [write_csv(tmp_path / "in.csv", numbers(150))], out, "--client-id", "demo-client",
                    "--client-secret", "demo-secret", credentials=False)
    exit_code, err, seconds = _run_main(args, capsys)
    with capsys.disabled():
        print(f"\n[refused] {sim.counters.token_refused} refused token requests, {sim.counters.api_requests} "
              f"API requests, exit {exit_code} in {seconds:.2f} s; stderr: {err.strip()}")
    assert exit_code == 3
    line = one_clear_line(err)
    assert "client" in line and "credentials" in line
    assert sim.counters.api_requests == 0 and sim.counters.token_refused <= 4 + 1
    _assert_saved(out, 3)
    sim_config.refuse_credentials = False
    exit_code, err, _ = _run_main(args, capsys)
    assert exit_code == 0, err


@pytest.mark.slow
def test_a_token_refused_even_right_after_a_refresh_is_fatal(tmp_path, sim_config, threaded_simulator):
    """67200003 again after one refresh (client disabled, secret rotated): exit 3, not a run of failures."""
    sim = threaded_simulator
    sim_config.fatal_code = 67200003
    out = tmp_path / "out"
    stopped = run_summary([write_csv(tmp_path / "in.csv", numbers(300))], out, sim, token=None, api_key=None,
                          client_id="demo-client", client_secret="demo-secret", batch_size=20)
    c = sim.counters
    print(f"\n[67200003] {c.fatal_answers} refusals, {c.token_requests} token requests: {stopped.error!r}")
    assert stopped.exit_code == 3 and stopped.error is not None
    assert cli.exit_code_for(stopped.error) == 3 and "67200003" in str(stopped.error)
    assert c.fatal_answers <= 2 * (4 + 1) and c.token_requests <= 4 + 2
    _assert_saved(out, 3)
    assert {r["status"] for r in manifest(out)} == {"pending"}


@pytest.mark.slow
def test_a_quota_that_never_comes_back_is_fatal_after_the_throttle_patience(tmp_path, sim_config,
                                                                            threaded_simulator):
    """67200002 is throttling; persisting through single probes past --throttle-patience (2 s): exit 3."""
    sim = threaded_simulator
    sim_config.quota_after = 150
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(600))
    started = time.monotonic()
    stopped = run_summary([source], out, sim, throttle_patience=2.0, batch_size=50, rate=20.0)
    seconds = time.monotonic() - started
    print(f"\n[quota] {sim.counters.quota_refused} quota answers, {sim.counters.api_ok} accepted calls, "
          f"{seconds:.1f} s: {stopped.error!r}")
    assert stopped.exit_code == 3 and stopped.error is not None and cli.exit_code_for(stopped.error) == 3
    assert "67200002" in str(stopped.error)
    assert seconds < 2.0 + 5
    assert sim.counters.quota_refused < 30
    _assert_saved(out, 3)
    sim_config.quota_after = None
    again = run([source], out, sim, throttle_patience=2.0, batch_size=50, rate=20.0)
    assert again["exit_code"] == 0 and max(sim.counters.asks.values()) == 1


# --- 8. failed patents --------------------------------------------------------------------------


@pytest.mark.slow
def test_failed_patents_are_kept_and_retried_only_when_asked(tmp_path, sim_config, threaded_simulator):
    """CDN 404s and non-http paths fail with a reason (exit 1); reruns skip them unless --retry-failed."""
    sim = threaded_simulator
    values = numbers(200)
    records = {v: sim.universe.lookup_number(v) for v in values}
    with_drawing = [v for v, r in records.items() if r is not None and r.num is not None]
    missing, hostile = with_drawing[:3], with_drawing[3:5]
    sim_config.missing_images = {records[v].pn for v in missing}
    sim_config.overrides = {v: {"pn": records[v].pn, "patent_id": records[v].patent_id,
                                "abstract_drawing": {"num": "0001", "path": "file:///etc/passwd"}} for v in hostile}
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", values)

    first = run([source], out, sim)
    rows = {r["patent_number"]: r for r in manifest(out)}
    assert first["exit_code"] == 1 and first["by_status"]["failed"] == 5
    assert all(rows[v]["status"] == "failed" and "404" in rows[v]["error"] for v in missing)
    assert all(rows[v]["status"] == "failed" and rows[v]["error"].startswith("HostileAnswer") for v in hostile)

    calls, images = sim.counters.api_requests, sim.counters.image_requests
    second = run([source], out, sim)
    assert second["exit_code"] == 1 and second["api_calls"] == 0
    assert (sim.counters.api_requests, sim.counters.image_requests) == (calls, images)
    assert manifest(out) == list(rows.values())

    sim_config.missing_images = set()
    sim_config.overrides = {}
    third = run([source], out, sim, retry_failed=True)
    print(f"\n[failed] first run {first['by_status']}, rerun {second['api_calls']} calls, "
          f"--retry-failed {third['api_calls']} calls, {third['by_status']}")
    assert third["exit_code"] == 0 and third["api_calls"] == 1
    assert all(sim.counters.asks[v] == 2 for v in missing + hostile)
    assert sum(sim.counters.asks.values()) == 200 + 5
    check_downloads(out, sim)


# --- 12. disk -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_durable_run_is_correct(tmp_path, threaded_simulator):
    """--durable (fsync of files, folders and state) gives the same verified result, each image fetched once."""
    sim = threaded_simulator
    summary = run([write_csv(tmp_path / "in.csv", numbers(300))], tmp_path / "out", sim, durable=True,
                  batch_size=10)
    print(f"\n[durable] {summary['images']} images from {sim.counters.image_requests} image requests, "
          f"{summary['seconds']:.1f} s")
    assert summary["exit_code"] == 0
    assert sim.counters.image_requests == summary["images"] == summary["by_status"]["downloaded"]
    assert check_downloads(tmp_path / "out", sim) == summary["by_status"]["downloaded"] > 200
    assert not leftovers(tmp_path / "out")


async def test_a_manifest_write_that_fails_midway_keeps_the_old_file(tmp_path):
    """An exception mid-write leaves the previous manifest intact and no temporary file behind."""
    sink = LocalSink(tmp_path)
    await sink.prepare()
    (tmp_path / "manifest.csv").write_text("old,complete\n", encoding="utf-8")

    async def rows_then_a_full_disk():
        yield PatentRow(Kind.NUMBER, "US1", Status.NOT_FOUND)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        await write_manifest(sink, rows_then_a_full_disk())
    assert (tmp_path / "manifest.csv").read_text(encoding="utf-8") == "old,complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial", RESERVE_FILE, "manifest.csv"]  # no temp file


_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from downloader.sinks.local import LocalSink
staged = LocalSink(Path(sys.argv[1])).staging("manifest.csv")
with staged.open("w") as out:
    out.write("new,half")
    out.flush()
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
def test_a_write_killed_midway_keeps_the_old_manifest_and_the_next_run_cleans_up(tmp_path, threaded_simulator):
    """kill -9 inside a manifest write: the old manifest is intact; the next run leaves no temp file."""
    sim = threaded_simulator
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(50))
    assert run([source], out, sim)["exit_code"] == 0
    before = (out / "manifest.csv").read_bytes()
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], timeout=30,
                            check=False, cwd=Path(__file__).resolve().parents[1])
    assert killed.returncode == -signal.SIGKILL
    assert (out / "manifest.csv").read_bytes() == before
    assert leftovers(out)  # the killed writer's temp file, which only a later run can remove
    assert run([source], out, sim)["exit_code"] == 0
    assert (out / "manifest.csv").read_bytes() == before
    assert not leftovers(out), leftovers(out)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
