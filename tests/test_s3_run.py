"""Whole jobs with `--out s3://bucket/prefix`, on moto and on SeaweedFS: the simulator's images end up as
verified objects; a kill -9 leaves no partial object and no incomplete upload; a 503 SlowDown storm loses
nothing; a missing bucket or refused access stops at once (exit 3)."""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from downloader.simulator import Simulator, SimulatorConfig
from tests.s3_proxy import S3Proxy

from .s3_server import ACCESS_KEY, READER_KEY, READER_SECRET, SECRET_KEY, Bucket, MotoServer
from .support import Cli, cli_args, numbers, run, run_cli, sha256, write_csv

pytestmark = pytest.mark.slow


def _manifest(bucket: Bucket, prefix: str) -> list[dict[str, str]]:
    body = bucket.client.get_object(Bucket=bucket.name, Key=f"{prefix}/manifest.csv")["Body"].read()
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


def _check_objects(bucket: Bucket, prefix: str, sim: Simulator, summary: dict[str, Any]) -> list[dict[str, str]]:
    """Every downloaded row's object holds the CDN's bytes with the row's sha256 as metadata; no other image."""
    rows = _manifest(bucket, prefix)
    downloaded = [r for r in rows if r["status"] == "downloaded"]
    assert len(downloaded) == summary["by_status"]["downloaded"] > 0.6 * len(rows)
    for row in downloaded:
        key = f"{prefix}/{row['local_file']}"
        data = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
        head = bucket.client.head_object(Bucket=bucket.name, Key=key)
        assert data == sim.expected_image(row["pn"], row["num"]), row
        assert sha256(data) == row["sha256"] == head["Metadata"]["sha256"]
        assert head["ContentType"].startswith("image/")
    images = {k for k in bucket.keys() if k.startswith(f"{prefix}/images/")}
    assert images == {f"{prefix}/{r['local_file']}" for r in downloaded}
    return rows


@pytest.fixture(params=["moto", "seaweedfs"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on moto, then on SeaweedFS."""
    made: Bucket = request.getfixturevalue("s3_bucket" if request.param == "moto" else "seaweed_bucket")
    return made


def test_a_run_into_a_bucket_stores_every_image_verified_and_a_rerun_asks_nothing(
        tmp_path: Path, threaded_simulator: Simulator, bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each downloaded row's object holds the CDN's bytes, with the row's sha256 as metadata; rerun: 0 calls."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the embedded state of a bucket output
    out = f"s3://{bucket.name}/batch-1"
    source = write_csv(tmp_path / "in.csv", numbers(300))
    summary = run([source], out, threaded_simulator, s3_endpoint_url=bucket.server.endpoint)
    assert summary["exit_code"] == 0, summary
    rows = _check_objects(bucket, "batch-1", threaded_simulator, summary)
    assert len(rows) == 300 and {"batch-1/manifest.jsonl", "batch-1/summary.json"} <= bucket.keys()

    again = run([source], out, threaded_simulator, s3_endpoint_url=bucket.server.endpoint)
    assert again["exit_code"] == 0 and again["api_calls"] == 0
    assert _manifest(bucket, "batch-1") == rows


def test_a_slowdown_storm_during_a_run_loses_nothing_and_charges_nothing_twice(
        tmp_path: Path, threaded_simulator: Simulator, seaweed_bucket: Bucket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SeaweedFS behind a proxy that throttles a quarter of all requests with 503 SlowDown, and every request
    for 3 s in the middle of the run: exit 0, every image right, each patent charged once."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    source = write_csv(tmp_path / "in.csv", numbers(200))
    with S3Proxy(seaweed_bucket.server.endpoint, seed=3) as proxy:
        proxy.throttle(0.25)
        done = threading.Event()
        threading.Thread(target=_storm_once_images_flow, args=(proxy, done), daemon=True).start()
        try:
            summary = run([source], f"s3://{seaweed_bucket.name}/stormy", threaded_simulator,
                          s3_endpoint_url=proxy.endpoint)
        finally:
            done.set()
    assert summary["exit_code"] == 0, summary
    assert proxy.stormed > 30 and proxy.refused > proxy.stormed and summary["api_calls"] == 2
    assert threaded_simulator.counters.charged == summary["charged"] <= 200
    rows = _check_objects(seaweed_bucket, "stormy", threaded_simulator, summary)
    assert len(rows) == 200


def test_a_run_killed_midway_leaves_no_incomplete_upload_and_the_rerun_finishes(
        tmp_path: Path, threaded_simulator: Simulator, sim_config: SimulatorConfig, seaweed_bucket: Bucket) -> None:
    """kill -9 of `run` while it stores images in SeaweedFS: no incomplete multipart upload (images are single
    PUTs), every object there is whole (its bytes match its sha256 metadata); the rerun exits 0, all right."""
    sim_config.cdn_latency = 0.01  # downloads take a few seconds: room for the kill among them
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    source = write_csv(tmp_path / "in.csv", numbers(400))
    args = cli_args(threaded_simulator, [source], tmp_path / "unused", "--s3-endpoint-url",
                    seaweed_bucket.server.endpoint)
    args[args.index("--out") + 1] = f"s3://{seaweed_bucket.name}/killed"
    with Cli(args, tmp_path / "killed.log", env=env) as cli:
        cli.when(lambda: len(seaweed_bucket.keys()) >= 40)
        cli.proc.send_signal(signal.SIGKILL)
        cli.proc.wait(timeout=30)
    assert seaweed_bucket.incomplete_uploads() == []
    stored = {key for key in seaweed_bucket.keys() if key.startswith("killed/images/")}
    assert "killed/manifest.csv" not in seaweed_bucket.keys() and len(stored) >= 30
    for key in stored:
        data = seaweed_bucket.client.get_object(Bucket=seaweed_bucket.name, Key=key)["Body"].read()
        meta = seaweed_bucket.client.head_object(Bucket=seaweed_bucket.name, Key=key)["Metadata"]
        assert sha256(data) == meta["sha256"], key

    done = run_cli(*args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = {"by_status": {"downloaded": sum(1 for r in _manifest(seaweed_bucket, "killed")
                                               if r["status"] == "downloaded")}}
    assert len(_check_objects(seaweed_bucket, "killed", threaded_simulator, summary)) == 400
    assert seaweed_bucket.incomplete_uploads() == []


def _storm_once_images_flow(proxy: S3Proxy, done: threading.Event) -> None:
    """3 s of SlowDown for every request, from the 40th PUT on (images are being stored)."""
    while not done.wait(0.02):
        if proxy.count("PUT") >= 40:
            proxy.storm(3.0)
            return


def test_the_cli_refuses_a_missing_bucket_with_one_line_and_exit_3(
        tmp_path: Path, threaded_simulator: Simulator, moto_server: MotoServer) -> None:
    """`run --out s3://missing-bucket/x`: exit 3 and one line naming the bucket, no credential shown."""
    done = _cli_run(tmp_path, threaded_simulator, "s3://no-such-bucket-e2e/x", moto_server.endpoint, dict(os.environ))
    assert done.returncode == 3, done.stderr
    assert "S3 bucket 'no-such-bucket-e2e' does not exist" in done.stderr and len(done.stderr.splitlines()) == 1
    assert ACCESS_KEY not in done.stderr + done.stdout and SECRET_KEY not in done.stderr + done.stdout
    assert threaded_simulator.counters.api_requests == 0


def test_the_cli_stops_at_once_when_seaweedfs_denies_writes(
        tmp_path: Path, threaded_simulator: Simulator, seaweed_bucket: Bucket) -> None:
    """Credentials SeaweedFS lets only read: exit 3 and one line naming the bucket and AccessDenied; no API call."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": READER_KEY, "AWS_SECRET_ACCESS_KEY": READER_SECRET}
    done = _cli_run(tmp_path, threaded_simulator, f"s3://{seaweed_bucket.name}/x", seaweed_bucket.server.endpoint, env)
    assert done.returncode == 3, done.stderr
    assert f"access to S3 bucket '{seaweed_bucket.name}' denied" in done.stderr and "AccessDenied" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and READER_SECRET not in done.stderr + done.stdout
    assert threaded_simulator.counters.api_requests == 0 and seaweed_bucket.keys() == set()


def _cli_run(tmp_path: Path, sim: Simulator, out: str, endpoint: str, env: dict[str, str]) -> Any:
    source = write_csv(tmp_path / "in.csv", numbers(5))
    args = cli_args(sim, [source], tmp_path / "unused", "--s3-endpoint-url", endpoint)
    args[args.index("--out") + 1] = out
    return run_cli(*args, env={**env, "XDG_STATE_HOME": str(tmp_path / "state")})
