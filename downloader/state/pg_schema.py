"""The PostgreSQL store's schema, its migrations, and what a state URL says.

The schema version lives in `meta` (key `schema_version`). `migrate` applies the missing
migrations in order, in one transaction that holds an advisory lock on the schema's name, so a
fleet of workers starting at once creates the tables exactly once; a store written by a newer
version is refused rather than half understood.

A state URL is a libpq URL (`postgresql://user:password@host:port/db?…`). One query parameter is
ours: `schema=NAME` puts every table in that schema (created if missing), so several jobs or
tests can share a database. libpq's own `options=-csearch_path%3DNAME` also works, for a schema
that exists already.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict

from downloader.core.errors import StateError

SCHEMA_VERSION = 4

# Index n holds the statements that take a store from version n to n + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE patents (
            seq bigserial NOT NULL,
            kind text NOT NULL,
            key text NOT NULL,
            status text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending','resolved','downloaded','no_image','not_found','failed')),
            pn text, patent_id text, num text, url text, expires_at double precision,
            local_file text, bytes bigint, sha256 text,
            attempts integer NOT NULL DEFAULT 0,
            expiries integer NOT NULL DEFAULT 0,
            error text,
            updated_at double precision,
            seen_run bigint,
            first_run bigint,
            claimed_by text,
            lease_until double precision,
            retry_at double precision,
            PRIMARY KEY (kind, key))""",
        # Claims walk the unsettled keys of a run in input order. This is on purpose the only index
        # in `seq` order: with another one (a primary key on seq, say) the planner, whose statistics
        # cannot know that settled keys gather at the front, may walk that one and filter past every
        # settled key on each claim. Listing rows sorts instead (`rows`).
        "CREATE INDEX patents_unsettled ON patents (seen_run, seq) WHERE status IN ('pending','resolved')",
        "CREATE INDEX patents_run ON patents (seen_run, status)",
        "CREATE INDEX patents_claimed ON patents (claimed_by) WHERE claimed_by IS NOT NULL",
        "CREATE INDEX patents_latest ON patents (status, updated_at)",
        """CREATE TABLE runs (
            id bigserial PRIMARY KEY,
            started double precision NOT NULL,
            ended double precision,
            exit_code integer,
            options jsonb NOT NULL DEFAULT '{}',
            summary jsonb NOT NULL DEFAULT '{}')""",
        """CREATE TABLE workers (
            worker text PRIMARY KEY,
            run_id bigint NOT NULL,
            started double precision NOT NULL,
            lease_until double precision NOT NULL,
            info jsonb NOT NULL DEFAULT '{}',
            finished boolean NOT NULL DEFAULT false)""",
        "CREATE INDEX workers_run ON workers (run_id)",
        "CREATE TABLE shared (name text PRIMARY KEY, value jsonb)",
    ),
    (
        # --drawings all: every drawing of a patent, one row each under its patent (`figures`: how many
        # the API listed). A store from before holds abstract drawings (meta `drawings`, set on first use).
        "ALTER TABLE patents ADD COLUMN figures integer",
        """CREATE TABLE drawings (
            kind text NOT NULL,
            key text NOT NULL,
            figure integer NOT NULL,
            status text NOT NULL DEFAULT 'resolved'
                CHECK (status IN ('pending','resolved','downloaded','failed')),
            pn text, num text, url text, expires_at double precision, image_type text,
            local_file text, bytes bigint, sha256 text, error text,
            updated_at double precision,
            claimed_by text,
            lease_until double precision,
            retry_at double precision,
            expiries integer NOT NULL DEFAULT 0,
            PRIMARY KEY (kind, key, figure))""",
        "CREATE INDEX drawings_waiting ON drawings (kind, key) WHERE status = 'resolved'",
        "CREATE INDEX drawings_claimed ON drawings (claimed_by) WHERE claimed_by IS NOT NULL",
    ),
    (
        # Lease fencing: each claim's generation on its keys; results are written only under it.
        "ALTER TABLE patents ADD COLUMN lease_gen bigint NOT NULL DEFAULT 0",
        "ALTER TABLE drawings ADD COLUMN lease_gen bigint NOT NULL DEFAULT 0",
        "CREATE SEQUENCE lease_generations",
    ),
    (
        # A drawing is found by its identity, the path of its URL, not by its figure (`transitions`): a listing
        # that drops a drawing from the middle moves the later ones up. Rows from before get it from their URL
        # (what `core.fulltext.image_path_of` takes: after the scheme and host, up to a query or fragment); one
        # listed twice keeps it on its first row only. Rows without a URL (expired, pending) get none: their next
        # listing, which gives each drawing a fresh URL anyway, replaces them.
        "ALTER TABLE drawings ADD COLUMN image text",
        "UPDATE drawings SET image = substring(url from '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)') "
        "WHERE url IS NOT NULL",
        """UPDATE drawings d SET image = NULL WHERE image IS NOT NULL AND EXISTS (SELECT 1 FROM drawings o
            WHERE o.kind = d.kind AND o.key = d.key AND o.image = d.image AND o.figure < d.figure)""",
        "CREATE UNIQUE INDEX drawings_image ON drawings (kind, key, image)",
    ),
)
assert len(MIGRATIONS) == SCHEMA_VERSION

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class StateUrl:
    """A state URL taken apart: what libpq connects with, our schema, and a printable form."""

    conninfo: str
    schema: str | None
    location: str  # the URL without its password
    address: str  # host:port, for messages


def parse_url(url: str) -> StateUrl:
    """Split our `schema` parameter off a libpq URL and note where it points (StateError if bad)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StateError(f"not a PostgreSQL URL: {redact(url)}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise StateError(f"schema must be a lower-case SQL name (letters, digits, _), got {schema!r}")
    conninfo = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    try:
        params = conninfo_to_dict(conninfo)
    except Exception as err:  # psycopg.ProgrammingError, but its text may quote the password
        raise StateError(f"not a usable PostgreSQL URL: {redact(url)}") from err
    host = str(params.get("host") or "localhost")
    return StateUrl(conninfo, schema, redact(url), f"{host}:{params.get('port') or 5432}")


def redact(url: str) -> str:
    """The URL without a password (in the user part or as a `password` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


async def migrate(conn: AsyncConnection, schema: str | None, where: str) -> None:
    """Create `schema` if asked, then bring the tables to SCHEMA_VERSION (StateError if newer)."""
    async with conn.transaction():
        if schema is not None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('patent-images schema'))")
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            await conn.execute("SELECT set_config('search_path', %s, true)", [schema])
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('patent-images migrate ' || current_schema()))")
        await conn.execute("CREATE TABLE IF NOT EXISTS meta (key text PRIMARY KEY, value text NOT NULL)")
        cur = await conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StateError(f"{where} was written by a newer patent-images (schema {version}, this one "
                             f"knows {SCHEMA_VERSION}); upgrade to use it")
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement)
        if version < SCHEMA_VERSION:
            await conn.execute("INSERT INTO meta VALUES ('schema_version', %s) ON CONFLICT (key) "
                               "DO UPDATE SET value = excluded.value", [str(SCHEMA_VERSION)])
