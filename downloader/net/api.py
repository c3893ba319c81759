"""PatsnapClient: the only code that calls the metadata API.

It paces requests account-wide (AdaptiveRate), retries what is worth retrying (RetryPolicy),
refreshes tokens, keeps a charged-results budget, and turns answers into per-key outcomes with
the sans-IO functions of `protocol`. A batch the API calls invalid is split in halves until the
bad identifiers are alone; those fail, the rest go through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import anyio
from yarl import URL

from downloader.core import protocol
from downloader.core.errors import (
    FatalApiError,
    InvalidParameterError,
    ThrottledError,
    TokenExpiredError,
    TransientApiError,
    describe,
)
from downloader.core.model import Batch, Counters, Failed, Outcome, PatentKey
from downloader.net.auth import TokenProvider
from downloader.net.httperrors import map_client_errors
from downloader.net.proxies import proxy_for
from downloader.net.ratelimit import AdaptiveRate
from downloader.net.retrying import RetryPolicy


class BudgetLike(Protocol):
    """--max-charged: reserve before asking, settle after the answer (see state.shared.SharedBudget)."""

    async def reserve(self, wanted: int) -> int: ...

    async def settle(self, reserved: int, charged: int) -> None: ...


API_PATH = "/basic-patent-data/abstract-image"
_MAX_ANSWER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Outcomes for the keys that were asked, and the keys left unasked (budget spent)."""

    outcomes: list[Outcome]
    unasked: tuple[PatentKey, ...] = ()
    charged: int = 0


class PatsnapClient:
    """Resolves batches of keys into outcomes; raises FatalApiError when the run must stop."""

    def __init__(self, session: aiohttp.ClientSession, api_base: str, api_key: str, tokens: TokenProvider,
                 rate: AdaptiveRate, policy: Callable[[], RetryPolicy], counters: Counters,
                 budget: BudgetLike, log: Callable[[str, dict[str, object]], None] | None = None) -> None:
        self._session = session
        self._url = URL(api_base.rstrip("/") + API_PATH)
        self._proxy = proxy_for(self._url)
        self._api_key = api_key
        self._tokens = tokens
        self.rate = rate
        self._policy = policy
        self._counters = counters
        self.budget = budget
        self._log = log or (lambda event, fields: None)

    async def resolve(self, batch: Batch) -> BatchResult:
        """Ask for one batch (shrunk to the budget); split it when the API calls it invalid."""
        granted = await self.budget.reserve(len(batch.keys))
        unasked = tuple(PatentKey(batch.kind, k) for k in batch.keys[granted:])
        if granted == 0:
            return BatchResult([], unasked)
        asked = Batch(batch.kind, batch.keys[:granted])
        charged = 0
        try:
            outcomes, charged = await self._resolve_splitting(asked)
        finally:
            with anyio.CancelScope(shield=True):
                await self.budget.settle(granted, charged)
        return BatchResult(outcomes, unasked, charged)

    async def _resolve_splitting(self, batch: Batch) -> tuple[list[Outcome], int]:
        try:
            return await self._call(batch)
        except InvalidParameterError as err:
            if len(batch.keys) == 1:
                return [Failed(PatentKey(batch.kind, batch.keys[0]), describe(err))], 0
            left, right = protocol.split(batch)
            first, charged_left = await self._resolve_splitting(left)
            second, charged_right = await self._resolve_splitting(right)
            return first + second, charged_left + charged_right
        except ThrottledError as err:  # still throttled when the throttle budget ran out: stop the run
            raise FatalApiError(f"{err}, still after the throttle budget", code=err.code, status=err.status,
                                hint="the quota may be used up: wait for it to renew, or lower --rate") from err
        except TokenExpiredError as err:  # refused again right after a token refresh: stop the run
            raise FatalApiError(f"{err}, even with a fresh token", code=err.code, status=err.status,
                                hint="check --client-id/--client-secret and that the client is enabled") from err
        except TransientApiError as err:
            # Retries are spent: the keys fail for now (a later run retries them).
            text = describe(err)
            return [Failed(PatentKey(batch.kind, k), text) for k in batch.keys], 0

    async def _call(self, batch: Batch) -> tuple[list[Outcome], int]:
        return await self._policy().call(lambda: self._once(batch))

    async def _once(self, batch: Batch) -> tuple[list[Outcome], int]:
        await self.rate.acquire()
        token = await self._tokens.get()
        params = protocol.request_params(batch, self._api_key)
        self._counters.api_calls += 1
        try:
            body = await self._get(params, token)
        except ThrottledError as err:
            self._throttled(err)
            raise
        answered_at = time.time()
        answer = protocol.decode_answer(body)
        if isinstance(answer.error, ThrottledError):
            self._throttled(answer.error)
        if isinstance(answer.error, TokenExpiredError):
            await self._tokens.refresh(token)
        if answer.error is not None:
            raise answer.error
        self.rate.succeeded()
        self._counters.charged += len(answer.items)
        return protocol.map_answer(batch, answer.items, answered_at), len(answer.items)

    async def _get(self, params: dict[str, str], token: str) -> object:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        with map_client_errors(TransientApiError, "API request"):
            async with self._session.get(self._url, params=params, headers=headers, proxy=self._proxy) as resp:
                if resp.status == 401:
                    await self._tokens.refresh(token)
                if resp.status != 200:
                    retry_after = protocol.parse_retry_after(resp.headers.get("Retry-After"), time.time())
                    raise protocol.error_for_http(resp.status, retry_after)
                raw = await resp.content.read(_MAX_ANSWER_BYTES + 1)
                if len(raw) > _MAX_ANSWER_BYTES:
                    raise TransientApiError("the API answer is larger than 16 MB")
                return _json(raw)

    def _throttled(self, err: ThrottledError) -> None:
        self._counters.throttled += 1
        if self.rate.throttled(err.retry_after):
            self._log("throttled", {"rate": round(self.rate.rate, 2), "code": err.code or err.status})


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TransientApiError("the API answer is not JSON") from err
