"""The SQLite state store on a real file: ingest, transitions, planning, resume data."""

from __future__ import annotations

import sqlite3

import pytest

from downloader.core.model import Downloaded, Failed, Kind, NoImage, NotFound, PatentKey, Resolved, Status, UrlExpired
from downloader.state.sqlite import StateStore, transition_allowed


def key(v: str) -> PatentKey:
    return PatentKey(Kind.NUMBER, v)


@pytest.fixture
def store(tmp_path):
    s = StateStore(tmp_path / "state.sqlite")
    yield s
    s.close()


def test_wal_mode_and_schema_version(tmp_path, store):
    conn = sqlite3.connect(tmp_path / "state.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"


def test_ingest_counts_new_known_and_duplicates(store):
    run1 = store.start_run({})
    c1 = store.ingest([key("A1"), key("B1"), key("A1")], run1)
    assert (c1.new, c1.known, c1.duplicates) == (2, 0, 1)
    run2 = store.start_run({})
    c2 = store.ingest([key("A1"), key("C1"), key("C1")], run2)
    assert (c2.new, c2.known, c2.duplicates) == (1, 1, 1)
    assert sum(store.counts(run2).values()) == 2 and sum(store.counts().values()) == 3


@pytest.mark.parametrize(("current", "new", "ok"), [
    (Status.PENDING, Status.RESOLVED, True), (Status.RESOLVED, Status.DOWNLOADED, True),
    (Status.PENDING, Status.DOWNLOADED, False), (Status.DOWNLOADED, Status.RESOLVED, False),
    (Status.DOWNLOADED, Status.FAILED, False), (Status.RESOLVED, Status.PENDING, True),
    (Status.NOT_FOUND, Status.RESOLVED, False), (Status.FAILED, Status.DOWNLOADED, False)])
def test_transition_table(current, new, ok):
    assert transition_allowed(current, new) is ok


def test_events_apply_only_along_allowed_transitions(store):
    run = store.start_run({})
    store.ingest([key("A1"), key("B1"), key("C1"), key("D1")], run)
    store.apply([Resolved(key("A1"), "A1", "p", "0001", "http://x", 2e9), NoImage(key("B1"), "B1", "q"),
                 NotFound(key("C1")), Downloaded(key("D1"), "images/x.png", 3, "ab")])  # D1 was never resolved
    store.apply([Downloaded(key("A1"), "images/a.png", 10, "ff"), Failed(key("B1"), "late")])
    rows = {r["patent_number"]: r for r in store.iter_manifest(run)}
    assert rows["A1"]["status"] == "downloaded" and rows["A1"]["bytes"] == 10 and rows["A1"]["path"] == "http://x"
    assert rows["B1"]["status"] == "no_image" and rows["B1"]["error"] == ""
    assert rows["C1"]["status"] == "not_found"
    assert rows["D1"]["status"] == "pending"


def test_expired_url_goes_back_to_pending_and_gives_up_after_repeats(store):
    run = store.start_run({})
    store.ingest([key("A1")], run)
    for _ in range(3):
        store.apply([Resolved(key("A1"), "A1", "p", "1", "http://x", 1.0), UrlExpired(key("A1"), "expired")])
    assert store.counts(run) == {"pending": 1}
    assert store.fail_expired_repeatedly(run, 3) == 1
    assert next(store.iter_manifest(run))["error"].startswith("UrlExpiredError")


def test_planning_queries_split_reusable_and_to_ask(store):
    run = store.start_run({})
    store.ingest([key("A1"), key("B1"), key("C1"), key("D1")], run)
    store.apply([Resolved(key("A1"), "A1", "p", "1", "http://good", 2e9),
                 Resolved(key("B1"), "B1", "p", "1", "http://old", 10.0), NotFound(key("C1"))])
    assert [j.key.value for j in store.iter_reusable(run, 1000.0)] == ["A1"]
    assert [k.value for k in store.iter_to_ask(run, 1000.0, page=1)] == ["D1", "B1"]  # pending first
    assert store.count_expired(run, 1000.0) == 1


def test_only_this_runs_keys_are_work(store):
    run1 = store.start_run({})
    store.ingest([key("A1")], run1)
    run2 = store.start_run({})
    store.ingest([key("B1")], run2)
    assert [k.value for k in store.iter_to_ask(run2, 0.0)] == ["B1"]


def test_reopen_failed_and_stale_misses(store):
    run = store.start_run({})
    store.ingest([key("A1"), key("B1")], run)
    store.apply([Failed(key("A1"), "x"), NotFound(key("B1"))])
    store.reopen(run, retry_failed=False, recheck_before=None)
    assert store.counts(run) == {"failed": 1, "not_found": 1}
    store.reopen(run, retry_failed=True, recheck_before=1e12)
    assert store.counts(run) == {"pending": 2}


def test_plan_writes_nothing_and_counts(store, tmp_path):
    run = store.start_run({})
    store.ingest([key("A1"), key("B1"), key("C1")], run)
    store.apply([NotFound(key("A1")), Resolved(key("B1"), "B1", "p", "1", "http://x", 2e9), Failed(key("C1"), "e")])
    plan = store.plan([key("A1"), key("B1"), key("C1"), key("N1"), key("N1"), PatentKey(Kind.ID, "u")],
                      usable_after=1000.0, retry_failed=False, recheck_before=None)
    assert plan == {"rows": 6, "unique": 5, "duplicates": 1, "new": 2, "settled": 1, "failed_kept": 1,
                    "reusable_urls": 1, "to_ask_numbers": 1, "to_ask_ids": 1}
    assert sum(store.counts().values()) == 3


def test_run_history(store):
    run = store.start_run({"rate": 5})
    store.finish_run(run, 0, {"api_calls": 3})
    [row] = store.runs()
    assert row["exit_code"] == 0 and row["summary"] == {"api_calls": 3} and row["options"] == {"rate": 5}


def test_plan_does_not_block_a_live_runs_writes(tmp_path, store):
    run = store.start_run({})
    store.ingest([key("A1")], run)
    live = StateStore(tmp_path / "state.sqlite")
    live._conn.execute("PRAGMA busy_timeout=200")  # fail fast instead of waiting 30 s

    def keys_while_the_run_writes():
        yield key("A1")
        live.apply([NotFound(key("A1"))])  # raises "database is locked" if plan held the write lock
        yield key("B1")

    plan = store.plan(keys_while_the_run_writes(), usable_after=0.0, retry_failed=False, recheck_before=None)
    assert plan["settled"] == 1 and plan["new"] == 1
    live.close()
