"""Handler of the fake image CDN: signed, expiring URLs, streamed bodies, body faults.

Paths are `/cdn/{office}/{pn}/{pn}_{num}.{ext}` (office = first two letters of the pn), and for the
drawings of P042 `/fulltext-image/{office}/{pn}/{image_id}.{ext}` (figure n: `num` n, zero-padded).
Only a path this simulator signed verifies, so there is no per-path existence check:
a verified path always has bytes, unless its pn is listed in `config.missing_images`.

The CDN keeps its own clock (`config.cdn_clock_skew` ahead of the API's) and may honour URLs
for less than they say (`config.url_honoured`). Its answers carry its time as real CDNs do:
a `Date` header on every answer, and an expired sigv4 URL gets S3's body (`X-Amz-Expires`,
`Expires`, `ServerTime`); a COS one gets COS's, which has no time in it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from email.utils import formatdate

from aiohttp import web

from downloader.simulator import images
from downloader.simulator.api import down_answer, reset_connection
from downloader.simulator.core import SIM_KEY, Simulator
from downloader.simulator.signing import signed_window, verify

CHUNK = 64 * 1024
_PATH = re.compile(r"^/cdn/[A-Z]{2}/(?P<pn>[A-Z0-9]+)/(?P=pn)_(?P<num>\d{4})\.(?P<ext>png|jpg)$")
# A drawing of P042: the file name is its stable image id, whose last four digits are the figure.
_FULLTEXT_PATH = re.compile(r"^/fulltext-image/[A-Z]{2}/(?P<pn>[A-Z0-9]+)/HDA\d{15}(?P<num>\d{4})\.(?P<ext>png|jpg)$")
_CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg"}
_HTML_PAGE = "<!DOCTYPE html><html><head><title>Access check</title></head><body>Please wait…</body></html>"
_XML = '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{}</Code><Message>{}</Message>{}</Error>'


def drawing_at(path: str) -> tuple[str, str] | None:
    """The drawing (pn, num) this CDN serves at a URL's path, None for a path it serves nothing at: what
    tests compare a stored file with (`Simulator.expected_image(pn, num)`)."""
    match = _PATH.match(path) or _FULLTEXT_PATH.match(path)
    return None if match is None else (match["pn"], match["num"])


def xml_error(status: int, code: str, message: str, details: str = "") -> web.Response:
    """An S3/COS-style XML error document (`details`: further elements, already XML)."""
    return web.Response(status=status, text=_XML.format(code, message, details), content_type="application/xml")


async def image_handler(request: web.Request) -> web.StreamResponse:
    """GET /cdn/...: verify the signature, then stream the drawing (or a fault)."""
    sim = request.app[SIM_KEY]
    sim.counters.image_requests += 1
    with sim.gauge("cdn"):
        if sim.config.cdn_latency > 0:
            await asyncio.sleep(sim.config.cdn_latency)
        down = sim.down("cdn")
        if down is not None:
            return down_answer(sim, request, down, "cdn")
        drawing = drawing_at(request.path)
        if drawing is None:
            return _not_found(sim)
        refusal = _signature_refusal(sim, request)
        if refusal is not None:
            return _dated(sim, refusal)
        pn, num = drawing
        if pn in sim.config.missing_images:
            return _dated(sim, _not_found(sim))
        return await _serve(sim, request, pn, num)


def _cdn_now(sim: Simulator) -> float:
    return sim.clock() + sim.config.cdn_clock_skew


def _dated(sim: Simulator, response: web.StreamResponse) -> web.StreamResponse:
    """The CDN's own time in the Date header (aiohttp's default is the host's clock)."""
    if sim.config.cdn_clock_skew:
        response.headers["Date"] = formatdate(_cdn_now(sim), usegmt=True)
    return response


def _not_found(sim: Simulator) -> web.Response:
    sim.counters.image_404 += 1
    return xml_error(404, "NoSuchKey", "The specified key does not exist.")


def _signature_refusal(sim: Simulator, request: web.Request) -> web.Response | None:
    now = _cdn_now(sim)
    problem = verify(request.path, request.query, now=now, secret=sim.secret, honoured=sim.config.url_honoured)
    if problem == "expired":
        sim.counters.image_403_expired += 1
        return xml_error(403, "AccessDenied", "Request has expired", _expired_details(request, now))
    if problem is not None:
        sim.counters.image_403_signature += 1
        return xml_error(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return None


def _expired_details(request: web.Request, now: float) -> str:
    """What S3 adds to "Request has expired" (the URL's lifetime and end, its own time), or COS's ids."""
    query: Mapping[str, str] = request.query
    request_id = secrets.token_hex(8).upper()
    if "X-Amz-Signature" not in query:
        return f"<Resource>{request.path}</Resource><RequestId>{request_id}</RequestId><TraceId>{request_id}</TraceId>"
    _, end = signed_window(query)
    return (f"<X-Amz-Expires>{query['X-Amz-Expires']}</X-Amz-Expires><Expires>{_iso(end)}</Expires>"
            f"<ServerTime>{_iso(now)}</ServerTime><RequestId>{request_id}</RequestId><HostId>{request_id}</HostId>")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


async def _serve(sim: Simulator, request: web.Request, pn: str, num: str) -> web.StreamResponse:
    if pn in sim.config.huge_images:
        size = sim.config.huge_image_bytes
        body: Iterable[bytes] = images.huge_png_chunks(size, CHUNK)
        content_type = "image/png"
    else:
        data = sim.universe.image_bytes(pn, num)
        size, body, content_type = len(data), _chunks(data), _CONTENT_TYPES[sim.universe.ext_for(pn)]
    fault = sim.image_fault()
    if fault is not None:
        sim.counters.image_faults_injected += 1
        if fault == "html":
            return web.Response(text=_HTML_PAGE, content_type="text/html")
    headers = {"Content-Type": content_type}
    if sim.config.cdn_clock_skew:
        headers["Date"] = formatdate(_cdn_now(sim), usegmt=True)
    if "response-content-disposition" in request.query:  # S3 echoes it, so do we
        headers["Content-Disposition"] = request.query["response-content-disposition"]
    response = web.StreamResponse(headers=headers)
    response.content_length = size
    try:
        # A client that went away (a stopped run) before the headers went out is no server error:
        # aiohttp would log it with a traceback on stderr, under the demo's own output.
        await response.prepare(request)
        if await _write_body(sim, request, response, body, size, fault):
            sim.counters.images_served += 1
            sim.counters.served[f"{pn}_{num}"] += 1
            sim.counters.image_bytes_served += size
    except ConnectionError:
        pass  # the client went away; nothing to tell it
    return response


def _chunks(data: bytes) -> Iterator[bytes]:
    if len(data) <= CHUNK:  # the common case: one write, no copy
        yield data
        return
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]


async def _write_body(
    sim: Simulator,
    request: web.Request,
    response: web.StreamResponse,
    body: Iterable[bytes],
    size: int,
    fault: str | None,
) -> bool:
    """Send the body; True if it all went out. "reset"/"truncate" stop halfway."""
    if fault == "slow":
        await asyncio.sleep(sim.config.slow_seconds)
    cut = size // 2 if fault in ("reset", "truncate") else size
    sent = 0
    for chunk in body:
        piece = chunk[: cut - sent]
        if piece:
            await response.write(piece)
            sent += len(piece)
        if sent >= cut:
            break
    if sent < size:
        await _break_off(request, fault)
        return False
    await response.write_eof()
    return True


async def _break_off(request: web.Request, fault: str | None) -> None:
    # Give the client time to read headers and part of the body: a reset that outruns
    # the data would look like "no response" and aiohttp would silently retry the GET.
    await asyncio.sleep(0.05)
    if fault == "reset":
        reset_connection(request)
    elif request.transport is not None:
        request.transport.close()  # "truncate": a clean FIN short of Content-Length
