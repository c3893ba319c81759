"""The simulator's P042 endpoints on loopback: pages, drawings, 7-day URLs, unknown patents, faults."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from downloader.core.expiry import url_window
from downloader.simulator import Simulator, Universe, generate_numbers

FULLTEXT = "/basic-patent-data/fulltext-image"
INLINE = "/basic-patent-data/fulltext-inline-image"
BEARER = {"Authorization": "Bearer demo-token"}


def numbers_with(universe: Universe, low: int, high: int, count: int = 1) -> list[str]:
    """Publication numbers whose patents have between `low` and `high` drawings."""
    found = []
    for number in generate_numbers(3000, seed=7):
        record = universe.lookup_number(number)
        if record is not None and low <= universe.figures(record) <= high:
            found.append(number)
            if len(found) == count:
                return found
    raise AssertionError("no such patent in the first 3000 numbers")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def page(http: aiohttp.ClientSession, sim: Simulator, body: dict[str, Any]) -> Any:
    assert sim.base_url is not None
    async with http.post(sim.base_url + FULLTEXT, params={"apikey": "demo-key"}, json=body, headers=BEARER) as r:
        assert r.status == 200
        return await r.json()


async def test_pages_of_a_patent_with_over_100_drawings(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Two pages and more, each charged; the drawings are figures "FIG. n" behind 7-day signed URLs."""
    number = numbers_with(simulator.universe, 101, 200)[0]
    record = simulator.universe.lookup_number(number)
    assert record is not None
    total = simulator.universe.figures(record)
    paths: list[str] = []
    for offset in range(0, total, 100):
        body = await page(http, simulator, {"patent_number": number, "limit": 100, "offset": offset})
        data = body["data"]
        assert data["pn"] == record.pn and data["total_search_result_count"] == total
        assert data["result_count"] == len(data["fulltext_image"]) == min(100, total - offset)
        paths += [item["path"] for item in data["fulltext_image"]]
    assert simulator.counters.charged == len(range(0, total, 100)) and simulator.asks[number] == 1
    signed_at, expires_at = url_window(paths[-1], answered_at=0.0)
    assert signed_at is not None and expires_at - signed_at == 7 * 86400
    async with http.get(paths[-1]) as r:
        data_bytes = await r.read()
    assert data_bytes == simulator.expected_image(record.pn, f"{total:04d}")
    assert Image.open(io.BytesIO(data_bytes)).size[0] > 100


async def test_unknown_and_drawingless_patents(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """Unknown: data null or an empty list; no drawings: the pn with an empty list; neither is charged."""
    unknown = [n for n in generate_numbers(400, seed=3) if simulator.universe.lookup_number(n) is None][:6]
    answers = [(await page(http, simulator, {"patent_number": n, "limit": 100, "offset": 0}))["data"] for n in unknown]
    assert None in answers and [] in answers and all(a in (None, []) for a in answers)
    bare = numbers_with(simulator.universe, 0, 0)[0]
    data = (await page(http, simulator, {"patent_number": bare, "limit": 100, "offset": 0}))["data"]
    assert data["fulltext_image"] == [] and data["total_search_result_count"] == 0 and data["pn"]
    assert simulator.counters.charged == 0


async def test_invalid_bodies_and_account_faults(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """A missing limit or a limit over 100 is 68300004; the P021 fault knobs apply to P042 too."""
    for body in ({"patent_number": "CN1A", "offset": 0}, {"patent_number": "CN1A", "limit": 101, "offset": 0}, {}):
        assert (await page(http, simulator, body))["error_code"] == 68300004
    simulator.config.fatal_code = 67200005
    assert (await page(http, simulator, {"patent_number": "CN1A", "limit": 1, "offset": 0}))["error_code"] == 67200005


async def test_inline_images_have_stable_ids(http: aiohttp.ClientSession, simulator: Simulator) -> None:
    """fulltext-inline-image lists every drawing unpaged, with the image id that names its file."""
    number = numbers_with(simulator.universe, 3, 30)[0]
    assert simulator.base_url is not None
    got = []
    for _ in range(2):
        async with http.get(simulator.base_url + INLINE, params={"patent_number": number, "apikey": "demo-key"},
                            headers=BEARER) as r:
            got.append((await r.json())["data"]["fulltext_inline_image"])
    ids = [item["image_id"] for item in got[0]]
    assert ids == [item["image_id"] for item in got[1]] and len(set(ids)) == len(ids) >= 3
    assert all(item["path"].split("?")[0].endswith(f"/{item['image_id']}.png") or
               item["path"].split("?")[0].endswith(f"/{item['image_id']}.jpg") for item in got[0])
