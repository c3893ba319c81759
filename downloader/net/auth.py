"""Bearer tokens: a static one (--token, or an sk- key of PatSnap's newer platform given with
--api-key), or OAuth2 client credentials shared by the whole fleet.

A static credential stays in memory, never in the state store. The OAuth token lives in a record
of the state store, sealed and bound to the credentials that fetched it (`core/sealing.py`: another
client id or secret never finds it); `core/credentials.py` decides each step,
so every worker of a run uses one token and one refresh: a worker whose token is due, or was
refused, asks the record; it uses the token there, waits while another worker fetches one, or
fetches one itself. Within a process a lock keeps that to one task at a time, and the token is
cached until it is due (a store round trip only once per token lifetime).
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import anyio
from yarl import URL

from downloader.core import credentials
from downloader.core.errors import FatalApiError, TokenExpiredError, TransientApiError
from downloader.core.sealing import TokenSeal
from downloader.net.httperrors import map_client_errors
from downloader.net.proxies import proxy_for
from downloader.net.ratelimit import SharedRecords

__all__ = ["OAuthToken", "StaticToken", "TokenProvider", "parse_token_answer"]
_WAIT = 0.1  # how often a worker waiting for another's token fetch looks again


class TokenProvider(Protocol):
    """Gives the bearer token to send, and a new one when the API refused `stale`."""

    refreshes: int
    refreshable: bool
    static: str | None  # the option that gave a static credential (--token, --api-key), None for OAuth

    async def get(self) -> str: ...

    async def refresh(self, stale: str) -> str: ...


class StaticToken:
    """A token given on the command line (`option`: --token, or --api-key for an sk- key); when it
    is refused there is nothing to refresh."""

    refreshes = 0
    refreshable = False

    def __init__(self, token: str, option: str = "--token") -> None:
        self._token = token
        self.static: str | None = option

    async def get(self) -> str:
        return self._token

    async def refresh(self, stale: str) -> str:
        raise FatalApiError(f"the API refused the credential given with {self.static}; it cannot be refreshed",
                            hint=f"check {self.static}, or use --client-id/--client-secret so a token is renewed")

    def __repr__(self) -> str:
        return f"StaticToken({self.static})"  # never the value


class OAuthToken:
    """OAuth2 client credentials against `{api_base}/oauth/token` (PatSnap's answer shape)."""

    refreshable = True
    static: str | None = None

    def __init__(self, session: aiohttp.ClientSession, api_base: str, client_id: str, secret: str,
                 records: SharedRecords, clock: Callable[[], float] = time.monotonic,
                 on_refresh: Callable[[], None] | None = None) -> None:
        self._session = session
        self._url = URL(api_base.rstrip("/") + "/oauth/token")
        # Built by hand: aiohttp.BasicAuth is deprecated in 3.14 and encode_basic_auth is new in it.
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}", "Accept": "application/json"}
        self._records = records
        self._seal = TokenSeal(api_base, client_id, secret)
        self._record = self._seal.record
        self._legacy: str | None = credentials.legacy_record_name(api_base, client_id)
        self._me = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._clock = clock
        self._on_refresh = on_refresh
        self._lock = anyio.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.refreshes = 0

    async def get(self) -> str:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return await self._from_record(stale=None)

    async def refresh(self, stale: str) -> str:
        if self._token is not None and self._token != stale and self._clock() < self._renew_at:
            return self._token  # another task of this process already has a newer one
        return await self._from_record(stale=stale)

    async def _from_record(self, stale: str | None) -> str:
        async with self._lock:
            if self._token is not None and self._token != stale and self._clock() < self._renew_at:
                return self._token
            if self._legacy is not None:  # a store written before tokens were sealed: empty its record
                await self._records.update_shared(self._legacy, credentials.without_plain_token)
                self._legacy = None
            waited_on: str | None = None
            while True:
                step: credentials.Step = await self._records.update_shared(self._record, functools.partial(
                    credentials.token_step, me=self._me, stale=stale, waited_on=waited_on, seal=self._seal))
                match step:
                    case credentials.Use(token, renew_in):
                        self._token, self._renew_at = token, self._clock() + renew_in
                        return token
                    case credentials.Wait(attempt):
                        waited_on = attempt
                        await anyio.sleep(_WAIT)
                    case credentials.Fetch(attempt, now):
                        return await self._fetch_for_all(attempt, now)
                    case credentials.Refused(message, hint, status):
                        raise FatalApiError(message, hint=hint, status=status)

    async def _fetch_for_all(self, attempt: str, started: float) -> str:
        try:
            token, lifetime = await self._fetch()
        except FatalApiError as err:
            await self._update(credentials.token_failed, attempt=attempt, error=err)
            raise
        except BaseException:
            await self._update(credentials.token_failed, attempt=attempt, error=None)
            raise
        renew_in: float = await self._update(credentials.token_fetched, attempt=attempt, token=token,
                                             lifetime=lifetime, started=started, seal=self._seal)
        self._token, self._renew_at = token, self._clock() + renew_in
        self.refreshes += 1
        if self._on_refresh:
            self._on_refresh()
        return token

    async def _update(self, change: Callable[..., tuple[dict[str, Any], Any]], **kwargs: Any) -> Any:
        with anyio.CancelScope(shield=True):
            return await self._records.update_shared(self._record, functools.partial(change, **kwargs))

    async def _fetch(self) -> tuple[str, float]:
        with map_client_errors(TransientApiError, "token request"):
            async with self._session.post(self._url, headers=self._headers, proxy=proxy_for(self._url),
                                          data={"grant_type": "client_credentials"}) as resp:
                if resp.status in (400, 401, 403):
                    raise FatalApiError(
                        f"the token endpoint refused the client credentials (HTTP {resp.status})",
                        hint="the suspect is the client id and secret: check --client-id and --client-secret",
                        status=resp.status)
                if resp.status == 404:  # a wrong --api-base, not an outage: no retry helps
                    raise FatalApiError(f"HTTP 404 from the token endpoint at {self._url.with_user(None)}",
                                        hint="the API path was not found; check --api-base", status=404)
                if resp.status != 200:
                    raise TransientApiError(f"HTTP {resp.status} from the token endpoint", status=resp.status)
                body = await resp.json(content_type=None)
        return parse_token_answer(body)


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
