"""`--drawings all` pays what it says and downloads each drawing once, on the simulator over loopback:
a P042 answer billed and then lost on the way is counted in charged and recharged, as P021's are; a
patent asked again because one drawing's URL expired keeps its other drawings (row and file) and
downloads only the expired one. The simulator's own counts (charges, images served per drawing) are
the ground truth; both state stores."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from downloader.simulator import Simulator

from .support import leftovers, manifest, numbers, run, write_csv
from .test_drawings_all import check_drawings, expected_calls, figures_of, with_many
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import backend, postgres_backend, sqlite_backend  # noqa: F401 - the fixtures


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
    """Figure 2 of P1 expired unused: P1 is claimed again as a repeat (a recharge) with figures 1 and 3 named
    as stored; a listing that brings no drawing to download leaves no patent resolved with nothing to fetch."""
    import time

    from downloader.core.model import Downloaded, FigureKey, Kind, Listed, PatentKey, Resolved, UrlExpired

    def figure(value: str, n: int) -> FigureKey:
        return FigureKey(Kind.NUMBER, value, n)

    def listed(value: str, figures: range) -> list[Listed | Resolved]:
        return [Listed(PatentKey(Kind.NUMBER, value), value, f"id-{value}", 3), *(
            Resolved(figure(value, n), value, f"id-{value}", f"HDA{n}", f"http://cdn/{value}/{n}.png", 4e9, None,
                     "drawings") for n in figures)]

    def done(value: str, n: int) -> Downloaded:
        return Downloaded(figure(value, n), f"images/{value}/{n}.png", 10, "ab")

    store = await backend.open()
    assert await store.drawings_kind("all") == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2")], run_id)
    first = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert first.to_ask is not None and first.to_ask.stored == frozenset() and first.repeats == ()
    await store.apply([*listed("P1", range(1, 4)), *listed("P2", range(1, 4))])
    await store.apply([done("P1", 1), UrlExpired(figure("P1", 2), "expired"), done("P1", 3),
                       *(done("P2", n) for n in (1, 2, 3))])
    assert await store.counts(run_id) == {"pending": 1, "downloaded": 1}

    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)

    assert again.to_ask is not None and again.to_ask.keys == ("P1",) and again.repeats == ("P1",)
    assert again.to_ask.stored == {figure("P1", 1), figure("P1", 3)}
    await store.apply(listed("P1", range(2, 2)))  # the API brought nothing new: not left resolved, asked again
    assert await store.counts(run_id) == {"pending": 1, "downloaded": 1}
    third = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert third.to_ask is not None and third.to_ask.keys == ("P1",)
    await store.apply([*listed("P1", range(2, 3)), done("P1", 2)])
    rows = [(r.key, r.figure, r.status.value, r.local_file) async for r in store.rows(run_id)]
    assert rows == [("P1", n, "downloaded", f"images/P1/{n}.png") for n in (1, 2, 3)] + [
        ("P2", n, "downloaded", f"images/P2/{n}.png") for n in (1, 2, 3)]
    await store.close()


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
    from downloader.core.model import Downloaded, FigureKey, Kind, Listed, NoImage, PatentKey, Resolved, UrlExpired

    def figure(value: str, n: int) -> FigureKey:
        return FigureKey(Kind.NUMBER, value, n)

    def listed(value: str, count: int, figures: range) -> list[Listed | Resolved]:
        return [Listed(PatentKey(Kind.NUMBER, value), value, f"id-{value}", count), *(
            Resolved(figure(value, n), value, f"id-{value}", f"HDA{n}", f"http://cdn/{value}/{n}.png", 4e9, None,
                     "drawings") for n in figures)]

    def done(value: str, n: int) -> Downloaded:
        return Downloaded(figure(value, n), f"images/{value}/{n}.png", 10, "ab")

    async def rows() -> list[tuple[str, int | None, str]]:
        return [(r.key, r.figure, r.status.value) async for r in store.rows(run_id)]

    store = await backend.open()
    assert await store.drawings_kind("all") == "all"
    run_id = await store.start_run({})
    await store.ingest([PatentKey(Kind.NUMBER, v) for v in ("P1", "P2")], run_id)
    await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    await store.apply([*listed("P1", 3, range(1, 4)), *listed("P2", 2, range(1, 3))])
    await store.apply([done("P1", 1), UrlExpired(figure("P1", 2), "expired"), done("P1", 3),
                       UrlExpired(figure("P2", 1), "expired"), done("P2", 2)])
    assert await store.counts(run_id) == {"pending": 2}
    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert again.to_ask is not None and again.to_ask.keys == ("P1", "P2")

    await store.apply([*listed("P1", 2, range(2, 3)), NoImage(PatentKey(Kind.NUMBER, "P2"), "P2", "id-P2")])
    assert await rows() == [("P1", 1, "downloaded"), ("P1", 2, "resolved"), ("P2", None, "no_image")]
    await store.apply([done("P1", 2)])

    assert await store.counts(run_id) == {"downloaded": 1, "no_image": 1}
    assert await rows() == [("P1", 1, "downloaded"), ("P1", 2, "downloaded"), ("P2", None, "no_image")]
    assert await store.figure_counts(run_id) == {2: 1, 0: 1}
    assert await store.drawing_counts(run_id) == {"downloaded": 2}
    await store.apply(listed("P1", 1, range(1, 2)))  # late: P1 settled, the guard refuses it
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
