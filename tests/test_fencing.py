"""A worker cut off from PostgreSQL must not write over another's claim (lease fencing), end to end.

Two `patent-images run` workers share one job: A reaches PostgreSQL through a TCP proxy that the test
stalls in the middle of the run (a partition: A's statements hang, nothing fails), B directly. A's
lease lapses, B takes its keys over and finishes the list; then the proxy lets A's held statements
through. A's late results are refused and counted, its late images never replace B's files, and
both exit 0. Asserted on store rows, files and their sha256, and the simulator's charges.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from .support import Cli, check_downloads, cli_args, leftovers, manifest, numbers, write_csv
from .tcp_proxy import tcp_proxy
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import pg_execute, resolved

pytestmark = pytest.mark.slow

PATENTS = 300
BATCH = 20
LEASE = 5.0


def via(url: str, port: int) -> str:
    """The same state URL, through 127.0.0.1:`port`."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


def query(url: str, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of `sql` in the job's schema ({schema}); none while the first worker has not created it yet."""
    import psycopg

    schema = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))["schema"]
    try:
        return asyncio.run(pg_execute(sql.replace("{schema}", schema)))
    except psycopg.errors.UndefinedTable:
        return []


def test_a_stalled_worker_cannot_overwrite_the_keys_another_took_over(tmp_path, threaded_simulator,
                                                                     pg_url):  # noqa: F811 - the fixture
    sim = threaded_simulator
    sim.config.cdn_latency = 0.05  # downloads stay in flight, so A holds claims when it is cut off
    source = write_csv(tmp_path / "in.csv", numbers(PATENTS))
    out = tmp_path / "out"
    target = urlsplit(pg_url)
    common = ("--workers", "1", "--lease", str(LEASE), "--batch-size", str(BATCH), "--download-concurrency", "4",
              "--api-concurrency", "2")
    with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy, \
            Cli(cli_args(sim, [source], out, "--state", via(pg_url, proxy.port), *common), tmp_path / "a.log") as a, \
            Cli(cli_args(sim, [source], out, "--state", pg_url, *common), tmp_path / "b.log") as b:
        name_a, name_b = f"{socket.gethostname()}:{a.proc.pid}", f"{socket.gethostname()}:{b.proc.pid}"
        until(a, lambda: settled(pg_url) >= 30 and workers(pg_url) == 2 and bool(held_by(pg_url, name_a)))
        proxy.stall()
        stalled_at = time.time()
        held = held_by(pg_url, name_a)  # A's claims as the partition begins
        code_b, err_b = b.finish(timeout=120)
        assert code_b == 0, err_b
        assert time.time() - stalled_at > LEASE  # B could only take A's keys after A's lease lapsed
        proxy.release()
        code_a, err_a = a.finish(timeout=120)
    assert code_a == 0, err_a

    rows = state(pg_url)
    assert len(rows) == PATENTS and {r[1] for r in rows} <= {"downloaded", "no_image", "not_found"}
    assert check_downloads(out, sim) == sum(r[1] == "downloaded" for r in rows)  # files hold the rows' sha256
    for key, status, local_file, updated_at in rows:  # nothing was renamed into place after its row was written
        if status == "downloaded":
            assert os.stat(out / local_file).st_ctime <= updated_at + 0.05, (key, local_file)
    assert len(manifest(out)) == PATENTS and not leftovers(out)

    fenced = worker_counter(pg_url, "fenced")
    assert fenced[name_a] >= 1 and fenced[name_b] == 0, fenced  # A's late results were refused, or images dropped
    asked_twice = {key for key, n in sim.counters.asks.items() if n > 1}
    assert asked_twice <= held and max(sim.counters.asks.values()) <= 2  # paid twice: only what A held, once
    assert sim.counters.charged <= PATENTS + len(asked_twice)
    assert len(err_a.strip().splitlines()) == 1 and "Done in" in err_a, err_a  # the final line, nothing else


async def test_a_worker_cut_off_midway_through_a_write_leaves_no_key_locked(pg_url):  # noqa: F811 - the fixture
    """A cut off after the first part of what it sent for a batch of results (the server got some of it): once
    A's lease lapses, B takes every key A held, without waiting for A to come back; A's late batch is refused.

    Guards the way the batch is sent (`pg_batch`): as a pipeline, the server ran the batch's first UPDATEs,
    then waited inside it for the rest, the rows they locked were skipped by B's claims for as long as A was
    away (the server's idle-in-transaction timeout does not apply inside a pipeline), and B never finished."""
    from downloader.core.model import Kind, PatentKey
    from downloader.state.base import Held
    from downloader.state.pg_connections import IDLE_IN_TRANSACTION_MS
    from downloader.state.postgres import PostgresStore

    keys = [PatentKey(Kind.NUMBER, f"K{i:03d}") for i in range(300)]
    target = urlsplit(pg_url)
    with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        a = await PostgresStore.open(via(pg_url, proxy.port))
        b = await PostgresStore.open(pg_url)
        try:
            run = await a.start_run({})
            await a.ingest(keys, run)
            claim = await a.claim(run, "A", limit=len(keys), usable_after=time.time() + 60, lease=1.0)
            assert claim.to_ask is not None and len(claim.to_ask.keys) == len(keys)
            late = [Held(resolved(key), claim.lease) for key in keys]
            proxy.stall_after(20_000)  # BEGIN, the clock, and the first ~fifth of the batch reach the server
            writing = asyncio.create_task(a.apply(late))
            deadline = time.monotonic() + 1.0 + IDLE_IN_TRANSACTION_MS / 1000 + 5  # the lease, the server's timeout
            taken: set[str] = set()
            while len(taken) < len(keys) and time.monotonic() < deadline:
                took = await b.claim(run, "B", limit=len(keys), usable_after=time.time() + 60, lease=60)
                taken.update(took.to_ask.keys if took.to_ask is not None else ())
                await asyncio.sleep(0.2)
            assert not writing.done()  # A is still cut off: B did not wait for it
            assert len(taken) == len(keys), f"{len(keys) - len(taken)} of A's keys still locked"
            proxy.release()
            assert await asyncio.wait_for(writing, 60) == late  # refused: the keys are B's now
        finally:
            proxy.release()
            await a.close()
            await b.close()


def until(worker: Cli, condition: Callable[[], bool], timeout: float = 90.0) -> None:
    """Poll `condition` every 50 ms while `worker` runs (each poll is a new connection)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert worker.proc.poll() is None, f"the run ended first: {worker.stderr()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def workers(url: str) -> int:
    return len(query(url, "SELECT 1 FROM {schema}.workers"))


def settled(url: str) -> int:
    rows = query(url, "SELECT count(*) FROM {schema}.patents WHERE status IN ('downloaded', 'no_image', 'not_found')")
    return int(rows[0][0]) if rows else 0


def held_by(url: str, worker: str) -> set[str]:
    """The unsettled keys `worker` holds."""
    rows = query(url, f"SELECT key FROM {{schema}}.patents WHERE claimed_by = '{worker}' "
                      "AND status IN ('pending', 'resolved')")
    return {key for key, in rows}


def state(url: str) -> list[tuple[str, str, str, float]]:
    return query(url, "SELECT key, status, local_file, updated_at FROM {schema}.patents")  # type: ignore[return-value]


def worker_counter(url: str, name: str) -> dict[str, int]:
    """A counter of each worker's last heartbeat, by worker name."""
    rows = query(url, "SELECT worker, info FROM {schema}.workers")
    return {worker: int(info["counters"].get(name, 0)) for worker, info in rows}
