"""The claims and leases of the SQLite store: which rows a claim takes, and their renewal.

Each function is one transaction (BEGIN IMMEDIATE) on the store's writing connection, run in its
worker thread. A claim takes a new generation from `meta`, marks its rows with it in the same
statement that selects them (`UPDATE … RETURNING`), and `claims` turns what it took into a Claim.
A row is free when nobody holds it or its lease ran out, and due when its `retry_at` passed or is unset.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from downloader.core.model import Kind
from downloader.state import claims
from downloader.state.base import Claim
from downloader.state.sqlite_schema import Transaction

_FREE = "(claimed_by IS NULL OR lease_until < :now)"
_DUE = "(retry_at IS NULL OR retry_at<=:now)"
# A patent with a drawing whose URL expired unused (pending) is asked again for a fresh one: a recharge.
_DRAWING_EXPIRED = ("EXISTS (SELECT 1 FROM drawings d WHERE d.kind=patents.kind AND d.key=patents.key "
                    "AND d.status='pending')")
# Paid for before and unused: its URL (or a drawing's) expired, or its answer was lost on the way (a
# Deferred that says so counts an attempt, and only an answer settles a key: pending with attempts is one).
_REPEAT = f"expiries>0 OR status='resolved' OR (status='pending' AND attempts>0) OR {_DRAWING_EXPIRED}"
TABLES_WITH_CLAIMS = ("patents", "drawings")


def claim(conn: sqlite3.Connection, run_id: int, worker: str, limit: int, usable_after: float,
          lease: float) -> Claim:
    """Reusable URLs first (free to download), else one batch of keys of one kind to ask."""
    now = time.time()
    args = {"run": run_id, "worker": worker, "limit": limit, "usable": usable_after, "now": now,
            "until": now + lease}
    with Transaction(conn):
        args["gen"] = gen = int(conn.execute(
            "UPDATE meta SET value=CAST(value AS INTEGER)+1 WHERE key='lease_generation' RETURNING value"
        ).fetchone()[0])
        drawings = _claim_drawings(conn, {**args, "limit": max(limit, claims.DRAWINGS_A_CLAIM)})
        if drawings:
            return claims.drawings_to_download(drawings, gen)
        jobs = _claim_rows(conn, f"status='resolved' AND expires_at>:usable AND {_DUE}", args,
                           "seq, kind, key, pn, num, url, expires_at")
        if jobs:
            return claims.patents_to_download(jobs, gen)
        for condition in (f"status='pending' AND {_DUE}", f"status='resolved' AND expires_at<=:usable AND {_DUE}"):
            first = conn.execute(f"SELECT kind FROM patents WHERE seen_run=:run AND {condition} AND {_FREE} "
                                 "ORDER BY seq LIMIT 1", args).fetchone()
            if first:
                # A key paid for before and unused (_REPEAT), counted or not yet, is a repeat.
                rows = _claim_rows(conn, f"{condition} AND kind=:kind", {**args, "kind": first[0]},
                                   f"seq, key, {_REPEAT}")
                kind = Kind(first[0])
                return claims.keys_to_ask(kind, rows, gen, _stored(conn, kind, [key for _, key, _ in rows]))
        return _nothing_free(conn, args)


def _stored(conn: sqlite3.Connection, kind: Kind, keys: Sequence[str]) -> list[Any]:
    """The drawings of `keys` already downloaded: asked again, they keep their row and file."""
    marks = ",".join("?" * len(keys))
    return conn.execute(f"SELECT key, figure, image FROM drawings WHERE kind=? AND key IN ({marks}) "
                        "AND status='downloaded'", (kind.value, *keys)).fetchall()


def _claim_drawings(conn: sqlite3.Connection, args: dict[str, Any]) -> list[Any]:
    """Listed drawings of this run nobody holds (their asker died or stopped): download them, no call.
    One whose URL is too close to expiry comes back from the fetcher as expired: its patent is asked again."""
    return conn.execute(
        "UPDATE drawings SET claimed_by=:worker, lease_until=:until, lease_gen=:gen WHERE rowid IN "
        "(SELECT d.rowid FROM drawings d "
        "JOIN patents p ON p.kind=d.kind AND p.key=d.key WHERE d.status='resolved' AND p.seen_run=:run "
        "AND (d.claimed_by IS NULL OR d.lease_until < :now) AND (d.retry_at IS NULL OR d.retry_at<=:now) "
        "LIMIT :limit) RETURNING kind, key, figure, image, pn, num, url, expires_at", args).fetchall()


def _claim_rows(conn: sqlite3.Connection, condition: str, args: dict[str, Any], columns: str) -> list[Any]:
    return conn.execute(
        "UPDATE patents SET claimed_by=:worker, lease_until=:until, lease_gen=:gen WHERE seq IN "
        f"(SELECT seq FROM patents WHERE seen_run=:run AND {condition} AND {_FREE} ORDER BY seq LIMIT :limit) "
        f"RETURNING {columns}",
        args).fetchall()


def _nothing_free(conn: sqlite3.Connection, args: dict[str, Any]) -> Claim:
    patents = conn.execute(
        "SELECT COALESCE(SUM(claimed_by IS NOT NULL AND lease_until>=:now), 0), "
        "COALESCE(SUM(retry_at>:now), 0), MIN(CASE WHEN retry_at>:now THEN retry_at END) "
        "FROM patents WHERE seen_run=:run AND status IN ('pending','resolved')",
        args).fetchone()
    drawings = conn.execute(
        "SELECT COALESCE(SUM(claimed_by IS NOT NULL AND lease_until>=:now), 0), COALESCE(SUM(retry_at>:now), 0), "
        "MIN(CASE WHEN retry_at>:now THEN retry_at END) FROM drawings WHERE status='resolved'", args).fetchone()
    return claims.nothing_free(patents, drawings)


def renew(conn: sqlite3.Connection, worker: str, lease: float, generations: list[int]) -> set[int]:
    """Extend the lease on the rows `worker` holds under `generations` and whose lease has not run out;
    the generations extended."""
    now = time.time()
    marks = ",".join("?" * len(generations))
    extended: set[int] = set()
    with Transaction(conn):
        for table in TABLES_WITH_CLAIMS:
            rows = conn.execute(f"UPDATE {table} SET lease_until=? WHERE claimed_by=? AND lease_until>=? "
                                f"AND lease_gen IN ({marks}) RETURNING lease_gen",
                                (now + lease, worker, now, *generations)).fetchall()
            extended.update(gen for gen, in rows)
    return extended


def release(conn: sqlite3.Connection, worker: str | None) -> None:
    """Give back every row `worker` (None: anyone) still holds, on the patents and on the drawings (claims
    live on both), in one transaction."""
    held, params = ("claimed_by IS NOT NULL", ()) if worker is None else ("claimed_by=?", (worker,))
    with Transaction(conn):
        for table in TABLES_WITH_CLAIMS:
            conn.execute(f"UPDATE {table} SET claimed_by=NULL, lease_until=NULL WHERE {held}", params)
