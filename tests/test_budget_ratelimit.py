"""Budget arithmetic, and the shared API gate's pacing (pure with a clock the test sets; then on a real store)."""

from __future__ import annotations

import time

import anyio
import pytest

from downloader.core import gate
from downloader.core.budget import Unlimited, reserve_change, settle_change
from downloader.core.errors import ThrottledError
from downloader.net.ratelimit import ApiGate
from downloader.state.sqlite import SqliteStore


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
    """The first throttle of an episode halves the rate; stragglers change nothing; quiet successes climb back."""
    record, grant = gate.acquire(None, 0.0, run=1, rate=8.0)
    record, verdict = gate.throttled(record, 0.1, run=1, rate=8.0, slot=grant.slot, what="HTTP 429", code=None,
                                     status=429, retry_after=None, patience=60)
    assert verdict.started and gate.load(record, 1, 8.0).interval == 0.25
    record, late = gate.throttled(record, 0.2, run=1, rate=8.0, slot=grant.slot, what="HTTP 429", code=None,
                                  status=429, retry_after=None, patience=60)
    assert late.ignored and gate.load(record, 1, 8.0).interval == 0.25  # the same episode: a straggler
    record, probe = gate.acquire(record, 1.1, run=1, rate=8.0)
    record, _ = gate.succeeded(record, 1.2, run=1, rate=8.0, slot=probe.slot)
    now = 2.0
    for _ in range(200):
        record, ok = gate.acquire(record, now, run=1, rate=8.0)
        record, _ = gate.succeeded(record, now, run=1, rate=8.0, slot=ok.slot)
        now += 1.0
    assert gate.load(record, 1, 8.0).interval == 1 / 8.0


def test_rate_never_drops_below_the_floor():
    record, now = None, 0.0
    for _ in range(30):
        record, grant = gate.acquire(record, now, run=1, rate=8.0)
        record, _ = gate.throttled(record, now, run=1, rate=8.0, slot=grant.slot, what="x", code=None, status=429,
                                   retry_after=None, patience=1e9)
        record, probe = gate.acquire(record, now + 1.0, run=1, rate=8.0)
        record, _ = gate.succeeded(record, now + 1.0, run=1, rate=8.0, slot=probe.slot)
        now += 100
    assert gate.load(record, 1, 8.0).interval == 1 / gate.MIN_RATE


@pytest.fixture
async def store():
    opened = await SqliteStore.open(":memory:")
    yield opened
    await opened.close()


async def test_rate_spaces_requests_evenly(store):
    """--rate 50 through the shared gate: 11 requests take at least 10 intervals (no initial burst)."""
    api = ApiGate(store, 1, 50.0, 60.0)
    start = time.monotonic()
    for _ in range(11):
        await api.acquire()
    assert time.monotonic() - start >= 10 / 50 * 0.9


async def test_a_throttle_holds_everyone_until_the_probe(store):
    """After a throttling answer no one sends before the probe's pause, and only one probe goes."""
    api = ApiGate(store, 1, 1000.0, 60.0, pauses=(0.2, 0.4))
    ticket = await api.acquire()
    await api.throttled(ticket, ThrottledError("too fast", code=67200007))
    start = time.monotonic()
    probe = await api.acquire()
    assert time.monotonic() - start >= 0.18 and probe.probe
    with anyio.move_on_after(0.3) as waiting:
        await api.acquire()  # the probe is out: nobody else goes
    assert waiting.cancelled_caught
    await api.succeeded(probe)
    assert not (await api.acquire()).probe
