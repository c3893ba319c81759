"""Builds the network side of a job from its settings: the two HTTP sessions, tokens, pacing,
retries, the API client and the CDN fetcher. One place, so the job and the workers agree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from downloader.core.events import Notice, Sink
from downloader.core.model import Counters
from downloader.core.ports import Resolver
from downloader.core.settings import Settings
from downloader.net import retrying
from downloader.net.api import PatsnapClient
from downloader.net.auth import OAuthToken, StaticToken, TokenProvider
from downloader.net.cdn import ImageFetcher
from downloader.net.fulltext import FulltextResolver
from downloader.net.ratelimit import ApiGate, SharedRecords, trace_config
from downloader.sinks.base import ImageSink
from downloader.state.base import StateStore
from downloader.state.shared import SharedBudget


@asynccontextmanager
async def http_clients(settings: Settings, sink: ImageSink, store: StateStore, run_id: int, counters: Counters,
                       events: Sink, worker: str = "") -> AsyncIterator[tuple[Resolver, ImageFetcher]]:
    """The resolver (P021, or P042 with --drawings all) and the CDN fetcher, each on its own session.

    The state store holds what the fleet shares: the API gate, the OAuth token and the budget.
    """
    s = settings
    async with _session(s.api_in_flight + 2, s.api_timeout, s.api_timeout, [trace_config()]) as api_http, \
            _session(s.download_concurrency, s.download_timeout, s.stall_timeout) as cdn:
        tokens = _tokens(s, api_http, events, store)

        def policy() -> retrying.RetryPolicy:
            return retrying.RetryPolicy(s.retries, s.backoff_initial, s.backoff_max,
                                        on_retry=lambda err: _count_retry(counters))

        def log(kind: str, fields: dict[str, object]) -> None:
            events(Notice(kind, _fields_text(fields)))

        gate = ApiGate(store, run_id, s.rate, s.throttle_patience, log=log)
        client = PatsnapClient(api_http, s.api_base, s.effective_api_key or "", tokens, gate, policy, counters,
                               SharedBudget(store, run_id, s.max_charged),
                               apikey_is_client_id=not s.api_key or s.api_key == s.client_id, worker=worker,
                               outage_seconds=s.outage_seconds)
        fetcher = ImageFetcher(cdn, sink, counters, policy=policy, expiry_margin=s.expiry_margin,
                               max_bytes=s.max_image_bytes, outage_seconds=s.outage_seconds, holds=store.holds)
        try:
            yield (FulltextResolver(client) if s.drawings == "all" else client), fetcher
        finally:
            counters.token_refreshes = tokens.refreshes


def _session(limit: int, total: float, stall: float,
             traces: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
    timeout = aiohttp.ClientTimeout(total=total, sock_connect=30, sock_read=stall)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300)
    # Proxies from the environment are applied per request by proxies.proxy_for (cached).
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=traces)


def _tokens(settings: Settings, session: aiohttp.ClientSession, events: Sink, records: SharedRecords) -> TokenProvider:
    if settings.api_key_is_bearer:  # an sk- key of PatSnap's newer platform: the bearer itself, no OAuth
        return StaticToken(settings.api_key or "", option="--api-key")
    if settings.client_id and settings.client_secret:
        return OAuthToken(session, settings.api_base, settings.client_id, settings.client_secret, records,
                          on_refresh=lambda: events(Notice("token", "token refreshed")))
    assert settings.token is not None
    return StaticToken(settings.token)


def _fields_text(fields: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fields.items())


def _count_retry(counters: Counters) -> None:
    counters.retries += 1
