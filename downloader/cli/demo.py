"""`patent-images demo`: the real `run` code path against the simulator on a free loopback port."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from downloader.cli.runlog import err_line as _err
from downloader.cli.runner import run_command, settings_from

_SAMPLE = Path("sample_inputs") / "patents.csv"


def demo_input(args: argparse.Namespace, out: Path) -> Path:
    """The CSV the demo reads: --input, N generated numbers, or the sample list."""
    if args.input:
        return Path(args.input)
    for candidate in (Path.cwd() / _SAMPLE, Path(__file__).resolve().parents[2] / _SAMPLE):
        if args.patents is None and candidate.exists():
            return candidate
    from downloader.simulator import generate_numbers

    out.mkdir(parents=True, exist_ok=True)
    path = out / "demo_input.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["patent_number"])
        writer.writerows([n] for n in generate_numbers(args.patents or 1000, seed=1))
    return path


def run_demo(args: argparse.Namespace) -> int:
    """Start the simulator, run the pipeline on the demo input, say where the results are."""
    import threading

    from downloader.simulator import SimulatorConfig, simulator_in_thread
    from downloader.simulator.images import warm_pool

    # Drawing the simulator's figures takes about a second of CPU, mostly in Pillow without the GIL:
    # start it now, so it overlaps reading the inputs and the first API calls.
    threading.Thread(target=warm_pool, name="warm-drawings", daemon=True).start()
    out = Path(args.out)
    source = demo_input(args, out)
    config = SimulatorConfig()
    with simulator_in_thread(config) as sim:
        _err(f"demo: simulator of the PatSnap API and CDN at {sim.base_url}; input {source}")
        settings = settings_from(args, api_base=sim.base_url, api_key=config.api_key,
                                 client_id=config.client_id, client_secret=config.client_secret)
        code = run_command([str(source)], str(out), settings, args)
    _err(f"demo: manifest {out / 'manifest.csv'} (and .jsonl), images under {out / 'images'}, "
         f"summary {out / 'summary.json'}; try: patent-images status --out {out}")
    return code
