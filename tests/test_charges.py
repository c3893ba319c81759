"""No money spent twice: the simulator's charges (the ground truth) equal the results found, or the
summary counts every result paid for again."""

from __future__ import annotations

import time

import pytest

from downloader.simulator import Simulator

from .support import numbers, run, write_csv


def found(sim: Simulator, values: list[str]) -> int:
    return sum(sim.universe.lookup_number(v) is not None for v in values)


def test_an_answer_that_arrives_in_pieces_is_read_whole_and_paid_once(tmp_path, sim_config, threaded_simulator):
    """Every answer's body comes in two writes 50 ms apart (a slow link, a proxy): the client reads to
    its end, so each batch is asked and billed once, with no retry (reading the first piece as the whole
    answer made it "not JSON", asked again and billed twice)."""
    sim = threaded_simulator
    sim_config.api_answer_gap = 0.05
    values = numbers(200)
    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=100)
    print(f"\n[pieces] {sim.counters.api_requests} calls, charged {sim.counters.charged} for {found(sim, values)} "
          f"found; summary: charged {summary['charged']}, retries {summary['retries']}")
    assert summary["exit_code"] == 0
    assert sim.counters.api_requests == 2 and summary["retries"] == 0
    assert sim.counters.charged == found(sim, values) == summary["charged"]
    assert max(sim.asks.values()) == 1


@pytest.mark.slow
def test_an_answer_cut_on_the_way_is_paid_again_and_counted(tmp_path, sim_config, threaded_simulator):
    """A third of the answers are billed, then their connection drops halfway through the body ("cut"):
    the batch is asked again and billed twice, an inherent cost the summary shows (recharged, retries),
    so charged in the summary is what the API billed, and charged = found + recharged."""
    sim = threaded_simulator
    sim_config.api_fault_kinds, sim_config.api_fault_rate = ("cut",), 0.3
    values = numbers(300)
    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=20)
    cuts = sim.counters.api_faults_injected
    print(f"\n[cut] {sim.counters.api_requests} calls ({cuts} cut), charged {sim.counters.charged} for "
          f"{found(sim, values)} found; summary: charged {summary['charged']}, recharged {summary['recharged']}, "
          f"retries {summary['retries']}")
    assert summary["exit_code"] == 0 and cuts >= 2
    assert sim.counters.charged > found(sim, values)  # the cut answers were billed
    assert summary["charged"] == sim.counters.charged
    assert summary["recharged"] == sim.counters.charged - found(sim, values)
    assert summary["retries"] == cuts


def test_a_request_whose_connection_dropped_is_asked_again_through_the_gate_and_counted(
        tmp_path, sim_config, threaded_simulator):
    """A fifth of the calls lose their connection before any answer ("reset"): each is a retry the summary
    counts, sent again through the gate (aiohttp's own quiet resend of a GET would bypass both), and nothing
    is billed twice."""
    sim = threaded_simulator
    sim_config.api_fault_kinds, sim_config.api_fault_rate = ("reset",), 0.2
    values = numbers(300)
    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=20)
    resets = sim.counters.api_faults_injected
    print(f"\n[reset] {sim.counters.api_requests} calls ({resets} reset); summary: api_calls {summary['api_calls']}, "
          f"retries {summary['retries']}, charged {summary['charged']}")
    assert summary["exit_code"] == 0 and resets >= 2
    assert summary["retries"] == resets
    assert sim.counters.api_requests == summary["api_calls"] + resets
    assert sim.counters.charged == found(sim, values) == summary["charged"] and summary["recharged"] == 0


@pytest.mark.slow
def test_a_call_that_timed_out_after_it_was_written_counts_as_paid_again(tmp_path, sim_config, threaded_simulator):
    """A fifth of the calls stall 0.6 s before the API answers ("slow"), past the 0.3 s API timeout: the
    API still answers (and bills) them after the client gave up, and the retry is billed again. The
    summary counts those results as charged and recharged, as the API billed them."""
    sim = threaded_simulator
    sim_config.api_fault_kinds, sim_config.api_fault_rate, sim_config.slow_seconds = ("slow",), 0.2, 0.6
    values = numbers(300)
    summary = run([write_csv(tmp_path / "in.csv", values)], tmp_path / "out", sim, batch_size=20, api_timeout=0.3)
    deadline = time.monotonic() + 5
    while sim.counters.api_in_flight and time.monotonic() < deadline:  # the abandoned calls are answered
        time.sleep(0.05)
    stalls = sim.counters.api_faults_injected
    print(f"\n[slow] {sim.counters.api_requests} calls ({stalls} stalled), charged {sim.counters.charged} for "
          f"{found(sim, values)} found; summary: charged {summary['charged']}, recharged {summary['recharged']}, "
          f"retries {summary['retries']}")
    assert summary["exit_code"] == 0 and stalls >= 2 and summary["retries"] >= stalls  # more: slow under load
    assert summary["charged"] == sim.counters.charged > found(sim, values)
    assert summary["recharged"] == sim.counters.charged - found(sim, values)
