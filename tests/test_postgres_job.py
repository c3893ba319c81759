"""A whole job with its state in PostgreSQL (`--state postgresql://…`), on the simulator over loopback."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator

import pytest

from .support import check_downloads, leftovers, manifest, numbers, run, write_csv
from .test_store_contract import POSTGRES_DSN, pg_execute, postgres_unusable

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A state URL for a schema of its own, dropped afterwards (skips without a server)."""
    pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")
    if (reason := asyncio.run(postgres_unusable())) is not None:
        pytest.skip(reason)
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex[:16]}"
    yield f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"
    asyncio.run(pg_execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))))


def test_a_job_on_postgres_costs_one_call_per_hundred_and_a_rerun_nothing(tmp_path, threaded_simulator, pg_url):
    """The pipeline over PostgresStore: every key asked once, every image verified, a rerun asks nothing."""
    sim = threaded_simulator
    values = numbers(1000)
    source = write_csv(tmp_path / "in.csv", values + values[:20])
    out = tmp_path / "out"

    summary = run([source], out, sim, state_url=pg_url)

    assert summary["exit_code"] == 0 and summary["duplicates"] == 20
    assert summary["api_calls"] == math.ceil(1000 / 100) == sim.counters.api_requests
    assert max(sim.counters.asks.values()) == 1 and len(sim.counters.asks) == 1000
    rows = manifest(out)
    assert len(rows) == 1000 and {r["patent_number"] for r in rows} == set(values)
    assert check_downloads(out, sim) == summary["by_status"]["downloaded"] > 700
    assert not leftovers(out)

    again = run([source], out, sim, state_url=pg_url)
    assert again["exit_code"] == 0 and again["api_calls"] == 0 and sim.counters.api_requests == 10
    assert manifest(out) == rows


def test_a_run_superseded_while_it_worked_leaves_the_newer_runs_manifest_alone(tmp_path, threaded_simulator, pg_url):
    """A worker whose run was taken over by a newer run (it was cut off past its leases) records its end but
    writes no manifest or summary.json: those rows belong to the newer run now, and its files stand."""
    import psycopg
    from psycopg.types.json import Jsonb

    from downloader.core.events import BatchDone, Notice
    from downloader.job import run_job

    from .support import settings_for

    sim = threaded_simulator
    source = write_csv(tmp_path / "in.csv", numbers(300))
    out = tmp_path / "out"
    good = run([source], out, sim, state_url=pg_url)
    assert good["exit_code"] == 0 and len(manifest(out)) == 300
    before = (out / "manifest.csv").read_bytes(), (out / "summary.json").read_bytes()

    grown = write_csv(tmp_path / "grown.csv", numbers(400))
    schema = pg_url.rsplit("schema=", 1)[1]
    notices: list[str] = []

    def newer_run_starts(event: object) -> None:  # another worker starts a run of its own meanwhile
        if isinstance(event, BatchDone) and not notices:
            notices.append("newer run started")
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'INSERT INTO "{schema}".runs (started, options) VALUES (extract(epoch from now()), %s)',
                             [Jsonb({"inputs": ["elsewhere.csv"]})])
        elif isinstance(event, Notice) and event.kind == "superseded":
            notices.append(event.message)

    summary = run_job([grown], out, settings_for(sim, state_url=pg_url), events=newer_run_starts)

    assert summary.exit_code == 0 and summary.by_status["downloaded"] + summary.by_status["no_image"] \
        + summary.by_status["not_found"] == 400
    assert any("a newer run started" in n for n in notices[1:])
    assert ((out / "manifest.csv").read_bytes(), (out / "summary.json").read_bytes()) == before
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        ended = conn.execute(f'SELECT id, ended IS NOT NULL FROM "{schema}".runs ORDER BY id').fetchall()
    assert ended[:2] == [(1, True), (2, True)] and ended[2][1] is False
