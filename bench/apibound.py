"""The `api` mode: runs bound by the API rate alone, counted where the server counts.

For each R in RATES, with 1 worker and with 3: metadata only (patents without an image, so downloads
never limit), about a minute of calls at `--rate R`: `--batch-size 10` for P021 (abstract images), and
`--drawings all` (P042, one call per patent) when the tool has it. The simulator runs in its own
process under the real-time scheduler where allowed (its thread then stamps most requests within a
millisecond of arrival, as a server on its own machine would; on this shared machine a normal thread
wakes up to tens of milliseconds late and squeezes the count). From the simulator's stamps: calls,
the sustained rate from the first to the last call ((calls − 1) ÷ span), its share of R, and the
busiest one-second window. Even under SCHED_FIFO a stamp now and then comes 10+ ms late on this
2-core machine, so where tcpdump may run the busiest second is also counted on the wire (`wire.py`)
and the target is judged there.

`issue19` re-measures issue 19's table (6,000 patents at --rate 5, 20,000 at --rate 20, --workers 1,
the default batch of 100, metadata only) with this tree's tool and, when `--before DIR` names an
export of an older tree, with that one too, alternately, against the same simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corpus import no_image_numbers, write_csv
from measure import clean_env, run_measured
from wire import captured

from downloader.simulator.config import busiest_second

if TYPE_CHECKING:
    from run import Bench

ROOT = Path(__file__).resolve().parents[1]  # this tree: `python -m downloader` run here imports it
RATES = (5.0, 20.0, 50.0)
WORKERS = (1, 3)
SECONDS = 60.0  # of calls at the server per run
BATCH = 10  # keys per P021 call: the tool's CPU stays far below what the rate asks
SHARE_GOAL = 0.97


@dataclass
class ApiRun:
    """One API-bound run as the simulator counted it."""

    kind: str  # "P021" or "P042 (--drawings all)"
    rate: float
    workers: int
    patents: int
    calls: int
    span_s: float
    busiest: int
    exit_code: int
    wall_s: float
    cpu_s: float
    tool: str = "this tree"
    wire_calls: int | None = None  # API requests the packet capture saw (None: no capture here)
    wire_busiest: int | None = None  # the busiest second by the capture's stamps
    stamp_late_ms: float | None = None  # the most a simulator stamp came after its packet

    @property
    def sustained(self) -> float:
        return (self.calls - 1) / self.span_s if self.span_s > 0 else 0.0

    @property
    def share(self) -> float:
        return self.sustained / self.rate

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "sustained": round(self.sustained, 3), "share": round(self.share, 4)}


def prompt(pid: int) -> bool:
    """The simulator's main thread (its event loop) under SCHED_FIFO, where allowed."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):
        return False
    return True


def _post(url: str) -> None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, data=b"", method="POST"), timeout=30):
        pass


def has_drawings(python: str, cwd: Path | None = None) -> bool:
    """Whether the tool (this tree, or the one at `cwd`) has `--drawings`."""
    done = subprocess.run([python, "-m", "downloader", "run", "--help"], capture_output=True, text=True,
                          cwd=cwd, env=clean_env(), check=False)
    return "--drawings" in done.stdout


def one_run(b: Bench, sim: Any, kind: str, rate: float, workers: int, patents: int, *, batch: int | None,
            drawings: bool, tool_dir: Path | None = None, label: str = "this tree") -> ApiRun:
    from run import WORK, fresh_dir, log_path, settle  # the orchestrator's helpers (run.py imports this module)

    numbers = no_image_numbers(WORK, patents)
    csv_path = write_csv(WORK / "lists" / f"api-{patents}.csv", numbers)
    out = fresh_dir(WORK / "out" / "api")
    cmd = [sys.executable, "-m", "downloader", "run", str(csv_path), "--out", str(out), "--api-base", sim.base_url,
           "--token", "demo-token", "--api-key", "demo-key", "--rate", f"{rate:g}", "--workers", str(workers),
           "--api-concurrency", "4", "--no-progress"]
    cmd += ["--batch-size", str(batch)] if batch else []
    cmd += ["--drawings", "all"] if drawings else []
    settle()
    _post(f"{sim.base_url}/_sim/reset-counters")
    name = f"api-{label.split()[0]}-{'p042' if drawings else 'p021'}-r{rate:g}-w{workers}"
    port = int(sim.base_url.rsplit(":", 1)[1])
    with captured(port, log_path(f"{name}-wire")) as wire:
        measured = run_measured(cmd, log_path(name), timeout=120 + patents / (rate * (batch or 1)) * 2,
                                env=clean_env(), cwd=tool_dir or ROOT)
    counted = sim.counters()
    first, last = counted.get("api_first_at"), counted.get("api_last_at")
    run = ApiRun(kind, rate, workers, patents, int(counted.get("api_requests", 0)),
                 (last - first) if first is not None and last is not None else 0.0,
                 int(counted.get("busiest_second", 0)), measured.exit_code, round(measured.wall_s, 1),
                 round(measured.cpu_s, 1), label)
    if wire.ok:
        run.wire_calls, run.wire_busiest = len(wire.times), busiest_second(wire.times)
        stamps = counted.get("api_times")
        if stamps and len(stamps) == len(wire.times):  # the n-th stamp is the n-th packet's
            late = max(s - w for s, w in zip(sorted(stamps), sorted(wire.times), strict=True))
            run.stamp_late_ms = round(late * 1e3, 1)
    on_wire = "" if run.wire_busiest is None else (
        f" (on the wire {run.wire_busiest}; stamps up to {run.stamp_late_ms} ms late)")
    print(f"  {label}, {kind}, --rate {rate:g}, --workers {workers}: {run.calls} calls in {run.span_s:.1f} s = "
          f"{run.sustained:.3f}/s = {run.share:.3f} of R, busiest second {run.busiest}{on_wire}, "
          f"exit {run.exit_code}, load {os.getloadavg()[0]:.1f}", flush=True)
    return run


def run_api(b: Bench) -> None:
    """The api mode: the table of sustained shares and busiest seconds."""
    from run import simulator  # noqa: PLC0415

    drawings = has_drawings(sys.executable)
    runs: list[ApiRun] = []
    with simulator(b.nginx.base_url(), "api") as sim:
        realtime = prompt(sim.proc.pid)
        for rate in RATES:
            for workers in WORKERS:
                calls = int(rate * SECONDS) + 1
                runs.append(one_run(b, sim, "P021", rate, workers, calls * BATCH, batch=BATCH, drawings=False))
                if drawings:
                    runs.append(one_run(b, sim, "P042 (--drawings all)", rate, workers, calls, batch=None,
                                        drawings=True))
    b.data["api"] = {"runs": [r.as_json() for r in runs], "simulator_realtime": realtime,
                     "drawings": drawings}
    b.sections["mode api"] = section(runs, realtime, drawings)


def run_issue19(b: Bench, before: Path | None) -> None:
    """Issue 19's table, re-measured: before (an older tree, when given) and after (this tree), alternately."""
    from run import simulator  # noqa: PLC0415

    runs: list[ApiRun] = []
    with simulator(b.nginx.base_url(), "issue19") as sim:
        realtime = prompt(sim.proc.pid)
        for patents, rate in ((6_000, 5.0), (20_000, 20.0)):
            trees = ([(before, "before")] if before else []) + [(None, "this tree")]
            for tool_dir, label in trees:
                runs.append(one_run(b, sim, "P021", rate, 1, patents, batch=None, drawings=False,
                                    tool_dir=tool_dir, label=label))
    b.data["issue19"] = {"runs": [r.as_json() for r in runs], "simulator_realtime": realtime,
                         "before": str(before) if before else None}
    b.sections["issue 19's table"] = (
        "6,000 patents at --rate 5, then 20,000 at --rate 20, `--workers 1`, batches of 100, metadata only; "
        "counted at the simulator.\n\n" + table(runs))


def table(runs: list[ApiRun]) -> str:
    head = ("| tool | API | --rate | workers | patents | calls at the server | span s | sustained /s | share of R "
            "| busiest second: simulator's stamps | on the wire | stamps late, ms at most | exit | wall s | CPU s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r.tool} | {r.kind} | {r.rate:g} | {r.workers} | {r.patents:,} | {r.calls} | {r.span_s:.1f} "
        f"| {r.sustained:.3f} | {r.share:.3f} | {r.busiest} | {_or_dash(r.wire_busiest)} | {_or_dash(r.stamp_late_ms)} "
        f"| {r.exit_code} | {r.wall_s} | {r.cpu_s} |\n"
        for r in runs)


def _or_dash(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def section(runs: list[ApiRun], realtime: bool, drawings: bool) -> str:
    sched = ("the simulator under SCHED_FIFO (most stamps within ~1 ms of arrival)" if realtime else
             "the simulator on the normal scheduler (real-time not allowed here): its stamps may run late under load")
    extra = "" if drawings else " `--drawings all` is not in this tree: P042 rows missing."
    wire = (" The busiest second is also counted on the wire (`tcpdump` on the loopback device, see bench/wire.py): "
            "when each request reached the simulator's port, before its thread was scheduled to read it; the "
            "target is judged there." if any(r.wire_busiest is not None for r in runs) else
            " No packet capture here (tcpdump missing or not root): the busiest second is the simulator's.")
    return (f"Metadata only, about {SECONDS:g} s of calls per run, P021 in batches of {BATCH}; {sched}.{extra}{wire}"
            "\n\n" + table(runs))


def targets(data: dict[str, Any]) -> list[tuple[str, float, float, bool, str]]:
    """(name, ratio, goal, at_most, measured) per run: the share of R ≥ 0.97, the busiest second ≤ ⌊R⌋."""
    found: list[tuple[str, float, float, bool, str]] = []
    for r in data.get("runs", []):
        what = f"api {r['kind']} --rate {r['rate']:g} --workers {r['workers']}"
        found.append((f"{what}: sustained ÷ R", r["share"], SHARE_GOAL, False,
                      f"{r['sustained']:.3f} ÷ {r['rate']:g} calls/s over {r['span_s']:.0f} s"))
        wire = r.get("wire_busiest")
        busiest, where = (r["busiest"], "at the simulator's stamps") if wire is None else (
            wire, f"on the wire (simulator's stamps: {r['busiest']}, up to {r.get('stamp_late_ms')} ms late)")
        found.append((f"{what}: busiest second ÷ ⌊R⌋", busiest / int(r["rate"]), 1.0, True,
                      f"{busiest} ÷ {int(r['rate'])} requests {where}"))
    return found


