"""Handlers of P042: every drawing of one patent, paged (fulltext-image) or whole (fulltext-inline-image).

Both pass the same account checks and faults as P021 (outage, apikey, token, QPS, fatal code,
quota, random faults), in the same order. An unknown patent is answered with `data: null` or an
empty list (PatSnap does not document which; clients must take both); a patent without drawings
with its pn and an empty list. Drawing n of a patent is the figure "FIG. n" served under
`/fulltext-image/{office}/{pn}/{image_id}.{ext}`, signed for `fulltext_url_lifetime` (7 days).

A page that lists drawings is charged (`counters.charged`), also when the "cut" fault then drops its
connection halfway through the body (as P021's answers); `counters.asks` counts a patent once per
first page (offset 0), `fulltext_pages` every page answered. `config.stale_drawings` lists a drawing
once with a URL that has already expired; `config.fewer_drawings` lists fewer drawings of a patent once it
was listed before (its first page asked more than once), and `config.dropped_drawings` leaves given ones
out then, wherever they stand: the later ones move up, each under its own URL path (its identity);
`config.cut_answers` cuts the next answers of a patent (billed, as the "cut" fault).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from downloader.simulator import signing
from downloader.simulator.api import billed_answer, coded_error, cut_when_told, guarded_api_request
from downloader.simulator.core import Simulator
from downloader.simulator.universe import Record

MAX_LIMIT = 100


async def fulltext_image_handler(request: web.Request) -> web.StreamResponse:
    """POST /basic-patent-data/fulltext-image: one page of a patent's drawings."""
    return await guarded_api_request(request, _page_answer)


async def inline_image_handler(request: web.Request) -> web.StreamResponse:
    """GET /basic-patent-data/fulltext-inline-image: every drawing of a patent with its image_id, unpaged."""
    return await guarded_api_request(request, _inline_answer)


async def _page_answer(sim: Simulator, request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read() or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    wanted = _wanted(body if isinstance(body, Mapping) else {}, paged=True)
    if wanted is None:
        sim.counters.invalid_requests += 1
        return coded_error(68300004)
    kind, key, limit, offset = wanted
    record = _lookup(sim, kind, key)
    counters = sim.counters
    counters.api_ok += 1
    counters.fulltext_pages += 1
    if offset == 0:
        counters.ids_asked += 1
        counters.asks[key] += 1
    cut_when_told(sim, request, [key])
    if record is None:
        return await billed_answer(sim, request, _unknown(key))
    listed = _listed(sim, record, again=counters.asks[key] > 1)
    items = [{"path": _url(sim, request, record, n), "image_type": "drawings"} for n in listed[offset:offset + limit]]
    if items:
        counters.charged += 1
        counters.drawings_listed += len(items)
    data = {"pn": record.pn, "patent_id": record.patent_id, "result_count": len(items),
            "total_search_result_count": len(listed), "fulltext_image": items}
    return await billed_answer(sim, request, web.json_response({"data": data, "status": True, "error_code": 0}))


async def _inline_answer(sim: Simulator, request: web.Request) -> web.Response:
    wanted = _wanted(request.query, paged=False)
    if wanted is None:
        sim.counters.invalid_requests += 1
        return coded_error(68300004)
    kind, key, _, _ = wanted
    record = _lookup(sim, kind, key)
    sim.counters.api_ok += 1
    sim.counters.asks[key] += 1
    if record is None:
        return _unknown(key)
    total = sim.universe.figures(record)
    items = [{"path": _url(sim, request, record, n), "image_id": sim.universe.image_id(record.pn, n),
              "image_type": "drawings"} for n in range(1, total + 1)]
    if items:
        sim.counters.charged += 1
    data = {"pn": record.pn, "patent_id": record.patent_id, "result_count": len(items),
            "fulltext_inline_image": items}
    return web.json_response({"data": data, "status": True, "error_code": 0})


def _listed(sim: Simulator, record: Record, *, again: bool) -> list[int]:
    """The figures (of the first listing) a listing names, in order: all of them the first time; listed
    before (`again`), the first `fewer_drawings` of them, less the `dropped_drawings`."""
    figures = list(range(1, sim.universe.figures(record) + 1))
    if not again:
        return figures
    figures = figures[:sim.config.fewer_drawings.get(record.pn, len(figures))]
    return [n for n in figures if f"{record.pn}_{n:04d}" not in sim.config.dropped_drawings]


def _wanted(params: Mapping[str, Any], *, paged: bool) -> tuple[str, str, int, int] | None:
    """(kind, normalized key, limit, offset) of a valid request, else None (68300004)."""
    patent_id, number = params.get("patent_id"), params.get("patent_number")
    kind, raw = ("id", patent_id) if patent_id else ("number", number)
    if not isinstance(raw, str) or not raw.strip() or "," in raw or len(raw) > 64:
        return None
    key = raw.strip().lower() if kind == "id" else raw.strip().upper()
    if not paged:
        return kind, key, 0, 0
    limit, offset = _whole(params.get("limit")), _whole(params.get("offset"))
    if limit is None or offset is None or not 1 <= limit <= MAX_LIMIT or offset < 0:
        return None
    return kind, key, limit, offset


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _lookup(sim: Simulator, kind: str, key: str) -> Record | None:
    return sim.universe.lookup_id(key) if kind == "id" else sim.universe.lookup_number(key)


def _unknown(key: str) -> web.Response:
    """PatSnap does not document this answer: data null, or an empty list (chosen by the key)."""
    data: list[Any] | None = [] if zlib.crc32(key.encode()) % 2 else None
    return web.json_response({"data": data, "status": True, "error_code": 0})


def _url(sim: Simulator, request: web.Request, record: Record, figure: int) -> str:
    ext, pn = record.ext, record.pn
    start, lifetime = sim.clock(), sim.config.fulltext_url_lifetime
    stale = f"{pn}_{figure:04d}"
    if stale in sim.config.stale_drawings:  # listed once with a URL that has already expired
        sim.config.stale_drawings.discard(stale)
        start -= lifetime + 60
    if sim.config.cdn_base:
        base, path = sim.config.cdn_base, f"/{pn}_{figure:04d}.{ext}"
    else:
        base, path = f"{request.scheme}://{request.host}", \
            f"/fulltext-image/{pn[:2]}/{pn}/{sim.universe.image_id(pn, figure)}.{ext}"
    return signing.sign_url(base, path, style=sim.config.url_style, start=start, lifetime=lifetime,
                            secret=sim.secret)
