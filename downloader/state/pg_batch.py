"""A batch of the PostgreSQL store's statements sent to the server as one message, so that a worker cut
off midway never leaves its session where the server cannot time it out.

Why not `executemany`: psycopg runs it in pipeline mode, many extended-protocol messages (Bind,
Execute, …) and a Sync only at the end, flushed as they are written. A worker cut off in between (a
partition, a paused machine) leaves its server session waiting for the next message of a batch it
started, holding the row locks its first statements took. `idle_in_transaction_session_timeout`
(`pg_connections`) does not apply there: the server is "idle" only after a Sync, when it has said
it is ready for the next query. So those rows stayed locked for as long as the worker was away, and
the other workers' claims (`FOR UPDATE SKIP LOCKED`) could not take its keys over when its lease
lapsed: the whole fleet waited for the lost worker.

One simple-protocol Query message is run only once it has arrived whole: cut off midway, the session
is idle in its transaction (after the previous statement's Sync), holds no lock from this batch, and
the server ends it after the timeout. The parameters are bound client-side (psycopg's `mogrify`, the
same adaptation as a server-side bind); one round trip for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncClientCursor, AsyncConnection


async def run_in_one_message(conn: AsyncConnection, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
    """Run each statement with each of its parameter rows, in order, in one message on `conn` (in the
    caller's transaction); the number of rows each run changed, in the same order."""
    binder = AsyncClientCursor(conn)
    text = ";\n".join(binder.mogrify(sql, params) for sql, rows in statements for params in rows)
    if not text:
        return []
    async with conn.cursor() as cur:
        await cur.execute(text.encode(), prepare=False)  # no parameters: the simple protocol, one Query message
        changed = [max(cur.rowcount, 0)]
        while cur.nextset():
            changed.append(max(cur.rowcount, 0))
    return changed
