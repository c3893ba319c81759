"""When the first process starts a helper: its event loop busy for a few seconds (core/busy.py)."""

from __future__ import annotations

from downloader.core.busy import BUSY_SECONDS, SAMPLE_SECONDS, SETTLE_SECONDS, BusyWatch
from downloader.workers import loop_demand


def feed(watch: BusyWatch, shares: list[float], start: float = 100.0) -> list[float]:
    """One reading per SAMPLE_SECONDS with the given share of busy time; the seconds at which a helper starts."""
    wall, demand, started = start, 50.0, []
    watch.sample(wall, demand)
    for share in shares:
        wall, demand = wall + SAMPLE_SECONDS, demand + share * SAMPLE_SECONDS
        if watch.sample(wall, demand):
            started.append(wall - start)
    return started


def test_a_loop_busy_for_a_few_seconds_starts_one_helper_then_waits_for_it_to_settle():
    started = feed(BusyWatch(), [1.0] * 60)
    assert started[0] == BUSY_SECONDS
    assert started[1] - started[0] >= SETTLE_SECONDS + BUSY_SECONDS


def test_a_loop_waiting_for_the_network_never_does():
    # The readings of a run with 30 ms of latency (0.59-0.65), with a busy moment now and then.
    assert feed(BusyWatch(), [0.63, 0.65, 0.95, 0.6, 0.95, 0.61, 0.59, 0.7] * 5) == []


def test_a_loop_writing_to_a_fast_disk_starts_one_within_a_second_or_so():
    # The readings of a run writing to tmpfs (0.82-0.93): the helper comes early enough to pay.
    assert feed(BusyWatch(), [0.89, 0.86, 0.82, 0.93, 0.93, 0.89, 0.84])[0] == BUSY_SECONDS <= 1.0


def test_one_quiet_reading_starts_the_count_again():
    assert feed(BusyWatch(), [1.0, 0.2, 1.0, 1.0, 1.0, 1.0]) == [2 * SAMPLE_SECONDS + BUSY_SECONDS]


def test_the_loop_thread_demand_grows_with_its_work():
    before = loop_demand()
    sum(i * i for i in range(300_000))
    assert loop_demand() > before
