"""Bearer tokens: a static one, or OAuth2 client credentials refreshed ahead of expiry.

Refresh is single-flight: a lock and a double check mean that when many requests see an
expired token at once, one of them fetches a new token and the rest reuse it.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
import anyio
from yarl import URL

from downloader.core.errors import FatalApiError, TokenExpiredError, TransientApiError
from downloader.net.httperrors import map_client_errors
from downloader.net.proxies import proxy_for


def refresh_at(issued: float, lifetime: float) -> float:
    """When to fetch the next token: a minute early, or 20% early for short-lived tokens."""
    return issued + lifetime - min(60.0, lifetime * 0.2)


class TokenProvider(Protocol):
    """Gives the bearer token to send, and a new one when the API refused `stale`."""

    refreshes: int

    async def get(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


class StaticToken:
    """A token given on the command line; when it is refused there is nothing to refresh."""

    refreshes = 0

    def __init__(self, token: str) -> None:
        self._token = token

    async def get(self) -> str:
        return self._token

    async def refresh(self, stale: str) -> str:
        raise FatalApiError("the API refused the token (expired or invalid)",
                            hint="get a new token, or use --client-id/--client-secret so it is renewed")


class OAuthToken:
    """OAuth2 client credentials against `{api_base}/oauth/token` (PatSnap's answer shape)."""

    def __init__(self, session: aiohttp.ClientSession, api_base: str, client_id: str, secret: str,
                 clock: Callable[[], float] = time.monotonic,
                 on_refresh: Callable[[], None] | None = None) -> None:
        self._session = session
        self._url = URL(api_base.rstrip("/") + "/oauth/token")
        # Built by hand: aiohttp.BasicAuth is deprecated in 3.14 and encode_basic_auth is new in it.
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        self._clock = clock
        self._on_refresh = on_refresh
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.refreshes = 0

    async def get(self) -> str:
        if self._token is None or self._clock() >= self._renew_at:
            async with self._lock:
                if self._token is None or self._clock() >= self._renew_at:  # someone else may have
                    await self._fetch()
        assert self._token is not None
        return self._token

    async def refresh(self, stale: str) -> str:
        async with self._lock:
            if self._token == stale:
                await self._fetch()
        assert self._token is not None
        return self._token

    async def _fetch(self) -> None:
        started = self._clock()
        with map_client_errors(TransientApiError, "token request"):
            async with self._session.post(self._url, headers=self._headers, proxy=proxy_for(self._url),
                                          data={"grant_type": "client_credentials"}) as resp:
                if resp.status in (400, 401, 403):
                    raise FatalApiError(
                        f"the token endpoint refused the client credentials (HTTP {resp.status})",
                        hint="check --client-id and --client-secret", status=resp.status)
                if resp.status != 200:
                    raise TransientApiError(f"HTTP {resp.status} from the token endpoint", status=resp.status)
                body = await resp.json(content_type=None)
        token, lifetime = parse_token_answer(body)
        self._token, self._renew_at = token, refresh_at(started, lifetime)
        self.refreshes += 1
        if self._on_refresh:
            self._on_refresh()


def parse_token_answer(body: object) -> tuple[str, float]:
    """(token, lifetime seconds) from PatSnap's `{token, expires_in}` or standard `access_token`."""
    if not isinstance(body, dict):
        raise TransientApiError("the token endpoint answered something that is not a JSON object")
    token = body.get("token") or body.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenExpiredError("the token endpoint answered without a token")
    try:
        lifetime = float(body.get("expires_in") or 1799)
    except (TypeError, ValueError):
        lifetime = 1799.0
    return token, max(lifetime, 1.0)
