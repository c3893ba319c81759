"""The SQLite state store: every key's status, URL, file and errors, plus the run history.

All SQL lives here. One connection writes (the pipeline's recorder, batched transactions in WAL
mode); readers use their own connection, so a planner can page through work while results land.
A killed run loses at most the uncommitted tail; the next run starts from what was committed.

Status transitions (anything else is ignored, so a late or repeated event cannot undo progress):

    pending  ──resolved──▶ resolved ──downloaded──▶ downloaded
       │                      │
       ├─no_image/not_found   └─url expired──▶ pending
       └─failed (also from resolved)
    failed ──(--retry-failed)──▶ pending;  no_image/not_found ──(--recheck-after)──▶ pending
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from downloader.core.errors import StateError
from downloader.core.model import (
    Downloaded,
    Failed,
    ImageJob,
    Kind,
    NoImage,
    NotFound,
    Outcome,
    PatentKey,
    Resolved,
    Status,
    UrlExpired,
)

STATE_FILE = "state.sqlite"
SCHEMA_VERSION = 1

# Which statuses each event may move a row out of (the transition table above, as data).
ALLOWED_FROM: dict[Status, tuple[Status, ...]] = {
    Status.RESOLVED: (Status.PENDING, Status.RESOLVED),
    Status.NO_IMAGE: (Status.PENDING, Status.RESOLVED),
    Status.NOT_FOUND: (Status.PENDING, Status.RESOLVED),
    Status.FAILED: (Status.PENDING, Status.RESOLVED),
    Status.DOWNLOADED: (Status.RESOLVED,),
    Status.PENDING: (Status.RESOLVED,),  # a URL that expired before its download
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patents (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    pn TEXT, patent_id TEXT, num TEXT, url TEXT, expires_at REAL,
    local_file TEXT, bytes INTEGER, sha256 TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    expiries INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated_at REAL,
    seen_run INTEGER,
    first_run INTEGER,
    UNIQUE (kind, key)
);
CREATE INDEX IF NOT EXISTS patents_work ON patents (seen_run, status, seq);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    exit_code INTEGER,
    options TEXT NOT NULL DEFAULT '{}',
    summary TEXT NOT NULL DEFAULT '{}'
);
"""

MANIFEST_COLUMNS = ("patent_number", "patent_id", "pn", "num", "path", "local_file", "status",
                    "bytes", "sha256", "error")


def transition_allowed(current: Status, new: Status) -> bool:
    """Whether an event that sets `new` may apply to a row in `current` (pure, for tests)."""
    return current in ALLOWED_FROM.get(new, ())


@dataclass(slots=True)
class IngestCounts:
    """What reading the inputs found: new keys, keys known from earlier runs, repeats."""

    new: int = 0
    known: int = 0
    duplicates: int = 0


def connect(path: Path | str, *, durable: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place; StateError if the file is not usable."""
    try:
        return _connect(path, durable)
    except sqlite3.DatabaseError as err:
        raise StateError(f"{path} is not a usable state store ({err}); move it aside to start afresh "
                         "(the images already on disk are kept and re-verified by the next run)") from err


def _connect(path: Path | str, durable: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process kill; FULL also survives power loss (--durable).
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.executescript(_SCHEMA)
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    elif int(row[0]) > SCHEMA_VERSION:
        conn.close()
        raise StateError(f"{path} was written by a newer patent-images (schema {row[0]}); upgrade to use it")
    return conn


class StateStore:
    """The SQLite implementation of the state store (see the module docstring)."""

    def __init__(self, path: Path | str, *, durable: bool = False) -> None:
        self.path = path
        self._conn = connect(path, durable=durable)
        self._reader = connect(path) if str(path) != ":memory:" else self._conn

    def close(self) -> None:
        """Close both connections."""
        if self._reader is not self._conn:
            self._reader.close()
        self._conn.close()

    # --- runs -----------------------------------------------------------------------------

    def start_run(self, options: dict[str, Any]) -> int:
        """Record a run's start; its id marks the keys it reads."""
        cur = self._conn.execute("INSERT INTO runs (started, options) VALUES (?, ?)",
                                 (time.time(), json.dumps(options, sort_keys=True)))
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, exit_code: int, summary: dict[str, Any]) -> None:
        """Record a run's end, exit code and summary."""
        self._conn.execute("UPDATE runs SET ended=?, exit_code=?, summary=? WHERE id=?",
                           (time.time(), exit_code, json.dumps(summary, sort_keys=True), run_id))

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first."""
        rows = self._reader.execute(
            "SELECT id, started, ended, exit_code, options, summary FROM runs ORDER BY id DESC LIMIT ?",
            (limit,)).fetchall()
        return [{"id": r[0], "started": r[1], "ended": r[2], "exit_code": r[3],
                 "options": json.loads(r[4]), "summary": json.loads(r[5])} for r in rows]

    # --- inputs ---------------------------------------------------------------------------

    def ingest(self, keys: Iterable[PatentKey], run_id: int, chunk: int = 5000) -> IngestCounts:
        """Add keys (new ones as pending) and mark every key as part of this run, de-duplicating.

        One upsert per key (executemany per chunk); new, known and repeated keys are told apart
        afterwards by `first_run`, which only a fresh insert sets to this run.
        """
        rows = 0
        batch: list[tuple[str, str, int, int, float]] = []
        for key in keys:
            batch.append((key.kind.value, key.value, run_id, run_id, time.time()))
            if len(batch) >= chunk:
                self._upsert(batch)
                rows += len(batch)
                batch = []
        if batch:
            self._upsert(batch)
            rows += len(batch)
        unique, new = self._reader.execute(
            "SELECT COUNT(*), COALESCE(SUM(first_run=?), 0) FROM patents WHERE seen_run=?", (run_id, run_id)).fetchone()
        return IngestCounts(new=new, known=unique - new, duplicates=rows - unique)

    def _upsert(self, batch: list[tuple[str, str, int, int, float]]) -> None:
        with self._transaction():
            self._conn.executemany(
                "INSERT INTO patents (kind, key, seen_run, first_run, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET seen_run=excluded.seen_run", batch)

    def reopen(self, run_id: int, *, retry_failed: bool, recheck_before: float | None) -> None:
        """Send back to `pending` what this run should ask again: failed (if asked), stale misses."""
        with self._transaction():
            if retry_failed:
                self._conn.execute("UPDATE patents SET status='pending', attempts=0, expiries=0 "
                                   "WHERE seen_run=? AND status='failed'", (run_id,))
            if recheck_before is not None:
                self._conn.execute("UPDATE patents SET status='pending' WHERE seen_run=? AND "
                                   "status IN ('no_image','not_found') AND updated_at < ?",
                                   (run_id, recheck_before))

    # --- planning -------------------------------------------------------------------------

    def iter_reusable(self, run_id: int, usable_after: float, page: int = 1000) -> Iterator[ImageJob]:
        """Resolved keys whose URL is still good past `usable_after`: download without an API call."""
        last = -1
        while True:
            rows = self._reader.execute(
                "SELECT seq, kind, key, pn, num, url, expires_at FROM patents WHERE seen_run=? AND "
                "status='resolved' AND seq>? AND expires_at>? ORDER BY seq LIMIT ?",
                (run_id, last, usable_after, page)).fetchall()
            if not rows:
                return
            for _seq, kind, key, pn, num, url, expires_at in rows:
                yield ImageJob(PatentKey(Kind(kind), key), pn, num, url, expires_at)
            last = rows[-1][0]

    def iter_to_ask(self, run_id: int, usable_after: float, page: int = 1000) -> Iterator[PatentKey]:
        """Keys that need the API: pending ones, then resolved ones whose URL has (nearly) expired.

        Two index-ordered scans rather than one OR query: SQLite answers the OR with a sort of
        every match per page, which made a million-key run quadratic.
        """
        yield from self._page_keys("status='pending'", (run_id,), page)
        yield from self._page_keys("status='resolved' AND expires_at<=?", (run_id, usable_after), page)

    def _page_keys(self, condition: str, params: tuple[Any, ...], page: int) -> Iterator[PatentKey]:
        last = -1
        while True:
            rows = self._reader.execute(
                f"SELECT seq, kind, key FROM patents WHERE seen_run=? AND {condition} AND seq>? ORDER BY seq LIMIT ?",
                (*params, last, page)).fetchall()
            if not rows:
                return
            for _, kind, key in rows:
                yield PatentKey(Kind(kind), key)
            last = rows[-1][0]

    def count_reusable(self, run_id: int, usable_after: float) -> int:
        """Resolved keys whose URL is still good past `usable_after`."""
        row = self._reader.execute("SELECT COUNT(*) FROM patents WHERE seen_run=? AND status='resolved' "
                                   "AND expires_at>?", (run_id, usable_after)).fetchone()
        return int(row[0])

    def count_expired(self, run_id: int, usable_after: float) -> int:
        """Resolved keys whose URL will not be good at `usable_after` (they must be asked again)."""
        row = self._reader.execute("SELECT COUNT(*) FROM patents WHERE seen_run=? AND status='resolved' "
                                   "AND expires_at<=?", (run_id, usable_after)).fetchone()
        return int(row[0])

    # --- results --------------------------------------------------------------------------

    def apply(self, events: Sequence[Outcome | Downloaded | UrlExpired]) -> None:
        """Write a batch of pipeline results in one transaction (one executemany per run of alike events).

        Order is kept: a key's `resolved` must be applied before its `downloaded` in the same batch.
        """
        now = time.time()
        grouped: list[tuple[str, list[tuple[Any, ...]]]] = []
        for event in events:
            sql, params = _update_for(event)
            if not grouped or grouped[-1][0] != sql:
                grouped.append((sql, []))
            grouped[-1][1].append((*params, now, event.key.kind.value, event.key.value))
        with self._transaction():
            for sql, rows in grouped:
                self._conn.executemany(sql, rows)

    def fail_expired_repeatedly(self, run_id: int, max_expiries: int) -> int:
        """Give up on keys whose fresh URLs kept expiring before their download."""
        with self._transaction():
            cur = self._conn.execute(
                "UPDATE patents SET status='failed', error='UrlExpiredError: the URL expired "
                "before the download ' || expiries || ' times' WHERE seen_run=? AND "
                "status='pending' AND expiries>=?", (run_id, max_expiries))
        return cur.rowcount

    def plan(self, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
             recheck_before: float | None) -> dict[str, int]:
        """What a run over `keys` would do, writing nothing (a TEMP table holds the keys)."""
        self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS plan_keys (kind TEXT, key TEXT, UNIQUE (kind, key))")
        self._conn.execute("DELETE FROM plan_keys")
        rows = 0
        # A deferred BEGIN: only the TEMP table is written, so a live run's writes are never blocked.
        self._conn.execute("BEGIN")
        try:
            for key in keys:
                rows += 1
                self._conn.execute("INSERT OR IGNORE INTO plan_keys VALUES (?, ?)", (key.kind.value, key.value))
        finally:
            self._conn.execute("COMMIT")
        ask = ("p.status IS NULL OR p.status='pending' OR (p.status='resolved' AND p.expires_at<=:usable)"
               + (" OR p.status='failed'" if retry_failed else "")
               + (" OR (p.status IN ('no_image','not_found') AND p.updated_at<:recheck)"
                  if recheck_before is not None else ""))
        query = f"""SELECT COUNT(*), SUM(p.status IS NULL),
                SUM(p.status IN ('downloaded','no_image','not_found') AND NOT ({ask})),
                SUM(p.status='failed' AND NOT ({ask})),
                SUM(p.status='resolved' AND p.expires_at>:usable),
                SUM(({ask}) AND k.kind='patent_number'), SUM(({ask}) AND k.kind='patent_id')
            FROM plan_keys k LEFT JOIN patents p ON p.kind=k.kind AND p.key=k.key"""
        found = self._conn.execute(query, {"usable": usable_after, "recheck": recheck_before}).fetchone()
        unique, new, settled, failed, reusable, ask_numbers, ask_ids = (int(v or 0) for v in found)
        return {"rows": rows, "unique": unique, "duplicates": rows - unique, "new": new,
                "settled": settled, "failed_kept": failed, "reusable_urls": reusable,
                "to_ask_numbers": ask_numbers, "to_ask_ids": ask_ids}

    # --- reading --------------------------------------------------------------------------

    def counts(self, run_id: int | None = None) -> dict[str, int]:
        """Keys by status, for one run's inputs or for the whole store."""
        where, params = ("WHERE seen_run=?", (run_id,)) if run_id is not None else ("", ())
        rows = self._reader.execute(f"SELECT status, COUNT(*) FROM patents {where} GROUP BY status",
                                    params).fetchall()
        return {status: n for status, n in rows}

    def iter_manifest(self, run_id: int | None = None) -> Iterator[dict[str, Any]]:
        """Manifest rows in input order, streamed from a cursor."""
        where, params = ("WHERE seen_run=?", (run_id,)) if run_id is not None else ("", ())
        cur = self._reader.execute(
            "SELECT kind, key, patent_id, pn, num, url, local_file, status, bytes, sha256, error "
            f"FROM patents {where} ORDER BY seq", params)
        for kind, key, pid, pn, num, url, local, status, size, sha, error in cur:
            is_id = kind == Kind.ID.value
            yield {"patent_number": "" if is_id else key, "patent_id": key if is_id else (pid or ""),
                   "pn": pn or "", "num": num or "", "path": url or "", "local_file": local or "",
                   "status": status, "bytes": size if size is not None else "", "sha256": sha or "",
                   "error": error or ""}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    # --- report queries ---

    def iter_failure_groups(self, cap: int = 200) -> Iterator[tuple[str, int, str, str, str]]:
        """Failed keys grouped by error type (the `error` up to its first ':'), biggest group first.

        Streams (type, group size, key, pn, error), at most `cap` keys per group, in input order.
        """
        cur = self._reader.execute(
            "WITH f AS (SELECT seq, key, pn, error, CASE WHEN instr(error, ':') > 0 "
            "THEN substr(error, 1, instr(error, ':') - 1) ELSE coalesce(nullif(error, ''), 'unknown') END AS type "
            "FROM patents WHERE status='failed'), "
            "g AS (SELECT f.*, COUNT(*) OVER (PARTITION BY type) AS n, "
            "ROW_NUMBER() OVER (PARTITION BY type ORDER BY seq) AS rn FROM f) "
            "SELECT type, n, key, coalesce(pn, ''), coalesce(error, '') FROM g WHERE rn <= ? "
            "ORDER BY n DESC, type, seq", (cap,))
        yield from cur

    def iter_recent_downloads(self, limit: int = 5000) -> Iterator[tuple[str, str, str, str]]:
        """The most recently downloaded drawings, newest first: (key, pn, num, local_file)."""
        cur = self._reader.execute(
            "SELECT key, coalesce(pn, ''), coalesce(num, ''), local_file FROM patents "
            "WHERE status='downloaded' AND local_file IS NOT NULL ORDER BY updated_at DESC, seq DESC LIMIT ?",
            (limit,))
        yield from cur


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def _update_for(event: Outcome | Downloaded | UrlExpired) -> tuple[str, tuple[Any, ...]]:
    """The guarded UPDATE for one event; its trailing parameters are updated_at, kind, key."""
    def guarded(new: Status, assignments: str) -> str:
        allowed = ",".join(f"'{s.value}'" for s in ALLOWED_FROM[new])
        return (f"UPDATE patents SET status='{new.value}', {assignments}, updated_at=? "
                f"WHERE kind=? AND key=? AND status IN ({allowed})")

    match event:
        case Resolved(_, pn, pid, num, url, expires_at):
            return guarded(Status.RESOLVED, "pn=?, patent_id=?, num=?, url=?, expires_at=?, error=NULL, "
                                            "attempts=attempts+1"), (pn, pid, num, url, expires_at)
        case NoImage(_, pn, pid):
            return guarded(Status.NO_IMAGE, "pn=?, patent_id=?, url=NULL, error=NULL, "
                                            "attempts=attempts+1"), (pn, pid)
        case NotFound():
            return guarded(Status.NOT_FOUND, "url=NULL, error=NULL, attempts=attempts+1"), ()
        case Failed(_, error):
            return guarded(Status.FAILED, "error=?, attempts=attempts+1"), (error,)
        case Downloaded(_, local_file, size, sha):
            return guarded(Status.DOWNLOADED, "local_file=?, bytes=?, sha256=?, error=NULL"), (
                local_file, size, sha)
        case UrlExpired(_, reason):
            return guarded(Status.PENDING, "url=NULL, expires_at=NULL, expiries=expiries+1, error=?"), (
                reason,)
    raise TypeError(f"not a state event: {event!r}")
