"""Secrets never leave the process: not on stdout/stderr (even with --debug), not in the log file,
the manifest, the summary, rejects.csv or the SQLite files, whatever happens (failures, a fatal stop)."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import pytest

from .support import cli_args, cli_command, numbers, run_cli, when, write_csv

pytestmark = pytest.mark.slow

API_KEY = "AKey-7f3a9c51e2d84b06"
TOKEN = "Tok-c0ffee5eed1234abcd"
CLIENT_ID = "Cid-5b2e81a7"
CLIENT_SECRET = "Csec-d41d8cd98f00b204"
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
SECRETS = {"apikey": API_KEY, "token": TOKEN, "client secret": CLIENT_SECRET, "basic auth": BASIC}


def leaks(texts: dict[str, bytes]) -> list[str]:
    """Which secret turns up where."""
    return [f"{what} in {where}" for where, data in texts.items() for what, secret in SECRETS.items()
            if secret.encode() in data]


def everything_written(out: Path, log: Path, done: object) -> dict[str, bytes]:
    texts = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    texts["log file"] = log.read_bytes() if log.exists() else b""
    texts["stdout"] = done.stdout.encode()  # type: ignore[attr-defined]
    texts["stderr"] = done.stderr.encode()  # type: ignore[attr-defined]
    return texts


@pytest.mark.parametrize("auth", ["apikey and token", "client credentials"])
def test_no_secret_in_any_output(tmp_path, sim_config, threaded_simulator, auth):
    """Failures, retries, token refreshes and then a fatal stop, with --debug and --log-file: no secret anywhere."""
    sim = threaded_simulator
    sim_config.api_key = API_KEY
    sim_config.static_token = TOKEN
    sim_config.client_id = CLIENT_ID
    sim_config.client_secret = CLIENT_SECRET
    sim_config.token_lifetime = 1
    sim_config.image_fault_rate = 0.2
    sim_config.api_fault_rate = 0.3
    sim_config.api_fault_kinds = ("500", "reset", "not_json", "68300008")
    values = numbers(400)
    with_drawing = [v for v in values if (r := sim.universe.lookup_number(v)) is not None and r.num is not None]
    sim_config.missing_images = {sim.universe.lookup_number(v).pn for v in with_drawing[:5]}  # type: ignore[union-attr]
    source = write_csv(tmp_path / "in.csv", values + ["junk row"])
    out, log = tmp_path / "out", tmp_path / "run.log"
    args = cli_args(sim, [source], out, "--api-key", API_KEY, "--debug", "--log-file", str(log), "--json",
                    "--batch-size", "20", "--rate", "10", "--retries", "2", credentials=False)
    args += ["--token", TOKEN] if auth == "apikey and token" else ["--client-id", CLIENT_ID,
                                                                  "--client-secret", CLIENT_SECRET]
    killed = _killed_midway(args, out, tmp_path / "killed.err")  # leaves state.sqlite-wal behind to read
    tokens = sim.counters.tokens_issued + (2 if auth == "client credentials" else 0)  # stop after a refresh
    when(lambda: sim.counters.api_ok >= 6 and sim.counters.tokens_issued >= tokens,
         lambda: setattr(sim_config, "fatal_code", 67200005))

    done = run_cli(*args)

    texts = everything_written(out, log, done)
    print(f"\n[secrets, {auth}] exit {done.returncode}; checked {len(texts)} outputs "
          f"({sum(map(len, texts.values())) / 1e6:.1f} MB): {sorted(k for k in texts if '/' not in k)}; "
          f"{sim.counters.tokens_issued} tokens issued, {sim.counters.api_faults_injected} API faults")
    assert done.returncode == 3, done.stderr
    assert "67200005" in done.stderr and sim.counters.fatal_answers >= 1 and sim.counters.api_ok >= 6
    assert sim.counters.auth_refused == 0  # the secrets were really used, and accepted
    assert "Traceback" in done.stderr  # --debug really did print the traceback
    assert {"manifest.csv", "manifest.jsonl", "summary.json", "rejects.csv", "state.sqlite"} <= set(texts)
    assert log.exists() and log.stat().st_size > 0
    if auth == "client credentials":
        assert sim.counters.tokens_issued >= 2
    assert "state.sqlite-wal" in killed and not leaks(killed)
    assert not leaks(texts)


def _killed_midway(args: list[str], out: Path, err: Path) -> dict[str, bytes]:
    """Run the CLI until a few images are on disk, kill -9 it, and return every file it left in DIR."""
    with err.open("w") as stderr:
        proc = subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL, stderr=stderr,
                                cwd=Path(__file__).resolve().parents[1])
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if (out / "images").exists() and sum(1 for _ in (out / "images").rglob("*.*")) >= 10:
                    break
                time.sleep(0.002)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    texts = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    texts["stderr"] = err.read_bytes()
    return texts
