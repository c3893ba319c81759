"""Retry policy: which failures are retried, how long to wait, when to give up (via tenacity).

Transient faults get `attempts` tries with exponential backoff and jitter. Throttling answers are
retried with no wait of their own: the API gate (`net/ratelimit.py`) paces the retry, and it is
the gate that decides, run-wide, when throttling is a spent quota (a FatalApiError, not retried).
A refused token is retried at once after the credential check (`net/api.py`) at most twice.
Everything else propagates at once. `set_testing(True)` removes the sleeps. The backoff arithmetic
itself is pure and lives in `core/backoff.py` (the S3 sink uses it too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from tenacity import AsyncRetrying, RetryCallState

from downloader.core.backoff import backoff
from downloader.core.errors import ThrottledError, TokenExpiredError, TransientApiError, TransientDownloadError

T = TypeVar("T")
RETRYABLE = (TransientApiError, TokenExpiredError, TransientDownloadError)
# Once after waiting for another request's credential check, once more as the checker itself.
TOKEN_RETRIES = 2
_testing = False


def set_testing(on: bool) -> None:
    """In testing mode backoffs are zero, so fault tests run fast."""
    global _testing
    _testing = on


@dataclass
class RetryPolicy:
    """Per-call retry state; `retrying()` gives the tenacity loop that applies it."""

    attempts: int
    initial: float = 0.5
    maximum: float = 30.0
    on_retry: Callable[[BaseException], None] | None = None
    _failures: int = field(default=0, init=False)
    _token_retries: int = field(default=0, init=False)

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` under this policy.

        The first try runs outside tenacity: its loop costs ~40 µs a call, which measured as a
        few percent of the CPU per image, and almost every call succeeds at once. A failure worth
        retrying goes on in `retry`.
        """
        try:
            return await attempt()
        except RETRYABLE as err:
            failed = err
        return await self.retry(failed, attempt)

    async def retry(self, failed: BaseException, attempt: Callable[[], Awaitable[T]]) -> T:
        """Go on after a first try of `attempt` failed with `failed` (raised again when not worth another
        try): it is counted and waited for, and the remaining tries go through the tenacity loop. A caller
        that makes the first try itself (the image fetcher: no policy object at all when it succeeds)
        hands its failure here."""
        if not self._admit(failed):
            raise failed
        self._report(failed)
        await anyio.sleep(self._delay(failed))
        async for state in self.retrying():
            with state:
                return await attempt()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def retrying(self) -> AsyncRetrying:
        """The tenacity loop for one call: `async for attempt in policy.retrying(): with attempt: ...`."""
        return AsyncRetrying(retry=lambda state: self._admit(_error(state)), wait=lambda state: self._delay(
            _error(state)), stop=lambda _: False, reraise=True, before_sleep=lambda state: self._report(_error(state)))

    def _admit(self, err: BaseException | None) -> bool:
        """Count a failure; True when it is worth another try."""
        if isinstance(err, ThrottledError):
            return True  # the gate paces the retry, and stops the run when the quota is spent
        if isinstance(err, TokenExpiredError):
            self._token_retries += 1
            return self._token_retries <= TOKEN_RETRIES
        if isinstance(err, RETRYABLE):
            self._failures += 1
            return self._failures < self.attempts
        return False

    def _delay(self, err: BaseException | None) -> float:
        if _testing or isinstance(err, TokenExpiredError | ThrottledError):
            return 0.0
        return backoff(self._failures, self.initial, self.maximum)

    def _report(self, err: BaseException | None) -> None:
        if self.on_retry and err is not None:
            self.on_retry(err)


def _error(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None
