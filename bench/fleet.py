"""Several workers, one job: patents/s and images/s with 1, 2 and 3 `patent-images run` processes
sharing PostgreSQL state, into a local folder and into s3:// on a moto server, against the simulator.

    python bench/fleet.py [--patents 5000] [--workers 1,2,3] [--rate 50] [--targets disk,s3]

Everything runs on this machine and on 127.0.0.1: the simulator (its own process), moto (its own
process, for s3), PostgreSQL (the machine's server, a fresh schema per run, dropped after). Each
run starts N processes at once with the same inputs and `--workers 1`, and is timed from the first
start to the last exit. Writes bench/results/fleet.md and fleet.json. Stops what it starts, by pid.
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
import time
import urllib.request
import uuid
from pathlib import Path

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


def make_bucket(endpoint: str, name: str) -> None:
    import botocore.session

    client = botocore.session.get_session().create_client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    client.create_bucket(Bucket=name)


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def one_run(n: int, target: str, csv_path: Path, sim_url: str, moto_url: str | None, rate: float,
            work: Path) -> dict[str, object]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    state = f"{PG}{'&' if '?' in PG else '?'}schema={schema}"
    if target == "s3":
        assert moto_url is not None
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        make_bucket(moto_url, bucket)
        out = f"s3://{bucket}/run"
    else:
        out = str(work / f"out-{schema}")
    before = counters(sim_url)
    cmd = [sys.executable, "-m", "downloader", "run", str(csv_path), "--out", out, "--state", state,
           "--api-base", sim_url, "--token", "demo-token", "--api-key", "demo-key", "--rate", str(rate),
           "--workers", "1", "--no-progress"] + (["--s3-endpoint-url", moto_url] if moto_url and target == "s3" else [])
    env = {**os.environ, **AWS}
    started = time.monotonic()
    cpu0 = os.times()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env) for _ in range(n)]
    codes = [p.wait() for p in procs]
    seconds = time.monotonic() - started
    cpu1 = os.times()
    after = counters(sim_url)
    drop_schema(schema)
    patents = after["ids_asked"] - before["ids_asked"]
    images = after["images_served"] - before["images_served"]
    return {"workers": n, "target": target, "exit_codes": codes, "seconds": round(seconds, 2),
            "patents_per_s": round(patents / seconds, 1), "images_per_s": round(images / seconds, 1),
            "api_calls": after["api_requests"] - before["api_requests"],
            "charged": after["charged"] - before["charged"],
            "workers_cpu_s": round((cpu1.children_user + cpu1.children_system)
                                   - (cpu0.children_user + cpu0.children_system), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patents", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--targets", default="disk,s3")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from downloader.simulator import generate_numbers

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    csv_path = work / "in.csv"
    csv_path.write_text("patent_number\n" + "\n".join(generate_numbers(args.patents, seed=11)) + "\n")
    sim, sim_url = start_simulator()
    moto, moto_url = (start_moto() if "s3" in args.targets else (None, None))
    rows = []
    try:
        for target in args.targets.split(","):
            for n in (int(x) for x in args.workers.split(",")):
                row = one_run(n, target, csv_path, sim_url, moto_url, args.rate, work)
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        stop(sim)
        if moto is not None:
            stop(moto)
        subprocess.run(["rm", "-rf", str(work)], check=False)
    load = os.getloadavg()
    lines = [f"# Several workers, one job ({args.patents:,} patents, --rate {args.rate:g}, this machine: "
             f"{os.cpu_count()} cores, load average at the end {load[0]:.1f})", "",
             "| target | workers | seconds | patents/s | images/s | API calls | charged | workers' CPU s | exits |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['target']} | {r['workers']} | {r['seconds']} | {r['patents_per_s']} | {r['images_per_s']} | "
              f"{r['api_calls']} | {r['charged']} | {r['workers_cpu_s']} | {r['exit_codes']} |" for r in rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "fleet.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
