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
