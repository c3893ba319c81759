"""`--drawings all` at the API's rate: N patents (default 20,000) at `--rate R` (default 20) against the
simulator, every drawing of each patent through P042 (one call per patent, pages of 100).

    python bench/drawings.py [--patents 20000] [--rate 20] [--out DIR]

The simulator runs in its own process (its CPU is not the tool's), the tool as `patent-images run`
in another, into a local folder. Reported: API calls per second sustained, as a ratio of --rate (1.0:
the gate never idled), drawings per second, and the tool's peak RSS (from the kernel, for the
process and its helpers). Writes bench/results/drawings.md and drawings.json. Stops what it starts.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import RESULTS, ROOT, start_simulator, stop  # noqa: E402

from downloader.simulator import generate_numbers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patents", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=None, help="the job folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-drawings-") as tmp:
        out = args.out or Path(tmp) / "out"
        result = measure(args.patents, args.rate, out, Path(tmp))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "drawings.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "drawings.md").write_text(table(result))
    print(table(result))  # noqa: T201


def measure(patents: int, rate: float, out: Path, tmp: Path) -> dict[str, object]:
    source = tmp / "in.csv"
    with source.open("w", newline="") as f:
        csv.writer(f).writerows([["patent_number"], *([n] for n in generate_numbers(patents, seed=11))])
    sim, url = start_simulator()
    try:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "downloader", "run", str(source), "--out", str(out),
                               "--drawings", "all", "--rate", str(rate), "--api-base", url, "--token", "demo-token",
                               "--api-key", "demo-key", "--no-progress", "--json"],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        wall = time.monotonic() - started
        # The tool and its helpers (reaped); the simulator, not reaped yet, is not counted.
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        stop(sim)
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    seconds = float(summary.get("seconds") or wall)
    calls = int(summary.get("api_calls", 0))
    return {"patents": patents, "rate": rate, "exit_code": done.returncode, "seconds": round(seconds, 1),
            "api_calls": calls, "calls_per_second": round(calls / seconds, 2),
            "ratio_of_rate": round(calls / seconds / rate, 3), "drawings": summary.get("images"),
            "drawings_per_second": round(int(summary.get("images", 0)) / seconds, 1),
            "charged": summary.get("charged"), "by_status": summary.get("by_status"),
            "peak_rss_mb": round(peak, 1),
            "stderr_tail": done.stderr.strip().splitlines()[-3:]}


def table(r: dict[str, object]) -> str:
    return ("| patents | --rate | seconds | API calls | calls/s | ratio of --rate | drawings | drawings/s | "
            "peak RSS MB |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {r['patents']} | {r['rate']} | {r['seconds']} | {r['api_calls']} | {r['calls_per_second']} | "
            f"{r['ratio_of_rate']} | {r['drawings']} | {r['drawings_per_second']} | {r['peak_rss_mb']} |\n")


if __name__ == "__main__":
    main()
