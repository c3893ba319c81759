"""Handlers of the fake OAuth endpoint and the P021 abstract-image API; the checks every API request passes."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from downloader.simulator.core import SIM_KEY, Simulator
from downloader.simulator.universe import Record

ERROR_MESSAGES = {
    67200001: "API call exceeds the total limit set by the platform!",
    67200002: "Quota exceeds the limit!",
    67200003: "Access token expired or authentication error!",
    67200004: "No permission or API package quota has exceeded the limit!",
    67200005: "Insufficient balance, call failed!",
    67200006: "This client has expired and call failed!",
    67200007: "Exceeded the call limit, call failed!",
    67200008: "The apikey is missing or invalid!",
    68300004: "Invalid parameter!",
    68300008: "Service error, please try again later!",
}
_IDENTIFIER = re.compile(r"^[A-Za-z0-9-]+$")
_CUT = web.RequestKey("cut", bool)
_STATUS_PAGE = "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center></body></html>"
_REASONS = {"500": "500 Internal Server Error", "502": "502 Bad Gateway", "503": "503 Service Unavailable"}


def coded_error(code: int, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """PatSnap's error shape: HTTP 200 (usually) with `status: false` and a code."""
    body = {"status": False, "error_code": code, "error_msg": ERROR_MESSAGES.get(code, "Error!")}
    return web.json_response(body, status=status, headers=headers)


def reset_connection(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST, as a crashing proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:  # linger 0 turns close() into a reset instead of a FIN
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def token_handler(request: web.Request) -> web.Response:
    """POST /oauth/token: client credentials (HTTP Basic or form) → a bearer token."""
    sim = request.app[SIM_KEY]
    config = sim.config
    sim.counters.requests += 1
    sim.counters.token_requests += 1
    down = sim.down("api")
    if down is not None:
        return down_answer(sim, request, down, "api")
    form = await request.post()
    client_id, client_secret = _client_credentials(request, form)
    if config.refuse_credentials or (client_id, client_secret) != (config.client_id, config.client_secret):
        sim.counters.token_refused += 1
        sim.counters.refused()
        return web.json_response(
            {"error": "invalid_client", "error_description": "Bad client credentials"}, status=401
        )
    if form.get("grant_type") != "client_credentials":
        return web.json_response(
            {"error": "unsupported_grant_type", "error_description": "Use client_credentials"}, status=400
        )
    token, issued = sim.issue_token()
    return web.json_response(
        {
            "token": token,
            "token_type": "BearerToken",
            "expires_in": int(config.token_lifetime),
            "status": "approved",
            "issued_at": int(issued * 1000),
        }
    )


def _client_credentials(request: web.Request, form: Mapping[str, Any]) -> tuple[str, str]:
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:  # decoded by hand: aiohttp 3.14 deprecates BasicAuth
            login, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return "", ""
        return login, password
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))


async def abstract_image_handler(request: web.Request) -> web.StreamResponse:
    """GET /basic-patent-data/abstract-image: the P021 answer, faults and all."""
    return await guarded_api_request(request, _answer)


async def guarded_api_request(request: web.Request,
                              answer: Callable[[Simulator, web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
    """An API request of any endpoint: counted, then the outage, account checks and random faults
    (the same for P021 and P042), and only then `answer`."""
    sim = request.app[SIM_KEY]
    counters = sim.counters
    counters.requests += 1
    counters.api_requests += 1
    counters.api_times.append(sim.clock())
    if _has_client_headers(request):
        counters.api_with_headers += 1
    with sim.gauge("api"):
        if request.can_read_body:  # the whole request is in before any answer: a client that gives up on a
            await request.read()  # slow answer later does not unmake it (P042's POST is billed all the same)
        if sim.config.api_latency > 0:
            await asyncio.sleep(sim.config.api_latency)
        down = sim.down("api")
        if down is not None:
            return down_answer(sim, request, down, "api")
        refusal = _refusal(sim, request)
        if refusal is None:
            refusal = await _injected_fault(sim, request)
        return refusal if refusal is not None else await answer(sim, request)


def _has_client_headers(request: web.Request) -> bool:
    """Whether the request carries the headers PatSnap's own clients send (accepted either way)."""
    return (request.headers.get("X-PatSnap-Version") == "1.0"
            and request.headers.get("Content-Type", "").split(";")[0].strip() == "application/json")


def down_answer(sim: Simulator, request: web.Request, kind: str, side: str) -> web.Response:
    """What an outage answers: an HTTP error page, or a dropped connection ("reset")."""
    setattr(sim.counters, f"{side}_down_answers", getattr(sim.counters, f"{side}_down_answers") + 1)
    if kind == "reset":
        reset_connection(request)
        return web.Response()  # aiohttp swallows the failed write to the dead transport
    return web.Response(status=int(kind), text=_STATUS_PAGE.format(_REASONS[kind]), content_type="text/html")


def _refusal(sim: Simulator, request: web.Request) -> web.StreamResponse | None:
    """The account-level answers, in PatSnap's order: apikey, token, rate, fatal, quota."""
    config, counters = sim.config, sim.counters
    apikey = request.query.get("apikey", "")
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    if bearer.strip().startswith("sk-"):  # the newer platform: the key is the bearer, a wrong one a bad token
        if not _sk_key_accepted(config.api_key, scheme, bearer.strip(), apikey):
            counters.auth_refused += 1
            counters.refused()
            return coded_error(67200003)
        return _account_answer(sim)
    if apikey not in (config.api_key, config.client_id):
        counters.auth_refused += 1
        counters.refused()
        if config.apikey_refusal == "401":
            return web.json_response({"error": "unauthorized", "message": "Invalid apikey"}, status=401)
        return coded_error(67200008)
    if scheme.lower() != "bearer" or not sim.token_valid(bearer.strip()):
        counters.auth_refused += 1
        counters.refused()
        return coded_error(67200003)
    return _account_answer(sim)


def _sk_key_accepted(api_key: str, scheme: str, key: str, apikey: str) -> bool:
    """An sk- key is good when it is the account's key, as the bearer, and the apikey (if sent) is it too."""
    return api_key.startswith("sk-") and scheme.lower() == "bearer" and key == api_key and apikey in ("", key)


def _account_answer(sim: Simulator) -> web.StreamResponse | None:
    """The answers after authentication, in PatSnap's order: rate, fatal, quota."""
    config, counters = sim.config, sim.counters
    if not sim.admit():
        counters.throttled += 1
        counters.throttled_now()
        if config.throttle_mode == "429":
            return coded_error(67200007, status=429, headers={"Retry-After": "1"})
        return coded_error(67200007)
    if config.fatal_code is not None:
        counters.fatal_answers += 1
        return coded_error(config.fatal_code)
    if config.quota_after is not None and counters.charged >= config.quota_after:
        counters.quota_refused += 1
        counters.throttled_now()
        return coded_error(67200002)
    return None


async def _injected_fault(sim: Simulator, request: web.Request) -> web.StreamResponse | None:
    """A random fault's answer, or None to answer normally ("slow" sleeps, then None)."""
    kind = sim.api_fault()
    if kind is None:
        return None
    sim.counters.api_faults_injected += 1
    if kind in _REASONS:
        return web.Response(status=int(kind), text=_STATUS_PAGE.format(_REASONS[kind]), content_type="text/html")
    if kind == "68300008":
        return coded_error(68300008)
    if kind == "reset":
        reset_connection(request)
        return web.Response()  # aiohttp swallows the failed write to the dead transport
    if kind == "cut":
        request[_CUT] = True  # answered (and billed) by the endpoint, then cut (`billed_answer`)
        return None
    if kind == "not_json":
        return web.Response(text=_STATUS_PAGE.format("Please wait"), content_type="text/html")
    await asyncio.sleep(sim.config.slow_seconds)  # "slow"
    return None


async def _answer(sim: Simulator, request: web.Request) -> web.StreamResponse:
    keys = _identifiers(request.query, sim.config.max_batch)
    if keys is None:
        sim.counters.invalid_requests += 1
        return coded_error(68300004)
    kind, wanted = keys
    data = _items(sim, request, kind, wanted)
    counters = sim.counters
    counters.api_ok += 1
    counters.ids_asked += len(wanted)
    counters.asks.update(wanted)
    counters.charged += len(data)  # billed when answered, whether or not the client reads it all
    cut_when_told(sim, request, wanted)
    return await billed_answer(sim, request, web.json_response({"data": data, "status": True, "error_code": 0}))


def cut_when_told(sim: Simulator, request: web.Request, keys: list[str]) -> None:
    """Mark this (billed) answer to be cut when `config.cut_answers` still counts one of its keys."""
    told = sim.config.cut_answers
    named = [key for key in keys if told.get(key, 0) > 0]
    if not named or request.get(_CUT):
        return
    for key in named:
        told[key] -= 1
    sim.counters.api_faults_injected += 1
    request[_CUT] = True


async def billed_answer(sim: Simulator, request: web.Request, answer: web.Response) -> web.StreamResponse:
    """Send an answer that was billed (any endpoint): whole, cut halfway by the "cut" fault, or in two
    pieces `api_answer_gap` apart."""
    if request.get(_CUT):
        return await _cut(request, answer)
    if sim.config.api_answer_gap <= 0:
        return answer
    return await _in_two_pieces(request, answer, sim.config.api_answer_gap)


async def _cut(request: web.Request, answer: web.Response) -> web.StreamResponse:
    """The "cut" fault: the headers and half the (billed) body, then a TCP RST."""
    body = answer.body
    assert isinstance(body, bytes)
    response = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    reset_connection(request)
    return response


async def _in_two_pieces(request: web.Request, answer: web.Response, gap: float) -> web.StreamResponse:
    """Write `answer`'s body in two halves, `gap` seconds apart (the client sees the first half alone)."""
    body = answer.body
    assert isinstance(body, bytes)
    half = len(body) // 2
    response = web.StreamResponse(status=answer.status, headers={"Content-Type": answer.content_type})
    response.content_length = len(body)
    await response.prepare(request)
    try:
        await response.write(body[:half])
        await asyncio.sleep(gap)
        await response.write(body[half:])
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client hung up on the first half (it is billed all the same)
    return response


def _identifiers(query: Mapping[str, str], max_batch: int) -> tuple[str, list[str]] | None:
    """("id" | "number", distinct normalized keys), or None for an invalid request."""
    ids = query.get("patent_id", "").strip()
    kind, raw = ("id", ids) if ids else ("number", query.get("patent_number", ""))
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts or len(parts) > max_batch or not all(_IDENTIFIER.match(p) for p in parts):
        return None
    normalized = (p.lower() if kind == "id" else p.upper() for p in parts)
    return kind, list(dict.fromkeys(normalized))


def _items(sim: Simulator, request: web.Request, kind: str, keys: list[str]) -> list[dict[str, Any]]:
    overrides = {k.strip().upper(): v for k, v in sim.config.overrides.items()}
    origin = f"{request.scheme}://{request.host}"
    lookup = sim.universe.lookup_id if kind == "id" else sim.universe.lookup_number
    items = []
    for key in keys:
        if key.upper() in overrides:
            items.append(overrides[key.upper()])
        elif (record := lookup(key)) is not None:
            items.append(_item(sim, origin, record))
    return items


def _item(sim: Simulator, origin: str, record: Record) -> dict[str, Any]:
    item: dict[str, Any] = {"pn": record.pn, "patent_id": record.patent_id}
    if record.num is not None:
        item["abstract_drawing"] = {"num": record.num, "path": sim.image_url(origin, record)}
        return item
    # PatSnap says "no drawing" three ways; clients must accept all of them.
    variant = zlib.crc32(record.pn.encode()) % 3
    if variant == 1:
        item["abstract_drawing"] = None
    elif variant == 2:
        item["abstract_drawing"] = {"num": "", "path": ""}
    return item
