"""Account-wide request pacing that slows down when the API says "too fast" (AIMD).

aiolimiter does the pacing: `AsyncLimiter(1, 1 / rate)` spaces requests evenly (its default
`AsyncLimiter(rate, 1)` would let a burst of `rate` requests through at start). On a throttling
answer the rate is halved (at most once per cooling period, since requests already in flight
report the same episode) and everyone pauses for Retry-After; after a quiet stretch of successes
it climbs back by 10% steps towards the configured rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from aiolimiter import AsyncLimiter

MIN_RATE = 0.2
_RECOVER_AFTER = 10  # successes without throttling before the next step up


class AdaptiveRate:
    """`await rate.acquire()` before each request; report `throttled()` and `succeeded()`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rate = rate
        self.rate = rate
        self._clock = clock
        self._limiter = AsyncLimiter(1, 1 / rate)
        self._paused_until = 0.0
        self._last_cut = -1e9
        self._quiet = 0
        self.episodes = 0

    def __repr__(self) -> str:
        return f"<AdaptiveRate {self.rate:.2f}/s of {self.max_rate:.2f}/s, episodes={self.episodes}>"

    async def acquire(self) -> None:
        """Wait for a pause to end, then for the next slot at the current rate."""
        while (delay := self._paused_until - self._clock()) > 0:
            await anyio.sleep(delay)
        await self._limiter.acquire()

    def throttled(self, retry_after: float | None) -> bool:
        """Slow down after a throttling answer; True when this started a new episode."""
        now = self._clock()
        self._quiet = 0
        # Without Retry-After, wait out one QPS window (1 s): waiting one request slot only hammers on.
        self._paused_until = max(self._paused_until, now + (retry_after or 1.0))
        if now - self._last_cut < max(1.0, 2.0 / self.rate):
            return False
        self._last_cut = now
        self.episodes += 1
        self._set(max(MIN_RATE, self.rate / 2))
        return True

    def succeeded(self) -> None:
        """Count a success; after enough of them, step the rate back up."""
        self._quiet += 1
        if self.rate < self.max_rate and self._quiet >= _RECOVER_AFTER:
            self._quiet = 0
            self._set(min(self.max_rate, self.rate * 1.1))

    def _set(self, rate: float) -> None:
        self.rate = rate
        self._limiter = AsyncLimiter(1, 1 / rate)
