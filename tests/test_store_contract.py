"""One contract for every state store: the same tests run on SQLite (a file) and PostgreSQL (a schema).

Concurrency is tested with several handles on one store (what several workers have), never
with mocks: claims, ingests and shared-record updates race for real.

PostgreSQL: `PATENT_IMAGES_TEST_POSTGRES` (default a trust-auth server on 127.0.0.1:5432,
database `test`); each test gets a fresh schema, dropped afterwards. No server: those tests skip.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from downloader.core.errors import StateError, StateOutageError
from downloader.core.model import (
    Deferred,
    Downloaded,
    Failed,
    Kind,
    NoImage,
    NotFound,
    PatentKey,
    Resolved,
    Status,
    UrlExpired,
)
from downloader.state import pg_schema
from downloader.state import sqlite as sqlite_module
from downloader.state.base import Claim, Held, PatentRow, StateStore

POSTGRES_DSN = os.environ.get("PATENT_IMAGES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
FAR = 4e9  # an expiry long after any test (epoch seconds, year 2096)


def k(value: str, kind: Kind = Kind.NUMBER) -> PatentKey:
    return PatentKey(kind, value)


def soon() -> float:
    """A `usable_after`: URLs must stay good for another minute."""
    return time.time() + 60


# --- backends ---------------------------------------------------------------------------------

@dataclass
class Backend:
    """One store under test: `open()` gives another handle on it (another worker's view)."""

    name: str
    url: str  # a path or a URL
    opener: Callable[[], Awaitable[StateStore]]
    read_version: Callable[[], Awaitable[int]]
    write_version: Callable[[int], Awaitable[None]]
    handles: list[StateStore] = field(default_factory=list)

    async def open(self) -> StateStore:
        store = await self.opener()
        self.handles.append(store)
        return store


_pg_probe: list[str | None] = []  # the reason PostgreSQL is unusable (None: usable), probed once


async def postgres_unusable() -> str | None:
    if not _pg_probe:
        import psycopg

        from downloader.state.pg_schema import redact

        try:
            conn = await psycopg.AsyncConnection.connect(POSTGRES_DSN, connect_timeout=3)
            await conn.close()
            _pg_probe.append(None)
        except psycopg.Error as err:
            _pg_probe.append(f"no PostgreSQL for the contract tests at {redact(POSTGRES_DSN)} (set "
                             f"PATENT_IMAGES_TEST_POSTGRES to a DSN): {' '.join(str(err).split())}")
    return _pg_probe[0]


async def pg_execute(query: Any, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchall() if cur.description else []


@pytest.fixture
async def postgres_backend() -> AsyncIterator[Backend]:
    """A PostgresStore in a schema of its own (dropped at the end)."""
    pytest.importorskip("psycopg", reason="the 'postgres' extra (psycopg) is not installed")
    if (reason := await postgres_unusable()) is not None:
        pytest.skip(reason)
    from psycopg import sql

    from downloader.state.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}schema={schema}"
    meta = sql.SQL("{}.meta").format(sql.Identifier(schema))

    async def read_version() -> int:
        rows = await pg_execute(sql.SQL("SELECT value FROM {} WHERE key = 'schema_version'").format(meta))
        return int(rows[0][0])

    async def write_version(version: int) -> None:
        await pg_execute(sql.SQL("UPDATE {} SET value = %s WHERE key = 'schema_version'").format(meta),
                          (str(version),))

    backend = Backend("postgres", url, lambda: PostgresStore.open(url), read_version, write_version)
    yield backend
    for store in backend.handles:
        await store.close()
    await pg_execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A SqliteStore on a file in tmp_path."""
    store_class = getattr(sqlite_module, "SqliteStore", None)
    if store_class is None:
        pytest.skip("downloader.state.sqlite.SqliteStore does not exist yet (the embedded store is being "
                    "rewritten to the StateStore protocol)")
    path = tmp_path / "state.sqlite"

    async def read_version() -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    async def write_version(version: int) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))

    backend = Backend("sqlite", str(path), lambda: store_class.open(path, durable=False), read_version, write_version)
    yield backend
    for store in backend.handles:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each store in turn."""
    value: Backend = request.getfixturevalue(f"{request.param}_backend")
    return value


@pytest.fixture
async def store(backend: Backend) -> StateStore:
    return await backend.open()


async def collect(rows: AsyncIterator[PatentRow]) -> list[PatentRow]:
    return [row async for row in rows]


async def by_key(store: StateStore, run_id: int | None = None) -> dict[str, PatentRow]:
    return {row.key: row async for row in store.rows(run_id)}


def resolved(key: PatentKey, expires_at: float = FAR) -> Resolved:
    return Resolved(key, f"pn-{key.value}", f"id-{key.value}", "0001", f"http://cdn/{key.value}.png", expires_at)


# --- inputs -----------------------------------------------------------------------------------

async def test_ingest_counts_new_known_and_duplicates(store: StateStore) -> None:
    """New, known and repeated keys are told apart; ingesting again changes nothing."""
    run1 = await store.start_run({})
    c1 = await store.ingest([k("A1"), k("B1"), k("A1")], run1)
    assert (c1.new, c1.known, c1.duplicates) == (2, 0, 1)
    run2 = await store.start_run({})
    for _ in range(2):  # idempotent
        c2 = await store.ingest(iter([k("A1"), k("C1"), k("C1")]), run2)
        assert (c2.new, c2.known, c2.duplicates) == (1, 1, 1)
    assert await store.counts(run2) == {"pending": 2}
    assert await store.counts() == {"pending": 3}
    assert [row.key for row in await collect(store.rows(run1))] == ["B1"]  # A1 now belongs to run 2


def scrambled(n: int, prefix: str = "K") -> Iterator[PatentKey]:
    """n distinct keys in an order that is not sorted (a generator: the store must stream it)."""
    return (k(f"{prefix}{(i * 7919) % n:06d}") for i in range(n))


async def test_ingest_streams_many_keys_in_input_order(store: StateStore) -> None:
    """More keys than one chunk, from a generator; rows come back in input order."""
    run = await store.start_run({})
    counts = await store.ingest(scrambled(12_345), run)
    assert (counts.new, counts.known, counts.duplicates) == (12_345, 0, 0)
    assert [row.key for row in await collect(store.rows(run))] == [key.value for key in scrambled(12_345)]


async def test_concurrent_ingests_of_the_same_keys(backend: Backend) -> None:
    """Three workers reading the same CSV at once: every key once, the same counts for each."""
    stores = [await backend.open() for _ in range(3)]
    run = await stores[0].start_run({"inputs": ["a.csv"]})

    def keys() -> Iterator[PatentKey]:
        yield from scrambled(11_000)
        yield from scrambled(500)  # repeats

    results = await asyncio.gather(*(s.ingest(keys(), run) for s in stores))
    assert {(c.new, c.known, c.duplicates) for c in results} == {(11_000, 0, 500)}
    assert await stores[1].counts() == {"pending": 11_000}


# --- transitions ------------------------------------------------------------------------------

EVENTS: dict[str, Callable[[PatentKey], Any]] = {
    "Resolved": lambda key: resolved(key, FAR + 1),
    "NoImage": lambda key: NoImage(key, "pn-late", "id-late"),
    "NotFound": NotFound,
    "Failed": lambda key: Failed(key, "BadImageError: late"),
    "Downloaded": lambda key: Downloaded(key, "images/late.png", 7, "ee"),
    "UrlExpired": lambda key: UrlExpired(key, "UrlExpiredError: late"),
    "Deferred": lambda key: Deferred(key, "OutageError: late", FAR),
}
# event → (the statuses it applies to, the status it leads to); every other status ignores it.
TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "Resolved": ({"pending", "resolved"}, "resolved"),
    "NoImage": ({"pending", "resolved"}, "no_image"),
    "NotFound": ({"pending", "resolved"}, "not_found"),
    "Failed": ({"pending", "resolved"}, "failed"),
    "Downloaded": ({"resolved"}, "downloaded"),
    "UrlExpired": ({"resolved"}, "pending"),
    "Deferred": ({"pending", "resolved"}, "unchanged"),  # only retry_at: a resolved key keeps its URL
}
SETUP: dict[str, Callable[[PatentKey], list[Any]]] = {
    "pending": lambda key: [],
    "resolved": lambda key: [resolved(key)],
    "downloaded": lambda key: [resolved(key), Downloaded(key, "images/a.png", 10, "ff")],
    "no_image": lambda key: [NoImage(key, "pn", "pid")],
    "not_found": lambda key: [NotFound(key)],
    "failed": lambda key: [Failed(key, "BadImageError: first")],
}


async def test_transitions_table(store: StateStore) -> None:
    """Every event from every status: applied along the table, ignored (row untouched) elsewhere."""
    cases = [(start, event) for start in SETUP for event in EVENTS]
    keys = {case: k(f"{case[0]}-{case[1]}") for case in cases}
    run = await store.start_run({})
    await store.ingest(keys.values(), run)
    await store.apply([e for (start, _), key in keys.items() for e in SETUP[start](key)])
    before = await by_key(store)
    assert {before[key.value].status.value for key in keys.values()} == set(SETUP)
    await store.apply([EVENTS[event](key) for (_, event), key in keys.items()])
    after = await by_key(store)
    for (start, event), key in keys.items():
        allowed, target = TRANSITIONS[event]
        if start in allowed:
            assert after[key.value].status == (start if target == "unchanged" else target), (start, event)
        else:
            assert after[key.value] == before[key.value], (start, event)


async def test_events_set_their_fields_in_order(store: StateStore) -> None:
    """What each event writes; a resolve and its download in one batch apply in order."""
    a, b, c, d, e = (k(v) for v in "ABCDE")
    run = await store.start_run({})
    await store.ingest([a, b, c, d, e], run)
    await store.apply([resolved(a, 2e9), Downloaded(a, "images/a.png", 10, "ff"), NoImage(b, "pn-b", "id-b"),
                       resolved(c, 2e9), UrlExpired(c, "UrlExpiredError: gone"), Failed(d, "BadImageError: html"),
                       Deferred(e, "OutageError: api down", FAR)])
    rows = await by_key(store, run)
    assert (rows["A"].status, rows["A"].local_file, rows["A"].bytes, rows["A"].sha256) == (
        Status.DOWNLOADED, "images/a.png", 10, "ff")
    assert (rows["A"].pn, rows["A"].patent_id, rows["A"].num, rows["A"].url, rows["A"].expires_at) == (
        "pn-A", "id-A", "0001", "http://cdn/A.png", 2e9)
    assert (rows["B"].status, rows["B"].pn, rows["B"].patent_id, rows["B"].url) == (
        Status.NO_IMAGE, "pn-b", "id-b", None)
    assert (rows["C"].status, rows["C"].url, rows["C"].expires_at, rows["C"].error) == (
        Status.PENDING, None, None, "UrlExpiredError: gone")
    assert (rows["D"].status, rows["D"].error) == (Status.FAILED, "BadImageError: html")
    assert (rows["E"].status, rows["E"].error) == (Status.PENDING, "OutageError: api down")
    assert all(row.updated_at is not None and abs(row.updated_at - time.time()) < 30 for row in rows.values())


# --- claims -----------------------------------------------------------------------------------

async def test_concurrent_claims_never_share_a_key(backend: Backend) -> None:
    """Four workers claiming at once over 2,000 keys of both kinds: each key goes to exactly one."""
    stores = [await backend.open() for _ in range(4)]
    run = await stores[0].start_run({})
    keys = [k(f"K{i:04d}", Kind.ID if (i // 250) % 2 else Kind.NUMBER) for i in range(2000)]
    await stores[0].ingest(keys, run)
    await stores[0].apply([resolved(key) for key in keys[::7]])  # these need no API call

    async def worker(store: StateStore, name: str) -> list[PatentKey]:
        got: list[PatentKey] = []
        while not (claim := await store.claim(run, name, limit=37, usable_after=soon(), lease=60)).empty:
            if claim.to_ask is not None:
                assert len(claim.to_ask.keys) <= 37 and not claim.to_download
                got += [PatentKey(claim.to_ask.kind, v) for v in claim.to_ask.keys]
            else:
                assert len(claim.to_download) <= 37 and all(job.url for job in claim.to_download)
                got += [job.key for job in claim.to_download]
        assert claim.waiting == 2000  # everything is held now, by someone
        return got

    results = await asyncio.gather(*(worker(s, f"w{i}") for i, s in enumerate(stores)))
    claimed = [key for got in results for key in got]
    assert len(claimed) == len(set(claimed)) == 2000 and set(claimed) == set(keys)


async def ask_all(store: StateStore, run: int, worker: str) -> set[str]:
    """Claim until nothing is left; the keys given to ask (each batch one kind, in input order).

    Whether pending keys come before resolved ones with stale URLs is left to each store.
    """
    asked: set[str] = set()
    while (claim := await store.claim(run, worker, limit=10, usable_after=soon(), lease=30)).to_ask is not None:
        assert not claim.to_download and list(claim.to_ask.keys) == sorted(claim.to_ask.keys)
        asked |= set(claim.to_ask.keys)
    assert claim.empty
    return asked


async def test_claim_order_downloads_first_then_one_kind(store: StateStore) -> None:
    """Still-good URLs first (input order); then a batch of the first waiting key's kind."""
    keys = [k("N1"), k("I1", Kind.ID), k("N2"), k("I2", Kind.ID), k("N3"), k("R1"), k("R2")]
    run = await store.start_run({})
    await store.ingest(keys, run)
    await store.apply([resolved(k("R2")), resolved(k("R1")), resolved(k("N3"), expires_at=time.time() + 5)])
    first = await store.claim(run, "w", limit=10, usable_after=soon(), lease=60)
    assert [(job.key.value, job.url) for job in first.to_download] == [
        ("R1", "http://cdn/R1.png"), ("R2", "http://cdn/R2.png")] and first.to_ask is None
    second = await store.claim(run, "w", limit=2, usable_after=soon(), lease=60)
    assert second.to_ask is not None and (second.to_ask.kind, second.to_ask.keys) == (Kind.NUMBER, ("N1", "N2"))
    third = await store.claim(run, "w", limit=10, usable_after=soon(), lease=60)
    assert third.to_ask is not None and (third.to_ask.kind, third.to_ask.keys) == (Kind.ID, ("I1", "I2"))
    assert await ask_all(store, run, "w") == {"N3"}  # its URL expires too soon
    assert await store.claim(run, "w", limit=10, usable_after=soon(), lease=60) == Claim(waiting=7)


async def test_a_dead_workers_keys_are_taken_over_after_its_lease(backend: Backend) -> None:
    """Lease 0.5 s: after it, another worker gets the keys; resolved ones come back as downloads."""
    a, b = await backend.open(), await backend.open()
    keys = [k(f"K{i}") for i in range(10)]
    run = await a.start_run({})
    await a.ingest(keys, run)
    claim = await a.claim(run, "A", limit=10, usable_after=soon(), lease=0.5)
    assert claim.to_ask is not None and len(claim.to_ask.keys) == 10
    await a.apply([resolved(key) for key in keys[:4]] + [resolved(keys[4], expires_at=time.time() + 5)])
    assert await b.claim(run, "B", limit=10, usable_after=soon(), lease=30) == Claim(waiting=10)
    await asyncio.sleep(0.7)  # A died
    took = await b.claim(run, "B", limit=10, usable_after=soon(), lease=30)
    assert [(j.key, j.url) for j in took.to_download] == [(key, f"http://cdn/{key.value}.png") for key in keys[:4]]
    assert await ask_all(b, run, "B") == {key.value for key in keys[4:]}  # K4's URL expires too soon


async def test_renew_keeps_and_release_gives_back(backend: Backend) -> None:
    """A renewed lease outlives its first term; released keys are free at once; settled keys are released."""
    a, b = await backend.open(), await backend.open()
    keys = [k(f"K{i}") for i in range(6)]
    run = await a.start_run({})
    await a.ingest(keys, run)
    await a.claim(run, "A", limit=6, usable_after=soon(), lease=0.5)
    await a.renew("A", 30)
    await asyncio.sleep(0.7)
    assert await b.claim(run, "B", limit=6, usable_after=soon(), lease=30) == Claim(waiting=6)
    await a.apply([NotFound(keys[0]), Failed(keys[1], "X: y"), resolved(keys[2])])
    assert (await b.claim(run, "B", limit=6, usable_after=soon(), lease=30)).waiting == 4  # K2 still A's
    await a.release("A")
    took = await b.claim(run, "B", limit=6, usable_after=soon(), lease=30)
    assert [job.key for job in took.to_download] == [keys[2]]
    asked = await b.claim(run, "B", limit=6, usable_after=soon(), lease=30)
    assert asked.to_ask is not None and asked.to_ask.keys == ("K3", "K4", "K5")
    await b.release(None)  # everyone's (a run holding the folder lock, after a crash)
    again = await a.claim(run, "A", limit=6, usable_after=soon(), lease=30)
    assert [job.key for job in again.to_download] == [keys[2]] and again.lease != took.lease


# --- fencing -----------------------------------------------------------------------------------

async def test_a_lapsed_claims_results_are_refused_and_the_new_owners_stand(backend: Backend) -> None:
    """A's lease lapses, B claims the keys: A's late results are refused and returned, B's are written."""
    a, b = await backend.open(), await backend.open()
    keys = [k(f"K{i}") for i in range(4)]
    run = await a.start_run({})
    await a.ingest(keys, run)
    old = await a.claim(run, "A", limit=4, usable_after=soon(), lease=0.4)
    assert old.to_ask is not None and a.holds(old.lease)
    await a.apply([Held(resolved(key), old.lease) for key in keys])  # still A's: written
    await asyncio.sleep(0.6)  # A is cut off; its lease runs out
    assert not a.holds(old.lease)
    new = await b.claim(run, "B", limit=4, usable_after=soon(), lease=30)
    assert [j.key for j in new.to_download] == keys and new.lease != old.lease and b.holds(new.lease)
    await b.apply([Held(Downloaded(keys[0], "images/k0.png", 7, "b-sha"), new.lease)])
    late = [Held(Downloaded(key, f"images/k{i}.png", 9, "a-sha"), old.lease) for i, key in enumerate(keys[:2])]
    late.append(Held(Failed(keys[2], "X: a stale failure"), old.lease))
    assert await a.apply(late) == late  # all refused, counted by the caller
    rows = await by_key(b, run)
    assert (rows["K0"].status, rows["K0"].sha256) == (Status.DOWNLOADED, "b-sha")
    assert rows["K1"].status == rows["K2"].status == Status.RESOLVED  # B still holds them, untouched
    assert await b.apply([Held(Downloaded(keys[1], "images/k1.png", 7, "b-sha"), new.lease)]) == []
    assert (await by_key(b, run))["K1"].sha256 == "b-sha"


async def test_a_late_result_of_a_lapsed_claim_nobody_took_is_kept(backend: Backend) -> None:
    """A billed answer that lands after the lease lapsed is still written while no other claim took the key;
    late or repeated events of the holder are ignored, not refused."""
    a = await backend.open()
    run = await a.start_run({})
    await a.ingest([k("A"), k("B")], run)
    claim = await a.claim(run, "A", limit=2, usable_after=soon(), lease=0.2)
    await asyncio.sleep(0.3)
    assert await a.apply([Held(resolved(k("A")), claim.lease), Held(NotFound(k("B")), claim.lease)]) == []
    assert await a.apply([Held(NotFound(k("B")), claim.lease)]) == []  # a repeat: ignored, not refused
    rows = await by_key(a, run)
    assert (rows["A"].status, rows["B"].status) == (Status.RESOLVED, Status.NOT_FOUND)


async def test_renew_extends_live_claims_only_and_a_lapsed_one_is_never_held_again(backend: Backend) -> None:
    """Renewing keeps a live claim; once lapsed, even untaken, a claim stays lost and its keys go back to the pool."""
    a, b = await backend.open(), await backend.open()
    run = await a.start_run({})
    await a.ingest([k("A"), k("B"), k("C")], run)
    first = await a.claim(run, "A", limit=1, usable_after=soon(), lease=0.4)
    second = await a.claim(run, "A", limit=1, usable_after=soon(), lease=30)
    await asyncio.sleep(0.5)
    await a.renew("A", 30)
    assert not a.holds(first.lease) and a.holds(second.lease)
    took = await b.claim(run, "B", limit=3, usable_after=soon(), lease=30)
    assert took.to_ask is not None and took.to_ask.keys == ("A", "C")  # "B" is still A's (renewed)
    await a.renew("A", 30)
    assert not a.holds(first.lease) and not a.holds(took.lease)  # another store's claim is not A's


async def test_deferred_keys_wait_for_retry_at(store: StateStore) -> None:
    """A Deferred key stays pending, released, and is claimable only once its retry_at has passed."""
    keys = [k("A"), k("B"), k("C")]
    run = await store.start_run({})
    await store.ingest(keys, run)
    await store.claim(run, "w1", limit=3, usable_after=soon(), lease=60)
    await store.apply([Deferred(keys[0], "OutageError: api down", time.time() + 0.6), NotFound(keys[1])])
    waiting = await store.claim(run, "w2", limit=3, usable_after=soon(), lease=60)
    assert waiting.empty and (waiting.waiting, waiting.deferred) == (1, 1)  # C held by w1, A deferred
    assert waiting.next_retry is not None and 0 < waiting.next_retry - time.time() < 0.7
    await asyncio.sleep(0.8)
    again = await store.claim(run, "w2", limit=3, usable_after=soon(), lease=60)
    assert again.to_ask is not None and again.to_ask.keys == ("A",)
    await store.apply([NotFound(keys[0]), NotFound(keys[2])])
    assert await store.claim(run, "w2", limit=3, usable_after=soon(), lease=60) == Claim()  # nothing left


async def test_a_deferred_download_keeps_its_url_and_is_fetched_not_asked_after_retry_at(store: StateStore) -> None:
    """A CDN outage defers a resolved key: it stays resolved with its URL, no claim takes it before its
    retry_at, then it is claimed for download (no new API call); a new run takes it at once."""
    run = await store.start_run({})
    await store.ingest([k("A")], run)
    await store.apply([resolved(k("A"), FAR), Deferred(k("A"), "TransientDownloadError: HTTP 502 from the CDN",
                                                       time.time() + 0.5)])
    assert (await by_key(store, run))["A"].status == Status.RESOLVED
    early = await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)
    assert early.empty and early.deferred == 1
    await asyncio.sleep(0.6)
    later = await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)
    assert [j.url for j in later.to_download] == ["http://cdn/A.png"] and later.to_ask is None
    await store.apply([Deferred(k("A"), "TransientDownloadError: HTTP 502 from the CDN", FAR)])
    await store.reopen(run, retry_failed=False, recheck_before=None)
    assert [j.key for j in (await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)).to_download] == [
        k("A")]


async def test_a_claim_says_which_keys_are_asked_again_after_their_url_expired(store: StateStore) -> None:
    """Repeats: keys paid for whose URL expired unused (a UrlExpired, or a resolved URL past usable_after)."""
    run = await store.start_run({})
    await store.ingest([k("A"), k("B"), k("C")], run)
    await store.apply([resolved(k("A"), FAR), UrlExpired(k("A"), "UrlExpiredError: gone"), resolved(k("B"), 10.0)])
    asked: set[str] = set()
    repeats: list[str] = []
    while (claim := await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)).to_ask is not None:
        asked.update(claim.to_ask.keys)
        repeats.extend(claim.repeats)
        assert set(claim.repeats) <= set(claim.to_ask.keys)
    assert asked == {"A", "B", "C"} and sorted(repeats) == ["A", "B"]


async def test_reopen_lets_deferred_keys_be_asked_at_once(store: StateStore) -> None:
    """A new run does not wait for an old retry_at."""
    run = await store.start_run({})
    await store.ingest([k("A")], run)
    await store.apply([Deferred(k("A"), "OutageError: api down", FAR)])
    assert (await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)).empty
    await store.reopen(run, retry_failed=False, recheck_before=None)
    claim = await store.claim(run, "w", limit=3, usable_after=soon(), lease=60)
    assert claim.to_ask is not None and claim.to_ask.keys == ("A",)


# --- runs and workers -------------------------------------------------------------------------

async def test_runs_history(store: StateStore) -> None:
    """Runs newest first, with options, end, exit code and summary."""
    r1 = await store.start_run({"inputs": ["a.csv"], "rate": 5})
    r2 = await store.start_run({"inputs": ["b.csv"]})
    await store.finish_run(r1, 3, {"downloaded": 2, "stop": "outage"})
    runs = await store.runs(limit=5)
    assert [r.id for r in runs] == [r2, r1] and r2 > r1
    assert (runs[1].options, runs[1].exit_code, runs[1].summary) == (
        {"inputs": ["a.csv"], "rate": 5}, 3, {"downloaded": 2, "stop": "outage"})
    assert runs[1].ended is not None and runs[1].ended >= runs[1].started and runs[0].ended is None
    assert [r.id for r in await store.runs(limit=1)] == [r2]


async def test_join_finds_a_live_run_over_the_same_inputs(store: StateStore) -> None:
    """join=True returns a run that has a live worker (or was started a moment ago and no worker has
    spoken yet) and the same inputs; anything else starts anew."""
    inputs = {"inputs": ["a.csv", "b.csv"]}
    lonely = await store.start_run(inputs)
    assert await store.start_run(inputs, join=True) == lonely  # workers started together make one run
    await store.heartbeat(lonely, "w0", {}, lease=0.1)
    await asyncio.sleep(0.2)
    live = await store.start_run(inputs, join=True)
    assert live != lonely  # its only worker's lease ran out
    await store.heartbeat(live, "w1", {}, lease=30)
    assert await store.start_run({**inputs, "rate": 9}, join=True) == live
    assert await store.start_run({"inputs": ["a.csv"]}, join=True) != live
    assert await store.start_run(inputs) != live  # without join, always a new run
    await store.heartbeat(live, "w1", {}, lease=30, finished=True)
    after_finish = await store.start_run(inputs, join=True)
    assert after_finish != live
    await store.heartbeat(after_finish, "w2", {}, lease=0.2)
    await asyncio.sleep(0.4)
    assert await store.start_run(inputs, join=True) != after_finish  # its only worker's lease ran out
    await store.heartbeat(after_finish, "w2", {}, lease=30)
    await store.finish_run(after_finish, 0, {})
    assert await store.start_run(inputs, join=True) != after_finish  # ended


async def test_heartbeat_and_workers(store: StateStore) -> None:
    """Workers with their info and live claims, live ones first."""
    run = await store.start_run({})
    await store.ingest([k(f"K{i}") for i in range(6)], run)
    await store.heartbeat(run, "a-dead", {"host": "h0"}, lease=0.1)
    await store.heartbeat(run, "b-done", {"host": "h2"}, lease=30, finished=True)
    await store.heartbeat(run, "c-live", {"host": "h1", "pid": 42}, lease=30)
    await store.claim(run, "c-live", limit=4, usable_after=soon(), lease=30)
    await asyncio.sleep(0.3)
    workers = await store.workers(run)
    assert [w.worker for w in workers][0] == "c-live" and {w.worker for w in workers} == {"a-dead", "b-done", "c-live"}
    live = workers[0]
    assert (live.run_id, live.info, live.claimed, live.finished) == (run, {"host": "h1", "pid": 42}, 4, False)
    assert live.lease_until > time.time() + 20
    assert {w.worker: w.finished for w in workers} == {"a-dead": False, "b-done": True, "c-live": False}
    await store.heartbeat(run, "c-live", {"host": "h1", "images": 7}, lease=30)
    assert (await store.workers())[0].info == {"host": "h1", "images": 7}
    assert await store.workers(run + 1000) == []


async def test_update_shared_is_atomic_under_concurrency(backend: Backend) -> None:
    """50 concurrent increments from three handles give exactly 50; each saw a distinct old value."""
    stores = [await backend.open() for _ in range(3)]

    def bump(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], int]:
        n = (old or {}).get("n", 0)
        return {"n": n + 1, "at": now}, n

    seen = await asyncio.gather(*(stores[i % 3].update_shared("bucket", bump) for i in range(50)))
    assert sorted(seen) == list(range(50))
    record = await stores[0].read_shared("bucket")
    assert record is not None and record["n"] == 50 and abs(record["at"] - time.time()) < 30
    assert await stores[1].read_shared("nothing") is None


async def test_update_shared_keeps_the_old_value_when_change_raises(store: StateStore) -> None:
    """An exception in `change` changes nothing."""
    await store.update_shared("halt", lambda old, now: ({"reason": "quota"}, None))

    def broken(old: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], None]:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await store.update_shared("halt", broken)
    assert await store.read_shared("halt") == {"reason": "quota"}


# --- planning, reopening, giving up ---------------------------------------------------------

async def _settled_mix(store: StateStore) -> int:
    run = await store.start_run({})
    await store.ingest([k(v) for v in "ABCDEFG"] + [k("H", Kind.ID)], run)
    await store.apply([resolved(k("A")), Downloaded(k("A"), "images/a.png", 1, "a"), NoImage(k("B"), "pn", "id"),
                       NotFound(k("C")), Failed(k("D"), "X: y"), resolved(k("E")),
                       resolved(k("F"), expires_at=time.time() + 5)])
    return run


async def test_plan_counts_what_a_run_would_do_and_writes_nothing(store: StateStore) -> None:
    """The dry run: settled, failed, reusable and to-ask keys by kind, duplicates and new ones."""
    await _settled_mix(store)
    before = await collect(store.rows())
    keys = [k(v) for v in "ABCDEFGA"] + [k("H", Kind.ID), k("N1"), k("N2", Kind.ID)]
    plan = await store.plan(keys, usable_after=soon(), retry_failed=False, recheck_before=None)
    assert plan == {"rows": 11, "unique": 10, "duplicates": 1, "new": 2, "settled": 3, "failed_kept": 1,
                    "reusable_urls": 1, "to_ask_numbers": 3, "to_ask_ids": 2}
    plan = await store.plan(iter(keys), usable_after=soon(), retry_failed=True, recheck_before=time.time() + 5)
    assert (plan["settled"], plan["failed_kept"], plan["to_ask_numbers"], plan["to_ask_ids"]) == (1, 0, 6, 2)
    assert await collect(store.rows()) == before


async def test_reopen_sends_back_what_should_be_asked_again(store: StateStore) -> None:
    """Failed keys with retry_failed; misses older than recheck_before; other runs' keys untouched."""
    old = await store.start_run({})
    await store.ingest([k("Z")], old)
    await store.apply([Failed(k("Z"), "X: y")])
    run = await _settled_mix(store)
    await store.reopen(run, retry_failed=False, recheck_before=time.time() - 100)
    assert await store.counts(run) == {"downloaded": 1, "no_image": 1, "not_found": 1, "failed": 1,
                                       "resolved": 2, "pending": 2}
    await store.reopen(run, retry_failed=True, recheck_before=None)
    assert (await by_key(store))["D"].status == Status.PENDING
    await store.reopen(run, retry_failed=False, recheck_before=time.time() + 5)
    rows = await by_key(store)
    assert {v: rows[v].status for v in "ABCDZ"} == {"A": Status.DOWNLOADED, "B": Status.PENDING,
                                                    "C": Status.PENDING, "D": Status.PENDING, "Z": Status.FAILED}


# --- reading ----------------------------------------------------------------------------------

async def test_rows_filters_and_writes_while_streaming(store: StateStore) -> None:
    """rows() by run and by status, in input order; the reader may write between rows."""
    run1 = await store.start_run({})
    await store.ingest(scrambled(2500), run1)
    run2 = await store.start_run({})
    await store.ingest([k("K000002"), k("NEW"), k("K000001")], run2)
    first_seen = [key.value for key in scrambled(2500) if key.value in ("K000001", "K000002")] + ["NEW"]
    assert [r.key for r in await collect(store.rows(run2))] == first_seen
    seen = 0
    async for row in store.rows(run1):
        if seen % 500 == 0:
            await store.apply([NotFound(k(row.key))])
        seen += 1
    assert seen == 2498
    missing = await collect(store.rows(run1, Status.NOT_FOUND))
    assert len(missing) == 5 and [r.key for r in missing] == [
        key.value for key in scrambled(2500) if key.value in {r.key for r in missing}]
    assert len(await collect(store.rows(None, Status.PENDING))) == 2496 and len(await collect(store.rows())) == 2501


async def test_latest_newest_first(store: StateStore) -> None:
    """latest() gives the most recently updated rows of a status, newest first."""
    run = await store.start_run({})
    keys = [k(v) for v in "ABC"]
    await store.ingest(keys, run)
    await store.apply([resolved(key) for key in keys])
    for v in "BAC":
        await asyncio.sleep(0.01)
        await store.apply([Downloaded(k(v), f"images/{v}.png", 1, v)])
    assert [r.key for r in await store.latest(Status.DOWNLOADED, 2)] == ["C", "A"]
    assert [r.local_file for r in await store.latest(Status.DOWNLOADED, 5)] == [
        "images/C.png", "images/A.png", "images/B.png"]
    assert await store.latest(Status.RESOLVED, 5) == []


# --- schema -----------------------------------------------------------------------------------

async def test_schema_is_versioned_and_a_newer_one_is_refused(backend: Backend, request: pytest.FixtureRequest) -> None:
    """The version is recorded; a store written by a newer version is a StateError that says so."""
    store = await backend.open()
    await store.close()
    backend.handles.remove(store)
    version = await backend.read_version()
    assert version >= 1
    await backend.write_version(version + 1)
    with pytest.raises(StateError, match="newer"):
        await backend.open()


# --- PostgreSQL only --------------------------------------------------------------------------

async def test_postgres_location_and_unreachable_server(postgres_backend: Backend) -> None:
    """The location hides the password; a server unreachable for longer than the patience names host:port
    (exit 3, an outage), never the password."""
    from downloader.state.postgres import PostgresStore

    parts = urlsplit(postgres_backend.url)
    if parts.password is None:  # trust auth ignores a password: give one, to see it hidden
        parts = parts._replace(netloc=f"{parts.username}:not-shown-pw@{parts.hostname}:{parts.port or 5432}")
    store = await PostgresStore.open(urlunsplit(parts))
    postgres_backend.handles.append(store)
    assert store.location.startswith("postgresql://") and "schema=t_" in store.location
    assert parts.password not in store.location
    started = time.monotonic()
    with pytest.raises(StateOutageError) as caught:
        await PostgresStore.open("postgresql://someone:s3cret-pw@127.0.0.1:1/test?password=other-secret",
                                 patience=0.6)
    assert 0.6 <= time.monotonic() - started < 5  # tried again for the patience, then gave up
    message = str(caught.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "other-secret" not in message


async def test_postgres_workers_starting_at_once_create_the_schema_once(postgres_backend: Backend) -> None:
    """Six workers opening a fresh store together all succeed (the migration is serialized)."""
    stores = await asyncio.gather(*(postgres_backend.open() for _ in range(6)))
    runs = await asyncio.gather(*(s.start_run({}) for s in stores))
    assert len(set(runs)) == 6 and await postgres_backend.read_version() == pg_schema.SCHEMA_VERSION


async def test_postgres_search_path_option(postgres_backend: Backend) -> None:
    """libpq's own `options=-csearch_path=…` puts the tables in an existing schema."""
    from psycopg import sql

    from downloader.state.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    await pg_execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        url = f"{POSTGRES_DSN}{'&' if '?' in POSTGRES_DSN else '?'}options=-csearch_path%3D{schema}"
        store = await PostgresStore.open(url)
        run = await store.start_run({})
        await store.ingest([k("A")], run)
        await store.close()
        rows = await pg_execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
                                 "AND table_name = 'patents'", (schema,))
        assert rows == [(1,)]
    finally:
        await pg_execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
