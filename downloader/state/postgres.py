"""The PostgreSQL state store: one job shared by workers on several machines.

Same rows, transitions and answers as the SQLite store (see `base.py` for the protocol); what
PostgreSQL adds is the fleet. Theory of operation:

- Every time that matters (leases, `retry_at` checks, `updated_at`, the `now` given to shared
  records) is the database server's clock, so workers on machines whose clocks disagree still
  agree on whose lease ran out.
- `claim` (`pg_claims`) locks candidate rows with `SELECT … FOR UPDATE SKIP LOCKED` and marks
  them in the same statement (`UPDATE … FROM` that CTE `RETURNING`): two workers never get the same
  key, and neither waits for the other. A row is free when nobody holds it or its lease ran out.
- Every write is one short transaction (`pg_connections`); a deadlock between two of them (say, a
  bulk `reopen` and a worker's `apply`) is retried, since each one is safe to run again.
- `durable=False` turns off `synchronous_commit` for our sessions: a worker that dies loses
  nothing committed, a crash of the database server may lose the last moments of progress
  (the keys are asked or downloaded again), never consistency. `durable=True` keeps the server's
  default (every commit flushed), the equivalent of SQLite's `synchronous=FULL`.
- A restart or failover of the server is ridden out (`pg_connections`, `pg_patience`): each
  operation is tried again with backoff for up to `--state-patience`, on fresh connections of the
  pool; the worker keeps what it holds in memory meanwhile. Every transaction is safe to run twice,
  since a first try may have committed before its answer was lost: results are guarded UPDATEs, and
  a claim's retry first gives back what its lost try may have taken. Longer than the patience:
  StateOutageError (exit 3).
- Claims are fenced (`base.py`): a claim's generation comes from the `lease_generations` sequence,
  renewals extend only live generations, and a result is written only under its key's generation.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from itertools import islice
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from downloader.core.errors import StateError
from downloader.core.leases import LeaseBook
from downloader.core.model import PatentKey, Status
from downloader.state import pg_claims
from downloader.state import pg_queries as q
from downloader.state.base import (
    Claim,
    Held,
    IngestCounts,
    PatentRow,
    RunRecord,
    Shared,
    StateEvent,
    WorkerRecord,
    patent_row,
)
from downloader.state.pg_connections import Connections, first_connection, open_pool
from downloader.state.pg_patience import Patience
from downloader.state.pg_schema import migrate, parse_url
from downloader.state.transitions import Fence, fence_of, refused, writes

T = TypeVar("T")
CHUNK = 5000  # keys per ingest statement: memory stays flat however long the input
PAGE = 2000  # rows per round trip when streaming
DEFAULT_PATIENCE = 300.0  # --state-patience: a restart or a failover takes seconds to a minute or two


class PostgresStore:
    """The PostgreSQL implementation of the state store (see the module docstring)."""

    def __init__(self, pool: AsyncConnectionPool, location: str, patience: Patience) -> None:
        self._db = Connections(pool, location, patience)
        self.location = location
        self._leases = LeaseBook()

    @classmethod
    async def open(cls, url: str, *, durable: bool = False, max_connections: int = 8,
                   patience: float = DEFAULT_PATIENCE) -> PostgresStore:
        """Connect (waiting up to `patience` seconds for a server that is restarting), create or migrate the
        schema; StateError if refused or written by a newer version, StateOutageError if never reachable."""
        target = parse_url(url)
        waiting = Patience(patience, target.address)
        conn = await first_connection(target.conninfo, target, waiting)
        try:
            await migrate(conn, target.schema, target.location)
        except psycopg.Error as err:
            raise StateError(f"cannot set up the state store at {target.location}: {err}") from err
        finally:
            await conn.close()
        pool = await open_pool(target, durable=durable, max_connections=max_connections, patience=patience)
        return cls(pool, target.location, waiting)

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._db.close()

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
        return await self._db.write(start)

    async def finish_run(self, run_id: int, exit_code: int, summary: Mapping[str, Any]) -> None:
        """Record a run's end, exit code and summary."""
        await self._db.write(lambda conn: conn.execute(q.FINISH_RUN, [exit_code, Jsonb(dict(summary)), run_id]))

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        return [RunRecord(*row) for row in await self._db.fetch(q.RUNS, [limit])]

    # --- inputs ---------------------------------------------------------------------------

    async def ingest(self, keys: Iterable[PatentKey], run_id: int) -> IngestCounts:
        """Add keys (new ones pending) and mark every key as part of this run, in chunks.

        New, known and repeated keys are told apart afterwards by `first_run`, which only a
        fresh insert sets to this run.
        """
        rows = 0
        async for chunk in _chunks(keys, CHUNK):
            params = {"kinds": [k.kind.value for k in chunk], "keys": [k.value for k in chunk], "run": run_id}
            await self._db.write(partial(_execute, q.UPSERT_KEYS, params))
            rows += len(chunk)
        await self._db.write(partial(_execute, q.ANALYZE, {}))
        (unique, new), = await self._db.fetch(q.INGESTED, [run_id, run_id])
        return IngestCounts(new=new, known=unique - new, duplicates=rows - unique)

    async def reopen(self, run_id: int, *, retry_failed: bool, recheck_before: float | None) -> None:
        """Send back to pending what this run should ask again; deferred keys may be asked at once."""
        async def reopen(conn: AsyncConnection) -> None:
            if retry_failed:
                await conn.execute(q.REOPEN_FAILED, [run_id])
            if recheck_before is not None:
                await conn.execute(q.REOPEN_MISSES, [run_id, recheck_before])
            await conn.execute(q.CLEAR_RETRY_AT, [run_id])
        await self._db.write(reopen)

    async def plan(self, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
                   recheck_before: float | None) -> dict[str, int]:
        """What a run over `keys` would do: the keys go to a TEMP table of a transaction rolled back."""
        async with self._db.connection() as conn, conn.transaction(force_rollback=True), conn.cursor() as cur:
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
        """Keys of this run nobody holds: still-good URLs first, else one kind's batch for the API.

        Under a new generation; a try whose answer was lost (the connection broke) is undone by the next.
        """
        tried: list[int] = []
        sent = 0.0

        async def take(conn: AsyncConnection) -> Claim:
            nonlocal sent
            sent = time.monotonic()
            if tried:
                await pg_claims.each_table(q.RELEASE_TRIED, [worker, tried], conn)
            gen = int((await (await conn.execute(q.NEXT_GENERATION)).fetchone() or (0,))[0])
            tried.append(gen)
            return await pg_claims.claim(conn, run_id, worker, gen, limit, usable_after, lease)

        claim = await self._db.write(take)
        if not claim.empty:
            self._leases.claimed(claim.lease, sent, lease)
        return claim

    async def renew(self, worker: str, lease: float) -> None:
        """Extend the lease on the keys `worker` holds under claims still live (not run out)."""
        sent = time.monotonic()
        asked = self._leases.live(sent)
        if not asked:
            return

        async def renew(conn: AsyncConnection) -> set[int]:
            nonlocal sent
            sent = time.monotonic()
            return await pg_claims.renew(conn, worker, lease, asked)

        extended = await self._db.write(renew)
        self._leases.renewed(asked, extended, sent, lease)

    def holds(self, lease: int) -> bool:
        """Whether the claim of generation `lease` is still provably this process's."""
        return self._leases.holds(lease, time.monotonic())

    async def release(self, worker: str | None) -> None:
        """Give back every key `worker` still holds; None: every worker's (only when none can be alive)."""
        if worker is None:
            await self._db.write(partial(pg_claims.each_table, q.RELEASE_ALL, []))
        else:
            await self._db.write(partial(pg_claims.each_table, q.RELEASE, [worker]))

    async def apply(self, events: Sequence[StateEvent | Held]) -> list[Held]:
        """Write a batch of results in one transaction, in order (one executemany per run of alike events);
        the Held ones whose key another claim took since are refused and returned.

        The guarded UPDATEs come from `transitions`, as SQLite's do; `updated_at` is the server's clock.
        """
        async def write(conn: AsyncConnection) -> list[Held]:
            async with conn.cursor() as cur:
                now = (await (await cur.execute(q.NOW)).fetchone() or (0.0,))[0]
                todo = writes(events, "%s", now)
                written = 0
                for query, rows in todo.results:
                    await cur.executemany(query, rows)
                    written += max(cur.rowcount, 0)
                for query, rows in todo.follow_ups:
                    await cur.executemany(query, rows)
                if written == len(events):
                    return []
                return refused(events, await _generations(cur, events))
        if not events:
            return []
        lost = await self._db.write(write)
        self._leases.lost({w.lease for w in lost})
        return lost

    # --- reading --------------------------------------------------------------------------

    async def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Keys by status, for one run's inputs or for the whole store."""
        rows = await self._db.fetch(q.COUNTS_ALL) if run_id is None else await self._db.fetch(q.COUNTS_RUN, [run_id])
        return {status: int(n) for status, n in rows}

    async def rows(self, run_id: int | None = None, status: Status | None = None) -> AsyncIterator[PatentRow]:
        """Rows in input order, from a server-side cursor (PAGE rows per round trip); with
        --drawings all, a row per drawing."""
        queries = q.DRAWING_ROWS if await self.drawings_kind(None) == "all" else q.ROWS
        query = queries[(run_id is not None, status is not None)]
        async with self._db.connection() as conn, conn.transaction():
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
            rows = await self._db.fetch(q.DRAWINGS_KIND)
            return str(rows[0][0]) if rows else None
        return await self._db.write(record)

    async def drawing_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Drawings by status (--drawings all), for one run's patents or the whole store."""
        return {status: int(n) for status, n in await self._db.fetch(q.DRAWING_COUNTS, {"run": run_id})}

    async def figure_counts(self, run_id: int | None = None) -> dict[int, int]:
        """How many patents have how many drawings (listed ones, and 0 for no_image)."""
        return {int(n): int(c) for n, c in await self._db.fetch(q.FIGURE_COUNTS, {"run": run_id})}

    async def latest(self, status: Status, limit: int) -> list[PatentRow]:
        """The most recently updated rows in `status`, newest first."""
        return [patent_row(row) for row in await self._db.fetch(q.LATEST, [status.value, limit])]

    # --- workers and shared records -------------------------------------------------------

    async def heartbeat(self, run_id: int, worker: str, info: Mapping[str, Any], lease: float,
                        finished: bool = False) -> None:
        """Say `worker` is alive (or finished) for `lease` seconds more, with its counters in `info`."""
        await self._db.write(lambda conn: conn.execute(q.HEARTBEAT, {"worker": worker, "run": run_id, "lease": lease,
                                                                  "info": Jsonb(dict(info)), "finished": finished}))

    async def workers(self, run_id: int | None = None) -> list[WorkerRecord]:
        """Workers of a run (or of the 20 latest runs), live ones first."""
        rows = (await self._db.fetch(q.WORKERS_RECENT) if run_id is None
                else await self._db.fetch(q.WORKERS_RUN, [run_id]))
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
        return await self._db.write(update)

    async def read_shared(self, name: str) -> Shared | None:
        """The record `name`, or None."""
        rows = await self._db.fetch(q.SHARED_READ, [name])
        return rows[0][0] if rows else None


async def _generations(cur: psycopg.AsyncCursor[Any], events: Sequence[StateEvent | Held]) -> dict[Fence, int]:
    """The current generation of each held write's row (the rare path: some write did not apply)."""
    fences = {fence_of(w) for w in events if isinstance(w, Held)}
    patents = [f for f in fences if f[0] == "patents"]
    drawings = [f for f in fences if f[0] == "drawings"]
    await cur.execute(q.GENERATIONS, {"kinds": [f[1] for f in patents], "keys": [f[2] for f in patents],
                                      "dkinds": [f[1] for f in drawings], "dkeys": [f[2] for f in drawings],
                                      "images": [f[3] for f in drawings]})
    return {(table, kind, key, image): int(gen) for table, kind, key, image, gen in await cur.fetchall()}


async def _execute(query: str, params: Mapping[str, Any], conn: AsyncConnection) -> None:
    await conn.execute(query, params)


async def _chunks(keys: Iterable[PatentKey], size: int) -> AsyncIterator[list[PatentKey]]:
    """Lists of up to `size` keys, each read in a worker thread: the keys may come from a CSV being parsed."""
    it = iter(keys)
    while chunk := await anyio.to_thread.run_sync(lambda: list(islice(it, size))):
        yield chunk
