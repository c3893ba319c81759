"""Nightly runs on a budget, against the simulator: dry run, caps, rechecks, history, log, recipes."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from downloader.cli import app as cli
from downloader.cli.runlog import open_sinks
from downloader.core.settings import Settings
from downloader.job import run_job
from downloader.simulator import Universe
from downloader.state.lock import DirLock
from downloader.state.sqlite import STATE_FILE, connect

from .support import check_downloads, leftovers, manifest, numbers, write_csv

pytestmark = pytest.mark.slow

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
SECRETS = ("demo-key", "demo-token", "demo-secret", "demo-client")


def run_args(source: Path, out: Path, sim, *extra: str) -> list[str]:
    """`run` arguments that talk to the simulator with a static token."""
    return ["run", str(source), "--out", str(out), "--api-base", sim.base_url, "--token", "demo-token",
            "--api-key", "demo-key", "--no-progress", "--rate", "500", *extra]


def by_status(out: Path) -> Counter[str]:
    """The manifest's rows counted by status."""
    return Counter(row["status"] for row in manifest(out))


def files_under(folder: Path) -> set[str]:
    """Every path below `folder`, relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """250 unique numbers, 10 repeats, one blank and one bad row."""
    values = numbers(250)
    return write_csv(tmp_path / "in.csv", values + values[:10] + ["", "not a patent"])


def test_dry_run_before_any_run_is_exact_calls_nothing_and_writes_nothing(tmp_path, inputs, threaded_simulator,
                                                                         capsys):
    """Counts from inputs alone; no request, and nothing created: not even the --out folder."""
    out = tmp_path / "fresh"
    assert cli.main(run_args(inputs, out, threaded_simulator, "--dry-run", "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan == {"dry_run": True, "rows": 260, "unique": 250, "duplicates": 10, "new": 250, "settled": 0,
                    "failed_kept": 0, "reusable_urls": 0, "to_ask_numbers": 250, "to_ask_ids": 0, "rejected": 1,
                    "to_ask": 250, "api_calls": 3, "charged_at_most": 250, "exit_code": 0, "drawings": "abstract",
                    "seconds_at_rate": 0.0}
    assert cli.main(run_args(inputs, out, threaded_simulator, "--dry-run", "--max-charged", "120")) == 0
    text = capsys.readouterr().out
    with capsys.disabled():
        print(text)
    assert "250 unique" in text and "3 calls" in text and "at most 120 charged" in text and "1 row rejected" in text
    assert not out.exists()
    assert threaded_simulator.counters.api_requests == 0 and threaded_simulator.counters.image_requests == 0


def test_budget_cap_stops_with_4_then_dry_run_is_exact_and_next_run_finishes(tmp_path, inputs, threaded_simulator,
                                                                             capsys):
    """--max-charged: never over N, clean stop (exit 4), exact dry run after, the next run ends with 0."""
    sim, out, log = threaded_simulator, tmp_path / "out", tmp_path / "nightly.log"
    code = cli.main(run_args(inputs, out, sim, "--max-charged", "130", "--batch-size", "50",
                             "--api-concurrency", "1", "--log-file", str(log)))
    summary = json.loads((out / "summary.json").read_text())
    assert code == 4 == summary["exit_code"] and summary["stop_reason"] == "budget"
    assert 130 - 50 < sim.counters.charged == summary["charged"] <= 130
    counts = by_status(out)
    assert counts == Counter(summary["by_status"]) and counts["pending"] > 0 and sum(counts.values()) == 250
    assert set(counts) <= {"downloaded", "no_image", "not_found", "pending"}  # paid downloads were finished
    assert check_downloads(out, sim) == counts["downloaded"] and not leftovers(out)
    with capsys.disabled():  # shown with -s
        print(json.dumps({k: summary[k] for k in ("exit_code", "stop_reason", "charged", "api_calls", "images",
                                                  "by_status", "unique", "new", "rejected")}, sort_keys=True))
    lines = log.read_text().splitlines()
    assert " start: " in lines[0] and " budget: " in lines[1] and " end: exit_code=4, stop_reason=budget" in lines[-1]

    state_files, requests = files_under(out), sim.counters.api_requests
    capsys.readouterr()
    assert cli.main(run_args(inputs, out, sim, "--dry-run", "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    settled = counts["downloaded"] + counts["no_image"] + counts["not_found"]
    assert (plan["unique"], plan["settled"], plan["new"], plan["to_ask"], plan["reusable_urls"]) == (
        250, settled, 0, counts["pending"], 0)
    assert plan["api_calls"] == math.ceil(counts["pending"] / 100) and plan["charged_at_most"] == counts["pending"]
    assert cli.main(run_args(inputs, out, sim, "--dry-run")) == 0
    text = capsys.readouterr().out
    with capsys.disabled():
        print(text)
    assert f"already settled: {settled}   new: 0" in text and f"in {plan['api_calls']} calls" in text
    assert sim.counters.api_requests == requests and files_under(out) == state_files
    with DirLock(out):  # beside a live run a dry run still answers: it writes only a TEMP table
        assert cli.main(run_args(inputs, out, sim, "--dry-run")) == 0
    assert f"already settled: {settled}" in capsys.readouterr().out

    assert cli.main(run_args(inputs, out, sim)) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["stop_reason"] is None and again["charged"] + summary["charged"] == sim.counters.charged
    assert max(sim.counters.asks.values()) == 1 and set(by_status(out)) <= {"downloaded", "no_image", "not_found"}


def test_dry_run_counts_unexpired_urls_as_downloads_without_a_call(tmp_path, threaded_simulator, capsys):
    """Rows left `resolved` (as an interrupted run leaves them): live URLs are reused, expired ones asked."""
    sim, source, out = threaded_simulator, write_csv(tmp_path / "in.csv", numbers(120)), tmp_path / "out"
    assert cli.main(run_args(source, out, sim)) == 0
    conn = connect(out / STATE_FILE)
    seqs = [seq for (seq,) in conn.execute("SELECT seq FROM patents WHERE status='downloaded' ORDER BY seq LIMIT 8")]
    expiries = [time.time() + 3600] * 5 + [time.time() - 60] * 3  # five URLs still good, three expired
    conn.executemany("UPDATE patents SET status='resolved', local_file=NULL, expires_at=? WHERE seq=?",
                     zip(expiries, seqs, strict=True))
    conn.close()
    requests, images = sim.counters.api_requests, sim.counters.image_requests
    capsys.readouterr()
    assert cli.main(run_args(source, out, sim, "--dry-run", "--json")) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["reusable_urls"], plan["to_ask"], plan["api_calls"], plan["settled"]) == (5, 3, 1, 112)
    assert sim.counters.api_requests == requests and sim.counters.image_requests == images
    assert cli.main(run_args(source, out, sim)) == 0
    assert sim.counters.api_requests == requests + 1 and sim.counters.image_requests == images + 8
    assert sum(n == 2 for n in sim.counters.asks.values()) == 3


def test_status_shows_totals_and_both_runs_as_table_and_json(tmp_path, inputs, threaded_simulator, capsys):
    """Two runs (capped, then complete) are two rows of the history, newest first."""
    out = tmp_path / "out"
    assert cli.main(run_args(inputs, out, threaded_simulator, "--max-charged", "60", "--batch-size", "50")) == 4
    assert cli.main(run_args(inputs, out, threaded_simulator)) == 0
    capsys.readouterr()
    assert cli.main(["status", "--out", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["by_status"] == dict(by_status(out)) and data["total"] == 250
    assert [(r["id"], r["exit_code"], r["summary"]["stop_reason"]) for r in data["runs"]] == [
        (2, 0, None), (1, 4, "budget")]
    assert sum(r["summary"]["charged"] for r in data["runs"]) == threaded_simulator.counters.charged
    assert cli.main(["status", "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"{out}: 250 patents"
    assert any(line.split()[:2] == ["downloaded", f"{data['by_status']['downloaded']:,}"] for line in table)
    rows = [line.split() for line in table if line.strip()[:1].isdigit()]  # run, date, time, secs, exit, ...
    assert [(r[0], r[4], r[6]) for r in rows] == [(str(r["id"]), str(r["exit_code"]), str(r["summary"]["charged"]))
                                                  for r in data["runs"]]
    assert rows[1][-1] == "budget" and rows[0][-1] != "budget"


def test_max_runtime_stops_cleanly_with_4_and_the_next_run_continues(tmp_path, sim_config, threaded_simulator):
    """--max-runtime 1s on a slow API: exit 4, stop_reason runtime, files good, then a full run."""
    sim_config.api_latency = 0.4
    source = write_csv(tmp_path / "in.csv", numbers(300))
    out = tmp_path / "out"
    assert cli.main(run_args(source, out, threaded_simulator, "--max-runtime", "1s", "--batch-size", "10",
                             "--api-concurrency", "2")) == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "runtime" and summary["seconds"] < 4 and summary["by_status"]["pending"] > 0
    assert check_downloads(out, threaded_simulator) == summary["by_status"].get("downloaded", 0)
    assert not leftovers(out)
    sim_config.api_latency = 0.0
    assert cli.main(run_args(source, out, threaded_simulator)) == 0
    assert max(threaded_simulator.counters.asks.values()) == 1


def test_recheck_after_asks_misses_again_only_when_told(tmp_path, threaded_simulator):
    """Default never; --recheck-after 30 right after asks nothing; --recheck-after 0 asks misses again."""
    sim = threaded_simulator
    source, out = write_csv(tmp_path / "in.csv", numbers(150)), tmp_path / "out"
    assert cli.main(run_args(source, out, sim)) == 0
    misses = {r["patent_number"] for r in manifest(out) if r["status"] in ("no_image", "not_found")}
    assert misses and sim.counters.api_requests == 2
    assert cli.main(run_args(source, out, sim)) == 0
    assert cli.main(run_args(source, out, sim, "--recheck-after", "30")) == 0
    assert sim.counters.api_requests == 2
    assert cli.main(run_args(source, out, sim, "--recheck-after", "0")) == 0
    assert sim.counters.api_requests == 2 + math.ceil(len(misses) / 100)
    assert {k for k, n in sim.counters.asks.items() if n == 2} == misses
    assert max(sim.counters.asks.values()) == 2


def test_log_file_json_has_start_end_failures_throttling_tokens_and_no_secrets(tmp_path, sim_config,
                                                                               threaded_simulator):
    """Two runs append JSON lines: start, token, throttled, one per failed patent, end; no credential."""
    values = numbers(60)
    records = {v: Universe(sim_config.seed).lookup_number(v) for v in values}
    missing = dict([(v, r.pn) for v, r in records.items() if r is not None and r.num][:2])  # input key -> pn
    sim_config.missing_images = set(missing.values())
    sim_config.qps_limit = 2
    source, out, log = write_csv(tmp_path / "in.csv", values), tmp_path / "out", tmp_path / "log.jsonl"
    oauth = ["--client-id", "demo-client", "--client-secret", "demo-secret"]
    common = ["run", str(source), "--out", str(out), "--api-base", threaded_simulator.base_url, "--no-progress",
              "--rate", "50", "--batch-size", "20", "--log-file", str(log), "--log-format", "json"]
    assert cli.main(common + oauth) == 1
    assert cli.main(common + ["--token", "demo-token", "--api-key", "demo-key", "--retry-failed"]) == 1
    text = log.read_text()
    assert not any(secret in text for secret in SECRETS)
    events = [json.loads(line) for line in text.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == kinds.count("end") == 2
    assert "token" in kinds and "throttled" in kinds and threaded_simulator.counters.throttled > 0
    failed = [e["key"] for e in events if e["event"] == "failed"]
    assert sorted(failed) == sorted(list(missing) * 2)
    assert all("HTTP 404" in e["message"] for e in events if e["event"] == "failed")
    assert events[0]["options"]["api"] == threaded_simulator.base_url and events[-1]["by_status"]["failed"] == 2
    assert events[-1]["exit_code"] == 1


def test_log_file_names_patents_deferred_at_the_api(tmp_path, sim_config, threaded_simulator):
    """A patent whose API retries ran out (HTTP 500 for a moment) is deferred, not failed: it gets its log
    line, and the run asks for it again once the API answers (an outage is not the patent's failure)."""
    sim_config.api_down, sim_config.api_down_until = "500", time.time() + 0.5
    source, log = write_csv(tmp_path / "in.csv", numbers(5)), tmp_path / "log.txt"
    settings = Settings(api_base=threaded_simulator.base_url, token="demo-token", api_key="demo-key", rate=500,
                        retries=1, outage_seconds=1.5)
    with open_sinks(settings, progress=False, log_file=str(log)) as sink:
        summary = run_job([source], tmp_path / "out", settings, events=sink)
    lines = log.read_text().splitlines()
    assert summary.exit_code == 0 and summary.by_status.get("failed", 0) == 0, summary
    assert sum(" deferred: " in line for line in lines) == 5, lines


# --- the contrib recipes, run for real -------------------------------------------------------


def unit_values(path: Path, key: str) -> list[str]:
    """Every value of `key=` in a systemd unit file (comments skipped)."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.split("=", 1)[1] for line in lines if line.startswith(f"{key}=")]


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads them."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def nightly_env(tmp_path: Path, sim) -> tuple[Path, dict[str, str]]:
    """An env file like /etc/patent-images/credentials.env, for the simulator; and the process env."""
    env_file = tmp_path / "credentials.env"
    env_file.write_text(f"PATSNAP_API_BASE={sim.base_url}\nPATSNAP_TOKEN=demo-token\nPATSNAP_API_KEY=demo-key\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATSNAP_")}
    return env_file, env


def substitute(text: str, tmp_path: Path) -> str:
    """The recipe's production paths replaced by the test's."""
    paths = {"/usr/local/bin/patent-images": f"{shlex.quote(sys.executable)} -m downloader",
             "/srv/patents/patents.csv": str(tmp_path / "patents.csv"), "/srv/patents/out": str(tmp_path / "out"),
             "/var/log/patent-images.log": str(tmp_path / "patent-images.log"),
             "/etc/patent-images/credentials.env": str(tmp_path / "credentials.env"),
             "/var/lib/node_exporter/textfile_collector": str(tmp_path)}
    for old, new in paths.items():
        text = text.replace(old, new)
    return text


def test_env_example_names_the_variables_the_tool_reads():
    """The example env file holds exactly the variables `run` takes its credentials from."""
    names = set(read_env_file(CONTRIB / "patent-images.env.example"))
    assert names == {"PATSNAP_CLIENT_ID", "PATSNAP_CLIENT_SECRET", "PATSNAP_TOKEN", "PATSNAP_API_KEY",
                     "PATSNAP_API_BASE"}


def test_systemd_service_exec_start_runs_nightly_against_the_simulator(tmp_path, threaded_simulator):
    """ExecStart with EnvironmentFile's variables: exit 0, log written; the next night makes no call."""
    service, timer = CONTRIB / "systemd" / "patent-images.service", CONTRIB / "systemd" / "patent-images.timer"
    assert unit_values(service, "Type") == ["oneshot"] and unit_values(service, "SuccessExitStatus") == ["4"]
    assert unit_values(service, "EnvironmentFile") == ["/etc/patent-images/credentials.env"]
    assert unit_values(timer, "OnCalendar") == ["*-*-* 02:00:00"] and unit_values(timer, "Persistent") == ["true"]
    (exec_start,) = unit_values(service, "ExecStart")
    write_csv(tmp_path / "patents.csv", numbers(40))
    env_file, env = nightly_env(tmp_path, threaded_simulator)
    env.update(read_env_file(env_file))
    argv = shlex.split(substitute(exec_start, tmp_path))
    for night in (1, 2):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (night, done.stderr)
    log = (tmp_path / "patent-images.log").read_text()
    assert log.count(" start: ") == 2 and log.count(" end: ") == 2
    assert not any(secret in log for secret in SECRETS)
    assert threaded_simulator.counters.api_requests == 1 and len(manifest(tmp_path / "out")) == 40


def test_cron_line_runs_silently_with_the_env_file(tmp_path, threaded_simulator):
    """The cron.d line (time fields, user, command) run by sh: silent, exit 0, the log written."""
    lines = [line for line in (CONTRIB / "cron" / "patent-images.cron").read_text().splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    (line,) = lines
    fields = line.split(None, 6)
    assert fields[:6] == ["0", "2", "*", "*", "*", "patents"] and "%" not in line
    write_csv(tmp_path / "patents.csv", numbers(30))
    _, env = nightly_env(tmp_path, threaded_simulator)
    done = subprocess.run(["/bin/sh", "-c", substitute(fields[6], tmp_path)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert " end: " in (tmp_path / "patent-images.log").read_text()
    assert (tmp_path / "out" / "manifest.csv").exists()
    assert "patent_images_last_success_timestamp_seconds" in (tmp_path / "patent-images.prom").read_text()


def test_a_rerun_with_nothing_to_do_rewrites_a_manifest_the_store_has_moved_past(tmp_path, inputs, threaded_simulator):
    """A run stopped with keys pending, which then settle without a run writing a manifest after it (as a
    fleet worker's transaction would): the next run has nothing to do, yet the manifest it finds lists
    those keys as pending, so it writes the manifest again from the store."""
    sim, out = threaded_simulator, tmp_path / "out"
    assert cli.main(run_args(inputs, out, sim, "--max-charged", "130", "--batch-size", "50")) == 4
    pending = by_status(out)["pending"]
    assert pending > 0
    conn = connect(out / STATE_FILE)
    try:
        with conn:
            conn.execute("UPDATE patents SET status='not_found', url=NULL WHERE status IN ('pending','resolved')")
    finally:
        conn.close()
    requests = sim.counters.api_requests
    assert cli.main(run_args(inputs, out, sim)) == 0
    counts = by_status(out)
    assert sim.counters.api_requests == requests  # nothing asked: the store had it all
    assert counts["pending"] == 0 and sum(counts.values()) == 250 and counts["not_found"] >= pending
    written = (out / "manifest.csv").stat().st_mtime_ns
    assert cli.main(run_args(inputs, out, sim)) == 0
    assert (out / "manifest.csv").stat().st_mtime_ns == written  # nothing moved since: the manifest stands


def test_a_rerun_with_nothing_to_do_after_a_run_over_another_list_writes_its_own_manifest(tmp_path, inputs,
                                                                                        threaded_simulator):
    """The whole list, then a part of it (nothing to do: that part's manifest), then the whole list again
    (nothing to do): the manifest lists the whole list again, not the part."""
    sim, out = threaded_simulator, tmp_path / "out"
    assert cli.main(run_args(inputs, out, sim)) == 0
    part = write_csv(tmp_path / "part.csv", [row["patent_number"] for row in manifest(out)][:40])
    requests = sim.counters.api_requests
    assert cli.main(run_args(part, out, sim)) == 0
    assert len(manifest(out)) == 40
    assert cli.main(run_args(inputs, out, sim)) == 0
    assert len(manifest(out)) == 250 and sim.counters.api_requests == requests
