"""The SQLite state store on a real file: ingest, transitions, claims, planning, resume data."""

from __future__ import annotations

import sqlite3
import time

import pytest

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
from downloader.outputs import manifest_row
from downloader.state.sqlite import SqliteStore, transition_allowed
from downloader.state.sqlite_schema import SCHEMA_VERSION


def key(v: str) -> PatentKey:
    return PatentKey(Kind.NUMBER, v)


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(tmp_path / "state.sqlite")
    yield s
    await s.close()


async def manifest(store: SqliteStore, run: int | None = None) -> dict[str, dict]:
    return {r.key: manifest_row(r) async for r in store.rows(run)}


async def claim(store: SqliteStore, run: int, worker: str = "w1", limit: int = 100, usable_after: float = 1000.0,
                lease: float = 60.0):
    return await store.claim(run, worker, limit=limit, usable_after=usable_after, lease=lease)


async def test_wal_mode_and_schema_version(tmp_path, store):
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


async def test_ingest_counts_new_known_and_duplicates(store):
    run1 = await store.start_run({})
    c1 = await store.ingest([key("A1"), key("B1"), key("A1")], run1)
    assert (c1.new, c1.known, c1.duplicates) == (2, 0, 1)
    run2 = await store.start_run({})
    c2 = await store.ingest([key("A1"), key("C1"), key("C1")], run2)
    assert (c2.new, c2.known, c2.duplicates) == (1, 1, 1)
    assert sum((await store.counts(run2)).values()) == 2 and sum((await store.counts()).values()) == 3


@pytest.mark.parametrize(("current", "new", "ok"), [
    (Status.PENDING, Status.RESOLVED, True), (Status.RESOLVED, Status.DOWNLOADED, True),
    (Status.PENDING, Status.DOWNLOADED, False), (Status.DOWNLOADED, Status.RESOLVED, False),
    (Status.DOWNLOADED, Status.FAILED, False), (Status.RESOLVED, Status.PENDING, True),
    (Status.NOT_FOUND, Status.RESOLVED, False), (Status.FAILED, Status.DOWNLOADED, False)])
def test_transition_table(current, new, ok):
    assert transition_allowed(current, new) is ok


async def test_events_apply_only_along_allowed_transitions(store):
    run = await store.start_run({})
    await store.ingest([key("A1"), key("B1"), key("C1"), key("D1")], run)
    await store.apply([Resolved(key("A1"), "A1", "p", "0001", "http://x", 2e9), NoImage(key("B1"), "B1", "q"),
                       NotFound(key("C1")), Downloaded(key("D1"), "images/x.png", 3, "ab")])  # D1 never resolved
    await store.apply([Downloaded(key("A1"), "images/a.png", 10, "ff"), Failed(key("B1"), "late")])
    rows = await manifest(store, run)
    assert rows["A1"]["status"] == "downloaded" and rows["A1"]["bytes"] == 10 and rows["A1"]["path"] == "http://x"
    assert rows["B1"]["status"] == "no_image" and rows["B1"]["error"] is None
    assert rows["C1"]["status"] == "not_found"
    assert rows["D1"]["status"] == "pending"


async def test_expired_url_goes_back_to_pending_and_is_deferred_after_five_never_failed(store):
    """An expiry is never the patent's fault: the fifth in a row keeps it pending, off claims until retry_at."""
    run = await store.start_run({})
    await store.ingest([key("A1")], run)
    later = time.time() + 300
    for _ in range(4):
        await store.apply([Resolved(key("A1"), "A1", "p", "1", "http://x", 1.0),
                           UrlExpired(key("A1"), "expired", later)])
        claim = await store.claim(run, "w", limit=10, usable_after=time.time(), lease=60)
        assert claim.to_ask is not None and claim.to_ask.keys == ("A1",)  # asked again at once
        await store.release("w")
    await store.apply([Resolved(key("A1"), "A1", "p", "1", "http://x", 1.0), UrlExpired(key("A1"), "expired", later)])
    assert await store.counts(run) == {"pending": 1}
    claim = await store.claim(run, "w", limit=10, usable_after=time.time(), lease=60)
    assert claim.empty and claim.next_retry == pytest.approx(later)
    assert (await manifest(store, run))["A1"]["error"].startswith("expired")


async def test_claims_give_reusable_urls_first_then_one_kind_to_ask(store):
    run = await store.start_run({})
    await store.ingest([key("A1"), key("B1"), key("C1"), key("D1"), PatentKey(Kind.ID, "abc")], run)
    await store.apply([Resolved(key("A1"), "A1", "p", "1", "http://good", 2e9),
                       Resolved(key("B1"), "B1", "p", "1", "http://old", 10.0), NotFound(key("C1"))])
    first = await claim(store, run)
    assert [j.key.value for j in first.to_download] == ["A1"] and first.to_ask is None
    second = await claim(store, run)
    assert second.to_ask is not None and second.to_ask.kind == Kind.NUMBER and second.to_ask.keys == ("D1",)
    third = await claim(store, run)
    assert third.to_ask is not None and third.to_ask.kind == Kind.ID and third.to_ask.keys == ("abc",)
    fourth = await claim(store, run)
    assert fourth.to_ask is not None and fourth.to_ask.keys == ("B1",)  # resolved, but its URL is too old
    nothing = await claim(store, run)
    assert nothing.empty and nothing.waiting == 4  # all held by w1's live lease


async def test_two_workers_never_share_a_key_and_a_dead_workers_keys_come_back(store):
    run = await store.start_run({})
    await store.ingest([key(f"K{i}") for i in range(10)], run)
    one = await claim(store, run, "w1", limit=6, lease=0.2)
    two = await claim(store, run, "w2", limit=6)
    assert one.to_ask and two.to_ask and not set(one.to_ask.keys) & set(two.to_ask.keys)
    assert len(one.to_ask.keys) + len(two.to_ask.keys) == 10
    await store.apply([Resolved(key(one.to_ask.keys[0]), "X", "p", "1", "http://u", 2e9)])
    import anyio
    await anyio.sleep(0.3)  # w1 died: its lease ran out
    taken = await claim(store, run, "w3")
    assert [j.key.value for j in taken.to_download] == [one.to_ask.keys[0]]  # downloaded, not paid for again
    rest = await claim(store, run, "w3")
    assert rest.to_ask is not None and set(rest.to_ask.keys) == set(one.to_ask.keys[1:])


async def test_deferred_keys_wait_until_their_time_and_a_new_run_retries_them(store):
    run = await store.start_run({})
    await store.ingest([key("A1")], run)
    await claim(store, run)
    await store.apply([Deferred(key("A1"), "TransientApiError: HTTP 502", 5e9)])
    later = await claim(store, run)
    assert later.empty and later.deferred == 1 and later.next_retry == 5e9 and later.waiting == 0
    await store.reopen(run, retry_failed=False, recheck_before=None)
    again = await claim(store, run)
    assert again.to_ask is not None and again.to_ask.keys == ("A1",)


async def test_only_this_runs_keys_are_work(store):
    run1 = await store.start_run({})
    await store.ingest([key("A1")], run1)
    run2 = await store.start_run({})
    await store.ingest([key("B1")], run2)
    work = await claim(store, run2)
    assert work.to_ask is not None and work.to_ask.keys == ("B1",)


async def test_reopen_failed_and_stale_misses(store):
    run = await store.start_run({})
    await store.ingest([key("A1"), key("B1")], run)
    await store.apply([Failed(key("A1"), "x"), NotFound(key("B1"))])
    await store.reopen(run, retry_failed=False, recheck_before=None)
    assert await store.counts(run) == {"failed": 1, "not_found": 1}
    await store.reopen(run, retry_failed=True, recheck_before=1e12)
    assert await store.counts(run) == {"pending": 2}


async def test_plan_writes_nothing_and_counts(store):
    run = await store.start_run({})
    await store.ingest([key("A1"), key("B1"), key("C1")], run)
    await store.apply([NotFound(key("A1")), Resolved(key("B1"), "B1", "p", "1", "http://x", 2e9),
                       Failed(key("C1"), "e")])
    plan = await store.plan([key("A1"), key("B1"), key("C1"), key("N1"), key("N1"), PatentKey(Kind.ID, "u")],
                            usable_after=1000.0, retry_failed=False, recheck_before=None)
    assert plan == {"rows": 6, "unique": 5, "duplicates": 1, "new": 2, "settled": 1, "failed_kept": 1,
                    "reusable_urls": 1, "to_ask_numbers": 1, "to_ask_ids": 1}
    assert sum((await store.counts()).values()) == 3


async def test_run_history_workers_and_shared_records(store):
    run = await store.start_run({"rate": 5, "inputs": ["a.csv"]})
    await store.heartbeat(run, "w1", {"pid": 1}, 60.0)
    assert await store.start_run({"inputs": ["a.csv"]}, join=True) == run  # a live run over the same inputs
    assert await store.start_run({"inputs": ["b.csv"]}, join=True) != run
    await store.finish_run(run, 0, {"api_calls": 3})
    row = next(r for r in await store.runs() if r.id == run)
    assert row.exit_code == 0 and row.summary == {"api_calls": 3} and row.options["rate"] == 5
    [worker] = await store.workers(run)
    assert worker.worker == "w1" and worker.info == {"pid": 1} and not worker.finished

    def bump(old, now):
        value = (old or {}).get("n", 0) + 1
        return {"n": value}, value

    assert [await store.update_shared("counter", bump) for _ in range(3)] == [1, 2, 3]
    assert await store.read_shared("counter") == {"n": 3} and await store.read_shared("nothing") is None


async def test_plan_does_not_block_a_live_runs_writes(tmp_path, store):
    run = await store.start_run({})
    await store.ingest([key("A1")], run)
    live = SqliteStore(tmp_path / "state.sqlite")
    live._conn.execute("PRAGMA busy_timeout=200")  # fail fast instead of waiting

    def keys_while_the_run_writes():
        yield key("A1")
        live._apply([NotFound(key("A1"))])  # raises "database is locked" if plan held the write lock
        yield key("B1")

    plan = await store.plan(keys_while_the_run_writes(), usable_after=0.0, retry_failed=False, recheck_before=None)
    assert plan["settled"] == 1 and plan["new"] == 1
    live.close_now()


async def test_a_version_1_store_is_migrated_and_transient_failures_become_pending(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    from downloader.state.sqlite_schema import _BASE
    for statement in _BASE.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.executemany("INSERT INTO patents (kind, key, status, error, seen_run) "
                     "VALUES ('patent_number', ?, 'failed', ?, 1)",
                     [("A1", "TransientApiError: API request failed (ClientConnectorError)"),
                      ("B1", "BadImageError: HTTP 404 from the CDN")])
    conn.commit()
    conn.close()
    store = await SqliteStore.open(path)
    try:
        assert await store.counts() == {"pending": 1, "failed": 1}
    finally:
        await store.close()


async def test_reading_a_runs_rows_takes_each_row_once_not_a_sort_per_page(store):
    """The manifest's pages walk the rowid range: a plan that sorted the whole run for every page of 1,000
    rows made a million-row manifest take minutes of CPU."""
    old = await store.start_run({})
    await store.ingest([key(f"US{n:07d}A") for n in range(500)], old)  # rows of another run in between
    run = await store.start_run({})
    await store.ingest([key(f"US{n:07d}B") for n in range(2500)], run)
    statements: list[str] = []
    store._reader.set_trace_callback(statements.append)
    rows = [r async for r in store.rows(run)]
    downloaded = [r async for r in store.rows(run, Status.DOWNLOADED)]
    store._reader.set_trace_callback(None)
    assert [r.key for r in rows] == [f"US{n:07d}B" for n in range(2500)] and downloaded == []
    pages = [s for s in statements if "ORDER BY seq LIMIT" in s]
    assert len(pages) == 4  # 1,000 + 1,000 + 500 rows, then the status query's one empty page
    for sql in pages:
        plan = " ".join(str(step[3]) for step in store._reader.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "TEMP B-TREE" not in plan, plan
