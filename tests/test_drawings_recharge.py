"""`--drawings all` pays what it says and downloads each drawing once, on the simulator over loopback:
a P042 answer billed and then lost on the way is counted in charged and recharged, as P021's are; a
patent asked again because one drawing's URL expired keeps its other drawings (row and file) and
downloads only the expired one. The simulator's own counts (charges, images served per drawing) are
the ground truth; both state stores."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from downloader.core.model import Listed, Resolved
from downloader.simulator import Simulator
from downloader.state import pg_schema

from .support import leftovers, manifest, numbers, run, sha256, write_csv
from .test_drawings_all import check_drawings, expected_calls, figure_key, figures_of, with_many
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import (  # noqa: F401 - the fixtures
    POSTGRES_DSN,
    Backend,
    backend,
    postgres_backend,
    sqlite_backend,
)


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest) -> str | None:
    """The state store of the run: None (the SQLite file in --out) or a PostgreSQL schema of its own."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def settle_in_flight(sim: Simulator) -> None:
    """Wait until the simulator answered (and billed) the calls the client gave up on."""
    deadline = time.monotonic() + 5
    while sim.counters.api_in_flight and time.monotonic() < deadline:
        time.sleep(0.05)


def with_drawings(sim: Simulator, count: int, least: int) -> list[str]:
    """`count` numbers whose patents have at least `least` drawings."""
    return [n for n, f in figures_of(sim, numbers(400, seed=5)).items() if (f or 0) >= least][:count]


def test_a_fulltext_answer_cut_after_billing_is_counted_as_charged_and_recharged(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """A third of the P042 answers are billed, then their connection drops halfway through the body ("cut"):
    the page is asked again and billed again; the summary's charged is what the API billed, and recharged
    what it billed more than once."""
    sim = threaded_simulator
    values = with_many(sim, numbers(40), numbers(3000, seed=9))
    figures = figures_of(sim, values)
    _, once = expected_calls(figures)
    sim_config.api_fault_kinds, sim_config.api_fault_rate = ("cut",), 0.3

    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, drawings="all", state_url=state)

    cuts = sim.counters.api_faults_injected
    print(f"\n[cut {state and 'postgres' or 'sqlite'}] {sim.counters.api_requests} calls ({cuts} cut), simulator "
          f"charged {sim.counters.charged} for {once} pages listing drawings; summary: charged {summary['charged']}, "
          f"recharged {summary['recharged']}, retries {summary['retries']}")
    # Every cut answer is retried; under load a call may also time out and be retried (billed or not: the
    # charge checks below hold either way), so retries are at least the cuts.
    assert summary["exit_code"] == 0 and cuts >= 3 and summary["retries"] >= cuts
    assert sim.counters.charged > once  # some cut answers listed drawings: billed twice
    assert summary["charged"] == sim.counters.charged
    assert summary["recharged"] == sim.counters.charged - once
    check_drawings(tmp_path / "out", sim, figures)


@pytest.mark.slow
def test_a_fulltext_call_that_timed_out_after_it_was_written_counts_as_paid_again(
        tmp_path: Path, sim_config, threaded_simulator) -> None:
    """A fifth of the P042 calls stall 0.6 s before the API answers ("slow"), past the 0.3 s API timeout: the
    API answers and bills them after the client gave up, and the retry is billed again; the summary says so."""
    sim = threaded_simulator
    values = numbers(60)
    _, once = expected_calls(figures_of(sim, values))
    sim_config.api_fault_kinds, sim_config.api_fault_rate, sim_config.slow_seconds = ("slow",), 0.2, 0.6

    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, drawings="all", api_timeout=0.3)
    settle_in_flight(sim)

    stalls = sim.counters.api_faults_injected
    print(f"\n[slow] {sim.counters.api_requests} calls ({stalls} stalled), simulator charged {sim.counters.charged} "
          f"for {once}; summary: charged {summary['charged']}, recharged {summary['recharged']}")
    assert summary["exit_code"] == 0 and stalls >= 3 and summary["retries"] >= stalls
    assert summary["charged"] == sim.counters.charged > once
    assert summary["recharged"] == sim.counters.charged - once


def test_answers_lost_until_the_retries_ran_out_are_counted_as_possibly_charged(
        tmp_path: Path, sim_config, threaded_simulator) -> None:
    """Every P042 answer is billed, then cut, for one second (--max-runtime): the patents stay pending, and the
    summary counts each lost answer as charged (the first of each patent once, the others as recharged), which
    is what the API billed; the next run, without faults, pays each patent once more: a recharge."""
    sim = threaded_simulator
    values = with_drawings(sim, 4, 1)
    source = write_csv(tmp_path / "in.csv", values)
    sim_config.api_fault_kinds, sim_config.api_fault_rate = ("cut",), 1.0

    summary = run([source], tmp_path / "out", sim, drawings="all", retries=2, api_concurrency=1, max_runtime=1.0)

    billed = sim.counters.charged
    print(f"\n[all cut] {sim.counters.api_requests} calls, simulator charged {billed}; summary: charged "
          f"{summary['charged']}, recharged {summary['recharged']}, exit {summary['exit_code']}")
    assert summary["exit_code"] == 4 and summary["by_status"] == {"pending": len(values)}
    assert billed == sim.counters.api_requests == 2 * len(values)
    assert summary["charged"] == billed and summary["recharged"] == billed - len(values)
    sim_config.api_fault_rate = 0.0
    again = run([source], tmp_path / "out", sim, drawings="all")
    assert again["exit_code"] == 0 and again["charged"] == sim.counters.charged - billed == len(values)
    assert again["recharged"] == len(values)  # the store remembers the lost answers: asked again, paid again


def test_a_patent_asked_again_for_one_expired_drawing_keeps_its_other_drawings(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """Figure 2 of five patents is listed first with a URL that has already expired: each of those patents
    goes back to pending and is asked again (charged again, counted in recharged), and only its figure 2 is
    downloaded then. Every drawing is served by the CDN exactly once, its file is the CDN's bytes, and the
    manifest has one row per drawing."""
    sim = threaded_simulator
    stale = with_drawings(sim, 5, 3)
    values = [*stale, *numbers(20)]
    figures = figures_of(sim, values)
    listed = sum(n or 0 for n in figures.values())
    _, once = expected_calls(figures)
    pns = {v: sim.universe.lookup_number(v).pn for v in stale}  # type: ignore[union-attr]
    sim_config.stale_drawings = {f"{pn}_0002" for pn in pns.values()}
    out = tmp_path / "out"

    summary = run([write_csv(tmp_path / "in.csv", values)], out, sim, drawings="all", state_url=state)

    served = sim.counters.served
    print(f"\n[expired {state and 'postgres' or 'sqlite'}] {listed} drawings, CDN served {sum(served.values())} "
          f"({sum(n > 1 for n in served.values())} more than once), {sim.counters.api_requests} calls, simulator "
          f"charged {sim.counters.charged}; summary: images {summary['images']}, charged {summary['charged']}, "
          f"recharged {summary['recharged']}, fenced {summary['fenced']}")
    assert summary["exit_code"] == 0 and not sim_config.stale_drawings
    assert {v: sim.asks[v] for v in stale} == dict.fromkeys(stale, 2)
    assert max(n for v, n in sim.asks.items() if v not in stale) == 1
    assert len(served) == listed and max(served.values()) == 1, served.most_common(3)
    assert summary["images"] == listed and summary["fenced"] == 0
    assert summary["charged"] == sim.counters.charged == once + len(stale)
    assert summary["recharged"] == len(stale)
    assert check_drawings(out, sim, figures) == listed
    rows = manifest(out)
    assert len(rows) == len({(r["patent_number"], r["figure"]) for r in rows})
    assert not leftovers(out)


async def test_a_claim_names_the_stored_drawings_of_a_patent_asked_again_in_both_stores(backend) -> None:  # noqa: F811
    """Figure 2 of P1 expired unused: P1 is claimed again as a repeat (a recharge) with its drawings 1 and 3 named
    as stored; the new listing drops drawing 2 from the middle, so drawing 3 moves up to figure 2 with its own
    row and file, and P1 settles downloaded (no drawing left to fetch, nothing resolved)."""
    import time

    from downloader.core.model import Downloaded, Kind, PatentKey, UrlExpired

    def done(value: str, n: int) -> Downloaded:
        return Downloaded(figure_key(value, n), f"images/{value}/{n}.png", 10, "ab")

    store = await backend.open()
    assert await store.drawings_kind("all") == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2")], run_id)
    first = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert first.to_ask is not None and first.to_ask.stored == frozenset() and first.repeats == ()
    await store.apply([*listing("P1", [1, 2, 3]), *listing("P2", [1, 2, 3])])
    await store.apply([done("P1", 1), UrlExpired(figure_key("P1", 2), "expired"), done("P1", 3),
                       *(done("P2", n) for n in (1, 2, 3))])
    assert await store.counts(run_id) == {"pending": 1, "downloaded": 1}

    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)

    assert again.to_ask is not None and again.to_ask.keys == ("P1",) and again.repeats == ("P1",)
    assert again.to_ask.stored == {figure_key("P1", 1), figure_key("P1", 3)}
    await store.apply(listing("P1", [1, 3]))
    assert await store.counts(run_id) == {"downloaded": 2}
    rows = [(r.key, r.figure, r.status.value, r.local_file, r.url) async for r in store.rows(run_id)]
    assert rows == [("P1", 1, "downloaded", "images/P1/1.png", "http://cdn/P1/1.png"),
                    ("P1", 2, "downloaded", "images/P1/3.png", "http://cdn/P1/3.png")] + [
        ("P2", n, "downloaded", f"images/P2/{n}.png", f"http://cdn/P2/{n}.png") for n in (1, 2, 3)]
    assert (await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)).empty
    await store.close()


async def test_a_listing_in_another_order_renumbers_the_rows_and_keeps_each_file_in_both_stores(backend) -> None:  # noqa: F811
    """P1's drawings 1 and 3 are downloaded, 2's URL expired; the API now lists a new drawing 9 first and the
    others in reverse (9, 3, 2, 1): every row takes its place in that order, the downloaded ones keep their
    file and URL (1 now at figure 4, 3 at figure 2), 2 and 9 get fresh URLs to download."""
    import time

    from downloader.core.model import Downloaded, Kind, PatentKey, UrlExpired

    store = await backend.open()
    assert await store.drawings_kind("all") == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, "P1")], run_id)
    await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    await store.apply(listing("P1", [1, 2, 3]))
    await store.apply([Downloaded(figure_key("P1", 1), "images/P1/1.png", 10, "a1"), Downloaded(
        figure_key("P1", 3), "images/P1/3.png", 10, "a3"), UrlExpired(figure_key("P1", 2), "expired")])
    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert again.to_ask is not None and again.to_ask.stored == {figure_key("P1", 1), figure_key("P1", 3)}

    await store.apply(listing("P1", [9, 3, 2, 1]))

    rows = [(r.figure, r.status.value, r.url, r.local_file, r.sha256) async for r in store.rows(run_id)]
    assert rows == [(1, "resolved", "http://cdn/P1/9.png", None, None),
                    (2, "downloaded", "http://cdn/P1/3.png", "images/P1/3.png", "a3"),
                    (3, "resolved", "http://cdn/P1/2.png", None, None),
                    (4, "downloaded", "http://cdn/P1/1.png", "images/P1/1.png", "a1")]
    assert await store.counts(run_id) == {"resolved": 1} and await store.figure_counts(run_id) == {4: 1}


def listing(value: str, drawings: list[int], figures: int | None = None) -> list[Listed | Resolved]:
    """A complete listing of patent number `value` as the resolver gives it: `Listed` (with `figures`, by
    default as many as `drawings`), then drawing n of `drawings` (at http://cdn/<value>/<n>.png) at each place."""
    from downloader.core.model import FigureKey, Kind, PatentKey

    return [Listed(PatentKey(Kind.NUMBER, value), value, f"id-{value}", len(drawings) if figures is None else figures),
            *(Resolved(FigureKey(Kind.NUMBER, value, place, f"/{value}/{n}.png"), value, f"id-{value}", f"HDA{n}",
                       f"http://cdn/{value}/{n}.png", 4e9, None, "drawings") for place, n in enumerate(drawings, 1))]


def test_a_patent_listed_again_with_fewer_drawings_is_not_asked_again_and_again(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """The last drawing of three patents is listed first with a URL that has already expired, and the API's
    next answer no longer lists it (one drawing fewer): each of those patents is asked twice (two charges), not
    once per claim without end, settles downloaded with one manifest row per drawing the API now lists, and
    the nightly rerun asks nothing. (--max-charged bounds the run should a patent loop.)"""
    sim = threaded_simulator
    fewer = with_drawings(sim, 3, 2)
    values = [*fewer, *numbers(10)]
    figures = figures_of(sim, values)
    _, once = expected_calls(figures)
    records = {v: sim.universe.lookup_number(v) for v in fewer}
    sim_config.stale_drawings = {f"{r.pn}_{figures[v]:04d}" for v, r in records.items()}  # type: ignore[union-attr]
    sim_config.fewer_drawings = {r.pn: (figures[v] or 0) - 1 for v, r in records.items()}  # type: ignore[union-attr]
    source, out = write_csv(tmp_path / "in.csv", values), tmp_path / "out"

    summary = run([source], out, sim, drawings="all", state_url=state, max_charged=once + 10 * len(fewer))

    asked = {v: sim.asks[v] for v in fewer}  # each ask of these (under 100 drawings) is one charged page
    print(f"\n[fewer {state and 'postgres' or 'sqlite'}] asks of the patents listed shorter {asked}, "
          f"{sim.counters.api_requests} calls, simulator charged {sim.counters.charged} (once: {once}); "
          f"summary: exit {summary['exit_code']}, charged {summary['charged']}, recharged {summary['recharged']}, "
          f"{summary['by_status']}")
    assert asked == dict.fromkeys(fewer, 2)
    assert summary["exit_code"] == 0 and summary["by_status"] == {"downloaded": len(values)}
    assert summary["charged"] == sim.counters.charged == once + len(fewer)
    assert summary["recharged"] == len(fewer)
    now_listed = {**figures, **{v: (figures[v] or 0) - 1 for v in fewer}}
    assert check_drawings(out, sim, now_listed) == sum(n or 0 for n in now_listed.values())
    again = run([source], out, sim, drawings="all", state_url=state)
    assert again["exit_code"] == 0 and again["api_calls"] == 0 and sim.counters.charged == once + len(fewer)


async def test_drawings_a_complete_listing_no_longer_names_are_retired_in_both_stores(backend) -> None:  # noqa: F811
    """P1 had three drawings (figure 2's URL expired unused) and is listed again with two; P2 had two (figure 1
    expired) and is now answered without drawings: the rows the new listing does not name are dropped, pending
    or downloaded, so each patent settles (downloaded, no_image) instead of going back to the API, and its rows
    and figure count are what the API lists now. A late listing (the patent settled since) retires nothing."""
    from downloader.core.model import Downloaded, Kind, NoImage, PatentKey, UrlExpired

    def done(value: str, n: int) -> Downloaded:
        return Downloaded(figure_key(value, n), f"images/{value}/{n}.png", 10, "ab")

    async def rows() -> list[tuple[str, int | None, str]]:
        return [(r.key, r.figure, r.status.value) async for r in store.rows(run_id)]

    store = await backend.open()
    assert await store.drawings_kind("all") == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2")], run_id)
    await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    await store.apply([*listing("P1", [1, 2, 3]), *listing("P2", [1, 2])])
    await store.apply([done("P1", 1), UrlExpired(figure_key("P1", 2), "expired"), done("P1", 3),
                       UrlExpired(figure_key("P2", 1), "expired"), done("P2", 2)])
    assert await store.counts(run_id) == {"pending": 2}
    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert again.to_ask is not None and again.to_ask.keys == ("P1", "P2")

    await store.apply([*listing("P1", [1, 2]), NoImage(PatentKey(Kind.NUMBER, "P2"), "P2", "id-P2")])
    assert await rows() == [("P1", 1, "downloaded"), ("P1", 2, "resolved"), ("P2", None, "no_image")]
    await store.apply([done("P1", 2)])

    assert await store.counts(run_id) == {"downloaded": 1, "no_image": 1}
    assert await rows() == [("P1", 1, "downloaded"), ("P1", 2, "downloaded"), ("P2", None, "no_image")]
    assert await store.figure_counts(run_id) == {2: 1, 0: 1}
    assert await store.drawing_counts(run_id) == {"downloaded": 2}
    await store.apply(listing("P1", [2]))  # late: P1 settled, the guard refuses it (no figure changes)
    assert await rows() == [("P1", 1, "downloaded"), ("P1", 2, "downloaded"), ("P2", None, "no_image")]
    last = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert last.to_ask is None and last.to_download == () and last.waiting == 0
    await store.close()


def test_only_a_complete_listing_retires_drawings(tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """A patent of more than 100 drawings (two pages) whose last drawing's URL expired is asked again, and the
    API now lists one drawing fewer; the budget (--max-charged 3) ends the run after the first page of that
    listing: nothing is retired (the drawing stays pending, the patent too). The next run lists it whole, two
    pages, and only then is the drawing gone and the patent downloaded."""
    sim = threaded_simulator
    many = with_many(sim, [], numbers(3000, seed=9))[0]
    total = figures_of(sim, [many])[many] or 0
    pn = sim.universe.lookup_number(many).pn  # type: ignore[union-attr]
    sim_config.stale_drawings, sim_config.fewer_drawings = {f"{pn}_{total:04d}"}, {pn: total - 1}
    source, out = write_csv(tmp_path / "in.csv", [many]), tmp_path / "out"

    cut = run([source], out, sim, drawings="all", state_url=state, max_charged=3)

    assert cut["exit_code"] == 4 and cut["by_status"] == {"pending": 1} and sim.counters.charged == 3
    rows = manifest(out)
    assert [int(r["figure"]) for r in rows] == list(range(1, total + 1))
    assert [r["status"] for r in rows] == ["downloaded"] * (total - 1) + ["pending"]
    whole = run([source], out, sim, drawings="all", state_url=state)
    print(f"\n[pages {state and 'postgres' or 'sqlite'}] {total} drawings, then {total - 1}: asked {sim.asks[many]} "
          f"times, charged {sim.counters.charged}; second run: {whole['by_status']}")
    assert whole["exit_code"] == 0 and whole["charged"] == 2 and sim.counters.charged == 5 and sim.asks[many] == 3
    assert check_drawings(out, sim, {many: total - 1}) == total - 1


def test_a_drawing_dropped_from_the_middle_of_a_listing_moves_the_later_ones_up_without_mixing_files(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """Three patents of four drawings or more are listed first with figure 3's URL (the second patent: figure
    2's) already expired, so each is asked again; the API's new listing leaves out a drawing from the middle
    (the first patent: figure 2, before the expired one; the second: figure 3, after it; the third: figure 3, the
    expired one itself) and the drawings after it move up a place. Each drawing is matched with its stored row by
    its URL's path, not by its place: the manifest lists what the API lists now, in its order (figures 1..n-1),
    every file holds the bytes of the drawing its row's URL names (the simulator says which), the CDN serves each
    drawing once, and each of these patents costs two charges, not more; the nightly rerun asks nothing."""
    from urllib.parse import urlsplit

    from downloader.simulator.cdn import drawing_at

    sim = threaded_simulator
    moved = [v for v, n in figures_of(sim, numbers(400, seed=5)).items() if 4 <= (n or 0) <= 100][:3]
    values = [*moved, *numbers(10)]
    figures = figures_of(sim, values)
    _, once = expected_calls(figures)
    pns = {v: sim.universe.lookup_number(v).pn for v in moved}  # type: ignore[union-attr]
    expired = dict(zip(moved, (3, 2, 3), strict=True))  # figure n of each patent's first listing
    dropped = dict(zip(moved, (2, 3, 3), strict=True))
    sim_config.stale_drawings = {f"{pns[v]}_{n:04d}" for v, n in expired.items()}
    sim_config.dropped_drawings = {f"{pns[v]}_{n:04d}" for v, n in dropped.items()}
    source, out = write_csv(tmp_path / "in.csv", values), tmp_path / "out"

    summary = run([source], out, sim, drawings="all", state_url=state)

    served = sim.counters.served
    print(f"\n[dropped {state and 'postgres' or 'sqlite'}] asks {[sim.asks[v] for v in moved]}, CDN served "
          f"{sum(served.values())} ({sum(n > 1 for n in served.values())} more than once), simulator charged "
          f"{sim.counters.charged} (once: {once}); summary: images {summary['images']}, charged "
          f"{summary['charged']}, recharged {summary['recharged']}, {summary['by_status']}")
    assert summary["exit_code"] == 0 and summary["by_status"] == {"downloaded": len(values)}
    assert [sim.asks[v] for v in moved] == [2, 2, 2]
    assert summary["charged"] == sim.counters.charged == once + len(moved)
    assert summary["recharged"] == len(moved)
    rows = manifest(out)
    for value in values:
        now_listed = [n for n in range(1, (figures[value] or 0) + 1) if n != dropped.get(value)]
        got = [r for r in rows if r["patent_number"] == value]
        assert [int(r["figure"]) for r in got] == list(range(1, len(now_listed) + 1)), value
        assert [drawing_at(urlsplit(r["path"]).path) for r in got] == [
            (r["pn"], f"{n:04d}") for r, n in zip(got, now_listed, strict=True)], value
        for row in got:
            data = (out / row["local_file"]).read_bytes()
            assert row["status"] == "downloaded" and sha256(data) == row["sha256"], row
            assert data == sim.expected_image(*drawing_at(urlsplit(row["path"]).path) or ("", "")), row
    assert len({r["local_file"] for r in rows}) == len(rows)
    # Served once each: every drawing of the first listings, but the third patent's expired one (dropped unseen).
    first_listed = {f"{sim.universe.lookup_number(v).pn}_{n:04d}"  # type: ignore[union-attr]
                    for v in values for n in range(1, (figures[v] or 0) + 1)}
    assert dict(served) == dict.fromkeys(first_listed - {f"{pns[moved[2]]}_0003"}, 1)
    assert summary["images"] == len(first_listed) - 1
    again = run([source], out, sim, drawings="all", state_url=state)
    assert again["exit_code"] == 0 and again["api_calls"] == 0 and sim.counters.charged == once + len(moved)


async def write_store_from_before(backend: Backend) -> None:  # noqa: F811
    """A store of the version before drawings had an identity (SQLite 4, PostgreSQL 3), --drawings all: P1 listed
    4 drawings, 1, 3 and 4 downloaded from signed URLs, 2's URL expired (pending, no URL kept); P2 listed one
    path twice, both rows downloaded."""
    rows = [("P1", "pending", 4, [(1, "downloaded", "http://cdn/P1/1.png?sig=a"), (2, "pending", None),
                                  (3, "downloaded", "http://cdn/P1/3.png?sig=a"),
                                  (4, "downloaded", "http://cdn/P1/4.png?sig=a")]),
            ("P2", "downloaded", 2, [(1, "downloaded", "http://cdn/P2/1.png?sig=a"),
                                     (2, "downloaded", "http://cdn/P2/1.png?sig=b")])]
    statements: list[tuple[str, tuple[Any, ...]]] = [("INSERT INTO meta VALUES ('drawings', 'all')", ())]
    for key, status, figures, drawings in rows:
        statements.append(("INSERT INTO patents (kind, key, status, pn, patent_id, figures) VALUES "
                           "('patent_number', ?, ?, ?, ?, ?)", (key, status, key, f"id-{key}", figures)))
        statements += [("INSERT INTO drawings (kind, key, figure, status, pn, num, url, local_file, sha256) VALUES "
                        "('patent_number', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (key, n, state, key, f"HDA{n}", url, url and f"images/{key}/{n}.png", url and "ab"))
                       for n, state, url in drawings]
    if backend.name == "sqlite":
        from downloader.state.sqlite_schema import _BASE, MIGRATIONS

        with sqlite3.connect(backend.url) as conn:
            for statement in [*_BASE.split(";"), *(s for v in (2, 3, 4) for s in MIGRATIONS[v])]:
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES ('schema_version', '4')")
            for sql, params in statements:
                conn.execute(sql, params)
        return
    import psycopg
    from psycopg import sql as pgsql

    schema = parse_qs(urlsplit(backend.url).query)["schema"][0]
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as pg:
        await pg.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(schema)))
        await pg.execute("SELECT set_config('search_path', %s, true)", [schema])
        await pg.execute("CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)")
        for statement in (s for version in pg_schema.MIGRATIONS[:3] for s in version):
            await pg.execute(statement)
        await pg.execute("INSERT INTO meta VALUES ('schema_version', '3')")
        for query, params in statements:
            await pg.execute(query.replace("?", "%s"), params)  # type: ignore[arg-type]


async def test_a_store_from_before_matches_its_drawings_by_their_url_path_in_both_stores(backend) -> None:  # noqa: F811
    """A store written before drawings had an identity migrates: each row with a URL takes its path (a path listed
    twice keeps it on its first row); P1, asked again, names drawings 1, 2 and 4 (3 dropped from the middle): 1 and
    4 keep their row and file, 4 at figure 3 now, 2 (whose expired URL was not kept) gets a fresh one, 3 is gone."""
    from downloader.core.model import Downloaded, Kind, PatentKey

    await write_store_from_before(backend)
    store = await backend.open()
    assert await backend.read_version() == (pg_schema.SCHEMA_VERSION if backend.name == "postgres" else 5)
    assert await store.drawings_kind(None) == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2")], run_id)
    claim = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert claim.to_ask is not None and claim.to_ask.keys == ("P1",)
    assert claim.to_ask.stored == {figure_key("P1", n) for n in (1, 3, 4)}

    await store.apply(listing("P1", [1, 2, 4]))
    await store.apply([Downloaded(figure_key("P1", 2), "images/P1/2.png", 10, "cd")])

    rows = [(r.key, r.figure, r.status.value, r.local_file, r.url) async for r in store.rows(run_id)]
    assert rows == [("P1", 1, "downloaded", "images/P1/1.png", "http://cdn/P1/1.png?sig=a"),
                    ("P1", 2, "downloaded", "images/P1/2.png", "http://cdn/P1/2.png"),
                    ("P1", 3, "downloaded", "images/P1/4.png", "http://cdn/P1/4.png?sig=a"),
                    ("P2", 1, "downloaded", "images/P2/1.png", "http://cdn/P2/1.png?sig=a"),
                    ("P2", 2, "downloaded", "images/P2/2.png", "http://cdn/P2/1.png?sig=b")]
    assert await store.counts(run_id) == {"downloaded": 2}
