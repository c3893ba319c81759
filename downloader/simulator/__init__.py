"""A faithful, seeded fake of the PatSnap Open API (P021 abstract image, P042 fulltext image) and its image CDN.

It backs `patent-images demo` and `simulate`, the integration tests and the benchmarks.

Routes
    POST /oauth/token                      HTTP Basic client_id:client_secret (or form fields),
                                           grant_type=client_credentials → {token, token_type:
                                           "BearerToken", expires_in, status, issued_at (ms)};
                                           bad credentials → 401 {"error": "invalid_client"}.
    GET  /basic-patent-data/abstract-image ?patent_number=A,B|patent_id=…&apikey=K, Bearer token.
                                           Checks, in order: an outage (`api_down`), apikey
                                           (67200008, or HTTP 401 with `apikey_refusal`), token (67200003),
                                           QPS (67200007 or HTTP 429), fatal_code, quota
                                           (67200002), random faults, ids (68300004). Coded errors
                                           are HTTP 200 with status false. patent_id wins over
                                           patent_number; unknown patents are omitted.
    POST /basic-patent-data/fulltext-image P042 ?apikey=K, Bearer token, JSON {patent_id|patent_number,
                                           limit 1..100, offset}: one page of a patent's drawings
                                           {pn, patent_id, result_count, total_search_result_count,
                                           fulltext_image: [{path, image_type}]}; same checks and
                                           faults as P021; unknown → data null or []. See `fulltext`.
    GET  /basic-patent-data/fulltext-inline-image ?patent_number=…|patent_id=…: every drawing with its
                                           stable image_id, unpaged.
    GET  /fulltext-image/{office}/{pn}/{image_id}.{ext}?<signature>   a drawing of P042 ("FIG. n"),
                                           signed for 7 days; otherwise as /cdn/ below.
    GET  /cdn/{office}/{pn}/{pn}_{num}.{ext}?<signature>
                                           the drawing, streamed in 64 KB chunks; 403 XML
                                           AccessDenied "Request has expired" / SignatureDoesNotMatch,
                                           404 XML NoSuchKey; an outage (`cdn_down`) answers every request.
    GET  /_sim/counters, GET|POST /_sim/config, POST /_sim/reset-counters
                                           for tests driving the tool in a subprocess.

With `cdn_base` set, image URLs are `{cdn_base}/{pn}_{num}.{ext}?<signature>` instead, and
whatever serves them must hold `Universe(seed).image_bytes(pn, num)`.

Faults as an aiohttp client sees them: API "reset" → the connection drops before any
response (aiohttp retries an idempotent GET once by itself, then raises
ClientOSError/ServerDisconnectedError); image "reset" → headers and half the body, then a
TCP RST (ClientPayloadError); "truncate" → half the declared Content-Length, then FIN
(ClientPayloadError); "slow" → a stall of `slow_seconds` (a sock_read timeout fires).

Modules: `universe` (patents and image bytes from a seed), `images` (PNG/JPEG builders),
`signing` (COS and SigV4 signed URLs), `config` (knobs and counters), `core` (state),
`api` and `cdn` (handlers), `server` (app and runners), `cli` (the `simulate` command).
"""

from downloader.simulator.cli import add_simulate_arguments, config_from_args, serve
from downloader.simulator.config import (
    API_FAULT_KINDS,
    IMAGE_FAULT_KINDS,
    Counters,
    SimulatorConfig,
)
from downloader.simulator.core import Simulator
from downloader.simulator.server import build_app, running_simulator, simulator_in_thread
from downloader.simulator.signing import sign_url, verify
from downloader.simulator.universe import Record, Universe, generate_numbers

__all__ = [
    "API_FAULT_KINDS",
    "IMAGE_FAULT_KINDS",
    "Counters",
    "Record",
    "Simulator",
    "SimulatorConfig",
    "Universe",
    "add_simulate_arguments",
    "build_app",
    "config_from_args",
    "generate_numbers",
    "running_simulator",
    "serve",
    "sign_url",
    "simulator_in_thread",
    "verify",
]
