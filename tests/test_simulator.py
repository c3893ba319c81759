"""The PatSnap simulator: pure universe and signing, then real HTTP against it on loopback."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import re
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest
from PIL import Image

from downloader.simulator import (
    Record,
    Simulator,
    SimulatorConfig,
    Universe,
    add_simulate_arguments,
    config_from_args,
    generate_numbers,
    images,
    sign_url,
    verify,
)
from downloader.simulator.universe import normalize_number

API = "/basic-patent-data/abstract-image"
BEARER = {"Authorization": "Bearer demo-token"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NUMBERS = generate_numbers(3000, seed=7)


def pick(universe: Universe, want: Callable[[Record | None], bool], count: int = 1) -> list[str]:
    """The first `count` generated numbers whose record satisfies `want`."""
    found = [n for n in NUMBERS if want(universe.lookup_number(n))]
    assert len(found) >= count
    return found[:count]


def with_drawing(ext: str = "png") -> Callable[[Record | None], bool]:
    return lambda r: r is not None and r.num is not None and r.ext == ext


def check_png(data: bytes) -> None:
    """A structurally valid 1-bit greyscale PNG (good CRCs, rows that inflate fully) of black line art."""
    assert data[:8] == PNG_MAGIC
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = body
        pos += 12 + length
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (1, 0)
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * ((width + 7) // 8 + 1)
    check_line_art(Image.open(io.BytesIO(data)), "1")


def check_jpeg(data: bytes) -> None:
    """A baseline greyscale JPEG of line art, segments well formed, no comment (COM) padding."""
    assert data[:3] == JPEG_MAGIC and data[-2:] == b"\xff\xd9"
    pos, markers = 2, []
    while data[pos + 1] != 0xDA:
        assert data[pos] == 0xFF
        markers.append(data[pos + 1])
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    assert {0xDB, 0xC0, 0xC4} <= set(markers) and 0xFE not in markers
    check_line_art(Image.open(io.BytesIO(data)), "L")


def check_line_art(image: Image.Image, mode: str) -> None:
    """Decodes fully; mostly white paper with a few percent of ink, as a patent drawing is."""
    image.load()
    assert image.mode == mode and image.width >= 400 and image.height >= 400
    histogram = image.convert("L").histogram()
    ink = sum(histogram[:128]) / (image.width * image.height)
    assert 0.005 < ink < 0.3, ink


# ---------------------------------------------------------------- universe (pure)


def test_numbers_are_normalized_with_default_kind_codes() -> None:
    """Numbers are upper-cased and stripped; a missing kind code gets the office default."""
    assert normalize_number(" us11205304 ") == "US11205304B2"
    assert normalize_number("CN104169186A") == "CN104169186A"
    assert normalize_number("EP3456789") == "EP3456789B1"
    assert normalize_number("KR102123456") == "KR102123456B1"
    assert normalize_number("XX123456") == "XX123456A"
    assert normalize_number("hello") is None
    u = Universe(0)
    assert u.lookup_number("US11205304") == u.lookup_number("us11205304b2")


def test_universe_is_deterministic_and_proportioned() -> None:
    """Same seed, same answers; ~7% unknown, ~8% without drawing, ~15% JPEG."""
    a, b, other = Universe(0), Universe(0), Universe(1)
    records = [a.lookup_number(n) for n in NUMBERS]
    assert records == [b.lookup_number(n) for n in NUMBERS]
    assert records != [other.lookup_number(n) for n in NUMBERS]
    known = [r for r in records if r is not None]
    drawn = [r for r in known if r.num is not None]
    assert 0.05 < 1 - len(known) / len(records) < 0.09
    assert 0.06 < 1 - len(drawn) / len(known) < 0.10
    assert 0.12 < sum(r.ext == "jpg" for r in drawn) / len(drawn) < 0.18
    assert {r.num for r in drawn} >= {"0001", "0002"}


def test_patent_ids_round_trip_and_other_uuids_are_synthetic() -> None:
    """An id handed out for a number maps back to it; other UUIDs are CN patents; junk is unknown."""
    u = Universe(0)
    for record in filter(None, map(u.lookup_number, NUMBERS[:300])):
        assert uuid.UUID(record.patent_id).version == 5
        assert u.lookup_id(record.patent_id.upper()) == record
    some = "077f4978-092c-4522-bc98-e8257a5c99f9"
    synthetic = [u.lookup_id(str(uuid.UUID(int=i * 7919 + 12345, version=4))) for i in range(200)]
    assert all(re.fullmatch(r"CN\d{9}A", r.pn) for r in synthetic if r is not None)
    assert sum(r is None for r in synthetic) < 30
    found = u.lookup_id(some.upper())
    assert found is None or found.patent_id == some
    assert u.lookup_id("not-a-uuid") is None and u.lookup_id("077f4978092c4522bc98e8257a5c99f9") is None


def test_generated_numbers_look_real() -> None:
    """Distinct, seeded numbers across six offices, ~10% US ones without kind code."""
    numbers = generate_numbers(2000, seed=3)
    assert numbers == generate_numbers(2000, seed=3) and len(set(numbers)) == 2000
    assert {n[:2] for n in numbers} == {"CN", "US", "EP", "JP", "KR", "WO"}
    shape = re.compile(r"(CN[123]\d{8}[ABUS]|US\d{8}(B[12])?|US20\d{9}A1|USD\d{6}S|EP\d{7}[AB]1"
                       r"|JP20\d{8}A|KR10\d{7}B1|WO20\d{8}A1)")
    assert all(shape.fullmatch(n) for n in numbers)
    bare = sum(n.startswith("US") and n[-1].isdigit() and n[-2].isdigit() for n in numbers)
    assert 0.05 < bare / len(numbers) < 0.15


def test_image_bytes_are_valid_line_art_sized_and_cached() -> None:
    """1-bit PNGs and greyscale JPEGs, valid, agreeing with Record.ext, 5–200 KB; the same bytes every time."""
    u = Universe(0)
    records = [r for r in map(u.lookup_number, NUMBERS[:400]) if r is not None and r.num is not None]
    sizes = []
    for r in records:
        data = u.image_bytes(r.pn, r.num)
        (check_jpeg if r.ext == "jpg" else check_png)(data)
        sizes.append(len(data))
    assert Universe(0).image_bytes(records[0].pn, "0001") is u.image_bytes(records[0].pn, "0001")
    assert 5_000 <= min(sizes) and max(sizes) <= 200_000
    assert 6_000 < statistics.median(sizes) < 30_000
    assert len({hashlib.sha256(u.image_bytes(r.pn, r.num)).digest() for r in records}) == len(records)


def test_drawings_are_deterministic_across_processes_and_seeds() -> None:
    """A fresh interpreter draws the same bytes for a patent; another seed draws other bytes."""
    record = Universe(0).lookup_number(pick(Universe(0), with_drawing("png"))[0])
    assert record is not None and record.num is not None
    code = ("import hashlib; from downloader.simulator import Universe; "
            f"print(hashlib.sha256(Universe(0).image_bytes({record.pn!r}, {record.num!r})).hexdigest())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == hashlib.sha256(Universe(0).image_bytes(record.pn, record.num)).hexdigest()
    assert Universe(1).image_bytes(record.pn, record.num) != Universe(0).image_bytes(record.pn, record.num)


def test_a_drawing_sheet_shows_its_patent_and_figure_caption() -> None:
    """The figure sits between a header naming the patent and a "FIG. n" caption: ink in all three bands."""
    u = Universe(0)
    record = u.lookup_number(pick(u, with_drawing("png"))[0])
    assert record is not None and record.num is not None
    image = Image.open(io.BytesIO(u.image_bytes(record.pn, record.num))).convert("L")
    unit = image.width / 1000
    header, caption = round(70 * unit), round(110 * unit)
    bands = [(0, header), (header, image.height - caption), (image.height - caption, image.height)]
    for top, bottom in bands:
        band = image.crop((0, top, image.width, bottom))
        assert sum(band.histogram()[:128]) > 200, (top, bottom)
    second = Image.open(io.BytesIO(u.image_bytes(record.pn, "0002"))).convert("L")
    assert second.crop((0, second.height - caption, second.width, second.height)).tobytes() != image.crop(
        (0, image.height - caption, image.width, image.height)).tobytes()  # "FIG. 2", not "FIG. 1"


def test_drawings_are_quick_to_make() -> None:
    """After the figure pool is drawn (about a second, once a process), a sheet takes milliseconds."""
    images.warm_pool()
    u = Universe(11)  # a seed no other test uses: nothing cached
    records = [r for r in map(u.lookup_number, NUMBERS[:600]) if r is not None and r.num is not None]
    started = time.perf_counter()
    for r in records:
        u.image_bytes(r.pn, r.num)
    per_image = (time.perf_counter() - started) / len(records)
    print(f"{per_image * 1000:.2f} ms a drawing over {len(records)} drawings")
    assert per_image < 0.015  # about 1–2 ms on an idle machine; generous for a shared CI runner


# ---------------------------------------------------------------- signing (pure)


@pytest.mark.parametrize("style", ["cos", "sigv4"])
def test_signatures_cover_path_and_times(style: str) -> None:
    """Genuine URLs verify; editing signature, path or times is caught; late ones expire."""
    path, now, key = "/cdn/CN/CN1A/CN1A_0001.png", 1_700_000_000.5, b"k"
    url = sign_url("http://h:1/", path, style=style, start=now, lifetime=3600, secret=key)
    assert url.startswith("http://h:1/cdn/CN/")
    query = dict(parse_qsl(urlsplit(url).query))
    assert verify(path, query, now=now + 10, secret=key) is None
    assert verify(path, query, now=now + 3601, secret=key) == "expired"
    assert verify(path.replace("0001", "0002"), query, now=now, secret=key) == "signature"
    assert verify(path, query, now=now, secret=b"other") == "signature"
    assert verify(path, {}, now=now, secret=key) == "signature"
    longer = json.loads(json.dumps(query).replace("1700003600", "1700099999").replace('"3600"', '"99999"'))
    assert verify(path, longer, now=now, secret=key) == "signature"


def test_cos_url_shape_matches_patsnap() -> None:
    """The COS form carries an encoded `sign` parameter and `response-expires`."""
    url = sign_url("https://x", "/a.png", style="cos", start=1_700_000_000, lifetime=3600, secret=b"k")
    assert "?sign=q-sign-algorithm%3Dsha1%26q-ak%3DAKID" in url
    assert "q-sign-time%3D1700000000%3B1700003600%26q-key-time%3D1700000000%3B1700003600" in url
    assert url.endswith("&response-expires=Tue%2C%2014%20Nov%202023%2023%3A13%3A20%20GMT")


# ---------------------------------------------------------------- HTTP against the simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


async def ask(
    http: aiohttp.ClientSession, sim: Simulator, headers: dict[str, str] | None = None, **params: str
) -> tuple[int, Any]:
    params.setdefault("apikey", "demo-key")
    async with http.get(sim.base_url + API, params=params, headers=BEARER if headers is None else headers) as r:
        return r.status, await r.json(content_type=None)


async def image_url(http: aiohttp.ClientSession, sim: Simulator, number: str) -> str:
    _, body = await ask(http, sim, patent_number=number)
    return str(body["data"][0]["abstract_drawing"]["path"])


async def test_oauth_token_flow_and_expiry(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Client credentials give a working BearerToken that stops working after its lifetime."""
    simulator.config.static_token = None
    async with http.post(simulator.base_url + "/oauth/token", data={"grant_type": "client_credentials"},
                         headers=basic("demo-client", "demo-secret")) as resp:
        grant = await resp.json()
    assert grant["token_type"] == "BearerToken" and grant["expires_in"] == 1799
    assert grant["status"] == "approved" and abs(grant["issued_at"] / 1000 - time.time()) < 5
    bearer = {"Authorization": f"Bearer {grant['token']}"}
    assert (await ask(http, simulator, bearer, patent_number="CN1A", apikey="demo-client"))[1]["status"]
    assert (await ask(http, simulator, patent_number="CN1A"))[1]["error_code"] == 67200003
    simulator.clock = lambda: time.time() + 1800
    assert (await ask(http, simulator, bearer, patent_number="CN1A"))[1]["error_code"] == 67200003
    assert simulator.counters.token_requests == 1 and simulator.counters.tokens_issued == 1


@pytest.mark.parametrize("refuse", [False, True])
async def test_token_refused(http: aiohttp.ClientSession, simulator: Simulator, refuse: bool) -> None:
    """Wrong credentials or the refuse_credentials fault answer 401 invalid_client."""
    simulator.config.refuse_credentials = refuse
    secret = "demo-secret" if refuse else "wrong"
    async with http.post(simulator.base_url + "/oauth/token", data={"grant_type": "client_credentials"},
                         headers=basic("demo-client", secret)) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    assert simulator.counters.token_refused == 1


async def test_auth_and_parameter_errors(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Bad apikey 67200008, missing token 67200003, bad or too many ids 68300004 (all HTTP 200)."""
    cases = [
        ({"apikey": "nope", "patent_number": "CN1A"}, BEARER, 67200008),
        ({"patent_number": "CN1A"}, {}, 67200003),
        ({"patent_number": "CN1A"}, {"Authorization": "Bearer forged"}, 67200003),
        ({"patent_number": ",".join(NUMBERS[:101])}, BEARER, 68300004),
        ({"patent_number": "CN1A,US 1B2"}, BEARER, 68300004),
        ({"patent_number": "CN1A/../x"}, BEARER, 68300004),
        ({"patent_number": " , "}, BEARER, 68300004),
    ]
    for params, headers, code in cases:
        status, body = await ask(http, simulator, headers, **params)
        assert (status, body["status"], body["error_code"]) == (200, False, code), params
    status, body = await ask(http, simulator, patent_number=",".join(NUMBERS[:100]))
    assert body["status"] is True and simulator.counters.api_ok == 1
    assert simulator.counters.api_requests == len(cases) + 1 and simulator.counters.charged == len(body["data"])


async def test_answers_counters_and_patent_id_precedence(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Unknown patents are omitted, duplicates answered once, patent_id beats patent_number."""
    u = simulator.universe
    unknown = pick(u, lambda r: r is None)[0]
    drawn = pick(u, with_drawing())[0]
    bare = pick(u, lambda r: r is not None and r.num is None)[0]
    _, body = await ask(http, simulator, patent_number=f"{drawn},{unknown},{drawn.lower()},{bare}")
    assert [item["pn"] for item in body["data"]] == [normalize_number(drawn), normalize_number(bare)]
    assert body["data"][0]["abstract_drawing"]["num"] in ("0001", "0002")
    c = simulator.counters
    assert (c.charged, c.ids_asked, c.asks[drawn], c.asks[unknown]) == (2, 3, 1, 1)
    record = u.lookup_number(drawn)
    assert record is not None
    _, body = await ask(http, simulator, patent_id=record.patent_id.upper(), patent_number=bare)
    assert [(i["pn"], i["patent_id"]) for i in body["data"]] == [(record.pn, record.patent_id)]
    assert c.asks[record.patent_id] == 1 and c.asks[bare] == 1 and c.charged == 3


async def test_no_drawing_comes_in_three_shapes(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Patents without a drawing omit it, give null, or give empty num and path."""
    bare = pick(simulator.universe, lambda r: r is not None and r.num is None, count=30)
    _, body = await ask(http, simulator, patent_number=",".join(bare))
    shapes = {json.dumps(item.get("abstract_drawing", "absent")) for item in body["data"]}
    assert shapes == {'"absent"', "null", '{"num": "", "path": ""}'}


@pytest.mark.parametrize("mode", ["code", "429"])
async def test_qps_limit(http: aiohttp.ClientSession, simulator: Simulator, mode: str) -> None:
    """Over the QPS limit the API answers 67200007, or HTTP 429 with Retry-After in 429 mode."""
    simulator.config.qps_limit, simulator.config.throttle_mode = 2, mode

    async def one() -> tuple[int, Any, str | None]:
        async with http.get(simulator.base_url + API, headers=BEARER,
                            params={"apikey": "demo-key", "patent_number": "CN1A"}) as r:
            return r.status, await r.json(), r.headers.get("Retry-After")

    answers = await asyncio.gather(*(one() for _ in range(5)))
    refused = [a for a in answers if a[1]["status"] is False]
    assert len(refused) == 3 and simulator.counters.throttled == 3
    assert all(a[1]["error_code"] == 67200007 for a in refused)
    expected = (429, "1") if mode == "429" else (200, None)
    assert all((a[0], a[2]) == expected for a in refused)


@pytest.mark.parametrize(("style", "ext"), [("cos", "png"), ("sigv4", "png"), ("cos", "jpg")])
async def test_signed_url_serves_expected_image(
    http: aiohttp.ClientSession, simulator: Simulator, style: str, ext: str
) -> None:
    """A signed URL downloads exactly expected_image with the right type and length."""
    simulator.config.url_style = style
    number = pick(simulator.universe, with_drawing(ext))[0]
    url = await image_url(http, simulator, number)
    assert ("X-Amz-Signature=" in url) == (style == "sigv4") and ("?sign=" in url) == (style == "cos")
    async with http.get(url) as resp:
        data = await resp.read()
        assert resp.status == 200 and resp.content_type == {"png": "image/png", "jpg": "image/jpeg"}[ext]
        assert resp.content_length == len(data)
    record = simulator.universe.lookup_number(number)
    assert record is not None and record.num is not None
    assert data == simulator.expected_image(record.pn, record.num)
    assert data.startswith(PNG_MAGIC if ext == "png" else JPEG_MAGIC)
    assert simulator.counters.images_served == 1 and simulator.counters.image_requests == 1


async def test_tampered_and_unsigned_urls_are_refused(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Editing the signature or the path, or dropping the query, gives 403 SignatureDoesNotMatch."""
    url = await image_url(http, simulator, pick(simulator.universe, with_drawing())[0])

    def flip(m: re.Match[str]) -> str:
        return m[1] + m[2][:-1] + ("0" if m[2][-1] != "0" else "1")

    bad_signature = re.sub(r"(q-signature%3D)([0-9a-f]+)", flip, url)
    for bad in (bad_signature, url.replace("_0001.", "_0002."), url.split("?")[0]):
        assert bad != url
        async with http.get(bad, allow_redirects=False) as resp:
            assert resp.status == 403 and resp.content_type == "application/xml"
            assert "<Code>SignatureDoesNotMatch</Code>" in await resp.text()
    assert simulator.counters.image_403_signature == 3
    async with http.get(simulator.base_url + "/cdn/nothing/here.png") as resp:
        assert resp.status == 404 and "<Code>NoSuchKey</Code>" in await resp.text()


async def test_expired_url_is_refused(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """After url_lifetime the CDN answers 403 AccessDenied "Request has expired" in its style's shape:
    COS's (resource and ids, no time), S3's (X-Amz-Expires, Expires and the CDN's ServerTime)."""
    simulator.config.url_lifetime = 1
    number = pick(simulator.universe, with_drawing())[0]
    cos = await image_url(http, simulator, number)
    simulator.config.url_style = "sigv4"
    sigv4 = await image_url(http, simulator, number)
    await asyncio.sleep(1.05)  # the real clock for one style, a jump for the other
    bodies = []
    for url in (cos, sigv4):
        async with http.get(url) as resp:
            bodies.append(await resp.text())
        assert resp.status == 403 and resp.content_type == "application/xml"
        assert bodies[-1].startswith('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                                     "<Message>Request has expired</Message>")
        simulator.clock = lambda: time.time() + 100
    assert re.search(r"</Message><Resource>/cdn/.+</Resource><RequestId>\w+</RequestId><TraceId>", bodies[0])
    found = re.search(r"<X-Amz-Expires>1</X-Amz-Expires><Expires>(\S+)</Expires><ServerTime>(\S+)</ServerTime>",
                      bodies[1])
    assert found and found[2] > found[1] and "ServerTime" not in bodies[0]
    assert simulator.counters.image_403_expired == 2


@pytest.mark.parametrize("style", ["cos", "sigv4"])
async def test_a_cdn_can_refuse_early_and_keep_its_own_clock(http: aiohttp.ClientSession, simulator: Simulator,
                                                              style: str) -> None:
    """url_honoured: a URL that says 1 h is refused 2 s after signing; cdn_clock_skew: the CDN's Date and
    ServerTime run ahead of the API's clock by that much, and it judges expiry by its own time."""
    simulator.config.url_style = style
    simulator.config.url_lifetime = 3600
    simulator.config.url_honoured = 2
    url = await image_url(http, simulator, pick(simulator.universe, with_drawing())[0])
    async with http.get(url) as resp:
        assert resp.status == 200
    simulator.clock = lambda: time.time() + 2.5
    async with http.get(url) as resp:
        assert resp.status == 403 and "Request has expired" in await resp.text()
    simulator.config.url_honoured, simulator.clock = None, time.time
    simulator.config.cdn_clock_skew = 3598.0
    url = await image_url(http, simulator, pick(simulator.universe, with_drawing(), 2)[1])
    async with http.get(url) as resp:
        assert resp.status == 200
        assert abs(parsedate_to_datetime(resp.headers["Date"]).timestamp() - time.time() - 3598) < 2
    simulator.config.cdn_clock_skew = 3601.0
    async with http.get(url) as resp:
        assert resp.status == 403 and abs(parsedate_to_datetime(resp.headers["Date"]).timestamp()
                                          - time.time() - 3601) < 2
        assert ("<ServerTime>" in await resp.text()) == (style == "sigv4")
    assert simulator.counters.image_403_expired == 2


@pytest.mark.parametrize("kind", ["500", "502", "503", "68300008", "not_json", "reset", "slow"])
async def test_api_faults_are_visible(http: aiohttp.ClientSession, simulator: Simulator, kind: str) -> None:
    """Each API fault kind reaches the client in its own recognisable way."""
    simulator.config.api_fault_rate, simulator.config.api_fault_kinds = 1.0, (kind,)
    simulator.config.slow_seconds = 0.3
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    params = {"apikey": "demo-key", "patent_number": "CN104169186A"}
    if kind == "reset":  # aiohttp retries an idempotent GET once on a dropped connection
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(simulator.base_url + API, params=params, headers=BEARER)
        assert simulator.counters.api_requests == 2
        return
    if kind == "slow":
        with pytest.raises(asyncio.TimeoutError):
            await http.get(simulator.base_url + API, params=params, headers=BEARER, timeout=timeout)
        return
    async with http.get(simulator.base_url + API, params=params, headers=BEARER) as resp:
        if kind == "68300008":
            assert (await resp.json())["error_code"] == 68300008
        else:
            assert resp.status == (200 if kind == "not_json" else int(kind))
            assert resp.content_type == "text/html"
            with pytest.raises(aiohttp.ContentTypeError):
                await resp.json()
    assert simulator.counters.api_faults_injected == 1 and simulator.counters.api_ok == 0


async def test_slow_api_fault_answers_eventually(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """A patient client gets the normal answer after slow_seconds."""
    simulator.config.api_fault_rate, simulator.config.api_fault_kinds = 1.0, ("slow",)
    simulator.config.slow_seconds = 0.2
    started = time.monotonic()
    _, body = await ask(http, simulator, patent_number="CN104169186A")
    assert body["status"] is True and time.monotonic() - started >= 0.2


@pytest.mark.parametrize("kind", ["reset", "truncate", "html", "slow"])
async def test_image_faults_are_visible(http: aiohttp.ClientSession, simulator: Simulator, kind: str) -> None:
    """Resets and truncations break the body, html replaces it, slow stalls it."""
    url = await image_url(http, simulator, pick(simulator.universe, with_drawing())[0])
    simulator.config.image_fault_rate, simulator.config.image_fault_kinds = 1.0, (kind,)
    simulator.config.slow_seconds = 0.3
    timeout = aiohttp.ClientTimeout(sock_read=0.1)
    if kind == "html":
        async with http.get(url) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert not (await resp.read()).startswith((PNG_MAGIC, JPEG_MAGIC))
    else:
        expected = {"reset": aiohttp.ClientError, "truncate": aiohttp.ClientPayloadError}
        with pytest.raises(expected.get(kind, asyncio.TimeoutError)):
            async with http.get(url, timeout=timeout) as resp:
                assert resp.status == 200
                await resp.read()
    assert simulator.counters.image_faults_injected == 1 and simulator.counters.images_served == 0


async def test_quota_and_fatal_codes(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Once `charged` reaches quota_after every call gets 67200002; fatal_code answers always."""
    simulator.config.quota_after = 3
    known = ",".join(pick(simulator.universe, lambda r: r is not None, count=2))
    codes = [(await ask(http, simulator, patent_number=known))[1]["error_code"] for _ in range(3)]
    assert codes == [0, 0, 67200002] and simulator.counters.charged == 4
    simulator.config.quota_after, simulator.config.fatal_code = None, 67200005
    assert (await ask(http, simulator, patent_number=known))[1]["error_code"] == 67200005


async def test_overrides_serve_hostile_items(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """An override replaces the item for a requested identifier verbatim."""
    hostile = [{"pn": "../../x", "abstract_drawing": {"num": "0001", "path": "javascript:alert(1)"}},
               {"pn": "A\x00B" + "9" * 10_000, "abstract_drawing": {"num": "0001", "path": "ftp://x/y.png"}}]
    simulator.config.overrides = {"CN1A": hostile[0], "us2b2": hostile[1]}
    _, body = await ask(http, simulator, patent_number="cn1a,US2B2")
    assert body["data"] == hostile and simulator.counters.charged == 2


async def test_huge_and_missing_images(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """huge_images stream a PNG-headed body of huge_image_bytes; missing_images give 404."""
    number = pick(simulator.universe, with_drawing())[0]
    url, pn = await image_url(http, simulator, number), normalize_number(number)
    assert pn is not None
    simulator.config.huge_images, simulator.config.huge_image_bytes = {pn}, 3_000_000
    async with http.get(url) as resp:
        data = await resp.read()
    assert resp.headers["Content-Length"] == "3000000" and len(data) == 3_000_000
    assert data.startswith(PNG_MAGIC)
    simulator.config.missing_images = {pn}
    async with http.get(url) as resp:
        assert resp.status == 404 and "NoSuchKey" in await resp.text()


async def test_control_routes(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """/_sim/config changes the live config, /_sim/counters reports, reset-counters zeroes."""
    await ask(http, simulator, patent_number="CN104169186A")
    async with http.get(simulator.base_url + "/_sim/counters") as resp:
        counters = await resp.json()
    assert counters["api_requests"] == 1 and counters["asks"] == {"CN104169186A": 1}
    change = {"qps_limit": 5, "huge_images": ["X1A"], "api_fault_kinds": ["500"], "fatal_code": 67200006}
    async with http.post(simulator.base_url + "/_sim/config", json=change) as resp:
        assert resp.status == 200 and (await resp.json())["huge_images"] == ["X1A"]
    assert simulator.config.huge_images == {"X1A"} and simulator.config.api_fault_kinds == ("500",)
    for bad in ({"no_such": 1}, {"url_style": "rot13"}):
        async with http.post(simulator.base_url + "/_sim/config", json=bad) as resp:
            assert resp.status == 400
    async with http.post(simulator.base_url + "/_sim/reset-counters") as resp:
        assert resp.status == 200
    assert simulator.counters.api_requests == 0 and not simulator.asks


async def test_many_concurrent_downloads(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """300 downloads at once all succeed, and the peak concurrency is observed."""
    simulator.config.cdn_latency = 0.05
    url = await image_url(http, simulator, pick(simulator.universe, with_drawing())[0])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as wide:

        async def fetch() -> int:
            async with wide.get(url) as resp:
                return len(await resp.read())

        sizes = await asyncio.gather(*(fetch() for _ in range(300)))
    assert len(set(sizes)) == 1 and simulator.counters.images_served == 300
    assert simulator.counters.cdn_peak_concurrency > 100 and simulator.counters.cdn_in_flight == 0


def test_threaded_simulator_serves_sync_clients(threaded_simulator: Simulator) -> None:
    """The threaded simulator answers plain blocking clients and exposes live counters."""
    request = urllib.request.Request(
        f"{threaded_simulator.base_url}{API}?patent_number=CN104169186A&apikey=demo-key", headers=BEARER
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.load(resp)["status"] is True
    assert threaded_simulator.counters.api_ok == 1
    threaded_simulator.config.fatal_code = 67200004
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.load(resp)["error_code"] == 67200004


def test_cli_options_build_a_config() -> None:
    """The simulate options map onto SimulatorConfig fields."""
    parser = argparse.ArgumentParser()
    add_simulate_arguments(parser)
    ns = parser.parse_args(["--port", "0", "--qps-limit", "3", "--throttle-mode", "429", "--token", "",
                            "--api-fault-kinds", "500,reset", "--url-style", "sigv4", "--quota-after", "9",
                            "--refuse-credentials"])
    config = config_from_args(ns)
    assert (ns.port, config.qps_limit, config.throttle_mode, config.static_token) == (0, 3.0, "429", None)
    assert config.api_fault_kinds == ("500", "reset") and config.url_style == "sigv4"
    assert config.quota_after == 9 and config.refuse_credentials and config.api_key == "demo-key"
    assert config_from_args(parser.parse_args([])) == SimulatorConfig()


def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    """`serve` prints one line with the base URL and credentials, then exits on SIGTERM."""
    code = "from downloader.simulator import *; serve(SimulatorConfig(), '127.0.0.1', 0)"
    root = Path(__file__).resolve().parents[1]
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=root) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert base and "demo-key" in line and "demo-secret" in line
        with urllib.request.urlopen(base[0] + "/_sim/counters", timeout=5) as resp:
            assert json.load(resp)["api_requests"] == 0
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_figure_cache_on_disk_is_checked_and_optional(tmp_path, monkeypatch):
    """Figures kept on disk come back identical; a damaged file is drawn again; "off" writes nothing."""
    monkeypatch.setenv("PATENT_IMAGES_CACHE", str(tmp_path / "cache"))
    images.figure.cache_clear()
    try:
        drawn = images.figure(960, 3)
        (stored,) = (tmp_path / "cache").rglob("960-3.strip")
        images.figure.cache_clear()
        assert images.figure(960, 3) == drawn  # read back from disk
        stored.write_bytes(stored.read_bytes()[:-40] + bytes(40))  # damaged: the checksum no longer matches
        images.figure.cache_clear()
        assert images.figure(960, 3) == drawn and stored.read_bytes()[-40:] != bytes(40)
        monkeypatch.setenv("PATENT_IMAGES_CACHE", "off")
        images.figure.cache_clear()
        assert images.cache_dir() is None and images.figure(960, 4).width == 960
        assert not list((tmp_path / "cache").rglob("960-4.strip"))
    finally:
        images.figure.cache_clear()
