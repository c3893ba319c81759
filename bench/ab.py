"""Source trees against each other, interleaved: the tool's CPU per image, images/s, and when a helper came.

    python bench/ab.py [--images N] [--rounds K] [--rate R] [--latency MS] [--disk] [--trace] [--cprofile DIR]
                       NAME=TREE[::ARGS] ...

TREE is a folder holding a `downloader/` package (`.` for this checkout; an older commit:
`git archive COMMIT downloader | tar -x -C DIR`), ARGS extra `run` options (`--workers 1`). One nginx and one
simulator serve every run; each round runs every variant once, starting one variant later than the round
before. Per run it prints the process tree's CPU per downloaded image (user+sys of the run's children), the
downloaded images over the wall time, the workers the summary counted and when the first helper process
appeared; at the end, the medians. `--trace` also prints, every 0.1 s, the first process's event-loop thread
share running and waiting for a core (what core/busy.py reads) and the machine's idle cores. `--cprofile DIR`
runs each under cProfile (DIR/NAME-ROUND.prof: Python calls are exact, unlike the times).

For development: a quick A/B or bisect between commits where `bench/run.py --before` holds one older tree.
This VM's runs of one tree swing ±10%; compare medians of 5 or more rounds, never single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from corpus import build_corpus, write_csv
from install import compile_package
from measure import clean_env, machine_busy_s
from nginx import Nginx
from run import settle
from tool import Simulator

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
SAMPLE = 0.1  # seconds between trace readings


@dataclass
class Variant:
    name: str
    tree: Path
    args: list[str]
    cpu_ms: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    name, _, rest = text.partition("=")
    tree, _, args = rest.partition("::")
    return Variant(name, Path(tree or ".").resolve(), args.split())


def thread_shares(pid: int) -> tuple[float, float] | None:
    """(seconds run, seconds waiting for a core) of process `pid`'s main thread (its event loop's)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def has_child(pid: int) -> bool:
    """Whether `pid` has started a process (a helper). One file, not nginx.children_of's scan of /proc: it is
    read every SAMPLE seconds while the run is measured."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return bool(f.read().split())
    except OSError:
        return False


def one_run(v: Variant, csv_path: Path, out: Path, sim: Simulator, args: argparse.Namespace, number: int) -> str:
    shutil.rmtree(out, ignore_errors=True)
    settle()
    profile = ["-m", "cProfile", "-o", str(args.cprofile / f"{v.name}-{number}.prof")] if args.cprofile else []
    cmd = [sys.executable, *profile, "-m", "downloader", "run", str(csv_path), "--out", str(out),
           "--api-base", sim.base_url, "--token", "demo-token", "--api-key", "demo-key", "--rate", f"{args.rate:g}",
           "--api-concurrency", "4", "--download-concurrency", "64", "--no-progress", *v.args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    # From the tree's folder, so that `-m downloader` imports that tree (the cwd comes before any install).
    with (WORK / "ab.log").open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=v.tree, env=clean_env({"PATENT_IMAGES_LOOP": "auto"}),
                                stdout=subprocess.DEVNULL, stderr=log)
    trace, helper_at = [], None
    last = (started, thread_shares(proc.pid), machine_busy_s())
    while proc.poll() is None:
        time.sleep(0.005)  # the wall time is read to 5 ms; the trace every SAMPLE
        now = time.monotonic()
        if now - last[0] < SAMPLE:
            continue
        shares, busy = thread_shares(proc.pid), machine_busy_s()
        if shares and last[1]:
            span = now - last[0]
            trace.append(f"{now - started:.1f}s run {(shares[0] - last[1][0]) / span:.2f} wait "
                         f"{(shares[1] - last[1][1]) / span:.2f} idle "
                         f"{(os.cpu_count() or 1) - (busy - last[2]) / span:.2f}")
        if helper_at is None and has_child(proc.pid):
            helper_at = now - started
        last = (now, shares, busy)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    summary_file = out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    images = summary.get("by_status", {}).get("downloaded", 0)
    v.cpu_ms.append(1000 * cpu / max(1, images))
    v.rates.append(images / wall)
    helper = "none" if helper_at is None else f"{helper_at:.2f} s"
    line = (f"round {number} {v.name}: {v.cpu_ms[-1]:.3f} ms CPU/image, {v.rates[-1]:,.0f} images/s, exit "
            f"{proc.returncode}, workers {summary.get('workers')}, helper at {helper}")
    return line + ("".join(f"\n    {t}" for t in trace) if args.trace else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="NAME=TREE[::ARGS]")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="the tool's --rate (default 50, as the bench)")
    parser.add_argument("--latency", type=int, default=0, metavar="MS", help="added to every image request")
    parser.add_argument("--disk", action="store_true", help="write to bench/work/ab (default /dev/shm)")
    parser.add_argument("--trace", action="store_true", help="print the first process's loop shares every 0.1 s")
    parser.add_argument("--cprofile", type=Path, metavar="DIR", help="run each under cProfile, profiles into DIR")
    args = parser.parse_args()
    variants = [parse_variant(text) for text in args.variants]
    for v in variants:
        compile_package(v.tree)
    if args.cprofile:
        args.cprofile = args.cprofile.resolve()  # the runs start in their trees' folders
        args.cprofile.mkdir(parents=True, exist_ok=True)
    corpus = build_corpus(WORK, args.images)
    csv_path = write_csv(WORK / "lists" / "ab.csv", [img.number for img in corpus.images[:args.images]])
    out_root = WORK / "ab" if args.disk else Path("/dev/shm/patent-images-ab")
    server = Nginx(WORK / "nginx-ab", corpus.files, (args.latency,) if args.latency else ())
    server.start()
    sim = Simulator(server.base_url(args.latency), WORK / "simulator-ab.log")
    try:
        sim.start()
        for number in range(1, args.rounds + 1):
            turn = (number - 1) % len(variants)
            for v in variants[turn:] + variants[:turn]:
                print(one_run(v, csv_path, out_root / v.name, sim, args, number), flush=True)
    finally:
        sim.stop()
        server.stop()
        shutil.rmtree(out_root, ignore_errors=True)
    for v in variants:
        print(f"median {v.name}: {statistics.median(v.cpu_ms):.3f} ms CPU/image, "
              f"{statistics.median(v.rates):,.0f} images/s over {len(v.rates)} rounds")


if __name__ == "__main__":
    main()
