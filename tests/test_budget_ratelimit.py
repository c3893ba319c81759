"""Budget arithmetic and the adaptive rate (with a clock the test controls)."""

from __future__ import annotations

import time

from downloader.core.budget import Unlimited, reserve_change, settle_change
from downloader.net.ratelimit import MIN_RATE, AdaptiveRate


def test_budget_shrinks_the_last_batch_and_refunds_unused():
    record = None

    def apply(change):
        nonlocal record
        record, result = change(record, 0.0)
        return result

    assert apply(reserve_change(1, 250, 100)) == 100 and apply(reserve_change(1, 250, 100)) == 100
    apply(settle_change(1, 250, 10))  # 10 unknown keys were not charged
    assert apply(reserve_change(1, 250, 100)) == 60
    assert apply(reserve_change(1, 250, 100)) == 0
    assert apply(reserve_change(2, 250, 100)) == 100  # a new run starts from the limit again


async def test_no_budget_means_no_limit():
    budget = Unlimited()
    assert await budget.reserve(100) == 100 and not budget.exhausted


def test_throttling_halves_once_per_episode_then_recovers():
    now = [0.0]
    rate = AdaptiveRate(8.0, clock=lambda: now[0])
    assert rate.throttled(None) is True and rate.rate == 4.0
    assert rate.throttled(None) is False and rate.rate == 4.0  # same episode: requests in flight
    now[0] += 5
    assert rate.throttled(2.0) is True and rate.rate == 2.0
    for _ in range(200):
        rate.succeeded()
    assert rate.rate == 8.0
    for _ in range(30):
        now[0] += 100
        rate.throttled(None)
    assert rate.rate == MIN_RATE


async def test_rate_spaces_requests_evenly():
    rate = AdaptiveRate(50.0)
    start = time.monotonic()
    for _ in range(11):
        await rate.acquire()
    assert time.monotonic() - start >= 10 / 50 * 0.9  # no initial burst


async def test_pause_after_throttle_holds_everyone():
    rate = AdaptiveRate(1000.0)
    rate.throttled(0.2)
    start = time.monotonic()
    await rate.acquire()
    assert time.monotonic() - start >= 0.18
