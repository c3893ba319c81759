"""The embedded state store: one SQLite file (default DIR/state.sqlite), nothing to set up.

All of its SQL lives here, in `sqlite_schema.py` (schema, migrations, the dry run), `sqlite_claims.py`
(claims and leases) and `sqlite_rows.py` (the manifest's pages); the guarded result statements are
shared with PostgreSQL (`transitions.py`). Each async method is one hop to a worker thread, and one
thread at a time uses the connections (a CapacityLimiter of 1), so the event loop never waits on the
disk. Writes are grouped into transactions (BEGIN IMMEDIATE, WAL mode); a killed run loses at most
the uncommitted tail. Several processes on one machine (--workers N) share the file: SQLite's own
locking serializes their transactions, and claims keep them off each other's keys.
A disk that is full, read-only or failing under the file raises the OutputError naming its folder
(`machine.state_error`), after the transaction was rolled back.

Status transitions (anything else is ignored, so a late or repeated event cannot undo progress):

    pending  ──resolved──▶ resolved ──downloaded──▶ downloaded
       │                      │
       │                      └─url expired──▶ pending
       │   (deferred: no status change, only `retry_at`; claims skip the key until then)
       ├─no_image/not_found
       └─failed (also from resolved)
    failed ──(--retry-failed)──▶ pending;  no_image/not_found ──(--recheck-after)──▶ pending

With --drawings all a patent's answer is `Listed` (→ resolved, `figures` set) and a row per drawing in
`drawings` (resolved → downloaded | failed, or pending when its URL expired), held by the patent's claim.
Once none of its drawings waits for a download the patent follows them (`transitions.settle_patent`):
pending again if a URL expired (asked again), failed if one failed, else downloaded. Asked again, it is
listed whole, and each drawing it names is matched with its row by its URL's path (`FigureKey.image`), never
by its place: the row takes the new listing's figure, and one already downloaded keeps its file (not
downloaded again: `Batch.stored`); drawings the new listing no longer names lose their row
(`transitions.retire_unlisted`).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from downloader.core.leases import LeaseBook
from downloader.core.model import PatentKey, Status
from downloader.machine import state_error
from downloader.state import sqlite_claims, sqlite_rows
from downloader.state import sqlite_schema as schema
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
from downloader.state.transitions import ALLOWED_FROM, Fence, fence_of, refused, transition_allowed, writes

T = TypeVar("T")
STATE_FILE = "state.sqlite"

__all__ = ["ALLOWED_FROM", "STATE_FILE", "SqliteStore", "connect", "transition_allowed"]


def connect(path: Path | str, *, durable: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place (migrated); StateError if not usable."""
    return schema.connect(path, durable=durable)


class SqliteStore:
    """The SQLite implementation of `state.base.StateStore` (see the module docstring)."""

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self.location = str(path)
        self._folder = os.path.dirname(os.path.abspath(self.location))  # named when its disk fails
        self._conn = connect(path, durable=durable)
        self._reader = connect(path) if str(path) != ":memory:" else self._conn
        self._limiter = anyio.CapacityLimiter(1)
        self._leases = LeaseBook()

    @classmethod
    async def open(cls, path: Path | str, *, durable: bool = False) -> SqliteStore:
        """Open (and create or migrate) the store at `path` without blocking the event loop."""
        return await anyio.to_thread.run_sync(partial(cls, path, durable=durable))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as err:  # a full, read-only or failing disk is a condition of the run
            fault = state_error(err, self._folder)
            if fault is None:
                raise
            raise fault from err

    async def close(self) -> None:
        """Close both connections."""
        await self._run(self.close_now)

    def close_now(self) -> None:
        """Close both connections from synchronous code."""
        if self._reader is not self._conn:
            self._reader.close()
        self._conn.close()

    # --- runs ---------------------------------------------------------------------------------

    async def start_run(self, options: Mapping[str, Any], *, join: bool = False) -> int:
        """A new run's id; with `join`, a live run's over the same inputs when there is one."""
        return await self._run(self._start_run, dict(options), join)

    def _start_run(self, options: dict[str, Any], join: bool) -> int:
        now = time.time()
        if join:
            for run_id, opts in self._conn.execute(
                    "SELECT r.id, r.options FROM runs r WHERE r.ended IS NULL AND (EXISTS (SELECT 1 FROM workers w "
                    "WHERE w.run_id=r.id AND w.lease_until>=? AND NOT w.finished) OR (r.started>=? AND NOT EXISTS "
                    "(SELECT 1 FROM workers w WHERE w.run_id=r.id))) ORDER BY r.id DESC", (now, now - 60)):
                if json.loads(opts).get("inputs") == options.get("inputs"):
                    return int(run_id)
        cur = self._conn.execute("INSERT INTO runs (started, options) VALUES (?, ?)",
                                 (now, json.dumps(options, sort_keys=True)))
        return int(cur.lastrowid or 0)

    async def finish_run(self, run_id: int, exit_code: int, summary: Mapping[str, Any]) -> None:
        """Record a run's end, exit code and summary."""
        await self._run(self._conn.execute, "UPDATE runs SET ended=?, exit_code=?, summary=? WHERE id=?",
                        (time.time(), exit_code, json.dumps(dict(summary), sort_keys=True), run_id))

    async def runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first."""
        rows = await self._run(self._read_all, "SELECT id, started, ended, exit_code, options, summary FROM runs "
                               "ORDER BY id DESC LIMIT ?", (limit,))
        return [RunRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5])) for r in rows]

    def _read_all(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        return self._reader.execute(sql, params).fetchall()

    # --- inputs -------------------------------------------------------------------------------

    async def ingest(self, keys: Iterable[PatentKey], run_id: int) -> IngestCounts:
        """Add keys (new ones pending), mark each as part of this run, de-duplicating in the store.

        The whole read of `keys` (a streaming CSV reader) runs in the worker thread too.
        """
        return await self._run(self._ingest, keys, run_id)

    def _ingest(self, keys: Iterable[PatentKey], run_id: int, chunk: int = 5000) -> IngestCounts:
        rows = 0
        batch: list[tuple[str, str, int, int, float]] = []
        now = time.time()
        for key in keys:
            batch.append((key.kind.value, key.value, run_id, run_id, now))
            if len(batch) >= chunk:
                rows += self._upsert(batch)
                batch = []
        rows += self._upsert(batch)
        unique, new = self._reader.execute(
            "SELECT COUNT(*), COALESCE(SUM(first_run=?), 0) FROM patents WHERE seen_run=?", (run_id, run_id)).fetchone()
        return IngestCounts(new=new, known=unique - new, duplicates=rows - unique)

    def _upsert(self, batch: list[tuple[str, str, int, int, float]]) -> int:
        # One upsert per key; new, known and repeated keys are told apart afterwards by `first_run`.
        if batch:
            with self._transaction():
                self._conn.executemany(
                    "INSERT INTO patents (kind, key, seen_run, first_run, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET seen_run=excluded.seen_run", batch)
        return len(batch)

    async def reopen(self, run_id: int, *, retry_failed: bool, recheck_before: float | None) -> None:
        """Send back to pending what this run should ask again; deferred keys are due at once."""
        await self._run(self._reopen, run_id, retry_failed, recheck_before)

    def _reopen(self, run_id: int, retry_failed: bool, recheck_before: float | None) -> None:
        with self._transaction():
            self._conn.execute("UPDATE patents SET retry_at=NULL WHERE seen_run=? AND status IN ('pending',"
                               "'resolved') AND retry_at IS NOT NULL", (run_id,))
            if retry_failed:
                self._conn.execute("UPDATE patents SET status='pending', attempts=0, expiries=0 "
                                   "WHERE seen_run=? AND status='failed'", (run_id,))
            if recheck_before is not None:
                self._conn.execute("UPDATE patents SET status='pending' WHERE seen_run=? AND "
                                   "status IN ('no_image','not_found') AND updated_at < ?", (run_id, recheck_before))

    async def plan(self, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
                   recheck_before: float | None) -> dict[str, int]:
        """What a run over `keys` would do, writing nothing but a TEMP table."""
        return await self._run(partial(schema.plan, self._conn, keys, usable_after=usable_after,
                                       retry_failed=retry_failed, recheck_before=recheck_before))

    # --- work ---------------------------------------------------------------------------------

    async def claim(self, run_id: int, worker: str, *, limit: int, usable_after: float, lease: float) -> Claim:
        """Reusable URLs first (free to download), else one batch of keys of one kind to ask."""
        sent = time.monotonic()
        claim = await self._run(sqlite_claims.claim, self._conn, run_id, worker, limit, usable_after, lease)
        if not claim.empty:
            self._leases.claimed(claim.lease, sent, lease)
        return claim

    async def renew(self, worker: str, lease: float) -> None:
        """Extend the lease on the keys `worker` holds under claims still live (not run out)."""
        sent = time.monotonic()
        asked = self._leases.live(sent)
        if asked:
            extended = await self._run(sqlite_claims.renew, self._conn, worker, lease, asked)
            self._leases.renewed(asked, extended, sent, lease)

    def holds(self, lease: int) -> bool:
        """Whether the claim of generation `lease` is still provably this process's."""
        return self._leases.holds(lease, time.monotonic())

    async def release(self, worker: str | None) -> None:
        """Give back every key `worker` (None: anyone) still holds."""
        await self._run(sqlite_claims.release, self._conn, worker)

    def _write(self, sql: str, params: Sequence[Any]) -> int:
        with self._transaction():
            return self._conn.execute(sql, params).rowcount

    async def apply(self, events: Sequence[StateEvent | Held]) -> list[Held]:
        """Write a batch of results in one transaction, in order (one executemany per run of alike events);
        the Held ones whose key another claim took since are refused and returned."""
        if not events:
            return []
        lost = await self._run(self._apply, events)
        self._leases.lost({w.lease for w in lost})
        return lost

    def _apply(self, events: Sequence[StateEvent | Held]) -> list[Held]:
        todo = writes(events, "?", time.time())
        written = 0
        with self._transaction():
            for sql, rows in todo.results:
                written += self._conn.executemany(sql, rows).rowcount
            for sql, rows in todo.follow_ups:
                self._conn.executemany(sql, rows)
            if written == len(events):
                return []
            return refused(events, self._generations(events))

    def _generations(self, events: Sequence[StateEvent | Held]) -> dict[Fence, int]:
        """The current generation of each held write's row (the rare path: some write did not apply)."""
        fences = {fence_of(w) for w in events if isinstance(w, Held)}
        return {fence: gen for fence in fences for gen, in self._conn.execute(
            *(("SELECT lease_gen FROM drawings WHERE kind=? AND key=? AND image=?", fence[1:])
              if fence[0] == "drawings" else ("SELECT lease_gen FROM patents WHERE kind=? AND key=?", fence[1:3])))}

    # --- reading ------------------------------------------------------------------------------

    async def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Keys by status, for one run's inputs or for the whole store."""
        where, params = ("WHERE seen_run=?", (run_id,)) if run_id is not None else ("", ())
        rows = await self._run(self._read_all, f"SELECT status, COUNT(*) FROM patents {where} GROUP BY status", params)
        return {status: n for status, n in rows}

    async def rows(self, run_id: int | None = None, status: Status | None = None) -> AsyncIterator[PatentRow]:
        """Rows in input order, a page per thread hop (with --drawings all, a row per drawing: `sqlite_rows`)."""
        drawings = await self.drawings_kind(None) == "all"
        sql, params = sqlite_rows.page_query(run_id, status, drawings=drawings)
        last = -1
        while True:
            page = await self._run(self._read_all, sql, (last, *params))
            for row in page:
                yield patent_row(row[1:])
            if sqlite_rows.last_page(page, drawings=drawings):
                return
            last = page[-1][0]

    async def drawings_kind(self, wanted: str | None) -> str | None:
        """The kind of drawings this job holds ("abstract" or "all"), recorded on first use: a store
        with patents from before holds abstract drawings. None: not recorded yet, and `wanted` None."""
        return await self._run(self._drawings_kind, wanted)

    def _drawings_kind(self, wanted: str | None) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='drawings'").fetchone()
        if row is not None or wanted is None:
            return None if row is None else str(row[0])
        with self._transaction():
            old = self._conn.execute("SELECT 1 FROM patents LIMIT 1").fetchone() is not None
            kind = "abstract" if old else wanted
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('drawings', ?)", (kind,))
            return str(self._conn.execute("SELECT value FROM meta WHERE key='drawings'").fetchone()[0])

    async def drawing_counts(self, run_id: int | None = None) -> dict[str, int]:
        """Drawings by status (--drawings all), for one run's patents or the whole store."""
        where, params = ("WHERE p.seen_run=?", (run_id,)) if run_id is not None else ("", ())
        rows = await self._run(self._read_all, "SELECT d.status, COUNT(*) FROM drawings d JOIN patents p ON "
                               f"p.kind=d.kind AND p.key=d.key {where} GROUP BY d.status", params)
        return {status: n for status, n in rows}

    async def figure_counts(self, run_id: int | None = None) -> dict[int, int]:
        """How many patents have how many drawings (listed ones, and 0 for no_image)."""
        where, params = ("AND seen_run=?", (run_id,)) if run_id is not None else ("", ())
        rows = await self._run(self._read_all, "SELECT COALESCE(figures, 0), COUNT(*) FROM patents WHERE "
                               f"(figures IS NOT NULL OR status='no_image') {where} GROUP BY 1", params)
        return {int(n): int(c) for n, c in rows}

    async def latest(self, status: Status, limit: int) -> list[PatentRow]:
        """The most recently updated rows in `status`, newest first."""
        rows = await self._run(self._read_all, f"SELECT {sqlite_rows.ROW_COLUMNS} FROM patents WHERE status=? "
                               "ORDER BY updated_at DESC, seq DESC LIMIT ?", (status.value, limit))
        return [patent_row(r) for r in rows]

    # --- workers and shared records -----------------------------------------------------------

    async def heartbeat(self, run_id: int, worker: str, info: Mapping[str, Any], lease: float,
                        finished: bool = False) -> None:
        """Say `worker` is alive (or finished) for `lease` seconds more."""
        now = time.time()
        await self._run(self._write, "INSERT INTO workers (worker, run_id, lease_until, info, finished, started) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (worker) DO UPDATE SET run_id=excluded.run_id, "
                        "lease_until=excluded.lease_until, info=excluded.info, finished=excluded.finished",
                        (worker, run_id, now + lease, json.dumps(dict(info)), int(finished), now))

    async def workers(self, run_id: int | None = None) -> list[WorkerRecord]:
        """Workers of a run (or all), live ones first, with the keys each holds."""
        where, params = ("WHERE w.run_id=?", (time.time(), run_id)) if run_id is not None else ("", (time.time(),))
        rows = await self._run(self._read_all,
                               "SELECT w.worker, w.run_id, w.lease_until, w.info, w.finished, (SELECT COUNT(*) FROM "
                               "patents p WHERE p.claimed_by=w.worker AND p.lease_until>=?) FROM workers w "
                               f"{where} ORDER BY w.finished, w.lease_until DESC", params)
        return [WorkerRecord(r[0], r[1], r[2], json.loads(r[3]), r[5], bool(r[4])) for r in rows]

    async def update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T:
        """Replace the record `name` by `change(old, now)[0]` in one transaction; returns `[1]`."""
        return await self._run(self._update_shared, name, change)

    def _update_shared(self, name: str, change: Callable[[Shared | None, float], tuple[Shared, T]]) -> T:
        with self._transaction():
            row = self._conn.execute("SELECT value FROM shared WHERE name=?", (name,)).fetchone()
            new, result = change(json.loads(row[0]) if row else None, time.time())
            self._conn.execute("INSERT INTO shared (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET "
                               "value=excluded.value", (name, json.dumps(new)))
        return result

    async def read_shared(self, name: str) -> Shared | None:
        """The record `name`, or None."""
        rows = await self._run(self._read_all, "SELECT value FROM shared WHERE name=?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def _transaction(self) -> schema.Transaction:
        return schema.Transaction(self._conn)


def local_state_home() -> Path:
    """Where state for an object-store output lives when no --state is given (XDG state home)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "patent-images"
