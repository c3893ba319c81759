"""The retry policy: what is retried, how often, and the pure backoff arithmetic."""

from __future__ import annotations

import pytest

from downloader.core.backoff import backoff
from downloader.core.errors import (
    BadImageError,
    FatalApiError,
    ThrottledError,
    TokenExpiredError,
    TransientApiError,
    TransientDownloadError,
)
from downloader.net import retrying


@pytest.fixture(autouse=True)
def no_sleep():
    retrying.set_testing(True)
    yield
    retrying.set_testing(False)


def failing(errors: list[BaseException], calls: list[int]):
    async def attempt() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"
    return attempt


async def test_transient_errors_are_retried_up_to_the_attempts():
    seen: list[BaseException] = []
    calls: list[int] = []
    policy = retrying.RetryPolicy(3, on_retry=seen.append)
    assert await policy.call(failing([TransientApiError("a"), TransientDownloadError("b")], calls)) == "ok"
    assert len(calls) == 3 and [type(e) for e in seen] == [TransientApiError, TransientDownloadError]
    calls.clear()
    with pytest.raises(TransientApiError):
        await retrying.RetryPolicy(3).call(failing([TransientApiError(str(i)) for i in range(5)], calls))
    assert len(calls) == 3


@pytest.mark.parametrize("err", [FatalApiError("x"), BadImageError("y"), ValueError("z")])
async def test_other_errors_are_not_retried(err):
    calls: list[int] = []
    with pytest.raises(type(err)):
        await retrying.RetryPolicy(5).call(failing([err], calls))
    assert len(calls) == 1


async def test_a_refused_token_gets_two_more_tries_only():
    """One try after waiting for another request's credential check, one as the checker itself."""
    calls: list[int] = []
    assert await retrying.RetryPolicy(5).call(failing([TokenExpiredError("t")] * 2, calls)) == "ok"
    with pytest.raises(TokenExpiredError):
        await retrying.RetryPolicy(5).call(failing([TokenExpiredError("t") for _ in range(3)], []))


async def test_throttling_is_retried_past_the_attempts_without_a_wait_of_its_own():
    """Throttled tries are not counted against `attempts`: the API gate paces them and decides when to stop."""
    calls: list[int] = []
    policy = retrying.RetryPolicy(2)
    throttles: list[BaseException] = [ThrottledError("slow down") for _ in range(6)]
    assert await policy.call(failing(throttles, calls)) == "ok"
    assert len(calls) == 7 and policy._delay(ThrottledError("x")) == 0.0


def test_backoff_is_full_jitter_exponential_and_capped():
    assert backoff(1, 0.5, 30.0, rng=lambda: 1.0) == 0.5
    assert backoff(4, 0.5, 30.0, rng=lambda: 1.0) == 4.0
    assert backoff(20, 0.5, 30.0, rng=lambda: 1.0) == 30.0
    assert backoff(3, 0.5, 30.0, rng=lambda: 0.5) == 1.0


async def test_retry_goes_on_from_a_first_try_the_caller_made_itself():
    """The image fetcher makes the first try without a policy; `retry` takes its failure as try one."""
    calls: list[int] = []
    first = TransientDownloadError("first")
    assert await retrying.RetryPolicy(3).retry(first, failing([TransientDownloadError("second")], calls)) == "ok"
    assert len(calls) == 2  # tries two and three
    with pytest.raises(TransientDownloadError, match="first"):
        await retrying.RetryPolicy(1).retry(first, failing([], calls))  # no tries left: the failure itself
    with pytest.raises(BadImageError):
        await retrying.RetryPolicy(5).retry(BadImageError("not retried"), failing([], calls))
    assert len(calls) == 2
