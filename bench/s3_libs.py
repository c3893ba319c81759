"""Which async S3 client should `--out s3://…` use? PUT many small images into moto and measure.

    python bench/s3_libs.py [--objects 2000] [--concurrency 32] [--rounds 3] [--libs aiobotocore,obstore,s3fs,S3Sink]

One command: it starts a moto S3 server (`python -m moto.server`) on a free 127.0.0.1 port, and for
each round and each candidate library runs a *separate client process* that PUTs N objects of
~30 KB (PNG signature + incompressible bytes, 20–40 KB) with `--concurrency` requests in flight,
each with a Content-Type and an `x-amz-meta-sha256`, the way `S3Sink` stores an image (and, when
the package is importable, `S3Sink` itself driven as the fetcher drives it: begin, write, commit,
to show what the sink adds over bare obstore). The client
measures, around the PUT phase only (after a warm-up that opens the connection pool):

- wall time → images/s;
- its own process CPU (`time.process_time`, every thread of the process: obstore's tokio runtime
  included) → client CPU ms per object;
- moto's CPU (/proc/PID/stat) and the whole machine's busy CPU over the same window, so that what
  moto and other tenants of this 2-core machine took is visible beside the client's share.

Then it checks what landed (count, sizes, one object's content type and metadata) with a plain
botocore client. Between runs moto is reset (`POST /moto-api/reset`) and the bucket recreated, so
every run starts from the same empty server. The libraries rotate order each round. Medians of the
rounds go to bench/results/s3-libs.md (and .json). Moto is the bottleneck (it is a single Python
process): images/s says more about the server than about the client; the client CPU per object is
the figure that carries over to a real S3 or MinIO.

The libraries come from the running interpreter when it has them all, else from
bench/work/s3-venv (created and filled by pip on first use). Everything started is stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
LIBS = ("aiobotocore", "obstore", "s3fs")
SINK = "S3Sink"  # the project's own sink (obstore underneath), measured too when the package is importable
PACKAGES = ["aiobotocore", "obstore", "s3fs", "moto[server]"]
MODULES = ("aiobotocore", "obstore", "s3fs", "moto", "flask")
BUCKET = "bench"
CREDS = {"AWS_ACCESS_KEY_ID": "benchkey", "AWS_SECRET_ACCESS_KEY": "benchsecret", "AWS_DEFAULT_REGION": "us-east-1",
         "AWS_REGION": "us-east-1"}
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Put = Callable[[str, bytes, str], Awaitable[None]]


# ---------------------------------------------------------------------------------------------- client side

def payloads(n: int, seed: int) -> list[tuple[bytes, str]]:
    """n PNG-looking bodies of 20–40 KB (incompressible, like real PNGs) and their sha256."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        body = b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(20_000, 40_000))
        out.append((body, hashlib.sha256(body).hexdigest()))
    return out


async def aiobotocore_putter(endpoint: str, pool: int) -> tuple[Put, Callable[[], Awaitable[Any]]]:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(max_pool_connections=pool, request_checksum_calculation="when_required",
                       retries={"max_attempts": 3, "mode": "standard"})
    manager = get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)
    client = await manager.__aenter__()

    async def put(key: str, body: bytes, sha: str) -> None:
        await client.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType="image/png", Metadata={"sha256": sha})

    return put, lambda: manager.__aexit__(None, None, None)


async def obstore_putter(endpoint: str, pool: int) -> tuple[Put, Callable[[], Awaitable[Any]]]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=endpoint, region="us-east-1", virtual_hosted_style_request=False,
                    client_options={"allow_http": True, "pool_max_idle_per_host": str(pool)})

    async def put(key: str, body: bytes, sha: str) -> None:
        await obstore.put_async(store, key, body, attributes={"Content-Type": "image/png", "sha256": sha})

    async def close() -> None:
        return None

    return put, close


async def s3fs_putter(endpoint: str, pool: int) -> tuple[Put, Callable[[], Awaitable[Any]]]:
    import s3fs

    fs = s3fs.S3FileSystem(asynchronous=True, endpoint_url=endpoint, skip_instance_cache=True,
                           client_kwargs={"region_name": "us-east-1"},
                           config_kwargs={"max_pool_connections": pool,
                                          "request_checksum_calculation": "when_required"})
    session = await fs.set_session()

    async def put(key: str, body: bytes, sha: str) -> None:
        await fs._pipe_file(f"{BUCKET}/{key}", body, ContentType="image/png", Metadata={"sha256": sha})

    return put, session.close


async def sink_putter(endpoint: str, pool: int) -> tuple[Put, Callable[[], Awaitable[Any]]]:
    """downloader.sinks.s3.S3Sink as the fetcher drives it: begin, write, commit (its pool size is its own)."""
    from downloader.sinks.s3 import S3Sink

    sink = S3Sink(f"s3://{BUCKET}", endpoint_url=endpoint)
    await sink.prepare()

    async def put(key: str, body: bytes, sha: str) -> None:
        upload = sink.begin()
        upload.write(body)
        await upload.commit(key, content_type="image/png", sha256=sha)

    return put, sink.close


PUTTERS = {"aiobotocore": aiobotocore_putter, "obstore": obstore_putter, "s3fs": s3fs_putter, SINK: sink_putter}


async def put_all(put: Put, prefix: str, items: list[tuple[bytes, str]], concurrency: int) -> None:
    """PUT every item with `concurrency` workers pulling from one shared iterator."""
    queue = iter(enumerate(items))

    async def worker() -> None:
        for index, (body, sha) in queue:
            await put(f"{prefix}/{index:06d}.png", body, sha)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


async def client_run(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run of one library (in its own process)."""
    items = payloads(args.objects, seed=args.round)
    warm = payloads(args.concurrency, seed=10_000 + args.round)
    setup0 = time.perf_counter()
    put, close = await PUTTERS[args.client](args.endpoint, args.pool)
    setup_s = time.perf_counter() - setup0
    await put_all(put, "warm", warm, args.concurrency)
    moto0, busy0, cpu0, wall0 = proc_cpu_s(args.moto_pid), machine_busy_s(), time.process_time(), time.perf_counter()
    await put_all(put, "run", items, args.concurrency)
    wall = time.perf_counter() - wall0
    cpu, moto, busy = time.process_time() - cpu0, proc_cpu_s(args.moto_pid) - moto0, machine_busy_s() - busy0
    await close()
    return {"lib": args.client, "round": args.round, "objects": args.objects, "bytes": sum(len(b) for b, _ in items),
            "wall_s": wall, "images_per_s": args.objects / wall, "client_cpu_ms_per_obj": 1000 * cpu / args.objects,
            "moto_cpu_ms_per_obj": 1000 * moto / args.objects,
            "other_cpu_ms_per_obj": 1000 * max(0.0, busy - cpu - moto) / args.objects,
            "setup_ms": 1000 * setup_s, "check": check_landed(args.endpoint, items)}


def check_landed(endpoint: str, items: list[tuple[bytes, str]]) -> str:
    """Count and size what is under run/, and read one object's head back: 'ok' or what is wrong."""
    import botocore.session

    s3 = botocore.session.get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1")
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="run/"):
        for obj in page.get("Contents", []):
            count, size = count + 1, size + obj["Size"]
    head = s3.head_object(Bucket=BUCKET, Key="run/000000.png")
    want = (len(items), sum(len(b) for b, _ in items), "image/png", items[0][1])
    got = (count, size, head["ContentType"], head["Metadata"].get("sha256"))
    return "ok" if got == want else f"MISMATCH: want {want[:3]}+sha, got {got}"


# ---------------------------------------------------------------------------------------------- orchestration

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_python() -> str:
    """An interpreter with every candidate and moto: this one, else bench/work/s3-venv (made on first use)."""
    probe = f"import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in {MODULES!r}))"
    if subprocess.run([sys.executable, "-c", probe]).returncode == 0:
        return sys.executable
    venv = WORK / "s3-venv"
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", probe]).returncode != 0:
        print(f"installing {' '.join(PACKAGES)} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return str(python)


def child_env() -> dict[str, str]:
    """No proxies (loopback only), dummy credentials, no shared AWS config files."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and not k.startswith("AWS_")}
    env.update(CREDS, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    return env


@contextmanager
def moto_server(python: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m moto.server` on a free loopback port; stopped by its pid."""
    port = free_port()
    log = (WORK / "moto.log").open("wb")
    proc = subprocess.Popen([python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=child_env())
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_ready(endpoint, proc)
        yield endpoint, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_ready(endpoint: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto exited with {proc.returncode}; see {WORK / 'moto.log'}")
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"moto did not answer on {endpoint} within {timeout:.0f} s")


def reset_moto(python: str, endpoint: str) -> None:
    """Forget every bucket (moto keeps objects in memory), then create the empty bench bucket."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30).close()
    code = ("import botocore.session, sys; botocore.session.get_session().create_client('s3', endpoint_url=sys.argv[1],"
            f" region_name='us-east-1').create_bucket(Bucket={BUCKET!r})")
    subprocess.run([python, "-c", code, endpoint], check=True, env=child_env())


def run_client(python: str, lib: str, rnd: int, args: argparse.Namespace, endpoint: str,
               moto_pid: int) -> dict[str, Any]:
    cmd = [python, __file__, "--client", lib, "--round", str(rnd), "--endpoint", endpoint, "--moto-pid", str(moto_pid),
           "--objects", str(args.objects), "--concurrency", str(args.concurrency), "--pool", str(args.pool)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=child_env())
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{lib} client exited with {proc.returncode}")
    return dict(json.loads(out.decode().strip().splitlines()[-1]))


DEPS_CODE = r"""
import json, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

def closure(name):
    seen, todo = {}, [name]
    while todo:
        dist = metadata.distribution(todo.pop())
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = sum(f.size or 0 for f in dist.files or [])
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen

out = {}
for lib in sys.argv[1:]:
    sizes = closure(lib)
    out[lib] = {"version": metadata.version(lib), "dists": sorted(sizes), "mb": sum(sizes.values()) / 1e6}
print(json.dumps(out))
"""


def dependency_weight(python: str, libs: list[str]) -> dict[str, Any]:
    """Per library: its version, and the distributions it pulls in with their installed size."""
    out = subprocess.run([python, "-c", DEPS_CODE, *libs], check=True, capture_output=True, env=child_env())
    return dict(json.loads(out.stdout))


def median_rows(runs: list[dict[str, Any]], libs: list[str]) -> list[dict[str, Any]]:
    rows = []
    for lib in libs:
        mine = [r for r in runs if r["lib"] == lib]
        row: dict[str, Any] = {"lib": lib, "rounds": len(mine), "checks": sorted({r["check"] for r in mine})}
        for key in ("images_per_s", "client_cpu_ms_per_obj", "moto_cpu_ms_per_obj", "other_cpu_ms_per_obj", "setup_ms"):
            values = [r[key] for r in mine]
            row[key], row[key + "_range"] = statistics.median(values), (min(values), max(values))
        rows.append(row)
    return rows


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]], runs: list[dict[str, Any]],
                  deps: dict[str, Any], facts: dict[str, str]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "s3-libs.json").write_text(json.dumps({"facts": facts, "medians": rows, "runs": runs, "deps": deps},
                                                     indent=1) + "\n")
    lines = [f"# S3 client libraries: {args.objects:,} PUTs of 20–40 KB into moto, {args.concurrency} in flight", "",
             f"`python bench/s3_libs.py --objects {args.objects} --concurrency {args.concurrency} "
             f"--rounds {args.rounds}` — medians of {args.rounds} rounds (min–max in brackets).", "",
             "| library | version | images/s | client CPU ms/object | moto CPU ms/object | other tenants ms/object "
             "| client set-up ms | installed deps | check |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        dep = deps.get(row["lib"], {"version": "this tree", "dists": [], "mb": 0.0})
        lines.append(
            f"| {row['lib']} | {dep['version']} | {_cell(row, 'images_per_s', 0)} | "
            f"{_cell(row, 'client_cpu_ms_per_obj', 2)} | {_cell(row, 'moto_cpu_ms_per_obj', 2)} | "
            f"{_cell(row, 'other_cpu_ms_per_obj', 2)} | {_cell(row, 'setup_ms', 0)} | "
            f"{_weight(dep)} | {', '.join(row['checks'])} |")
    lines += ["", "Installed dependencies (the closure of each library, itself included):", ""]
    lines += [f"- {lib}: {', '.join(dep['dists'])}" for lib, dep in deps.items()]
    lines += ["", "Machine and run:", ""] + [f"- {key}: {value}" for key, value in facts.items()]
    lines += ["", "Client CPU is the client process's own CPU time (all threads) over the timed PUT phase; moto runs "
              "in another process and its CPU is read from /proc over the same window; 'other tenants' is the rest of "
              "the machine's busy CPU in that window (other work on this shared 2-core machine).", ""]
    path = RESULTS / "s3-libs.md"
    path.write_text("\n".join(lines))
    return path


def _weight(dep: dict[str, Any]) -> str:
    return f"{len(dep['dists'])} dists, {dep['mb']:.0f} MB" if dep["dists"] else "obstore + botocore (s3 extra)"


def _cell(row: dict[str, Any], key: str, digits: int) -> str:
    low, high = row[key + "_range"]
    return f"{row[key]:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def orchestrate(args: argparse.Namespace) -> None:
    libs = [lib.strip() for lib in args.libs.split(",") if lib.strip()]
    WORK.mkdir(parents=True, exist_ok=True)
    python = bench_python()
    if SINK in libs and subprocess.run([python, "-c", "import downloader.sinks.s3"], cwd=BENCH.parent).returncode:
        print(f"skipping {SINK}: the package is not importable by {python}", flush=True)
        libs.remove(SINK)
    deps = dependency_weight(python, [lib for lib in libs if lib != SINK])
    facts = {"cores": str(os.cpu_count()), "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
             "python": subprocess.run([python, "-V"], capture_output=True, text=True).stdout.strip(),
             "moto": dependency_weight(python, ["moto"])["moto"]["version"], "started": time.strftime("%Y-%m-%d %H:%M")}
    runs: list[dict[str, Any]] = []
    with moto_server(python) as (endpoint, proc):
        for rnd in range(args.rounds):
            order = libs[rnd % len(libs):] + libs[:rnd % len(libs)]
            for lib in order:
                reset_moto(python, endpoint)
                run = run_client(python, lib, rnd, args, endpoint, proc.pid)
                runs.append(run)
                print(f"round {rnd + 1} {lib:12s} {run['images_per_s']:7.0f} images/s  client "
                      f"{run['client_cpu_ms_per_obj']:.2f} ms/obj  moto {run['moto_cpu_ms_per_obj']:.2f} ms/obj  "
                      f"{run['check']}", flush=True)
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"wrote {write_results(args, median_rows(runs, libs), runs, deps, facts)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--pool", type=int, default=64, help="connection pool size of each client")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--libs", default=",".join((*LIBS, SINK)),
                        help=f"{', '.join(LIBS)}, and {SINK} (the project's sink; skipped when not importable)")
    parser.add_argument("--client", choices=[*LIBS, SINK], help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--moto-pid", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


def stop_on_signals() -> None:
    """SIGTERM ends the run through `finally` (moto and the running client are stopped by pid)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    args = parse_args()
    stop_on_signals()
    if args.client:
        print(json.dumps(asyncio.run(client_run(args))), flush=True)
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
