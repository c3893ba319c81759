"""Answers the API billed and then lost on the way, P021 and P042, on the simulator over loopback: the
summary's charged equals what the simulator billed, also when every try of a call lost its answer, the
patents asked again later count as recharged, and --max-charged holds for what the API bills, retries of
lost answers included. The simulator's counters are the ground truth; both state stores where the store
remembers a lost answer (the claim that asks again calls it a repeat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from downloader.simulator import Simulator

from .support import check_downloads, numbers, run, write_csv
from .test_drawings_all import check_drawings, figures_of
from .test_postgres_job import pg_url  # noqa: F401 - the fixture
from .test_store_contract import backend, postgres_backend, sqlite_backend  # noqa: F401 - the fixtures


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest) -> str | None:
    """The state store of the run: None (the SQLite file in --out) or a PostgreSQL schema of its own."""
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def found(sim: Simulator, count: int) -> list[str]:
    """`count` numbers the simulator knows (each answer bills every one of them)."""
    return [n for n in numbers(3 * count) if sim.universe.lookup_number(n) is not None][:count]


def one_page(sim: Simulator, count: int) -> list[str]:
    """`count` numbers whose patents list 1 to 100 drawings: one charged page each."""
    return [n for n, f in figures_of(sim, numbers(400, seed=5)).items() if 1 <= (f or 0) <= 100][:count]


async def test_a_key_deferred_after_a_lost_answer_is_claimed_again_as_a_repeat_in_both_stores(backend) -> None:  # noqa: F811
    """P1's answer was lost after billing (a Deferred marked billed), P2's call failed before any answer: asked
    again, P1 is a repeat (a recharge) and P2 is not, however often its calls fail so."""
    import time

    from downloader.core.model import Deferred, Kind, NoImage, PatentKey

    def key(value: str) -> PatentKey:
        return PatentKey(Kind.NUMBER, value)

    store = await backend.open()
    run_id = await store.start_run({})
    await store.ingest([key("P1"), key("P2")], run_id)
    first = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert first.to_ask is not None and first.repeats == ()
    await store.apply([Deferred(key("P1"), "TransientApiError: cut", 0.0, billed=True),
                       Deferred(key("P2"), "TransientApiError: HTTP 502", 0.0)])

    again = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)

    assert again.to_ask is not None and again.to_ask.keys == ("P1", "P2") and again.repeats == ("P1",)
    await store.apply([NoImage(key("P1"), "P1", "id-1"), Deferred(key("P2"), "TransientApiError: cut", 0.0)])
    assert await store.counts(run_id) == {"no_image": 1, "pending": 1}
    third = await store.claim(run_id, "A", limit=5, usable_after=time.time(), lease=30)
    assert third.to_ask is not None and third.to_ask.keys == ("P2",) and third.repeats == ()
    await store.close()


def test_a_p021_call_whose_every_answer_was_lost_counts_them_as_charged_and_the_ask_again_as_recharged(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """Both tries of the first call (20 patents, --retries 2) are billed, then cut: the patents are deferred
    (0.5 s here), asked again in the same run and answered. The summary counts the lost answers as charged (the
    first once, the second recharged) and the ask again as recharged: charged is what the simulator billed,
    recharged what it billed beyond one answer per patent."""
    sim = threaded_simulator
    values = found(sim, 40)
    sim_config.cut_answers = {values[0]: 2}

    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=20, retries=2,
                  api_concurrency=1, outage_seconds=1.5, state_url=state)

    billed = sim.counters.charged
    print(f"\n[p021 lost {state and 'postgres' or 'sqlite'}] {sim.counters.api_requests} calls "
          f"({sim.counters.api_faults_injected} cut), simulator billed {billed} for {len(values)}; summary: "
          f"charged {summary['charged']}, recharged {summary['recharged']}, exit {summary['exit_code']}")
    assert summary["exit_code"] == 0 and sim.counters.api_faults_injected == 2
    assert {sim.asks[v] for v in values[:20]} == {3} and {sim.asks[v] for v in values[20:]} == {1}
    assert billed == 4 * 20
    assert summary["charged"] == billed and summary["recharged"] == billed - len(values)
    assert check_downloads(tmp_path / "out", sim) == summary["by_status"]["downloaded"]


def test_a_p021_retry_of_a_lost_answer_never_takes_the_api_past_max_charged(
        tmp_path: Path, sim_config, threaded_simulator, state) -> None:
    """--max-charged 30, batches of 20: the first answer is billed and cut; asking again could be billed 20
    more (40 > 30), so it is not sent: the run stops (exit 4) with the simulator's billed total, 20, within the
    cap and equal to the summary's charged (before, the retry and a shrunk second batch took it to 50). The
    next run asks the 20 again, a recharge, and the rest once."""
    sim = threaded_simulator
    values = found(sim, 40)
    source, out = write_csv(tmp_path / "in.csv", values), tmp_path / "out"
    sim_config.cut_answers = {values[0]: 1}

    capped = run([source], out, sim, batch_size=20, api_concurrency=1, max_charged=30, state_url=state)

    billed = sim.counters.charged
    print(f"\n[p021 budget {state and 'postgres' or 'sqlite'}] --max-charged 30: {sim.counters.api_requests} calls, "
          f"simulator billed {billed}; summary: charged {capped['charged']}, exit {capped['exit_code']}, "
          f"{capped['by_status']}")
    assert capped["exit_code"] == 4 and capped["stop_reason"] == "budget"
    assert billed <= 30 and capped["charged"] == billed == 20
    assert capped["by_status"] == {"pending": 40}
    again = run([source], out, sim, batch_size=20, state_url=state)
    assert again["exit_code"] == 0 and again["charged"] == sim.counters.charged - billed == 40
    assert again["recharged"] == 20 and max(sim.asks.values()) == 2


def test_a_p042_retry_of_a_lost_answer_never_takes_the_api_past_max_charged(
        tmp_path: Path, sim_config, threaded_simulator) -> None:
    """--max-charged 4, every patent's first answer billed and cut: each retry reserves one more charge before
    it is sent, so the simulator bills at most 4 (before: 8, each cut page and its retry) and the summary says
    what it billed. The next run finishes; over both runs, recharged is what was billed beyond one page each."""
    sim = threaded_simulator
    values = one_page(sim, 6)
    source, out = write_csv(tmp_path / "in.csv", values), tmp_path / "out"
    sim_config.cut_answers = dict.fromkeys(values, 1)

    capped = run([source], out, sim, drawings="all", max_charged=4)

    billed = sim.counters.charged
    print(f"\n[p042 budget] --max-charged 4: {sim.counters.api_requests} calls "
          f"({sim.counters.api_faults_injected} cut), simulator billed {billed}; summary: charged "
          f"{capped['charged']}, recharged {capped['recharged']}, exit {capped['exit_code']}")
    assert capped["exit_code"] == 4 and capped["stop_reason"] == "budget"
    assert sim.counters.api_faults_injected >= 2 and capped["charged"] == billed <= 4
    again = run([source], out, sim, drawings="all")
    assert again["exit_code"] == 0 and again["charged"] == sim.counters.charged - billed
    assert capped["recharged"] + again["recharged"] == sim.counters.charged - len(values)
    check_drawings(out, sim, figures_of(sim, values))


def test_a_p042_connection_dropped_before_any_answer_is_not_billed_nor_counted(
        tmp_path: Path, sim_config, threaded_simulator) -> None:
    """A fifth of the P042 calls lose their connection before any answer ("reset", which the simulator does
    not bill): each is asked again, and the summary's charged is what the simulator billed, nothing recharged."""
    sim = threaded_simulator
    values = numbers(40)
    sim_config.api_fault_kinds, sim_config.api_fault_rate = ("reset",), 0.2

    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, drawings="all")

    resets = sim.counters.api_faults_injected
    print(f"\n[p042 reset] {sim.counters.api_requests} calls ({resets} reset), simulator billed "
          f"{sim.counters.charged}; summary: charged {summary['charged']}, recharged {summary['recharged']}")
    assert summary["exit_code"] == 0 and resets >= 2 and summary["retries"] >= resets
    assert summary["charged"] == sim.counters.charged and summary["recharged"] == 0
    check_drawings(tmp_path / "out", sim, figures_of(sim, values))


def test_a_retry_after_a_timeout_never_takes_the_api_past_max_charged(
        tmp_path: Path, sim_config, threaded_simulator) -> None:
    """A third of the P021 calls stall 0.6 s before the API answers ("slow"), past the 0.3 s API timeout: the
    API bills them after the client gave up, so each retry reserves the batch again first. With --max-charged
    100 the simulator bills at most 100, and the summary's charged is what it billed."""
    from .test_drawings_recharge import settle_in_flight

    sim = threaded_simulator
    values = found(sim, 200)
    sim_config.api_fault_kinds, sim_config.api_fault_rate, sim_config.slow_seconds = ("slow",), 0.3, 0.6

    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=20, max_charged=100,
                  api_timeout=0.3)
    settle_in_flight(sim)

    print(f"\n[p021 slow budget] --max-charged 100: {sim.counters.api_requests} calls "
          f"({sim.counters.api_faults_injected} stalled), simulator billed {sim.counters.charged}; summary: "
          f"charged {summary['charged']}, recharged {summary['recharged']}, exit {summary['exit_code']}")
    assert summary["exit_code"] == 4 and sim.counters.api_faults_injected >= 1
    assert summary["charged"] == sim.counters.charged <= 100
