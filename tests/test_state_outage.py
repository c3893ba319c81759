"""PostgreSQL restarts or goes away under a running fleet (a throwaway cluster, never the shared server).

A restart (`pg_ctl restart -m fast` drops every connection): both workers keep what they hold, reconnect
with backoff, lose nothing and pay for nothing twice, and exit 0. An outage longer than
--state-patience: exit 3 with one line naming the database's host; the rerun continues.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from .pg_cluster import cluster
from .support import Cli, check_downloads, cli_args, leftovers, manifest, numbers, one_clear_line, write_csv

pytestmark = pytest.mark.slow
pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")

PATENTS = 400


def settled(url: str) -> int:
    """Keys settled so far (0 while the schema is not there yet, or the server is down)."""
    import psycopg

    async def count() -> int:
        async with await psycopg.AsyncConnection.connect(url.replace("?schema=job", ""), connect_timeout=2) as conn:
            cur = await conn.execute("SELECT count(*) FROM job.patents WHERE status IN "
                                     "('downloaded', 'no_image', 'not_found')")
            return int((await cur.fetchone() or (0,))[0])
    try:
        return asyncio.run(count())
    except psycopg.Error:
        return 0


def test_a_database_restart_mid_run_loses_nothing_and_charges_nothing_twice(tmp_path, threaded_simulator):
    sim = threaded_simulator
    sim.config.cdn_latency = 0.02
    source = write_csv(tmp_path / "in.csv", numbers(PATENTS))
    out = tmp_path / "out"
    with cluster() as db:
        args = cli_args(sim, [source], out, "--state", db.url, "--workers", "1", "--lease", "10", "--batch-size",
                        "25", "--download-concurrency", "4", "--api-concurrency", "2")
        with Cli(args, tmp_path / "a.log") as a, Cli(args, tmp_path / "b.log") as b:
            a.when(lambda: settled(db.url) >= PATENTS // 4, timeout=60)
            restarted = time.monotonic()
            db.restart()
            print(f"\n[restart] pg_ctl restart -m fast took {time.monotonic() - restarted:.1f} s "
                  f"with {settled(db.url)} of {PATENTS} settled")
            codes = a.finish(timeout=120), b.finish(timeout=120)
    assert [code for code, _ in codes] == [0, 0], codes
    rows = manifest(out)
    assert len(rows) == PATENTS and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == sum(r["status"] == "downloaded" for r in rows) and not leftovers(out)
    assert len(sim.counters.asks) == PATENTS and max(sim.counters.asks.values()) == 1  # nothing paid for twice
    assert all("Traceback" not in err for _, err in codes)


def test_an_outage_longer_than_the_patience_is_exit_3_naming_the_host_and_the_rerun_continues(
        tmp_path, threaded_simulator):
    sim = threaded_simulator
    sim.config.cdn_latency = 0.02
    source = write_csv(tmp_path / "in.csv", numbers(PATENTS))
    out = tmp_path / "out"
    with cluster() as db:
        args = cli_args(sim, [source], out, "--state", db.url, "--workers", "1", "--state-patience", "3",
                        "--batch-size", "25", "--download-concurrency", "4", "--api-concurrency", "2")
        with Cli(args, tmp_path / "a.log") as a:
            a.when(lambda: settled(db.url) >= PATENTS // 4, timeout=60)
            db.stop()
            stopped = time.monotonic()
            code, err = a.finish(timeout=60)
            took = time.monotonic() - stopped
        assert code == 3, err
        line = one_clear_line(err)
        assert f"127.0.0.1:{db.port}" in line and "--state-patience" in line, line
        assert 3 <= took < 20, took
        asked_before = dict(sim.counters.asks)
        db.start()
        with Cli(args, tmp_path / "again.log") as again:
            code, err = again.finish(timeout=120)
    assert code == 0, err
    rows = manifest(out)
    assert len(rows) == PATENTS and {r["status"] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == sum(r["status"] == "downloaded" for r in rows)
    asked_again = [k for k, n in sim.counters.asks.items() if n > 1]
    assert len(asked_again) <= 2 * 25, asked_again  # at most the batches in flight when the server went away
    assert set(asked_again) <= set(asked_before)
