"""P042 fulltext-image as values: request bodies, decoding, paging and the outcomes of one patent."""

from __future__ import annotations

from typing import Any

import pytest

from downloader.core.errors import FatalApiError, InvalidParameterError, TransientApiError
from downloader.core.fulltext import MAX_DRAWINGS, Page, Paging, decode_page, image_id, image_path_of, request_body
from downloader.core.model import Failed, FigureKey, Kind, Listed, NoImage, NotFound, PatentKey, Resolved

KEY = PatentKey(Kind.NUMBER, "CN116420141A")
URL = ("https://open.patsnap.com/fulltext-image/CN/A/11/64/20/14/1/HDA0004204487520000011.png?sign=q-sign-algorithm"
       "%3Dsha1%26q-ak%3DAK%26q-sign-time%3D1729566601%3B1730171401%26q-key-time%3D1729566601%3B1730171401"
       "%26q-signature%3Dab&response-expires=Tue%2C%2029%20Oct%202024%2003%3A10%3A01%20GMT")


def answer(total: int, offset: int = 0, limit: int = 100, pn: Any = "CN116420141A") -> dict[str, Any]:
    """A P042 answer holding drawings offset+1 … of `total`."""
    items = [{"path": URL.replace("0011.png", f"{n:04d}.png"), "image_type": "drawings"}
             for n in range(offset + 1, min(total, offset + limit) + 1)]
    return {"status": True, "error_code": 0,
            "data": {"pn": pn, "patent_id": "fdbca633", "result_count": len(items),
                     "total_search_result_count": total, "fulltext_image": items}}


def run(paging: Paging, answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drive `paging` through `answers`; the bodies it asked for."""
    sent = []
    while (body := paging.next_body()) is not None:
        sent.append(body)
        paging.receive(decode_page(answers[len(sent) - 1]).page)
    return sent


def test_the_body_names_one_patent_with_limit_and_offset() -> None:
    """One patent under its kind, limit and offset always present."""
    assert request_body(KEY, 0) == {"patent_number": "CN116420141A", "limit": 100, "offset": 0}
    assert request_body(PatentKey(Kind.ID, "ab-12"), 200, 50) == {"patent_id": "ab-12", "limit": 50, "offset": 200}


@pytest.mark.parametrize(("total", "pages"), [(0, 1), (9, 1), (100, 1), (101, 2), (250, 3)])
def test_pages_while_offset_is_below_the_total(total: int, pages: int) -> None:
    """offset += limit while offset < total_search_result_count; one call for a patent without drawings."""
    answers = [answer(total, offset) for offset in range(0, max(total, 1), 100)]
    paging = Paging(KEY)
    sent = run(paging, answers)
    assert [b["offset"] for b in sent] == [100 * i for i in range(pages)]
    assert paging.charged == (pages if total else 0)


def test_drawings_are_listed_then_resolved_one_per_figure_in_api_order() -> None:
    """Listed with the count first, then Resolved under FigureKey 1..n with the image id as num."""
    paging = Paging(KEY)
    run(paging, [answer(150, 0), answer(150, 100)])
    outcomes = paging.outcomes(answered_at=1729566700.0)
    assert outcomes[0] == Listed(KEY, "CN116420141A", "fdbca633", 150)
    drawings = outcomes[1:]
    paths = [f"/fulltext-image/CN/A/11/64/20/14/1/HDA000420448752000{n:04d}.png" for n in range(1, 151)]
    assert [o.key for o in drawings] == [FigureKey(Kind.NUMBER, "CN116420141A", n, p) for n, p in enumerate(paths, 1)]
    assert [o.key.figure for o in drawings] == list(range(1, 151))  # type: ignore[attr-defined]
    first = drawings[0]
    assert isinstance(first, Resolved) and first.num == "HDA0004204487520000001" and first.image_type == "drawings"
    assert first.expires_at - (first.signed_at or 0) == 604_800  # q-sign-time spans 7 days


@pytest.mark.parametrize("data", [None, [], {}])
def test_an_unknown_patent_is_not_found(data: Any) -> None:
    """data null, an empty list, or data without pn: not_found, after one call."""
    paging = Paging(KEY)
    sent = run(paging, [{"status": True, "error_code": 0, "data": data}])
    assert len(sent) == 1 and paging.outcomes(0.0) == [NotFound(KEY)] and paging.charged == 0


def test_a_patent_without_drawings_has_no_image() -> None:
    """The patent is known (pn given) with an empty list: no_image."""
    paging = Paging(KEY)
    run(paging, [answer(0)])
    assert paging.outcomes(0.0) == [NoImage(KEY, "CN116420141A", "fdbca633")]


def test_an_empty_page_below_the_total_ends_the_paging() -> None:
    """A total that lies cannot make a patent page forever."""
    paging = Paging(KEY)
    empty = {"status": True, "error_code": 0, "data": {**answer(5000)["data"], "fulltext_image": []}}
    sent = run(paging, [answer(5000, 0), empty])
    assert len(sent) == 2 and len(paging.outcomes(0.0)) == 101


def test_hostile_answers_fail_the_patent() -> None:
    """A path that is not an http(s) URL (or one no URL parser takes apart), or a pn that is no plain string,
    fails the patent with a reason."""
    bad = answer(2)
    bad["data"]["fulltext_image"][1]["path"] = "file:///etc/passwd"
    paging = Paging(KEY)
    run(paging, [bad])
    assert paging.outcomes(0.0) == [Failed(KEY, "HostileAnswer: fulltext_image[1].path is not an http(s) URL")]
    bad["data"]["fulltext_image"][1]["path"] = "https://[open.patsnap.com/x.png?sign=1"  # urlsplit refuses it
    paging = Paging(KEY)
    run(paging, [bad])
    assert paging.outcomes(0.0) == [Failed(KEY, "HostileAnswer: fulltext_image[1].path is not an http(s) URL")]
    paging = Paging(KEY)
    run(paging, [answer(1, pn={"x": 1})])
    assert isinstance(paging.outcomes(0.0)[0], Failed)


@pytest.mark.parametrize(("body", "error"), [
    ({"status": False, "error_code": 67200005, "error_msg": "balance"}, FatalApiError),
    ({"status": False, "error_code": 68300004}, InvalidParameterError),
    ({"status": False}, TransientApiError),
    ("nonsense", TransientApiError),
    ({"status": True, "data": 7}, TransientApiError),
])
def test_error_answers_carry_the_p021_classes(body: Any, error: type) -> None:
    """The same codes as P021, the same classes."""
    assert isinstance(decode_page(body).error, error)


def test_the_total_is_capped() -> None:
    """No patent pages past MAX_DRAWINGS."""
    page = decode_page(answer(10**9, 0, limit=1)).page
    assert isinstance(page, Page) and page.total == MAX_DRAWINGS


def test_a_drawing_is_its_url_path_wherever_it_is_listed() -> None:
    """A drawing's identity is its URL's path: the same whatever the signature, the host or its figure (a
    drawing's key equals itself at another figure); a path listed twice is one drawing at its first figure."""
    assert image_path_of(URL) == "/fulltext-image/CN/A/11/64/20/14/1/HDA0004204487520000011.png"
    assert image_path_of(URL.replace("open.patsnap.com", "cdn2.example:8443").replace("q-ak", "x")) == \
        image_path_of(URL)
    assert FigureKey(Kind.NUMBER, "P", 2, "/a.png") == FigureKey(Kind.NUMBER, "P", 3, "/a.png")
    assert FigureKey(Kind.NUMBER, "P", 2, "/a.png") != FigureKey(Kind.NUMBER, "P", 2, "/b.png")
    twice = answer(3)
    items = twice["data"]["fulltext_image"]
    items.insert(2, {**items[0], "path": items[0]["path"].replace("sign=", "sign=other")})
    paging = Paging(KEY)
    run(paging, [twice])
    listed, *drawings = paging.outcomes(0.0)
    assert listed == Listed(KEY, "CN116420141A", "fdbca633", 3)
    assert [(o.key.figure, o.num[-4:]) for o in drawings] == [(1, "0001"), (2, "0002"), (3, "0003")]  # type: ignore


def test_two_paths_with_one_image_id_fail_the_patent() -> None:
    """Files are named by image id: two drawings at other paths under one name would share a file."""
    clash = answer(2)
    clash["data"]["fulltext_image"][1]["path"] = URL.replace("/14/1/", "/14/2/").replace("0011.png", "0001.png")
    paging = Paging(KEY)
    run(paging, [clash])
    assert paging.outcomes(0.0) == [Failed(KEY, "HostileAnswer: two drawings named 'HDA0004204487520000001' "
                                                "at other paths")]


def test_image_id_is_the_file_stem() -> None:
    """The stable image id is the URL's file name without extension."""
    assert image_id(URL) == "HDA0004204487520000011"
    assert image_id("https://x/y/") == ""


def test_answers_lost_on_the_way_are_charged_as_the_page_that_arrived() -> None:
    """A page listing drawings whose first two answers were lost is charged three times (two recharged); lost
    answers of a page listing none, or of an unknown patent, were not billed either."""
    paging = Paging(KEY)
    paging.receive(decode_page(answer(150, 0)).page, lost=2)
    paging.receive(decode_page(answer(150, 100)).page)
    assert (paging.charged, paging.recharged) == (4, 2)
    unknown = Paging(KEY)
    unknown.receive(decode_page({"status": True, "error_code": 0, "data": None}).page, lost=3)
    none = Paging(KEY)
    none.receive(decode_page(answer(0)).page, lost=1)
    assert (unknown.charged, unknown.recharged, none.charged, none.recharged) == (0, 0, 0, 0)


@pytest.mark.parametrize(("lost", "charged", "recharged"), [(0, 0, 0), (1, 1, 0), (3, 3, 2)])
def test_answers_lost_until_the_retries_ran_out_are_possibly_charged(lost: int, charged: int, recharged: int) -> None:
    """No answer arrived: each lost one may have been billed, so it is counted (the first once)."""
    paging = Paging(KEY)
    paging.unanswered(lost)
    assert (paging.charged, paging.recharged) == (charged, recharged)
