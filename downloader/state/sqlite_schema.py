"""The SQLite store's schema, its versioned migrations, transactions and the dry-run plan query."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from downloader.core.errors import StateError
from downloader.core.fulltext import image_path_of
from downloader.core.model import PatentKey
from downloader.machine import state_error

SCHEMA_VERSION = 5

_BASE = """
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

# Version → the statements that bring a store from the version before up to it.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        # Claims and leases (several processes share one job), deferred retries, workers, shared records.
        "ALTER TABLE patents ADD COLUMN claimed_by TEXT",
        "ALTER TABLE patents ADD COLUMN lease_until REAL",
        "ALTER TABLE patents ADD COLUMN retry_at REAL",
        "CREATE INDEX IF NOT EXISTS patents_claims ON patents (claimed_by) WHERE claimed_by IS NOT NULL",
        "CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, run_id INTEGER NOT NULL, "
        "lease_until REAL NOT NULL, info TEXT NOT NULL DEFAULT '{}', finished INTEGER NOT NULL DEFAULT 0, "
        "started REAL NOT NULL)",
        "CREATE TABLE IF NOT EXISTS shared (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Earlier versions marked patents `failed` when the API or CDN was out of reach: an outage is
        # not a patent's fault, so they are pending again and the next run asks for them.
        "UPDATE patents SET status='pending', error=NULL WHERE status='failed' AND (error LIKE 'TransientApiError%' "
        "OR error LIKE 'ThrottledError%' OR error LIKE 'TransientDownloadError%')",
    ),
    3: (
        # --drawings all: every drawing of a patent, one row each under its patent (`figures`: how many
        # the API listed). A store from before holds abstract drawings (meta `drawings`, set on first use).
        "ALTER TABLE patents ADD COLUMN figures INTEGER",
        "CREATE TABLE IF NOT EXISTS drawings (kind TEXT NOT NULL, key TEXT NOT NULL, figure INTEGER NOT NULL, "
        "status TEXT NOT NULL DEFAULT 'resolved', pn TEXT, num TEXT, url TEXT, expires_at REAL, image_type TEXT, "
        "local_file TEXT, bytes INTEGER, sha256 TEXT, error TEXT, updated_at REAL, claimed_by TEXT, "
        "lease_until REAL, retry_at REAL, expiries INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (kind, key, figure))",
        "CREATE INDEX IF NOT EXISTS drawings_waiting ON drawings (status) WHERE status='resolved'",
        "CREATE INDEX IF NOT EXISTS drawings_claims ON drawings (claimed_by) WHERE claimed_by IS NOT NULL",
    ),
    4: (
        # Lease fencing: each claim's generation on its keys; results are written only under it.
        "ALTER TABLE patents ADD COLUMN lease_gen INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE drawings ADD COLUMN lease_gen INTEGER NOT NULL DEFAULT 0",
        "INSERT OR IGNORE INTO meta VALUES ('lease_generation', '0')",
    ),
    5: (
        # A drawing is found by its identity, the path of its URL, not by its figure (`transitions`): a listing
        # that drops a drawing from the middle moves the later ones up. Rows from before get it from their URL
        # (`url_path`, the function `core.fulltext.image_path_of`, registered by `_prepare`); one listed twice
        # keeps it on its first row only. Rows without a URL (expired, pending) get none: their next listing,
        # which gives each drawing a fresh URL anyway, replaces them.
        "ALTER TABLE drawings ADD COLUMN image TEXT",
        "UPDATE drawings SET image=url_path(url) WHERE url IS NOT NULL",
        "UPDATE drawings SET image=NULL WHERE image IS NOT NULL AND EXISTS (SELECT 1 FROM drawings o WHERE "
        "o.kind=drawings.kind AND o.key=drawings.key AND o.image=drawings.image AND o.figure < drawings.figure)",
        "CREATE UNIQUE INDEX IF NOT EXISTS drawings_image ON drawings (kind, key, image)",
    ),
}


class _TooNew(Exception):
    """The file's schema is newer than this code's (raised inside the transaction, which rolls back)."""


def connect(path: Path | str, *, durable: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place and migrated; StateError if not usable."""
    try:
        return _connect(path, durable)
    except _TooNew as err:
        raise StateError(str(err)) from None
    except sqlite3.DatabaseError as err:
        if err.sqlite_errorcode & 0xFF in (8, 10, 13):  # READONLY, IOERR, FULL: the disk, not the file
            fault = state_error(err, os.path.dirname(os.path.abspath(path)))
            if fault is not None:
                raise fault from err
        raise StateError(f"{path} is not a usable state store ({err}); move it aside to start afresh "
                         "(the images already on disk are kept and re-verified by the next run)") from err


def _connect(path: Path | str, durable: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60)
    try:
        return _prepare(conn, path, durable)
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: Path | str, durable: bool) -> sqlite3.Connection:
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a process kill; FULL also survives power loss (--durable).
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.create_function("url_path", 1, _url_path, deterministic=True)  # for MIGRATIONS[5]
    with Transaction(conn):
        for statement in _BASE.split(";"):
            if statement.strip():
                conn.execute(statement)
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = 1 if row is None else int(row[0])
        if row is None:  # a new file (the base tables are version 1), or one from before versioning
            conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        if version > SCHEMA_VERSION:
            raise _TooNew(f"{path} was written by a newer patent-images (schema {version}); upgrade to use it")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(target),))
    return conn


def _url_path(url: str) -> str | None:
    """`image_path_of` for SQL: None for a URL it cannot take apart (its row gets no identity, as without URL)."""
    try:
        return image_path_of(url)
    except ValueError:
        return None


class Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


def plan(conn: sqlite3.Connection, keys: Iterable[PatentKey], *, usable_after: float, retry_failed: bool,
         recheck_before: float | None) -> dict[str, int]:
    """What a run over `keys` would do, writing nothing (a TEMP table holds the keys)."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS plan_keys (kind TEXT, key TEXT, UNIQUE (kind, key))")
    conn.execute("DELETE FROM plan_keys")
    rows = 0
    # A deferred BEGIN: only the TEMP table is written, so a live run's writes are never blocked.
    conn.execute("BEGIN")
    try:
        for key in keys:
            rows += 1
            conn.execute("INSERT OR IGNORE INTO plan_keys VALUES (?, ?)", (key.kind.value, key.value))
    finally:
        conn.execute("COMMIT")
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
    found = conn.execute(query, {"usable": usable_after, "recheck": recheck_before}).fetchone()
    unique, new, settled, failed, reusable, ask_numbers, ask_ids = (int(v or 0) for v in found)
    return {"rows": rows, "unique": unique, "duplicates": rows - unique, "new": new,
            "settled": settled, "failed_kept": failed, "reusable_urls": reusable,
            "to_ask_numbers": ask_numbers, "to_ask_ids": ask_ids}
