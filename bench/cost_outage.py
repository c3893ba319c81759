"""The four situations of issue 8, run as a user would (the CLI in a subprocess) against the simulator.

    python bench/cost_outage.py [short quota refused outage api502 cdn headers] [--tool-dir DIR] [--cap SECONDS]

`--tool-dir` runs the CLI from another source tree (e.g. an export of an older commit) while the
simulator stays this one, so the same scenario can be measured before and after a change. Each
scenario prints one line of figures: exit code, seconds, what the simulator counted, and the
stderr of the run (its line count, and its last line).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from downloader.simulator import SimulatorConfig, generate_numbers, simulator_in_thread  # noqa: E402


def _csv(folder: Path, n: int) -> Path:
    path = folder / "in.csv"
    path.write_text("patent_number\n" + "\n".join(generate_numbers(n, seed=7)) + "\n", encoding="utf-8")
    return path


def _cli(tool: Path, args: list[str], cap: float) -> tuple[int | None, float, str]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "downloader", *args], cwd=tool, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=cap)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        code = None
    return code, time.monotonic() - started, err


def _summary(out: Path) -> dict[str, Any]:
    path = out / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_args(base: str, source: Path, out: Path, *extra: str, oauth: bool = False) -> list[str]:
    creds = ["--client-id", "demo-client", "--client-secret", "demo-secret"] if oauth else [
        "--token", "demo-token", "--api-key", "demo-key"]
    return ["run", str(source), "--out", str(out), "--api-base", base, *creds, *extra]


def _report(name: str, code: int | None, seconds: float, err: str, **figures: Any) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    shown = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"[{name}] exit={'none (still running, stopped by the harness)' if code is None else code} "
          f"seconds={seconds:.1f} {shown} stderr_lines={len(lines)}")
    for line in lines[-3:]:
        print(f"    stderr: {line[:300]}")


def short(tool: Path, work: Path, cap: float) -> None:
    """2 s URLs, 50 ms per image, one download at a time, 300 patents."""
    with simulator_in_thread(SimulatorConfig(url_lifetime=2, cdn_latency=0.05)) as sim:
        out = work / "short"
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 300), out,
                                                  "--download-concurrency", "1"), cap)
        s, c = _summary(out), sim.counters
        found = sum(1 for k in c.asks if c.asks[k])  # every asked key
        _report("short", code, seconds, err, by_status=s.get("by_status"), api_calls=s.get("api_calls"),
                charged=s.get("charged"), recharged=s.get("recharged", "n/a"), sim_charged=c.charged,
                sim_asks=sum(c.asks.values()), distinct=found, images_served=c.images_served,
                expired_403=c.image_403_expired)


def quota(tool: Path, work: Path, cap: float) -> None:
    """67200002 to every call once 300 results were charged."""
    with simulator_in_thread(SimulatorConfig(quota_after=300)) as sim:
        out = work / "quota"
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 1000), out), cap)
        c = sim.counters
        after = None if c.first_throttle_at is None else c.requests - c.first_throttle_at
        _report("quota", code, seconds, err, requests_after_first_throttle=after, quota_answers=c.quota_refused,
                charged=c.charged)
        if code is not None:
            sim.config.quota_after = None
            code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 1000), out), cap)
            _report("quota rerun", code, seconds, err, summary=_summary(out).get("by_status"))


def refused(tool: Path, work: Path, cap: float) -> None:
    """A wrong --api-key answered with HTTP 401, with OAuth client credentials."""
    with simulator_in_thread(SimulatorConfig(apikey_refusal="401")) as sim:
        out = work / "refused"
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 1000), out, "--api-key",
                                                  "wrong-key", oauth=True), cap)
        c = sim.counters
        after = None if c.first_refusal_at is None else c.requests - c.first_refusal_at
        _report("refused", code, seconds, err, requests_after_first_refusal=after, api_requests=c.api_requests,
                token_requests=c.token_requests)
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 1000), out, oauth=True), cap)
        _report("refused rerun", code, seconds, err, by_status=_summary(out).get("by_status"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outage(tool: Path, work: Path, cap: float) -> None:
    """A wrong --api-base (nothing listening) on sample_inputs/patents.csv, then the plain rerun."""
    out = work / "outage"
    source = ROOT / "sample_inputs" / "patents.csv"
    base = f"http://127.0.0.1:{_closed_port()}"
    code, seconds, err = _cli(tool, _run_args(base, source, out), cap)
    s = _summary(out)
    _report("outage", code, seconds, err, by_status=s.get("by_status"), api_calls=s.get("api_calls"))
    with simulator_in_thread(SimulatorConfig()) as sim:
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), source, out), cap)
        s = _summary(out)
        _report("outage rerun", code, seconds, err, by_status=s.get("by_status"), api_calls=s.get("api_calls"))


def api502(tool: Path, work: Path, cap: float) -> None:
    """The API answers HTTP 502 to every call for 45 s; then the plain rerun."""
    with simulator_in_thread(SimulatorConfig(api_down="502", api_down_until=time.time() + 45)) as sim:
        out = work / "api502"
        source = _csv(work, 1000)
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), source, out), cap)
        s = _summary(out)
        _report("api502", code, seconds, err, by_status=s.get("by_status"), api_requests=sim.counters.api_requests)
        sim.config.api_down = None
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), source, out), cap)
        s = _summary(out)
        _report("api502 rerun", code, seconds, err, by_status=s.get("by_status"), api_calls=s.get("api_calls"))


def cdn(tool: Path, work: Path, cap: float) -> None:
    """The CDN answers HTTP 502 to every download; then the plain rerun once it is back."""
    with simulator_in_thread(SimulatorConfig(cdn_down="502")) as sim:
        out = work / "cdn"
        source = _csv(work, 1000)
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), source, out), cap)
        s = _summary(out)
        _report("cdn", code, seconds, err, by_status=s.get("by_status"), charged=sim.counters.charged,
                image_requests=sim.counters.image_requests)
        sim.config.cdn_down = None
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), source, out), cap)
        s = _summary(out)
        _report("cdn rerun", code, seconds, err, by_status=s.get("by_status"), api_calls=s.get("api_calls"),
                charged_again=s.get("charged"))


def headers(tool: Path, work: Path, cap: float) -> None:
    """How many API requests carry X-PatSnap-Version and Content-Type."""
    with simulator_in_thread(SimulatorConfig()) as sim:
        code, seconds, err = _cli(tool, _run_args(str(sim.base_url), _csv(work, 500), work / "headers"), cap)
        _report("headers", code, seconds, err, api_requests=sim.counters.api_requests,
                with_headers=sim.counters.api_with_headers)


SCENARIOS = {f.__name__: f for f in (short, quota, refused, outage, api502, cdn, headers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(SCENARIOS), choices=[*SCENARIOS, []])
    parser.add_argument("--tool-dir", type=Path, default=ROOT, help="source tree whose CLI is run")
    parser.add_argument("--cap", type=float, default=120.0, help="stop a run still going after this long")
    args = parser.parse_args()
    for name in args.names:
        with tempfile.TemporaryDirectory() as work:
            SCENARIOS[name](args.tool_dir.resolve(), Path(work), args.cap)


if __name__ == "__main__":
    main()
