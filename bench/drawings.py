"""`--drawings all` at the API's rate: N patents (default 20,000) at `--rate R` (default 20) against the
simulator, every drawing of each patent through P042 (one call per patent, pages of 100).

    python bench/drawings.py [--patents 20000] [--rate 20] [--out DIR] [options of run …]

The simulator runs in its own process (its CPU is not the tool's), the tool as `patent-images run`
in another, into a local folder. Reported: API calls per second sustained (the simulator's count,
sampled every 2 s, between 10% and 90% of the calls), as a ratio of --rate (1.0: the gate never
idled), drawings per second, the tool's peak RSS and CPU seconds (from the kernel, for the process and
its helpers), and the machine's load average at the end (the run shares the cores).
Writes bench/results/drawings.md and drawings.json. Stops what it starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import RESULTS, ROOT, counters, start_simulator, stop  # noqa: E402

from downloader.simulator import generate_numbers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patents", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None, help="the job folder (default: a temporary one)")
    args, tool_options = parser.parse_known_args()  # the rest goes to `run` (--workers, --api-concurrency …)
    with tempfile.TemporaryDirectory(prefix="bench-drawings-") as tmp:
        out = args.out or Path(tmp) / "out"
        result = measure(args.patents, args.rate, out, Path(tmp), tool_options)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drawings.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "drawings.md").write_text(table(result))
    print(table(result))  # noqa: T201


def measure(patents: int, rate: float, out: Path, tmp: Path, extra: list[str]) -> dict[str, object]:
    source = tmp / "in.csv"
    with source.open("w", newline="") as f:
        csv.writer(f).writerows([["patent_number"], *([n] for n in generate_numbers(patents, seed=11))])
    sim, url = start_simulator()
    try:
        started = time.monotonic()
        with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
            tool = subprocess.Popen([sys.executable, "-m", "downloader", "run", str(source), "--out", str(out),
                                     "--drawings", "all", "--rate", str(rate), "--api-base", url, "--token",
                                     "demo-token", "--api-key", "demo-key", "--no-progress", "--json", *extra],
                                    stdout=stdout, stderr=stderr, text=True, cwd=ROOT)
            samples = watch(tool, url)
            wall = time.monotonic() - started
            stdout.seek(0)
            stderr.seek(0)
            output, errors = stdout.read(), stderr.read()
        # The tool and its helpers (reaped); the simulator, not reaped yet, is not counted.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    finally:
        stop(sim)
    summary = json.loads(output) if output.strip() else {}
    seconds = float(summary.get("seconds") or wall)
    calls = int(summary.get("api_calls", 0))
    sustained = steady_rate(samples)
    return {"patents": patents, "rate": rate, "options": extra, "exit_code": tool.returncode,
            "seconds": round(seconds, 1), "api_calls": calls, "calls_per_second": round(calls / seconds, 2),
            "sustained_calls_per_second": round(sustained, 2), "ratio_of_rate": round(sustained / rate, 3),
            "drawings": summary.get("images"),
            "drawings_per_second": round(int(summary.get("images", 0)) / seconds, 1),
            "charged": summary.get("charged"), "by_status": summary.get("by_status"),
            "peak_rss_mb": round(peak, 1), "tool_cpu_seconds": round(cpu, 1),
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "stderr_tail": errors.strip().splitlines()[-3:]}


def watch(tool: subprocess.Popen[str], sim_url: str, every: float = 2.0) -> list[tuple[float, int]]:
    """(seconds, API requests the simulator answered so far), sampled until the tool exits."""
    samples = []
    while tool.poll() is None:
        try:
            samples.append((time.monotonic(), counters(sim_url)["api_requests"]))
        except OSError:
            pass
        time.sleep(every)
    return samples


def steady_rate(samples: list[tuple[float, int]]) -> float:
    """API calls per second between the samples at 10% and 90% of the calls: the rate the run sustained,
    without its start (reading the inputs, the first claims) and its end (the last downloads, the manifest)."""
    if len(samples) < 3 or samples[-1][1] == 0:
        return 0.0
    total = samples[-1][1]
    first = next(s for s in samples if s[1] >= 0.1 * total)
    last = next(s for s in samples if s[1] >= 0.9 * total)
    return (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0


def table(r: dict[str, object]) -> str:
    return ("| patents | --rate | seconds | API calls | calls/s sustained | ratio of --rate | drawings | drawings/s | "
            "peak RSS MB |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {r['patents']} | {r['rate']} | {r['seconds']} | {r['api_calls']} | {r['sustained_calls_per_second']} | "
            f"{r['ratio_of_rate']} | {r['drawings']} | {r['drawings_per_second']} | {r['peak_rss_mb']} |\n")


if __name__ == "__main__":
    main()
