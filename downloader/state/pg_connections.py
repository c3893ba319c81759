"""The PostgreSQL store's way to its server: a pool of configured connections, one transaction per write,
and patience through an outage (`pg_patience`).

Every write is one short transaction (`Connections.write`); a deadlock between two of them (say, a bulk
`reopen` and a worker's `apply`) is retried, since each one is safe to run again. A restart or failover
of the server is ridden out: each operation is tried again with backoff for up to `--state-patience`,
on fresh connections of the pool, then StateOutageError (exit 3). Other failures are a StateError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from downloader.core.errors import StateError, StateOutageError
from downloader.state.pg_patience import Patience, is_lost
from downloader.state.pg_schema import StateUrl

# psycopg_pool says what it does about broken connections as log warnings; without a handler of our own,
# Python's last-resort handler would print them on stderr in the middle of a run (the application's
# logging configuration, if any, still receives them).
logging.getLogger("psycopg").addHandler(logging.NullHandler())

T = TypeVar("T")
_RETRIES = 5
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
IDLE_IN_TRANSACTION_MS = 10_000


class Connections:
    """Pooled connections to the store's server, used patiently (see the module docstring)."""

    def __init__(self, pool: AsyncConnectionPool, location: str, patience: Patience) -> None:
        self._pool = pool
        self.location = location
        self._patience = patience

    async def close(self) -> None:
        """Close every connection of the pool."""
        await self._pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for a read that cannot simply be tried again (a stream); a lost server is a
        StateOutageError, other failures a StateError (a deadlock stays itself, to retry)."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except _RETRYABLE:
            raise
        except (psycopg.Error, PoolTimeout) as err:
            where = f"the state store at {self.location} failed: {' '.join(str(err).split())}"
            if is_lost(err):
                raise StateOutageError(where) from err
            if isinstance(err, psycopg.OperationalError | PoolTimeout):
                raise StateError(where) from err
            raise

    async def patiently(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it succeeds, trying again while the server is out of reach (see pg_patience).

        Each try is shielded: a caller cancelled meanwhile (a stopping pipeline) gets its cancellation once
        the transaction is over, as with SQLite's worker thread, instead of a query cut off mid-way; the
        pauses between tries are not (a stop during an outage does not wait for the server).
        """
        while True:
            try:
                with anyio.CancelScope(shield=True), anyio.fail_after(
                        self._patience.attempt_timeout(time.monotonic())):
                    result = await attempt()
            except (psycopg.Error, PoolTimeout, TimeoutError) as err:
                if not is_lost(err):
                    if isinstance(err, psycopg.OperationalError | PoolTimeout):
                        raise StateError(f"the state store at {self.location} failed: "
                                         f"{' '.join(str(err).split())}") from err
                    raise
                first = not self._patience.in_outage
                pause = self._patience.failed(err, time.monotonic())
                if first:  # every pooled connection may be broken: drop them now, not one failed try each
                    with anyio.move_on_after(pause + 1):
                        await self._pool.check()
                await anyio.sleep(pause)
                continue
            self._patience.recovered()
            return result

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in one transaction: again after a deadlock, and after a lost connection (patiently).

        Every `work` is safe to run twice: its first try may have committed before the answer was lost.
        """
        return await self.patiently(partial(self._transaction, work))

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        for attempt in range(_RETRIES):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    return await work(conn)
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise
                await anyio.sleep(0.01 * 2 ** attempt)
        raise AssertionError("unreachable")

    async def fetch(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query, tried again while the server is out of reach."""
        async def read() -> list[tuple[Any, ...]]:
            async with self._pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchall()
        return await self.patiently(read)


async def first_connection(conninfo: str, target: StateUrl, patience: Patience) -> AsyncConnection:
    """The first connection, waiting (with backoff) for a server that is restarting or not up yet."""
    while True:
        try:
            return await AsyncConnection.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as err:
            if not is_lost(err):
                reason = " ".join(str(err).split()) or type(err).__name__
                raise StateError(f"cannot connect to the PostgreSQL state store at {target.address} "
                                 f"({target.location}): {reason}") from err
            await anyio.sleep(patience.failed(err, time.monotonic()))


async def open_pool(target: StateUrl, *, durable: bool, max_connections: int, patience: float) -> AsyncConnectionPool:
    """The pool of the store's sessions: on the store's schema, with `synchronous_commit` off unless `durable`."""
    async def configure(conn: AsyncConnection) -> None:
        if target.schema is not None:
            await conn.execute("SELECT set_config('search_path', %s, false)", [target.schema])
        if not durable:
            await conn.execute("SET synchronous_commit TO off")
        # A worker cut off mid-transaction (a partition, a pause) would keep its row locks, and claims
        # skip locked rows: the server ends such a session instead (its transaction rolls back).
        await conn.execute(f"SET idle_in_transaction_session_timeout TO {IDLE_IN_TRANSACTION_MS}")

    # The pool replaces broken connections in the background, trying again with backoff for as
    # long as the patience (then `reconnect_failed`; a later request starts new attempts).
    pool = AsyncConnectionPool(target.conninfo, min_size=1, max_size=max_connections, open=False,
                               kwargs={"autocommit": True, "fallback_application_name": "patent-images",
                                       "connect_timeout": 10},
                               configure=configure, name="patent-images", timeout=10,
                               reconnect_timeout=patience)
    await pool.open(wait=True, timeout=30)
    return pool
