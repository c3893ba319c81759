"""The benchmark: patent-images against its peers, on one machine, against a local nginx.

    python bench/run.py [--images N] [--modes disk,tmpfs,...] [--quick] [--full]

See bench/README.md for what each mode measures. Results go to bench/results/.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import re
import shutil
import signal
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import apibound
import ratios
from corpus import Corpus, build_corpus, mixed_list, no_image_numbers, write_csv
from install import compile_package, ensure_debian_tools, ensure_img2dataset
from latency import Latency, choose_latency
from measure import file_create_ms, machine_busy_s, process_cpu_s, run_measured, verify_files
from modes import API_RATE, IMAGE_MODES, MODES, SCALE_RATE, Mode
from nginx import Nginx
from peers import Job, Peer, peers
from report import Row, image_table, machine_facts, package_revision, write_results
from spy import ensure_py_spy, profile_markdown, spy_prefix, summarise
from tool import DEFAULT, Simulator, Variant, run_tool, tool_command, variants, verify_manifest

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
RESULTS = BENCH / "results"
SHM = Path("/dev/shm/patent-images-bench")
SPY_RATE = 200  # samples/s
PROFILED = Variant(workers=1, loop="asyncio")  # one process; asyncio's loop shows as Python frames
ALL_MODES = (*IMAGE_MODES, "tmpfs200", "meta", "api", "issue19", "scale", "profile")
DEFAULT_MODES = (*IMAGE_MODES, "meta")
QUICK_MODES = ("disk", "tmpfs", "lat30", "meta")


@dataclass
class Bench:
    """What every mode shares."""

    args: argparse.Namespace
    corpus: Corpus
    nginx: Nginx
    latency: Latency
    peers: list[Peer]
    uvloop: bool = False
    rows: list[Row] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


# --- helpers ---------------------------------------------------------------------------------------


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def out_root(mode: Mode) -> Path:
    return SHM if mode.tmpfs else WORK / "out"


def log_path(name: str) -> Path:
    (WORK / "logs").mkdir(parents=True, exist_ok=True)
    return WORK / "logs" / f"{slug(name)}.log"


def settle() -> None:
    """Start each run from a quiet machine: dirty pages of earlier runs written out."""
    os.sync()
    time.sleep(0.5)


def timeout_for(images: int, mode: Mode) -> float:
    per_image = 0.02 + (mode.latency_ms / 1000)
    return 120 + images * per_image


@contextmanager
def simulator(cdn_base: str, name: str) -> Iterator[Simulator]:
    sim = Simulator(cdn_base, log_path(f"simulator-{name}"))
    try:
        sim.start()
        yield sim
    finally:
        sim.stop()


# --- image modes -------------------------------------------------------------------------------------


def cpu_snapshot(b: Bench) -> tuple[float, float, int]:
    """(nginx worker CPU s, whole machine busy CPU s, nginx error lines) now."""
    return process_cpu_s(b.nginx.worker_pids()), machine_busy_s(), b.nginx.errors()


def cpu_since(b: Bench, before: tuple[float, float, int], *own: float) -> tuple[float, float]:
    """(nginx CPU s, CPU s of everything else: not the client, nginx or simulator) since `before`."""
    nginx, machine, errors = cpu_snapshot(b)
    if errors > before[2]:
        print(f"  WARNING: nginx logged {errors - before[2]} errors during this run: {b.nginx.work / 'error.log'}")
    nginx_s = nginx - before[0]
    return nginx_s, max(0.0, machine - before[1] - nginx_s - sum(own))


def median_row(rows: list[Row]) -> Row:
    """One row for several rounds of a client: each measured column is the median of the rounds (images/s is
    verified files over the median wall time); a failed round's exit code shows; every round kept in extra."""
    if len(rows) == 1:
        return rows[0]
    by_wall = sorted(rows, key=lambda r: r.wall_s)
    middle = by_wall[(len(rows) - 1) // 2]

    def med(name: str) -> float:
        return statistics.median(getattr(r, name) for r in rows)

    verified = int(statistics.median_low(r.verified for r in rows))
    size = next(r.bytes for r in sorted(rows, key=lambda r: r.verified != verified))
    failed = next((r.exit_code for r in rows if r.exit_code != 0), 0)
    rounds = [{"wall_s": round(r.wall_s, 2), "cpu_s": round(r.cpu_s, 2), "verified": r.verified,
               "images_per_s": round(r.images_per_s, 1), "cpu_ms_per_image": round(r.cpu_ms_per_image, 3),
               "rss_mb": round(r.rss_mb, 1), "other_cpu_s": round(r.other_cpu_s, 2), "exit_code": r.exit_code}
              for r in rows]
    return replace(middle, verified=verified, bytes=size, wall_s=med("wall_s"), cpu_s=med("cpu_s"),
                   rss_mb=med("rss_mb"), exit_code=failed, nginx_cpu_s=med("nginx_cpu_s"),
                   other_cpu_s=med("other_cpu_s"), extra={**middle.extra, "rounds": rounds})


def run_peer(b: Bench, mode: Mode, peer: Peer, base: str) -> Row:
    budget = 10.0 if b.args.quick else 40.0
    images = peer.share(b.corpus.images, mode.latency_ms, budget)
    out = fresh_dir(out_root(mode) / f"{mode.name}-{slug(peer.name)}")
    job = Job(base, images, out, fresh_dir(WORK / "lists"), mode.concurrency)
    cmd = peer.command(job)
    settle()
    before = cpu_snapshot(b)
    measured = run_measured(cmd, log_path(f"{mode.name}-{peer.name}"), timeout=timeout_for(len(images), mode))
    nginx_cpu, other_cpu = cpu_since(b, before, measured.cpu_s)
    verified, size = verify_files((path, img.sha256, img.size) for path, img in peer.outputs(job))
    shutil.rmtree(out, ignore_errors=True)
    note = peer.note + (f"; first {len(images)} only ({budget:.0f} s budget)" if len(images) < len(b.corpus.images)
                        else "")
    return Row(mode.name, peer.name, len(images), verified, size, measured.wall_s, measured.cpu_s, measured.rss_mb,
               measured.exit_code, nginx_cpu, other_cpu, note.strip("; "))


def run_tool_images(b: Bench, mode: Mode, base: str, variant: Variant = DEFAULT, profile: Path | None = None) -> Row:
    images = b.corpus.images
    csv_path = write_csv(WORK / "lists" / "tool.csv", [img.number for img in images])
    out = fresh_dir(out_root(mode) / f"{mode.name}-tool")
    # --download-concurrency is per worker: the mode's in-flight total is split across the workers, so that
    # every client of a mode has the same downloads in flight (the latency bounds assume it).
    # The default starts one process and adds helpers only while it is CPU-bound (when in-flight downloads no
    # longer decide the speed): its first process gets the whole count.
    per_worker = max(1, mode.concurrency // variant.processes)
    with simulator(base, mode.name) as sim:
        cmd = tool_command(csv_path, out, sim.base_url, mode.api_rate, 4, per_worker, variant)
        if profile is not None:
            cmd = spy_prefix(profile, SPY_RATE) + cmd
        settle()
        before = cpu_snapshot(b)
        run = run_tool(cmd, out, log_path(f"{mode.name}-{variant.name}"), timeout_for(len(images), mode) + 120, sim,
                       variant)
        nginx_cpu, other_cpu = cpu_since(b, before, run.measured.cpu_s, run.simulator_cpu_s)
    verified, size, statuses = verify_manifest(out, b.corpus)
    shutil.rmtree(out, ignore_errors=True)
    m, s = run.measured, run.summary
    api_floor = s.get("api_calls", 0) / mode.api_rate
    extra = {"summary": s, "statuses": statuses, "simulator_cpu_s": round(run.simulator_cpu_s, 2),
             "simulator_counters": run.simulator, "api_floor_s": api_floor}
    note = (f"{s.get('workers', '?')} worker(s) × {per_worker} in flight; run {s.get('seconds', 0):.1f} s in summary; "
            f"{s.get('api_calls', '?')} API calls (≥ {api_floor:.1f} s at {mode.api_rate:.0f}/s); "
            f"simulator CPU {run.simulator_cpu_s:.1f} s")
    return Row(mode.name, variant.name, len(images), verified, size, m.wall_s, m.cpu_s, m.rss_mb, m.exit_code,
               nginx_cpu, other_cpu, note, extra)


def run_image_mode(b: Bench, mode: Mode) -> None:
    """Every client once per round, `--repeat` rounds (a disturbance hits one round of many clients, not
    every round of one), each round in another order; each client's row holds the medians of its rounds."""
    with b.latency.cdn(b.nginx, mode.latency_ms) as base:
        clients: list[tuple[str, Callable[[], Row]]] = [
            *((v.name, partial(run_tool_images, b, mode, base, v)) for v in variants(mode.name == "disk", b.uvloop,
                                                                                  b.args.before)),
            *((p.name, partial(run_peer, b, mode, p, base)) for p in b.peers)]
        clients = [(name, run) for name, run in clients if re.search(b.args.clients, name)]
        rounds: dict[str, list[Row]] = {name: [] for name, _ in clients}
        for number in range(1, b.args.repeat + 1):
            # Each round starts one client later: this VM's disk speed swung 2× between runs a minute apart, and a
            # fixed order would give a client the same slot (after the same neighbour) every round.
            turn = (number - 1) % len(clients)
            for name, run in clients[turn:] + clients[:turn]:
                row = run()
                rounds[name].append(row)
                failed = "" if row.exit_code == 0 else f", exit {row.exit_code}"
                print(f"  {mode.name} round {number}: {name}: {row.images_per_s:,.0f} images/s, "
                      f"{row.cpu_ms_per_image:.2f} ms CPU/image{failed}", flush=True)
    rows = [median_row(rounds[name]) for name, _ in clients]
    b.rows += rows
    bound = "" if not mode.latency_ms else f", bound {mode.concurrency}/{mode.latency_ms / 1000:g} s = " \
                                           f"{mode.bound:,.0f} images/s"
    b.sections[f"mode {mode.name}"] = (
        f"{_mode_title(mode)}{bound}\n\n{image_table(rows)}")


def _mode_title(mode: Mode) -> str:
    where = "/dev/shm (tmpfs)" if mode.tmpfs else "disk (bench/work/out)"
    lat = f"{mode.latency_ms} ms added per request" if mode.latency_ms else "no added latency"
    return (f"Files written to {where}; {lat}; {mode.concurrency} downloads in flight; "
            f"the tool at --rate {mode.api_rate:g}")


# --- metadata mode -----------------------------------------------------------------------------------


def run_meta(b: Bench) -> None:
    numbers = no_image_numbers(WORK, b.args.images)
    csv_path = write_csv(WORK / "lists" / "meta.csv", numbers)
    out = fresh_dir(WORK / "out" / "meta")
    with simulator(b.nginx.base_url(), "meta") as sim:
        cmd = tool_command(csv_path, out, sim.base_url, API_RATE, 4, 64)
        settle()
        run = run_tool(cmd, out, log_path("meta-tool"), 120 + len(numbers) / 100, sim)
    shutil.rmtree(out, ignore_errors=True)
    s, m = run.summary, run.measured
    seconds = s.get("seconds") or m.wall_s
    bound = API_RATE * 100
    row = {"patents": len(numbers), "api_calls": s.get("api_calls"), "by_status": s.get("by_status"),
           "wall_s": round(m.wall_s, 2), "run_s": seconds, "patents_per_s": round(len(numbers) / seconds, 1),
           "patents_per_s_wall": round(len(numbers) / m.wall_s, 1), "bound": bound, "cpu_s": m.cpu_s,
           "rss_mb": round(m.rss_mb, 1), "exit_code": m.exit_code, "simulator_cpu_s": round(run.simulator_cpu_s, 2)}
    b.data["meta"] = row
    b.sections["mode meta"] = (
        f"{len(numbers):,} patents, none with an image; --rate {API_RATE:g} --api-concurrency 4; instant simulator.\n\n"
        "| patents | API calls | wall s | run s (summary) | patents/s (run) | patents/s (wall) | bound rate×100 "
        "| share of bound | CPU s | peak RSS MB | exit |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {len(numbers):,} | {row['api_calls']} | {m.wall_s:.2f} | {seconds:.2f} | {row['patents_per_s']:,.0f} "
        f"| {row['patents_per_s_wall']:,.0f} | {bound:,.0f} | {row['patents_per_s'] / bound:.0%} | {m.cpu_s:.2f} "
        f"| {m.rss_mb:.0f} | {m.exit_code} |\n\nby status: {s.get('by_status')}\n")
    print(f"  meta: {row['patents_per_s']:,.0f} patents/s (bound {bound:,.0f})", flush=True)


# --- scale mode ----------------------------------------------------------------------------------------


def run_scale(b: Bench) -> None:
    sizes = sorted(b.args.scale_sizes)
    no_image = no_image_numbers(WORK, max(sizes))
    results: list[dict[str, Any]] = []
    with simulator(b.nginx.base_url(), "scale") as sim:
        for size in sizes:
            numbers, with_images = mixed_list(b.corpus, no_image, size, 0.01)
            csv_path = write_csv(WORK / "lists" / f"scale-{size}.csv", numbers)
            del numbers
            out = fresh_dir(WORK / "out" / f"scale-{size}")
            results.append(_scale_run(b, sim, csv_path, out, size, with_images, "first run"))
            if size == max(sizes):
                results.append(_scale_run(b, sim, csv_path, out, size, with_images, "rerun of the finished list"))
            shutil.rmtree(out, ignore_errors=True)
    b.data["scale"] = results
    lines = ["| run | patents | with image | images ok | API calls | workers | wall s | run s (summary) | CPU s "
             "| peak RSS MB (per process) | nothing to do | manifest rewritten | by status | exit |\n"
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"]
    for r in results:
        lines.append(f"| {r['label']} | {r['patents']:,} | {r['with_images']:,} | {r['verified']:,} "
                     f"| {r['api_calls']} | {r['workers']} | {r['wall_s']:.1f} | {r['run_s']} | {r['cpu_s']:.1f} "
                     f"| {r['rss_mb']:.0f} | {r['nothing_to_do']} | {r['manifest_rewritten']} | {r['by_status']} "
                     f"| {r['exit_code']} |\n")
    b.sections["mode scale"] = (
        f"Patents mostly without an image (about 1% with one, served by nginx); --rate {SCALE_RATE:g} "
        "--api-concurrency 8 --download-concurrency 64; instant simulator; files on disk.\n\n" + "".join(lines))


def _scale_run(b: Bench, sim: Simulator, csv_path: Path, out: Path, size: int, with_images: int,
               label: str) -> dict[str, Any]:
    print(f"  scale: {size:,} patents, {label} ...", flush=True)
    settle()
    cmd = tool_command(csv_path, out, sim.base_url, SCALE_RATE, 8, 64)
    manifest = out / "manifest.csv"
    before = manifest.stat().st_mtime_ns if manifest.exists() else None
    run = run_tool(cmd, out, log_path(f"scale-{size}-{label}"), 3600, sim)
    verified, _, statuses = verify_manifest(out, b.corpus)
    s, m = run.summary, run.measured
    result = {"label": f"{size:,}: {label}", "patents": size, "with_images": with_images, "verified": verified,
              "api_calls": s.get("api_calls"), "wall_s": round(m.wall_s, 2), "run_s": s.get("seconds"),
              "cpu_s": round(m.cpu_s, 2), "rss_mb": round(m.rss_mb, 1), "by_status": statuses,
              "exit_code": m.exit_code, "summary_peak_rss_mb": s.get("peak_rss_mb"), "workers": s.get("workers"),
              "nothing_to_do": s.get("nothing_to_do"),
              "manifest_rewritten": before is None or (manifest.exists() and manifest.stat().st_mtime_ns != before),
              "simulator_cpu_s": round(run.simulator_cpu_s, 2)}
    print(f"    {m.wall_s:.1f} s, peak RSS {m.rss_mb:.0f} MB, {s.get('api_calls')} API calls", flush=True)
    return result


# --- profile mode --------------------------------------------------------------------------------------


def run_profile(b: Bench) -> None:
    if ensure_py_spy() is None:
        b.sections["profile"] = "py-spy did not install; no profile.\n"
        return
    raw = WORK / "profile-tmpfs.txt"
    print("  profile: the tool in tmpfs mode under py-spy ...", flush=True)
    mode = MODES["tmpfs"]
    with b.latency.cdn(b.nginx, 0) as base:
        row = run_tool_images(b, mode, base, PROFILED, profile=raw)
    if not raw.exists():
        b.sections["profile"] = f"py-spy wrote no profile (exit {row.exit_code}); see bench/work/logs.\n"
        return
    profile = summarise(raw)
    b.data["profile"] = asdict(profile)
    b.sections["profile"] = (
        f"`py-spy record --rate {SPY_RATE} --nolineno` of `{PROFILED.name}` in tmpfs mode ({row.verified:,} images, "
        f"{row.wall_s:.1f} s under the profiler, {row.cpu_ms_per_image:.2f} ms CPU per image).\n\n"
        f"{profile_markdown(profile)}")


# --- main ------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="patent-images against its peers on a local nginx")
    parser.add_argument("--images", type=int, help="corpus size (default 20,000; 2,000 with --quick)")
    parser.add_argument("--modes", help=f"comma list among {','.join(ALL_MODES)} (default {','.join(DEFAULT_MODES)})")
    parser.add_argument("--quick", action="store_true", help="2,000 images, modes disk,tmpfs,lat30,meta: ~3 min")
    parser.add_argument("--full", action="store_true", help="the default modes plus scale and profile")
    parser.add_argument("--scale-sizes", default="100000,1000000", help="patent counts of the scale mode")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per image mode (every client once per round); rows show the medians")
    parser.add_argument("--no-img2dataset", action="store_true", help="skip the img2dataset peer")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="issue19 and image modes: an export of an older tree to measure beside this one "
                             "(image modes: its default, two processes from the start)")
    parser.add_argument("--clients", default="", metavar="REGEX",
                        help="image modes: only the clients whose name matches (a custom run)")
    args = parser.parse_args()
    args.custom = bool(args.images or args.modes or args.clients)  # such runs do not replace results.md
    args.images = args.images or (2_000 if args.quick else 20_000)
    default = QUICK_MODES if args.quick else DEFAULT_MODES + (("scale", "profile") if args.full else ())
    args.modes = tuple(args.modes.split(",")) if args.modes else default
    unknown = set(args.modes) - set(ALL_MODES)
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)}")
    args.scale_sizes = [int(x) for x in args.scale_sizes.split(",")]
    return args


def run_modes(b: Bench) -> None:
    for name in b.args.modes:
        print(f"mode {name}", flush=True)
        if name in MODES:
            run_image_mode(b, MODES[name])
        elif name == "meta":
            run_meta(b)
        elif name == "api":
            apibound.run_api(b)
        elif name == "issue19":
            apibound.run_issue19(b, b.args.before)
        elif name == "scale":
            run_scale(b)
        elif name == "profile":
            run_profile(b)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (even if ignored by a background shell) end the run through `finally`."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


@contextmanager
def only_run() -> Iterator[None]:
    """One benchmark at a time on this machine: a second run waits (two would share the cores and bench/work)."""
    WORK.mkdir(parents=True, exist_ok=True)
    with (WORK / "run.lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            print(f"another bench/run.py is running (pid {lock.read().strip() or '?'}); waiting for it ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def main() -> None:
    stop_on_signals()
    args = parse_args()
    with only_run():
        run_bench(args)


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_bench(args: argparse.Namespace) -> None:
    started = time.time()
    ensure_debian_tools()
    for tree in (apibound.ROOT, args.before):
        if tree is not None:
            compile_package(tree)
    img2dataset, skipped = (None, "--no-img2dataset") if args.no_img2dataset else ensure_img2dataset(WORK)
    corpus = build_corpus(WORK, args.images)
    latency = choose_latency()
    delays = tuple(MODES[m].latency_ms for m in args.modes if m in MODES and MODES[m].latency_ms)
    server = Nginx(WORK / "nginx", corpus.files, delays)
    uvloop = importlib.util.find_spec("uvloop") is not None
    bench = Bench(args, corpus, server, latency, peers(img2dataset, uvloop), uvloop)
    print(f"{len(corpus.images):,} images ({corpus.total_bytes / 1e6:,.0f} MB); latency: {latency.method}", flush=True)
    facts = machine_facts(img2dataset)
    facts["package commit at start"] = package_revision()
    facts["load average at start (1, 5, 15 min)"] = _load()
    try:
        facts["write a 30 KB file, disk (ms)"] = f"{file_create_ms(WORK / 'out'):.2f}"
        facts["write a 30 KB file, tmpfs (ms)"] = f"{file_create_ms(SHM):.2f}"
        server.start()
        run_modes(bench)
    finally:
        server.stop()
        shutil.rmtree(SHM, ignore_errors=True)
    facts["package commit at end"] = package_revision()
    facts["load average at end (1, 5, 15 min)"] = _load()
    if facts["package commit at end"] != facts["package commit at start"]:
        print("WARNING: the package changed during the run; modes measured different code")
    text, data = ratios.render(bench, facts, skipped, time.time() - started)
    stem = "quick" if args.quick else "custom" if args.custom else "results"
    for path in write_results(RESULTS, stem, text, data, dated=stem == "results"):
        print(f"wrote {path}")
    print()
    print(ratios.ratio_text(bench))


if __name__ == "__main__":
    main()
