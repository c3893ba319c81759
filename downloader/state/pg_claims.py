"""The claims and leases of the PostgreSQL store, run in the caller's transaction (`Connections.write`).

A claim locks candidate rows with `SELECT … FOR UPDATE SKIP LOCKED` and marks them in the same
statement (`pg_queries`), so two workers never get the same key and neither waits for the other;
`claims` turns what it took into a Claim, as it does for SQLite. Times are the server's clock.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from downloader.core.model import Kind
from downloader.state import claims
from downloader.state import pg_queries as q
from downloader.state.base import Claim


async def claim(conn: AsyncConnection, run_id: int, worker: str, gen: int, limit: int, usable_after: float,
                lease: float) -> Claim:
    """The three steps of a claim, in the caller's transaction (see `StateStore.claim`)."""
    now = (await (await conn.execute(q.NOW)).fetchone() or (0.0,))[0]
    params = {"run": run_id, "worker": worker, "limit": limit, "usable": usable_after, "now": now,
              "lease_until": now + lease, "gen": gen}
    cur = await conn.execute(q.CLAIM_DRAWINGS, {**params, "limit": max(limit, claims.DRAWINGS_A_CLAIM)})
    if drawings := await cur.fetchall():
        return claims.drawings_to_download(drawings, gen)
    cur = await conn.execute(q.CLAIM_DOWNLOADS, params)
    if jobs := await cur.fetchall():
        return claims.patents_to_download(jobs, gen)
    cur = await conn.execute(q.FIRST_TO_ASK, params)
    if (first := await cur.fetchone()) is not None:
        cur = await conn.execute(q.CLAIM_TO_ASK, {**params, "kind": first[0]})
        if keys := await cur.fetchall():
            kind = Kind(first[0])
            cur = await conn.execute(q.STORED_DRAWINGS, {"kind": kind.value, "keys": [key for _, key, _ in keys]})
            return claims.keys_to_ask(kind, keys, gen, await cur.fetchall())
    waiting = await (await conn.execute(q.WAITING, params)).fetchone() or (0, 0, None)
    held = await (await conn.execute(q.WAITING_DRAWINGS, params)).fetchone() or (0, 0, None)
    return claims.nothing_free(waiting, held)


async def renew(conn: AsyncConnection, worker: str, lease: float, gens: list[int]) -> set[int]:
    """Extend the lease on the rows `worker` holds under `gens` and whose lease has not run out; the
    generations extended."""
    extended: set[int] = set()
    for table in q.TABLES_WITH_CLAIMS:
        cur = await conn.execute(q.RENEW.format(table), {"lease": lease, "worker": worker, "gens": gens})
        extended.update(int(gen) for gen, in await cur.fetchall())
    return extended


async def each_table(query: str, params: list[Any], conn: AsyncConnection) -> None:
    """A claims statement on the patents and on the drawings (claims live on both)."""
    for table in q.TABLES_WITH_CLAIMS:
        await conn.execute(query.format(table), params)
