"""The PostgreSQL state store: one job shared by workers on several machines.

Same rows, transitions and answers as the SQLite store (see `base.py` for the protocol); what
PostgreSQL adds is the fleet. Theory of operation:

- Every time that matters (leases, `retry_at` checks, `updated_at`, the `now` given to shared
  records) is the database server's clock, so workers on machines whose clocks disagree still
  agree on whose lease ran out.
- `claim` locks candidate rows with `SELECT … FOR UPDATE SKIP LOCKED` and marks them in the same
  statement (`UPDATE … FROM` that CTE `RETURNING`): two workers never get the same key, and
  neither waits for the other. A row is free when nobody holds it or its lease ran out.
- Every write is one short transaction; a deadlock between two of them (say, a bulk `reopen`
  and a worker's `apply`) is retried, since each one is safe to run again.
- `durable=False` turns off `synchronous_commit` for our sessions: a worker that dies loses
  nothing committed, a crash of the database server may lose the last moments of progress
  (the keys are asked or downloaded again), never consistency. `durable=True` keeps the server's
  default (every commit flushed), the equivalent of SQLite's `synchronous=FULL`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from downloader.core.errors import StateError
from downloader.core.model import Batch, FigureKey, ImageJob, Kind, PatentKey, Status
from downloader.state import pg_queries as q
from downloader.state.base import (
    Claim,
    IngestCounts,
    PatentRow,
    RunRecord,
    Shared,
    StateEvent,
    WorkerRecord,
    patent_row,
)
from downloader.state.pg_schema import migrate, parse_url
from downloader.state.transitions import settle_patent, settles_patent, statement_for

T = TypeVar("T")
CHUNK = 5000  # keys per ingest statement: memory stays flat however long the input
PAGE = 2000  # rows per round trip when streaming
_RETRIES = 5
_DRAWINGS_A_CLAIM = 100  # drawings (--drawings all) a claim may take at once for download
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class PostgresStore:
    """The PostgreSQL implementation of the state store (see the module docstring)."""

    def __init__(self, pool: AsyncConnectionPool, location: str) -> None:
        self._pool = pool
        self.location = location

    @classmethod
    async def open(cls, url: str, *, durable: bool = False, max_connections: int = 8) -> PostgresStore:
        """Connect, create or migrate the schema; StateError if unreachable or written by a newer version."""
        target = parse_url(url)
        try:
            conn = await AsyncConnection.connect(target.conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise StateError(f"cannot connect to the PostgreSQL state store at {target.address} "
                             f"({target.location}): {reason}") from err
        try:
            await migrate(conn, target.schema, target.location)
        except psycopg.Error as err:
            raise StateError(f"cannot set up the state store at {target.location}: {err}") from err
        finally:
            await conn.close()

        async def configure(conn: AsyncConnection) -> None:
            if target.schema is not None:
                await conn.execute("SELECT set_config('search_path', %s, false)", [target.schema])
            if not durable:
                await conn.execute("SET synchronous_commit TO off")

        pool = AsyncConnectionPool(target.conninfo, min_size=1, max_size=max_connections, open=False,
                                   kwargs={"autocommit": True, "fallback_application_name": "patent-images"},
                                   configure=configure, name="patent-images")
        await pool.open(wait=True, timeout=30)
        return cls(pool, target.location)

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    # --- plumbing -------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection; a lost server becomes a StateError (a deadlock stays itself, to retry)."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except _RETRYABLE:
            raise
        except (psycopg.OperationalError, PoolTimeout) as err:
            raise StateError(f"the state store at {self.location} failed: {' '.join(str(err).split())}") from err

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one transaction, again after a deadlock or serialization failure.

        Shielded: a caller cancelled meanwhile (a stopping pipeline) gets its cancellation once the
        transaction is over, as with SQLite's worker thread, instead of a query cut off mid-way.
        """
        with anyio.CancelScope(shield=True):
            result = await self._transaction(work)
        return result

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        for attempt in range(_RETRIES):
            try:
                async with self._connection() as conn, conn.transaction():
                    return await work(conn)
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise
                await anyio.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")

    async def _fetch(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        with anyio.CancelScope(shield=True):  # a short read: finish it (see `_write`)
            async with self._connection() as conn:
                rows = await (await conn.execute(query, params)).fetchall()
        return rows

    # --- runs -----------------------------------------------------------------------------

    async def start_run(self, options: Mapping[str, Any], *, join: bool = False) -> int:
        """A new run's id; with `join`, a live run (a worker's lease is current) over the same inputs."""
        async def start(conn: AsyncConnection) -> int:
            if join:
                await conn.execute(q.LOCK_RUNS)
                cur = await conn.execute(q.FIND_LIVE_RUN, [Jsonb(options.get("inputs"))])
                if (row := await cur.fetchone()) is not None:
                    return int(row[0])
            cur = await conn.execute(q.INSERT_RUN, [Jsonb(dict(options))])
            return int((await cur.fetchone() or (0,))[0])
        return await self._write(start)

    async def finish_run(self, run_id: int, exit_code: int, summary: Mapping[str, Any]) -> None:
        """Record a run's end, exit code and summary."""
        await self._write(lambda conn: conn.execute(q.FINISH_RUN, [exit_code, Jsonb(dict(summary)), run_id]))

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        return [RunRecord(*row) for row in await self._fetch(q.RUNS, [limit])]

    # --- inputs ---------------------------------------------------------------------------

    async def ingest(self, keys: Iterable[PatentKey], run_id: int) -> IngestCounts:
        """Add keys (new ones pending) and mark every key as part of this run, in chunks.

        New, known and repeated keys are told apart afterwards by `first_run`, which only a
        fresh insert sets to this run.
        """
        rows = 0
        async for chunk in _chunks(keys, CHUNK):
            params = {"kinds": [k.kind.value for k in chunk], "keys": [k.value for k in chunk], "run": run_id}
            await self._write(partial(_execute, q.UPSERT_KEYS, params))
            rows += len(chunk)
        await self._write(partial(_execute, q.ANALYZE, {}))
        (unique, new), = await self._fetch(q.INGESTED, [run_id, run_id])
        return IngestCounts(new=new, known=unique - new, duplicates=rows - unique)

    async def reopen(self, run_id: int, *, retry_failed: bool, recheck_before: float | None) -> None:
        """Send back to pending what this run should ask again; deferred keys may be asked at once."""
        async def reopen(conn: AsyncConnection) -> None:
            if retry_failed:
                await conn.execute(q.REOPEN_FAILED, [run_id])
            if recheck_before is not None:
                await conn.execute(q.REOPEN_MISSES, [run_id, recheck_before])
            await conn.execute(q.CLEAR_RETRY_AT, [run_id])
        await self._write(reopen)

    async def plan(self, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
                   recheck_before: float | None) -> dict[str, int]:
        """What a run over `keys` would do: the keys go to a TEMP table of a transaction rolled back."""
        async with self._connection() as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
            await cur.execute(q.PLAN_TABLE)
            async with cur.copy(q.PLAN_COPY) as copy:
                async for chunk in _chunks(keys, CHUNK):
                    for key in chunk:
                        await copy.write_row((key.kind.value, key.value))
            await cur.execute(q.PLAN, {"usable": usable_after, "retry_failed": retry_failed, "recheck": recheck_before})
            found = await cur.fetchone()
        rows, unique, new, settled, failed, reusable, numbers, ids = (int(v or 0) for v in found or ())
        return {"rows": rows, "unique": unique, "duplicates": rows - unique, "new": new,
                "settled": settled, "failed_kept": failed, "reusable_urls": reusable,
                "to_ask_numbers": numbers, "to_ask_ids": ids}

    # --- work -----------------------------------------------------------------------------

    async def claim(self, run_id: int, worker: str, *, limit: int, usable_after: float, lease: float) -> Claim:
        """Keys of this run nobody holds: still-good URLs first, else one kind's batch for the API."""
        return await self._write(lambda conn: _claim(conn, run_id, worker, limit, usable_after, lease))

    async def renew(self, worker: str, lease: float) -> None:
        """Extend the lease on every key `worker` holds."""
        await self._write(partial(_each_table, q.RENEW, [lease, worker]))

    async def release(self, worker: str | None) -> None:
        """Give back every key `worker` still holds; None: every worker's (only when none can be alive)."""
        if worker is None:
            await self._write(partial(_each_table, q.RELEASE_ALL, []))
        else:
            await self._write(partial(_each_table, q.RELEASE, [worker]))

    async def apply(self, events: Sequence[StateEvent]) -> None:
        """Write a batch of results in one transaction, in order (one executemany per run of alike events).

        The guarded UPDATEs come from `transitions`, as SQLite's do; `updated_at` is the server's clock.
        """
        async def write(conn: AsyncConnection) -> None:
            async with conn.cursor() as cur:
                now = (await (await cur.execute(q.NOW)).fetchone() or (0.0,))[0]
                grouped: list[tuple[str, list[tuple[Any, ...]]]] = []
                patents: dict[tuple[Any, ...], None] = {}  # whose drawings settled: the patent may settle too
                for event in events:
                    query, params = statement_for(event, "%s", now)
                    if not grouped or grouped[-1][0] != query:
                        grouped.append((query, []))
                    grouped[-1][1].append(params)
                    if settles_patent(event):
                        patents[(now, event.key.kind.value, event.key.value)] = None
                for query, rows in grouped:
                    await cur.executemany(query, rows)
                if patents:
                    await cur.executemany(settle_patent("%s"), list(patents))
        if events:
            await self._write(write)

    # --- reading --------------------------------------------------------------------------

    async def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Keys by status, for one run's inputs or for the whole store."""
        rows = await self._fetch(q.COUNTS_ALL) if run_id is None else await self._fetch(q.COUNTS_RUN, [run_id])
        return {status: int(n) for status, n in rows}

    async def rows(self, run_id: int | None = None, status: Status | None = None) -> AsyncIterator[PatentRow]:
        """Rows in input order, from a server-side cursor (PAGE rows per round trip); with
        --drawings all, a row per drawing."""
        queries = q.DRAWING_ROWS if await self.drawings_kind(None) == "all" else q.ROWS
        query = queries[(run_id is not None, status is not None)]
        async with self._connection() as conn, conn.transaction():
            async with conn.cursor(name="patent_rows") as cur:
                cur.itersize = PAGE
                await cur.execute(query, {"run": run_id, "status": status.value if status else None})
                async for row in cur:
                    yield patent_row(row)

    async def drawings_kind(self, wanted: str | None) -> str | None:
        """The kind of drawings this job holds ("abstract" or "all"), recorded on first use: a store
        with patents from before holds abstract drawings. None: not recorded yet, and `wanted` None."""
        async def record(conn: AsyncConnection) -> str | None:
            row = await (await conn.execute(q.DRAWINGS_KIND)).fetchone()
            if row is not None or wanted is None:
                return None if row is None else str(row[0])
            old = await (await conn.execute(q.ANY_PATENT)).fetchone() is not None
            await conn.execute(q.SET_DRAWINGS_KIND, ["abstract" if old else wanted])
            row = await (await conn.execute(q.DRAWINGS_KIND)).fetchone()
            return None if row is None else str(row[0])
        if wanted is None:
            rows = await self._fetch(q.DRAWINGS_KIND)
            return str(rows[0][0]) if rows else None
        return await self._write(record)

    async def drawing_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Drawings by status (--drawings all), for one run's patents or the whole store."""
        return {status: int(n) for status, n in await self._fetch(q.DRAWING_COUNTS, {"run": run_id})}

    async def figure_counts(self, run_id: int | None = None) -> dict[int, int]:
        """How many patents have how many drawings (listed ones, and 0 for no_image)."""
        return {int(n): int(c) for n, c in await self._fetch(q.FIGURE_COUNTS, {"run": run_id})}

    async def latest(self, status: Status, limit: int) -> list[PatentRow]:
        """The most recently updated rows in `status`, newest first."""
        return [patent_row(row) for row in await self._fetch(q.LATEST, [status.value, limit])]

    # --- workers and shared records -------------------------------------------------------

    async def heartbeat(self, run_id: int, worker: str, info: Mapping[str, Any], lease: float,
                        finished: bool = False) -> None:
        """Say `worker` is alive (or finished) for `lease` seconds more, with its counters in `info`."""
        await self._write(lambda conn: conn.execute(q.HEARTBEAT, {"worker": worker, "run": run_id, "lease": lease,
                                                                  "info": Jsonb(dict(info)), "finished": finished}))

    async def workers(self, run_id: int | None = None) -> list[WorkerRecord]:
        """Workers of a run (or of the 20 latest runs), live ones first."""
        rows = await self._fetch(q.WORKERS_RECENT) if run_id is None else await self._fetch(q.WORKERS_RUN, [run_id])
        return [WorkerRecord(worker, run, lease_until, info, claimed, finished)
                for worker, run, lease_until, info, claimed, finished in rows]

    async def update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T:
        """Atomically replace the record `name` by `change(old, now)[0]` (row locked meanwhile); returns `[1]`."""
        async def update(conn: AsyncConnection) -> T:
            await conn.execute(q.SHARED_ENSURE, [name])
            cur = await conn.execute(q.SHARED_LOCK, [name])
            old, now = await cur.fetchone() or (None, 0.0)
            new, result = change(old, now)
            await conn.execute(q.SHARED_SET, [Jsonb(new), name])
            return result
        return await self._write(update)

    async def read_shared(self, name: str) -> Shared | None:
        """The record `name`, or None."""
        rows = await self._fetch(q.SHARED_READ, [name])
        return rows[0][0] if rows else None


async def _claim(conn: AsyncConnection, run_id: int, worker: str, limit: int, usable_after: float,
                 lease: float) -> Claim:
    """The three steps of a claim, in the caller's transaction (see `StateStore.claim`)."""
    now = (await (await conn.execute(q.NOW)).fetchone() or (0.0,))[0]
    params = {"run": run_id, "worker": worker, "limit": limit, "usable": usable_after, "now": now,
              "lease_until": now + lease}
    cur = await conn.execute(q.CLAIM_DRAWINGS, {**params, "limit": max(limit, _DRAWINGS_A_CLAIM)})
    if drawings := sorted(await cur.fetchall()):
        return Claim(to_download=tuple(ImageJob(FigureKey(Kind(kind), key, figure), pn, num, url, expires_at)
                                       for kind, key, figure, pn, num, url, expires_at in drawings))
    cur = await conn.execute(q.CLAIM_DOWNLOADS, params)
    if jobs := sorted(await cur.fetchall()):
        return Claim(to_download=tuple(ImageJob(PatentKey(Kind(kind), key), pn, num, url, expires_at)
                                       for _seq, kind, key, pn, num, url, expires_at in jobs))
    cur = await conn.execute(q.FIRST_TO_ASK, params)
    if (first := await cur.fetchone()) is not None:
        cur = await conn.execute(q.CLAIM_TO_ASK, {**params, "kind": first[0]})
        if keys := sorted(await cur.fetchall()):
            return Claim(to_ask=Batch(Kind(first[0]), tuple(key for _seq, key, _repeat in keys)),
                         repeats=tuple(key for _seq, key, repeat in keys if repeat))
    waiting, deferred, next_retry = await (await conn.execute(q.WAITING, params)).fetchone() or (0, 0, None)
    held, later, first_later = await (await conn.execute(q.WAITING_DRAWINGS, params)).fetchone() or (0, 0, None)
    soonest = min((t for t in (next_retry, first_later) if t is not None), default=None)
    return Claim(waiting=int(waiting) + int(held), deferred=int(deferred) + int(later), next_retry=soonest)


async def _each_table(query: str, params: list[Any], conn: AsyncConnection) -> None:
    """A claims statement on the patents and on the drawings (claims live on both)."""
    for table in q.TABLES_WITH_CLAIMS:
        await conn.execute(query.format(table), params)


async def _execute(query: str, params: Mapping[str, Any], conn: AsyncConnection) -> None:
    await conn.execute(query, params)


async def _chunks(keys: Iterable[PatentKey], size: int) -> AsyncIterator[list[PatentKey]]:
    """Lists of up to `size` keys, each read in a worker thread: the keys may come from a CSV being parsed."""
    it = iter(keys)
    while chunk := await anyio.to_thread.run_sync(lambda: list(islice(it, size))):
        yield chunk
