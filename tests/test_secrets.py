"""Secrets never leave the process: not on stdout/stderr (even with --debug), not in the log file,
the manifest, the summary, rejects.csv or the SQLite files, whatever happens (failures, a fatal stop).

The OAuth tokens the simulator issued are secrets too: the shared one is sealed in the state store
(SQLite or every row of a PostgreSQL schema) and bound to the secret that fetched it, so a changed
secret is refused at once instead of riding on the stored token. An sk- key of the newer platform
authenticates alone and is never stored."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from downloader.simulator import Simulator

from .support import check_downloads, cli_args, cli_command, numbers, one_clear_line, run_cli, when, write_csv
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import pg_execute

pytestmark = pytest.mark.slow

API_KEY = "AKey-7f3a9c51e2d84b06"
TOKEN = "Tok-c0ffee5eed1234abcd"
CLIENT_ID = "Cid-5b2e81a7"
CLIENT_SECRET = "Csec-d41d8cd98f00b204"
BASIC = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
SECRETS = {"apikey": API_KEY, "token": TOKEN, "client secret": CLIENT_SECRET, "basic auth": BASIC}


def leaks(texts: dict[str, bytes], sim: Simulator | None = None, **more: str) -> list[str]:
    """Which secret (and which OAuth token the simulator issued) turns up where."""
    secrets = {**SECRETS, **more, **{f"issued token {t[:4]}…": t for t in (sim.tokens if sim else ())}}
    return [f"{what} in {where}" for where, data in texts.items() for what, secret in secrets.items()
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
    assert "state.sqlite-wal" in killed and not leaks(killed, sim)
    assert not leaks(texts, sim)


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


# --- the shared token at rest, a rotated secret, sk- keys ------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest) -> str | None:
    """Where the state lives: DIR/state.sqlite (None), or a PostgreSQL schema of its own (`pg_url`)."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def stored(out: Path, state: str | None) -> dict[str, bytes]:
    """Every file in DIR (the SQLite files' bytes included) and, with PostgreSQL, every row of every table
    of the run's schema as text."""
    texts = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if state is not None:
        from psycopg import sql

        schema = state.rpartition("schema=")[2]
        tables = asyncio.run(pg_execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                        (schema,)))
        assert {"patents", "shared"} <= {t for (t,) in tables}
        for (table,) in tables:
            rows = asyncio.run(pg_execute(sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table))))
            texts[f"postgres {table}"] = "\n".join(r for (r,) in rows).encode()
        assert b"sealed" in texts["postgres shared"]  # the token record was read, and it is sealed
    return texts


def test_the_shared_token_is_sealed_at_rest_and_a_changed_secret_is_refused_at_once(tmp_path, sim_config,
                                                                                     threaded_simulator, state):
    """A good run leaves no token, secret or apikey readable in DIR or the database; right after it, with new
    patents to ask, `--client-secret WRONG` exits 3 with the refused-credentials line, asking no API call."""
    sim = threaded_simulator
    sim_config.api_key, sim_config.client_id, sim_config.client_secret = API_KEY, CLIENT_ID, CLIENT_SECRET
    out = tmp_path / "out"

    def run_with(count: int, secret: str) -> Any:
        args = cli_args(sim, [write_csv(tmp_path / f"in{count}.csv", numbers(count))], out, "--api-key", API_KEY,
                        "--client-id", CLIENT_ID, "--client-secret", secret, credentials=False)
        return run_cli(*args, *(["--state", state] if state else []))

    good = run_with(100, CLIENT_SECRET)
    texts = stored(out, state)
    print(f"\n[sealed token, {state and 'postgres' or 'sqlite'}] first run exit {good.returncode}; "
          f"{len(sim.tokens)} tokens issued; checked {len(texts)} files and tables")
    assert good.returncode == 0 and sim.counters.tokens_issued == 1 and check_downloads(out, sim) > 50, good.stderr
    assert not leaks(texts, sim)

    calls = sim.counters.api_requests
    wrong = run_with(150, "WRONG")  # 50 new patents: the API must be asked
    line = one_clear_line(wrong.stderr)
    assert wrong.returncode == 3 and "refused the client credentials" in line and "--client-secret" in line, line
    assert sim.counters.token_refused == 1 and sim.counters.api_requests == calls
    assert not leaks(stored(out, state), sim, wrong="WRONG")


def test_an_sk_key_alone_authenticates_is_never_stored_and_a_wrong_one_is_refused(tmp_path, sim_config,
                                                                                  threaded_simulator):
    """`--api-key sk-…` with no other credential: sent as the bearer and the apikey, no OAuth, exit 0, every
    image right, the key nowhere in DIR; a wrong sk- key: exit 3 naming --api-key, never its value."""
    sim = threaded_simulator
    key = "sk-9f8e7d6c5b4a39281706"
    sim_config.api_key, sim_config.static_token = key, None
    out = tmp_path / "out"
    source = write_csv(tmp_path / "in.csv", numbers(100))
    done = run_cli(*cli_args(sim, [source], out, "--api-key", key, credentials=False))
    assert done.returncode == 0 and check_downloads(out, sim) > 50, done.stderr
    assert sim.counters.api_ok == 1 and sim.counters.token_requests == 0 and sim.counters.auth_refused == 0
    assert not leaks(stored(out, None), sk=key)

    bad = "sk-0000000000000000wrong"
    refused = run_cli(*cli_args(sim, [source], tmp_path / "other", "--api-key", bad, credentials=False))
    line = one_clear_line(refused.stderr)
    assert refused.returncode == 3 and "sk- key given with --api-key" in line and "67200003" in line, line
    assert bad not in refused.stderr and sim.counters.auth_refused >= 1
