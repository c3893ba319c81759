"""Retry policy: which failures are retried, how long to wait, when to give up (via tenacity).

Transient faults get `attempts` tries with exponential backoff and jitter; throttling answers are
retried for as long as `throttle_budget` seconds allow (they say "slower", not "broken"), waiting
at least the server's Retry-After; a refused token is retried once, right after its refresh.
Everything else propagates at once. `set_testing(True)` removes the sleeps.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState

from .errors import ThrottledError, TokenExpiredError, TransientApiError, TransientDownloadError

RETRYABLE = (TransientApiError, TokenExpiredError, TransientDownloadError)
_testing = False


def set_testing(on: bool) -> None:
    """In testing mode backoffs are zero, so fault tests run fast."""
    global _testing
    _testing = on


def backoff(attempt: int, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> float:
    """Full-jitter exponential backoff for the n-th failure (1-based)."""
    return rng() * min(maximum, initial * 2 ** (attempt - 1))


@dataclass
class RetryPolicy:
    """Per-call retry state; `retrying()` gives the tenacity loop that applies it."""

    attempts: int
    initial: float = 0.5
    maximum: float = 30.0
    throttle_budget: float = 600.0
    on_retry: Callable[[BaseException], None] | None = None
    clock: Callable[[], float] = time.monotonic
    _failures: int = field(default=0, init=False)
    _token_retries: int = field(default=0, init=False)
    _throttled_since: float | None = field(default=None, init=False)

    def retrying(self) -> AsyncRetrying:
        """The tenacity loop for one call: `async for attempt in policy.retrying(): with attempt: ...`."""
        return AsyncRetrying(retry=self._should_retry, wait=self._wait, stop=lambda _: False,
                             reraise=True, before_sleep=self._notify)

    def _should_retry(self, state: RetryCallState) -> bool:
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, ThrottledError):
            self._throttled_since = self._throttled_since or self.clock()
            return self.clock() - self._throttled_since < self.throttle_budget
        if isinstance(err, TokenExpiredError):
            self._token_retries += 1
            return self._token_retries <= 1
        if isinstance(err, RETRYABLE):
            self._failures += 1
            return self._failures < self.attempts
        return False

    def _wait(self, state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        if _testing or isinstance(err, TokenExpiredError):
            return 0.0
        if isinstance(err, ThrottledError):
            return max(err.retry_after or 0.0, backoff(2, self.initial, self.maximum))
        return backoff(self._failures, self.initial, self.maximum)

    def _notify(self, state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        if self.on_retry and err is not None:
            self.on_retry(err)
