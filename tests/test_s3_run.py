"""A whole job with `--out s3://bucket/prefix`: the simulator's images end up as verified objects in moto."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from downloader.simulator import Simulator

from .s3_server import ACCESS_KEY, SECRET_KEY, Bucket, MotoServer
from .support import cli_args, numbers, run, run_cli, sha256, write_csv

pytestmark = pytest.mark.slow


def _manifest(bucket: Bucket, prefix: str) -> list[dict[str, str]]:
    body = bucket.client.get_object(Bucket=bucket.name, Key=f"{prefix}/manifest.csv")["Body"].read()
    return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))


def test_a_run_into_a_bucket_stores_every_image_verified_and_a_rerun_asks_nothing(
        tmp_path: Path, threaded_simulator: Simulator, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each downloaded row's object holds the CDN's bytes, with the row's sha256 as metadata; rerun: 0 calls."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the embedded state of a bucket output
    out = f"s3://{s3_bucket.name}/batch-1"
    source = write_csv(tmp_path / "in.csv", numbers(300))
    summary = run([source], out, threaded_simulator, s3_endpoint_url=s3_bucket.server.endpoint)
    assert summary["exit_code"] == 0, summary
    rows = _manifest(s3_bucket, "batch-1")
    downloaded = [r for r in rows if r["status"] == "downloaded"]
    assert len(rows) == 300 and len(downloaded) == summary["by_status"]["downloaded"] > 200
    for row in downloaded:
        key = f"batch-1/{row['local_file']}"
        data = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
        assert data == threaded_simulator.expected_image(row["pn"], row["num"]), row
        assert sha256(data) == row["sha256"] == head["Metadata"]["sha256"]
        assert head["ContentType"].startswith("image/")
    images = {k for k in s3_bucket.keys() if k.startswith("batch-1/images/")}
    assert images == {f"batch-1/{r['local_file']}" for r in downloaded}
    assert {"batch-1/manifest.jsonl", "batch-1/summary.json"} <= s3_bucket.keys()

    again = run([source], out, threaded_simulator, s3_endpoint_url=s3_bucket.server.endpoint)
    assert again["exit_code"] == 0 and again["api_calls"] == 0
    assert _manifest(s3_bucket, "batch-1") == rows


def test_the_cli_refuses_a_missing_bucket_with_one_line_and_exit_2(
        tmp_path: Path, threaded_simulator: Simulator, moto_server: MotoServer) -> None:
    """`run --out s3://missing-bucket/x`: exit 2 and one line naming the bucket, no credential shown."""
    source = write_csv(tmp_path / "in.csv", numbers(5))
    args = cli_args(threaded_simulator, [source], tmp_path / "unused", "--s3-endpoint-url", moto_server.endpoint)
    args[args.index("--out") + 1] = "s3://no-such-bucket-e2e/x"
    done = run_cli(*args, env={**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")})
    assert done.returncode == 2, done.stderr
    assert "no-such-bucket-e2e" in done.stderr and "does not exist" in done.stderr
    assert ACCESS_KEY not in done.stderr + done.stdout and SECRET_KEY not in done.stderr + done.stdout
