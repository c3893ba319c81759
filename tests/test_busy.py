"""When the first process starts a helper: its event loop busy for a while (core/busy.py), and a helper
pays (the API rate leaves room for one, enough work is left)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio
import pytest

from downloader.core.busy import BUSY_SECONDS, SAMPLE_SECONDS, SETTLE_SECONDS, BusyWatch, helper_pays
from downloader.core.events import Notice
from downloader.core.lookahead import Lookahead
from downloader.workers import Outlook, help_when_busy, loop_demand


def feed(watch: BusyWatch, shares: list[float], start: float = 100.0, rate: float = 1000.0) -> list[float]:
    """One reading per SAMPLE_SECONDS with the given share of busy time, `rate` images/s done; the seconds at
    which the watch says busy (each time followed by `settle`, as a helper starts)."""
    wall, demand, started = start, 50.0, []
    watch.sample(wall, demand, 0)
    for share in shares:
        wall, demand = wall + SAMPLE_SECONDS, demand + share * SAMPLE_SECONDS
        if watch.sample(wall, demand, round((wall - start) * rate)):
            started.append(wall - start)
            watch.settle(wall)
    return started


def test_a_loop_busy_for_a_while_starts_one_helper_then_waits_for_it_to_settle():
    started = feed(BusyWatch(), [1.0] * 60)
    assert started[0] == pytest.approx(BUSY_SECONDS)
    assert started[1] - started[0] >= SETTLE_SECONDS + BUSY_SECONDS - 1e-6


def test_a_loop_waiting_for_the_network_never_does():
    # Readings 0.1 s apart of a run with 30 ms of latency (the loop thread's run + wait shares, 0.45-0.8).
    assert feed(BusyWatch(), [0.45, 0.72, 0.67, 0.61, 0.59, 0.49, 0.47, 0.62, 0.53, 0.54, 0.55, 0.66, 0.55, 0.75,
                              0.6, 0.8] * 3) == []


def test_a_loop_writing_to_a_fast_disk_is_busy_within_half_a_second():
    # Readings 0.1 s apart of a run writing to tmpfs (0.83-0.97): the helper comes early enough to pay.
    started = feed(BusyWatch(), [0.9, 0.97, 0.93, 0.92, 0.87, 0.83, 0.9, 0.87, 0.87, 0.94])
    assert started[0] == pytest.approx(BUSY_SECONDS) and BUSY_SECONDS <= 0.5


def test_a_quiet_moment_holds_the_window_under_the_mark_until_it_has_passed():
    assert feed(BusyWatch(), [1.0, 0.1, 1.0, 1.0, 1.0, 1.0]) == pytest.approx([2 * SAMPLE_SECONDS + BUSY_SECONDS])


def test_the_busy_window_says_how_fast_the_process_went():
    watch = BusyWatch()
    assert feed(watch, [1.0] * 4, rate=3000.0)[0] == pytest.approx(BUSY_SECONDS)
    assert watch.rate == pytest.approx(3000.0)


# The numbers below are those of 20,000 images on tmpfs (bench/results/issue19-images-2026-12-05-before5.md):
# one process made ~4,000 images/s a second into the run, with ~17,000 images left.


def test_a_helper_does_not_pay_where_the_api_rate_caps_the_job_near_this_process_pace():
    # --rate 50 × 100 URLs an answer = 5,000 images/s: a helper could save 0.85 s at most.
    assert not helper_pays(4000.0, 1, 5000.0, 17_000)


def test_a_helper_pays_where_the_api_rate_leaves_room():
    assert helper_pays(4000.0, 1, 200 * 100.0, 17_000)  # --rate 200: 4,195 images/s with one, 3,799 without
    assert helper_pays(1250.0, 1, 5000.0, 19_000)  # a slow disk: the API rate is far off


def test_a_helper_does_not_pay_for_a_little_work_left_or_past_the_cap():
    assert not helper_pays(1250.0, 1, 5000.0, 1000)  # done in 0.8 s alone
    assert not helper_pays(2500.0, 2, 5000.0, 10_000_000)  # two processes already at the cap
    assert not helper_pays(0.0, 1, 5000.0, 10_000)  # nothing done in the busy stretch: no pace to go by


def test_before_the_first_answer_busy_alone_decides():
    assert helper_pays(4000.0, 1, None, 17_000)


def test_the_lookahead_learns_how_many_urls_an_answer_brings():
    look = Lookahead(batch_size=100, download_concurrency=64)
    assert look.images_per_answer is None
    look.claimed(100)
    look.answered(100, 90, None, None)
    assert look.images_per_answer == 90
    look.claimed(100)
    look.answered(100, 60, None, None)
    assert 60 < look.images_per_answer < 90


@dataclass
class FakeHelpers:
    procs: list[object] = field(default_factory=list)

    async def start(self, count: int = 1) -> None:
        self.procs += [object()] * count


@dataclass
class FakeStore:
    left: int
    asked: int = 0

    async def counts(self, run_id: int | None = None) -> dict[str, int]:
        self.asked += 1
        return {"pending": self.left}


async def watch_for(seconds: float, rate: float, ceiling: float | None, left: int) -> tuple[int, int, list[object]]:
    """help_when_busy for `seconds` over a loop busy 95% of the time at `rate` images/s: (helpers started,
    times it read the store's counts, events)."""
    t0 = time.monotonic()
    group, store, events = FakeHelpers(), FakeStore(left), []
    outlook = Outlook(lambda: round((time.monotonic() - t0) * rate), lambda: ceiling, lambda: 1.0)
    with anyio.move_on_after(seconds):
        await help_when_busy(group, 1, store, 1, events.append, lambda: False, outlook,  # type: ignore[arg-type]
                             demand=lambda: 0.95 * (time.monotonic() - t0))
    return len(group.procs), store.asked, events


async def test_a_busy_process_with_room_under_the_api_rate_starts_a_helper():
    started, _, events = await watch_for(BUSY_SECONDS + 4 * SAMPLE_SECONDS, 2000.0, 10_000.0, 20_000)
    assert started == 1
    assert [e.message for e in events if isinstance(e, Notice)] == ["this process is CPU-bound: helper 1 started"]


async def test_a_busy_process_near_the_api_rate_starts_none():
    started, judged, events = await watch_for(BUSY_SECONDS + 4 * SAMPLE_SECONDS, 4000.0, 5000.0, 17_000)
    assert (started, events) == (0, [])
    assert judged == 1  # it was busy, and judged once: then it waits SETTLE_SECONDS before it judges again
    assert SETTLE_SECONDS > BUSY_SECONDS + 4 * SAMPLE_SECONDS


def test_the_loop_thread_demand_grows_with_its_work():
    before = loop_demand()
    sum(i * i for i in range(300_000))
    assert loop_demand() > before
