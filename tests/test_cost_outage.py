"""Issue 8 end to end on the simulator over loopback: never pay for nothing, never hammer, never poison a list.

Short-lived URLs are used and rarely paid twice; a throttle that never lifts is a spent quota (exit 3
after a few single probes); refused credentials get one fleet-wide refresh and one retry, then every
worker stops; an outage leaves patents pending and stops the run (exit 3) naming the host, and the
plain rerun continues. The CLI runs as a subprocess wherever the exit code or stderr matters; the
fleet-wide rules (one refresh, one probe at a time) are also checked with two workers sharing one
state store. Assertion messages carry the figures: exit code, seconds, requests after the first
refusal or throttling answer, charged and recharged results, rows failed.
"""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from downloader.core.budget import Unlimited
from downloader.core.errors import FatalApiError
from downloader.core.model import Batch, Counters, Kind
from downloader.job import job_status
from downloader.net import retrying
from downloader.net.api import PatsnapClient
from downloader.net.auth import OAuthToken
from downloader.net.ratelimit import ApiGate
from downloader.simulator import Simulator, SimulatorConfig, simulator_in_thread
from downloader.state.sqlite import SqliteStore

from .support import check_downloads, cli_args, manifest, numbers, one_clear_line, run, run_cli, state_rows, write_csv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_inputs" / "patents.csv"
PATENT = re.compile(r"\b[A-Z]{2}\d{6,}[A-Z]?\d?\b")


def _cli(*args: str, timeout: float = 120.0) -> tuple[Any, float]:
    started = time.monotonic()
    done = run_cli(*args, timeout=timeout)
    return done, time.monotonic() - started


def _summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def _found(sim: Simulator, values: list[str]) -> set[str]:
    return {v for v in values if sim.universe.lookup_number(v) is not None}


def _after(counter: int | None, sim: Simulator) -> int | None:
    return None if counter is None else sim.counters.requests - counter


def _statuses(out: Path) -> Counter[str]:
    return Counter(r["status"] for r in manifest(out))


# --- 1. short-lived URLs ------------------------------------------------------------------------


def test_two_second_urls_with_one_slow_download_slot_are_used_and_rarely_paid_twice(tmp_path, sim_config,
                                                                                   threaded_simulator):
    """2 s URLs, 50 ms per image, --download-concurrency 1, 300 patents: exit 0, every image right,
    recharged ≤ 10% (and equal to what the simulator billed twice), in summary, final line and history."""
    sim = threaded_simulator
    sim_config.url_lifetime = 2
    sim_config.cdn_latency = 0.05
    values = numbers(300)
    out = tmp_path / "out"
    done, seconds = _cli(*cli_args(sim, [write_csv(tmp_path / "in.csv", values)], out,
                                   "--download-concurrency", "1"))
    s = _summary(out)
    billed_twice = sim.counters.charged - len(_found(sim, values))
    figures = (f"exit {done.returncode} in {seconds:.1f} s; {s['api_calls']} calls, charged {s['charged']}, "
               f"recharged {s['recharged']} (simulator: {billed_twice}), {s['by_status']}; stderr: {done.stderr}")
    assert done.returncode == 0, figures
    assert s["recharged"] == billed_twice <= 0.10 * 300, figures
    print(f"\n[short URLs] {figures}")
    assert check_downloads(out, sim) == s["by_status"]["downloaded"] == sim.counters.images_served, figures
    line = one_clear_line(done.stderr)
    assert f"({s['recharged']:,} recharged)" in line if s["recharged"] else "recharged" not in line, figures
    assert job_status(out).runs[0].summary["recharged"] == s["recharged"]
    assert sim.counters.api_with_headers == sim.counters.api_requests > 0  # X-PatSnap-Version, Content-Type


# --- 2. a throttle that never lifts ---------------------------------------------------------------


def test_a_quota_spent_mid_run_stops_after_a_few_single_probes_and_the_rerun_finishes(tmp_path, sim_config,
                                                                                      threaded_simulator):
    """67200002 to every call after 300 results: exit 3 with one line naming the code and the spent quota,
    at most 4 requests after the first throttling answer; once the quota renews the same command ends 0."""
    sim = threaded_simulator
    sim_config.quota_after = 300
    values = numbers(500)
    out = tmp_path / "out"
    args = cli_args(sim, [write_csv(tmp_path / "in.csv", values)], out, "--throttle-patience", "5")
    done, seconds = _cli(*args)
    after = _after(sim.counters.first_throttle_at, sim)
    statuses = _statuses(out)
    figures = (f"exit {done.returncode} in {seconds:.1f} s, {after} requests after the first throttling answer, "
               f"charged {sim.counters.charged}, rows {dict(statuses)}; stderr: {done.stderr}")
    assert done.returncode == 3, figures
    line = one_clear_line(done.stderr)
    assert "67200002" in line and "quota or daily limit" in line and "--throttle-patience" in line, figures
    assert after is not None and after <= 4, figures
    assert seconds < 5 + 10 and statuses["failed"] == 0, figures

    sim_config.quota_after = None
    again, seconds = _cli(*args)
    print(f"\n[quota] {figures}; rerun exit {again.returncode} in {seconds:.1f} s")
    assert again.returncode == 0, f"rerun: exit {again.returncode} in {seconds:.1f} s; {again.stderr}"
    assert max(sim.counters.asks.values()) == 1  # nothing asked twice, nothing charged twice
    check_downloads(out, sim)


async def test_two_workers_sharing_a_store_send_one_probe_at_a_time_and_stop_together(tmp_path, sim_config,
                                                                                      simulator):
    """Two workers, 3 batches in flight each, every answer 67200002: the fleet sends single probes, then both
    stop with the spent-quota error; requests after the first throttling answer stay ≤ 4."""
    sim_config.quota_after = 0
    started = time.monotonic()
    errors = await _two_workers(tmp_path, simulator, patience=3.5)
    seconds = time.monotonic() - started
    after = _after(simulator.counters.first_throttle_at, simulator)
    figures = f"{after} requests after the first throttling answer, {seconds:.1f} s, errors {errors}"
    print(f"\n[quota, 2 workers] {figures}")
    assert len(errors) == 6 and all("quota or daily limit" in e for e in errors), figures
    assert after is not None and after <= 4 and seconds < 3.5 + 3, figures


# --- 3. refused credentials -----------------------------------------------------------------------


def test_a_refused_apikey_gets_one_refresh_one_retry_then_stops_naming_the_apikey(tmp_path, sim_config,
                                                                                  threaded_simulator):
    """HTTP 401 for a wrong --api-key (OAuth client credentials): at most 2 requests after the first refusal,
    exit 3, one line naming the apikey as the suspect (never its value); fixed, the rerun ends 0."""
    sim = threaded_simulator
    sim_config.apikey_refusal = "401"
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(300))
    oauth = ("--client-id", "demo-client", "--client-secret", "demo-secret")
    done, seconds = _cli(*cli_args(sim, [source], out, *oauth, "--api-key", "wrong-key-123", credentials=False))
    after = _after(sim.counters.first_refusal_at, sim)
    figures = (f"exit {done.returncode} in {seconds:.1f} s, {after} requests after the first refusal "
               f"({sim.counters.api_requests} API, {sim.counters.token_requests} token); stderr: {done.stderr}")
    assert done.returncode == 3, figures
    line = one_clear_line(done.stderr)
    assert "apikey" in line and "suspect" in line, figures
    assert "wrong-key-123" not in line and "demo-secret" not in line, figures
    assert after is not None and after <= 2, figures
    assert _statuses(out)["failed"] == 0, figures
    print(f"\n[refused] {figures}")

    again, seconds = _cli(*cli_args(sim, [source], out, *oauth, credentials=False))
    assert again.returncode == 0, f"rerun: exit {again.returncode} in {seconds:.1f} s; {again.stderr}"


async def test_two_workers_share_one_token_and_one_refresh_and_both_stop(tmp_path, sim_config, simulator):
    """Two workers with 3 batches in flight each: one token request for both, one refresh after the first
    refusal, one retry, then both stop: requests after the first refusal ≤ 2."""
    sim_config.apikey_refusal = "401"
    errors = await _two_workers(tmp_path, simulator, patience=60.0, api_key="wrong-key")
    after = _after(simulator.counters.first_refusal_at, simulator)
    figures = (f"{after} requests after the first refusal, {simulator.counters.token_requests} token requests, "
               f"errors {errors}")
    print(f"\n[refused, 2 workers] {figures}")
    assert len(errors) == 6 and all("freshly issued token (HTTP 401)" in e for e in errors), figures
    assert after is not None and after <= 2 and simulator.counters.token_requests == 2, figures


async def _two_workers(tmp_path: Path, sim: Simulator, *, patience: float, api_key: str = "demo-client") -> list[str]:
    """Two workers (own sessions, tokens, gates and clients) over one SQLite store, 3 batches each at once."""
    retrying.set_testing(True)
    store = await SqliteStore.open(tmp_path / "state.sqlite")
    errors: list[str] = []
    try:
        async with aiohttp.ClientSession() as one, aiohttp.ClientSession() as two, anyio.create_task_group() as tg:
            for n, session in enumerate((one, two)):
                tokens = OAuthToken(session, str(sim.base_url), "demo-client", "demo-secret", store)
                gate = ApiGate(store, 1, 10.0, patience)
                client = PatsnapClient(session, str(sim.base_url), api_key, tokens, gate,
                                       lambda: retrying.RetryPolicy(3), Counters(), Unlimited(), worker=f"w{n}")
                for b in range(3):
                    tg.start_soon(_resolve, client, Batch(Kind.NUMBER, tuple(numbers(5, seed=10 * n + b))), errors)
    finally:
        retrying.set_testing(False)
        await store.close()
    return errors


async def _resolve(client: PatsnapClient, batch: Batch, errors: list[str]) -> None:
    try:
        await client.resolve(batch)
    except FatalApiError as err:
        errors.append(str(err))


# --- 4. outages -------------------------------------------------------------------------------------


def test_an_api_failing_for_a_moment_defers_and_then_settles_every_patent(tmp_path, sim_config,
                                                                         threaded_simulator):
    """HTTP 502 to every API call for 1.5 s (shorter than the outage rule): the batches that met it are
    deferred and asked again within the run; exit 0, nothing failed, each patent charged once."""
    sim = threaded_simulator
    sim_config.api_down, sim_config.api_down_until = "502", time.time() + 1.5
    started = time.monotonic()
    s = run([write_csv(tmp_path / "in.csv", numbers(500))], tmp_path / "out", sim, batch_size=50, retries=2,
            outage_seconds=6.0)
    figures = (f"exit {s['exit_code']} in {time.monotonic() - started:.1f} s, {sim.counters.api_down_answers} "
               f"502 answers, charged {s['charged']}, {s['by_status']}")
    print(f"\n[502 for a moment] {figures}")
    assert s["exit_code"] == 0 and sim.counters.api_down_answers >= 2, figures
    assert max(sim.counters.asks.values()) == 1 and s["recharged"] == 0, figures


# The outage rule waits 30 s of failing calls, so both outage runs start with the module (the
# fixture below) and are checked by the last test: they wait out their 30 s while the other tests run.

OUTAGE_TEST = "test_api_and_cdn_outages_stop_the_run_and_the_plain_rerun_continues"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _outage_args(base: str, source: Path, out: Path, log: Path) -> list[str]:
    # No --no-progress: stderr is a pipe, so progress comes as lines, and problems as counted lines.
    return ["run", str(source), "--out", str(out), "--api-base", base, "--token", "demo-token",
            "--api-key", "demo-key", "--log-file", str(log)]


def _cdn_args(base: str, source: Path, folder: Path) -> list[str]:
    return [*_outage_args(base, source, folder / "cdn", folder / "cdn.log"), "--download-concurrency", "4"]


@pytest.fixture(scope="module", autouse=True)
def outage_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Nothing listening at --api-base, and a CDN answering 502 to every download: both runs, started now."""
    if not any(item.name == OUTAGE_TEST for item in request.session.items):
        yield {}
        return
    folder = tmp_path_factory.mktemp("outages")
    dead = f"http://127.0.0.1:{_closed_port()}"
    with simulator_in_thread(SimulatorConfig(cdn_down="502")) as sim, ThreadPoolExecutor(2) as pool:
        cdn_source = write_csv(folder / "cdn.csv", numbers(400))
        yield {"folder": folder, "dead": dead, "sim": sim, "cdn_source": cdn_source,
               "api": pool.submit(_cli, *_outage_args(dead, SAMPLE, folder / "api", folder / "api.log")),
               "cdn": pool.submit(_cli, *_cdn_args(str(sim.base_url), cdn_source, folder))}


def test_api_and_cdn_outages_stop_the_run_and_the_plain_rerun_continues(outage_runs):
    """Nothing listening at --api-base (sample_inputs/patents.csv), and a CDN answering 502 to every
    download: each run exits 3 within 60 s with one line naming the host, leaves no patent failed, writes
    counted lines (never one per patent; the log keeps each); the same command continues once it is back."""
    folder, dead, sim = outage_runs["folder"], outage_runs["dead"], outage_runs["sim"]
    (api_done, api_seconds), (cdn_done, cdn_seconds) = outage_runs["api"].result(), outage_runs["cdn"].result()

    api_rows = _statuses(folder / "api")
    figures = f"API: exit {api_done.returncode} in {api_seconds:.1f} s, rows {dict(api_rows)}; {api_done.stderr}"
    print(f"\n[API outage] {figures}")
    assert api_done.returncode == 3 and api_seconds < 60, figures
    lines = _checked_stderr(api_done.stderr, figures)
    assert re.search(rf"cannot reach the API at {re.escape(dead)}: connection refused \(\d+ tries over 3\d s\)",
                     lines[-1]), figures
    assert set(api_rows) == {"pending"}, figures
    assert (folder / "api.log").read_text().count(" deferred: ") >= 100, figures  # each patent's detail

    cdn_rows = _statuses(folder / "cdn")
    held = Counter(status for _, _, status in state_rows(folder / "cdn"))  # resolved: URL kept
    figures = (f"CDN: exit {cdn_done.returncode} in {cdn_seconds:.1f} s, rows {dict(cdn_rows)}, state "
               f"{dict(held)}, charged {sim.counters.charged}; {cdn_done.stderr}")
    print(f"\n[CDN outage] {figures}")
    assert cdn_done.returncode == 3 and cdn_seconds < 60 and not cdn_rows["failed"], figures
    lines = _checked_stderr(cdn_done.stderr, figures)
    assert f"the CDN at {sim.base_url} failed every call: HTTP 502" in lines[-1], figures
    assert any(re.match(r"\d+ patents: HTTP 502 from the CDN \(left pending", line) for line in lines), figures

    sim.config.cdn_down = None
    calls = sim.counters.api_requests
    cdn_again, seconds = _cli(*_cdn_args(str(sim.base_url), outage_runs["cdn_source"], folder))
    s = _summary(folder / "cdn")
    figures = (f"CDN rerun: exit {cdn_again.returncode} in {seconds:.1f} s, {s['api_calls']} calls, "
               f"recharged {s['recharged']}, {s['by_status']}")
    print(f"\n[CDN outage] {figures}")
    assert cdn_again.returncode == 0 and s["recharged"] == 0, figures  # the resolved URLs were reused
    assert sim.counters.api_requests - calls == math.ceil(held["pending"] / 100), figures  # only never-asked
    assert check_downloads(folder / "cdn", sim) == s["by_status"]["downloaded"]
    api_again, seconds = _cli(*_outage_args(str(sim.base_url), SAMPLE, folder / "api", folder / "api.log"))
    assert api_again.returncode == 0, f"API rerun: exit {api_again.returncode} in {seconds:.1f} s"


def _checked_stderr(stderr: str, figures: str) -> list[str]:
    """stderr lines of a stopped run: no traceback, no line naming a patent, at most one line per kind."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) < 20, figures
    assert not [line for line in lines if PATENT.search(line)], figures
    counted = [line.split(": ", 1)[1] for line in lines if re.match(r"\d+ patents?: ", line)]
    assert counted and len(counted) == len(set(counted)), figures
    return lines
