"""Single HTTP exchanges of the API client, with aioresponses (request shape, codes, refresh)."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from aioresponses import aioresponses

from downloader.core.budget import Unlimited
from downloader.core.errors import FatalApiError
from downloader.core.model import Batch, Counters, Deferred, Kind, NotFound, Resolved
from downloader.net import retrying
from downloader.net.api import PatsnapClient
from downloader.net.auth import OAuthToken, StaticToken
from downloader.net.ratelimit import ApiGate
from downloader.state.sqlite import SqliteStore

from .aioresponses_compat import install

install()

BASE = "http://api.test"
API = re.compile(r"^http://api\.test/basic-patent-data/abstract-image\?.*$")
GOOD_URL = "https://cdn.test/x.png?X-Amz-Date=20990101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=s"
OK = {"status": True, "error_code": 0, "data": [
    {"pn": "US1B2", "patent_id": "p1", "abstract_drawing": {"num": "0001", "path": GOOD_URL}}]}


@pytest.fixture(autouse=True)
def no_backoff():
    retrying.set_testing(True)
    yield
    retrying.set_testing(False)


@pytest.fixture
async def store():
    """A real (in-memory) state store: it holds the API gate and the shared token."""
    opened = await SqliteStore.open(":memory:")
    yield opened
    await opened.close()


def client(session, tokens, counters, store, attempts=3):
    gate = ApiGate(store, 1, 1000.0, patience=5.0, pauses=(0.01, 0.02, 0.04))
    return PatsnapClient(session, BASE, "the-key", tokens, gate, lambda: retrying.RetryPolicy(attempts), counters,
                         Unlimited())


def sent(mocked, method="GET"):
    return [(str(url), call) for (m, url), calls in mocked.requests.items() if m == method for call in calls]


async def test_request_shape_and_mapping(store):
    counters = Counters()
    with aioresponses() as mocked:
        mocked.get(API, payload=OK)
        async with aiohttp.ClientSession() as session:
            result = await client(session, StaticToken("tok"), counters, store).resolve(
                Batch(Kind.NUMBER, ("US1B2", "US9B2")))
        [(url, call)] = sent(mocked)
    query = dict(parse_qsl(urlsplit(url).query))
    assert query == {"patent_number": "US1B2,US9B2", "apikey": "the-key"}
    assert call.kwargs["headers"]["Authorization"] == "Bearer tok"
    assert call.kwargs["headers"]["X-PatSnap-Version"] == "1.0"
    assert call.kwargs["headers"]["Content-Type"] == "application/json"
    assert [type(o) for o in result.outcomes] == [Resolved, NotFound]
    assert counters.api_calls == 1 and counters.charged == 1 and result.charged == 1


async def test_oauth_token_fetched_once_and_refreshed_on_67200003(store):
    counters = Counters()
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/oauth/token", payload={"token": "t1", "token_type": "BearerToken", "expires_in": 1799,
                                                    "status": "approved", "issued_at": 0})
        mocked.post(f"{BASE}/oauth/token", payload={"access_token": "t2", "expires_in": 1799})
        mocked.get(API, payload={"status": False, "error_code": 67200003, "error_msg": "expired"})
        mocked.get(API, payload=OK)
        async with aiohttp.ClientSession() as session:
            tokens = OAuthToken(session, BASE, "cid", "secret", store)
            result = await client(session, tokens, counters, store).resolve(Batch(Kind.NUMBER, ("US1B2",)))
        gets = sent(mocked)
        posts = sent(mocked, "POST")
    assert isinstance(result.outcomes[0], Resolved)
    assert [c.kwargs["headers"]["Authorization"] for _, c in gets] == ["Bearer t1", "Bearer t2"]
    assert len(posts) == 2 and posts[0][1].kwargs["data"] == {"grant_type": "client_credentials"}
    assert posts[0][1].kwargs["headers"]["Authorization"] == "Basic " + base64.b64encode(b"cid:secret").decode()
    assert tokens.refreshes == 2


async def test_67200007_is_retried_and_slows_the_rate(store):
    counters = Counters()
    with aioresponses() as mocked:
        mocked.get(API, payload={"status": False, "error_code": 67200007, "error_msg": "too fast"})
        mocked.get(API, status=429, headers={"Retry-After": "0"})
        mocked.get(API, payload=OK)
        async with aiohttp.ClientSession() as session:
            api = client(session, StaticToken("tok"), counters, store)
            result = await api.resolve(Batch(Kind.NUMBER, ("US1B2",)))
    assert isinstance(result.outcomes[0], Resolved)
    assert counters.api_calls == 3 and counters.throttled == 2
    state = await api.gate.state()
    assert state.episode is None and state.interval > 1 / api.gate.rate  # the probe passed; slower now


@pytest.mark.parametrize("code", [67200004, 67200005, 67200006, 67200008])
async def test_fatal_code_raises_the_fatal_class_without_retry(code, store):
    counters = Counters()
    with aioresponses() as mocked:
        mocked.get(API, payload={"status": False, "error_code": code, "error_msg": "no"}, repeat=True)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(FatalApiError) as caught:
                await client(session, StaticToken("tok"), counters, store).resolve(Batch(Kind.NUMBER, ("US1B2",)))
    assert caught.value.code == code and counters.api_calls == 1


async def test_static_token_refused_is_fatal(store):
    with aioresponses() as mocked:
        mocked.get(API, payload={"status": False, "error_code": 67200003}, repeat=True)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(FatalApiError, match="refused the token") as caught:
                await client(session, StaticToken("tok"), Counters(), store).resolve(Batch(Kind.NUMBER, ("US1B2",)))
        assert len(sent(mocked)) == 1  # a static token cannot be refreshed: no retry
    assert "static token" in caught.value.hint and "tok" not in str(caught.value).split()


async def test_transient_errors_exhaust_retries_then_defer_the_keys(store):
    counters = Counters()
    with aioresponses() as mocked:
        mocked.get(API, status=503, repeat=True)
        async with aiohttp.ClientSession() as session:
            result = await client(session, StaticToken("tok"), counters, store, attempts=3).resolve(
                Batch(Kind.NUMBER, ("US1B2", "US2B2")))
    assert counters.api_calls == 3
    assert all(isinstance(o, Deferred) for o in result.outcomes)  # an outage is not the patents' failure
    assert [o.error for o in result.outcomes] == ["TransientApiError: HTTP 503 from the API"] * 2


async def test_invalid_parameter_splits_the_batch_to_isolate_the_bad_key(store):
    calls = []

    def answer(url, **kwargs):
        from aioresponses import CallbackResult
        keys = kwargs["params"]["patent_number"].split(",")
        calls.append(keys)
        if "BAD1" in keys:
            return CallbackResult(payload={"status": False, "error_code": 68300004, "error_msg": "Invalid"})
        return CallbackResult(payload={"status": True, "error_code": 0, "data": []})

    with aioresponses() as mocked:
        mocked.get(API, callback=answer, repeat=True)
        async with aiohttp.ClientSession() as session:
            result = await client(session, StaticToken("tok"), Counters(), store).resolve(
                Batch(Kind.NUMBER, ("US1B2", "BAD1", "US3B2", "US4B2")))
    statuses = {o.key.value: type(o).__name__ for o in result.outcomes}
    assert statuses == {"US1B2": "NotFound", "BAD1": "Failed", "US3B2": "NotFound", "US4B2": "NotFound"}
    assert calls[0] == ["US1B2", "BAD1", "US3B2", "US4B2"] and len(calls) <= 5
