"""End to end on the simulator over loopback: cost, correctness, resume, expiry."""

from __future__ import annotations

import math

import pytest

from .support import check_downloads, leftovers, manifest, numbers, run, write_csv

pytestmark = pytest.mark.slow


def test_two_thousand_patents_cost_one_call_per_hundred_and_rerun_costs_nothing(tmp_path, threaded_simulator):
    sim = threaded_simulator
    values = numbers(2000)
    source = write_csv(tmp_path / "in.csv", values + values[:50] + ["", "not a patent"])
    out = tmp_path / "out"

    summary = run([source], out, sim)

    assert summary["exit_code"] == 0
    assert sim.counters.api_requests == math.ceil(2000 / 100) == summary["api_calls"]
    assert max(sim.counters.asks.values()) == 1 and len(sim.counters.asks) == 2000
    assert summary["charged"] == sim.counters.charged
    rows = manifest(out)
    assert len(rows) == 2000 and {r["patent_number"] for r in rows} == set(values)
    assert check_downloads(out, sim) == summary["by_status"]["downloaded"] > 1500
    assert {r["status"] for r in rows} == {"downloaded", "no_image", "not_found"}
    assert summary["duplicates"] == 50 and summary["rejected"] == 1
    assert not leftovers(out)

    again = run([source], out, sim)
    assert again["api_calls"] == 0 and sim.counters.api_requests == 20 and again["exit_code"] == 0
    assert manifest(out) == rows

    grown = write_csv(tmp_path / "grown.csv", values + numbers(2300)[2000:])
    assert len(set(numbers(2300)[2000:]) - set(values)) == 300
    third = run([grown], out, sim)
    assert third["api_calls"] == 3 and sim.counters.api_requests == 23 and third["exit_code"] == 0
    assert max(sim.counters.asks.values()) == 1
    assert len(manifest(out)) == 2300


def test_patent_ids_and_numbers_in_one_run(tmp_path, threaded_simulator):
    ids = ["077f4978-092c-4522-bc98-e8257a5c99f9", "6E5C550D-28D6-4CF1-A265-B5488996B641"]
    source = write_csv(tmp_path / "ids.csv", ids, header="patent_id")
    nums = write_csv(tmp_path / "nums.csv", numbers(30))
    summary = run([source, nums], tmp_path / "out", threaded_simulator)
    assert summary["exit_code"] == 0 and summary["api_calls"] == 2
    rows = {r["patent_id"]: r for r in manifest(tmp_path / "out") if not r["patent_number"]}
    assert set(rows) == {i.lower() for i in ids}
    check_downloads(tmp_path / "out", threaded_simulator)


def test_short_lived_urls_with_slow_downloads_are_paced_and_the_few_that_expire_are_asked_again(
        tmp_path, sim_config, threaded_simulator):
    """URLs living 1-2 s, 80 ms per image, 3 download slots: the API stage stays within what the downloads
    can use in time; a URL that still expires is asked again, and counted as recharged."""
    sim = threaded_simulator
    sim_config.url_lifetime = 1.5
    sim_config.cdn_latency = 0.08
    source = write_csv(tmp_path / "in.csv", numbers(300))
    summary = run([source], tmp_path / "out", sim, batch_size=25, api_concurrency=2, download_concurrency=3,
                  expiry_margin=0.3)
    assert summary["exit_code"] == 0, summary
    assert summary["recharged"] == summary["expired_urls"] == sim.counters.ids_asked - 300 <= 30, summary
    assert summary["api_calls"] == sim.counters.api_requests
    assert check_downloads(tmp_path / "out", sim) == summary["by_status"]["downloaded"]
    assert set(summary["by_status"]) <= {"downloaded", "no_image", "not_found"}


def test_sigv4_urls_work_too(tmp_path, sim_config, threaded_simulator):
    sim_config.url_style = "sigv4"
    summary = run([write_csv(tmp_path / "in.csv", numbers(120))], tmp_path / "out", threaded_simulator)
    assert summary["exit_code"] == 0 and summary["by_status"]["downloaded"] > 80
    check_downloads(tmp_path / "out", threaded_simulator)
