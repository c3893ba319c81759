"""Several workers, one job: `patent-images run` started three times over shared PostgreSQL state and
moto S3 images, on the simulator over loopback. Real servers, no mocks of them."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .support import cli_command, numbers, write_csv
from .test_postgres_job import pg_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
pytest.importorskip("obstore", reason="the 's3' extra is not installed")

PREFIX = "nightly"


@dataclass
class Fleet:
    """Three `patent-images run` processes over one job."""

    procs: list[subprocess.Popen[str]]
    errors: list[str] = field(default_factory=list)

    def wait(self, timeout: float = 120.0) -> list[int]:
        """Exit codes, in start order (stderr kept in `errors`)."""
        codes = []
        for proc in self.procs:
            _, err = proc.communicate(timeout=timeout)
            codes.append(proc.returncode)
            self.errors.append(err)
        return codes


@pytest.fixture
def fleet_env(moto_server, tmp_path) -> dict[str, str]:  # noqa: ARG001 - moto_server sets AWS_* in os.environ
    env = dict(os.environ)
    env.pop("PATSNAP_API_KEY", None)
    return env


def start(sim, source: Path, bucket: str, state: str, env: dict[str, str], endpoint: str, *extra: str,
          count: int = 3) -> Fleet:
    args = ["run", str(source), "--out", f"s3://{bucket}/{PREFIX}", "--state", state, "--s3-endpoint-url", endpoint,
            "--api-base", str(sim.base_url), "--token", "demo-token", "--api-key", "demo-key", "--workers", "1",
            "--no-progress", "--json", *extra]
    return Fleet([subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env, cwd=Path(__file__).resolve().parents[1]) for _ in range(count)])


def manifest_rows(bucket) -> list[dict[str, str]]:
    body = bucket.client.get_object(Bucket=bucket.name, Key=f"{PREFIX}/manifest.csv")["Body"].read().decode()
    return list(csv.DictReader(io.StringIO(body)))


def etags(bucket) -> dict[str, str]:
    """Every object's ETag (one listing call per 1,000 objects, not a GET per object)."""
    found: dict[str, str] = {}
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=f"{PREFIX}/"):
        found.update((obj["Key"], obj["ETag"].strip('"')) for obj in page.get("Contents", []))
    return found


def verify_objects(bucket, sim, rows: list[dict[str, str]], sample: int = 40) -> int:
    """Every downloaded row's object holds the simulator's bytes: its sha256 in the manifest, and its ETag
    (the MD5 of a single-part upload) from the listing. A sample is read whole, with its sha256 metadata."""
    stored = etags(bucket)
    checked = 0
    for row in rows:
        if row["status"] != "downloaded":
            continue
        expected = sim.expected_image(row["pn"], row["num"])
        key = f"{PREFIX}/{row['local_file']}"
        assert row["sha256"] == hashlib.sha256(expected).hexdigest(), row
        assert stored.get(key) == hashlib.md5(expected).hexdigest(), (row, stored.get(key))
        if checked < sample:
            obj = bucket.client.get_object(Bucket=bucket.name, Key=key)
            assert obj["Body"].read() == expected and obj["Metadata"]["sha256"] == row["sha256"], row
        checked += 1
    return checked


@pytest.fixture
def source(tmp_path) -> Iterator[Path]:
    yield write_csv(tmp_path / "in.csv", numbers(2500))


@pytest.fixture
def small_source(tmp_path) -> Iterator[Path]:
    yield write_csv(tmp_path / "small.csv", numbers(2000))


def test_three_workers_share_one_job_one_rate_and_pay_each_patent_once(
        source, prompt_simulator, s3_bucket, pg_url, fleet_env, moto_server):  # noqa: F811
    """3 workers × 2,500 patents: each key charged once, --rate held from the first request, every object right."""
    sim = prompt_simulator
    started = time.monotonic()
    fleet = start(sim, source, s3_bucket.name, pg_url, fleet_env, moto_server.endpoint, "--rate", "8")
    codes = fleet.wait()
    seconds = time.monotonic() - started
    busiest = sim.counters.busiest_second()
    print(f"\n[fleet] 3 workers, 2,500 patents: exits {codes}, {seconds:.1f} s, {sim.counters.api_requests} API "
          f"calls, {sim.counters.charged} charged, busiest second {busiest} requests, {sim.counters.images_served} "
          f"images")
    assert codes == [0, 0, 0], fleet.errors
    assert max(sim.counters.asks.values()) == 1, "a patent was charged twice"
    assert len(sim.counters.asks) == 2500
    # Counted where the server counts, start-up included: each request is checked against its slot at the
    # moment it is written, and the schedule counts requests by when they were written.
    assert busiest <= 8, f"{busiest} requests in one second at --rate 8"
    rows = manifest_rows(s3_bucket)
    assert len(rows) == 2500 and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert verify_objects(s3_bucket, sim, rows) > 1500


def test_a_worker_killed_at_30_percent_loses_its_keys_to_the_others(
        small_source, threaded_simulator, sim_config, s3_bucket, pg_url, fleet_env, moto_server):  # noqa: F811
    """SIGKILL one worker at 30%: the other two finish everything; re-charged ≤ that worker's batches in flight."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.01
    fleet = start(sim, small_source, s3_bucket.name, pg_url, fleet_env, moto_server.endpoint, "--rate", "20",
                  "--lease", "3", "--api-concurrency", "2", "--batch-size", "50")
    deadline = time.monotonic() + 60
    while sim.counters.charged < 0.3 * 1860 and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = fleet.procs[0]
    victim.send_signal(signal.SIGKILL)
    killed_at = sim.counters.charged
    codes = fleet.wait()
    repeated = sum(n - 1 for n in sim.counters.asks.values() if n > 1)
    print(f"\n[fleet kill] killed at {killed_at} charged; exits {codes}; keys asked twice: {repeated}; "
          f"{sim.counters.api_requests} calls, {sim.counters.charged} charged")
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0]
    # The killed worker's billed answers that no store holds: one per API worker (2), each either asked and
    # not yet answered or answered and not yet committed, never both, since an API worker asks again only
    # after the recorder acknowledged its last answer's commit (test_pipeline_seams checks that order).
    # Before that wait, an answer still queued behind a flush of download results and the next request
    # could both be lost: 150 was seen once in CI (ec39009).
    assert repeated <= 2 * 50, f"{repeated} results charged twice: more than the killed worker's batches in flight"
    rows = manifest_rows(s3_bucket)
    assert len(rows) == 2000 and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert verify_objects(s3_bucket, sim, rows) > 1200


def test_a_fatal_answer_halts_all_three_within_seconds(
        small_source, threaded_simulator, sim_config, s3_bucket, pg_url, fleet_env, moto_server):  # noqa: F811
    """67200005 (balance) seen by one worker: all three stop with exit 3 within 5 s."""
    sim = threaded_simulator
    sim_config.cdn_latency = 0.02
    fleet = start(sim, small_source, s3_bucket.name, pg_url, fleet_env, moto_server.endpoint, "--rate", "10",
                  "--batch-size", "50")
    deadline = time.monotonic() + 60
    while sim.counters.api_requests < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    sim_config.fatal_code = 67200005
    while sim.counters.fatal_answers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    first_fatal = time.monotonic()
    codes = fleet.wait(timeout=60)
    took = time.monotonic() - first_fatal
    print(f"\n[fleet fatal] exits {codes} {took:.1f} s after the first 67200005; fatal answers "
          f"{sim.counters.fatal_answers}")
    assert codes == [3, 3, 3]
    assert took <= 5.0, f"the fleet took {took:.1f} s to stop"
