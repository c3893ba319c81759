"""The sans-IO core: batches, answers → outcomes, error codes → classes."""

from __future__ import annotations

import time

import pytest

from downloader.core import errors, protocol
from downloader.core.model import Batch, Failed, Kind, NoImage, NotFound, PatentKey, Resolved

URL = ("https://cdn.example.com/a.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20210929T071822Z"
       "&X-Amz-Expires=10800&X-Amz-Signature=abc")


def n(value: str) -> PatentKey:
    return PatentKey(Kind.NUMBER, value)


def item(pn: str, path: str | None = URL, pid: str = "718ead9c-4f3c-4674-8f5a-24e126827269") -> dict:
    out: dict = {"pn": pn, "patent_id": pid}
    if path is not None:
        out["abstract_drawing"] = {"num": "0001", "path": path}
    return out


def test_batches_split_at_size_and_keep_one_kind_each():
    keys = [n(f"CN{i:09d}A") for i in range(250)] + [PatentKey(Kind.ID, f"{i:08d}-0000-0000-0000-000000000000")
                                                    for i in range(30)]
    out = list(protocol.batches(keys, 100))
    assert [len(b.keys) for b in out] == [100, 100, 50, 30]
    assert [b.kind for b in out] == [Kind.NUMBER, Kind.NUMBER, Kind.NUMBER, Kind.ID]
    assert out[0].keys[0] == "CN000000000A" and out[2].keys[-1] == "CN000000249A"


def test_batches_interleaved_kinds_stream_without_losing_order():
    keys = [n("US1"), PatentKey(Kind.ID, "a"), n("US2"), PatentKey(Kind.ID, "b"), n("US3")]
    out = list(protocol.batches(keys, 2))
    assert [(b.kind, b.keys) for b in out] == [
        (Kind.NUMBER, ("US1", "US2")), (Kind.ID, ("a", "b")), (Kind.NUMBER, ("US3",))]


def test_batches_keep_the_query_short():
    keys = [n("X" * 80 + str(i)) for i in range(100)]
    out = list(protocol.batches(keys, 100))
    assert len(out) > 1
    assert all(len(",".join(b.keys)) < protocol.MAX_QUERY_CHARS for b in out)


@pytest.mark.parametrize("size", [0, 101, -1])
def test_batches_refuse_bad_sizes(size):
    with pytest.raises(ValueError):
        list(protocol.batches([n("US1")], size))


def test_request_params_join_keys_under_their_kind():
    params = protocol.request_params(Batch(Kind.NUMBER, ("A1", "B2")), "k")
    assert params == {"patent_number": "A1,B2", "apikey": "k"}


def test_map_answer_found_no_image_not_found_in_batch_order():
    batch = Batch(Kind.NUMBER, ("CN1A", "CN2A", "CN3A", "CN4A"))
    items = [item("cn2a", None), item(" CN1A "), {"pn": "CN4A", "patent_id": "x", "abstract_drawing": None}]
    out = protocol.map_answer(batch, items, answered_at=0.0)
    assert [type(o) for o in out] == [Resolved, NoImage, NotFound, NoImage]
    resolved = out[0]
    assert isinstance(resolved, Resolved)
    assert resolved.key == n("CN1A") and resolved.num == "0001" and resolved.url == URL
    assert resolved.expires_at == pytest.approx(1632910702.0)  # 2021-09-29T07:18:22Z + 3 h


@pytest.mark.parametrize("drawing", [None, {}, {"num": "", "path": ""}, {"num": "0001", "path": None}])
def test_empty_drawings_mean_no_image(drawing):
    out = protocol.map_answer(Batch(Kind.NUMBER, ("US1B2",)),
                              [{"pn": "US1B2", "patent_id": "p", "abstract_drawing": drawing}], 0.0)
    assert isinstance(out[0], NoImage)


def test_number_without_kind_code_matches_the_answer_that_adds_one():
    out = protocol.map_answer(Batch(Kind.NUMBER, ("US11205304", "CN1A")),
                              [item("US11205304B2"), item("CN1A")], 0.0)
    assert isinstance(out[0], Resolved) and out[0].pn == "US11205304B2"


def test_number_matching_two_answers_is_ambiguous():
    out = protocol.map_answer(Batch(Kind.NUMBER, ("US11205304",)),
                              [item("US11205304A1"), item("US11205304B2")], 0.0)
    assert isinstance(out[0], Failed) and out[0].error.startswith("AmbiguousNumber")


def test_ids_match_case_insensitively():
    pid = "718EAD9C-4F3C-4674-8F5A-24E126827269"
    out = protocol.map_answer(Batch(Kind.ID, (pid.lower(),)), [item("US1B2", pid=pid)], 0.0)
    assert isinstance(out[0], Resolved)


@pytest.mark.parametrize("pn", ["A" * 500, "US1\x00B2"])
def test_hostile_pn_fails_the_patent(pn):
    out = protocol.outcome_for_item(n("US1B2"), item(pn), 0.0)
    assert isinstance(out, Failed) and "HostileAnswer" in out.error


@pytest.mark.parametrize("path", ["ftp://x/y.png", "javascript:alert(1)", "/relative.png", 42])
def test_non_http_paths_fail_the_patent(path):
    out = protocol.outcome_for_item(n("US1B2"), item("US1B2", path), 0.0)
    assert isinstance(out, Failed)


def test_traversal_pn_is_kept_as_data_and_named_safely_later():
    out = protocol.outcome_for_item(n("US1B2"), item("../../x"), 0.0)
    assert isinstance(out, Resolved) and out.pn == "../../x"


# --- errors ---------------------------------------------------------------------------------

SPEC_CODES = {
    67200001: errors.FatalApiError, 67200002: errors.ThrottledError, 67200003: errors.TokenExpiredError,
    67200004: errors.FatalApiError, 67200005: errors.FatalApiError, 67200006: errors.FatalApiError,
    67200007: errors.ThrottledError, 67200008: errors.FatalApiError, 67200009: errors.TokenExpiredError,
    68300004: errors.InvalidParameterError, 68300005: errors.TransientApiError,
    68300006: errors.TransientApiError, 68300007: errors.InvalidParameterError,
    68300008: errors.TransientApiError, 68300010: errors.TransientApiError, 99999999: errors.TransientApiError,
    401: errors.TokenExpiredError, 403: errors.FatalApiError, 404: errors.FatalApiError,
}


@pytest.mark.parametrize(("code", "cls"), SPEC_CODES.items())
def test_every_code_maps_to_its_class(code, cls):
    err = protocol.error_for_code(code, "msg")
    assert type(err) is cls and err.code == code and str(code) in str(err)


@pytest.mark.parametrize(("status", "cls"), [
    (429, errors.ThrottledError), (401, errors.TokenExpiredError), (500, errors.TransientApiError),
    (502, errors.TransientApiError), (503, errors.TransientApiError), (403, errors.FatalApiError),
    (404, errors.FatalApiError)])
def test_http_statuses_map_to_classes(status, cls):
    assert type(protocol.error_for_http(status)) is cls


def test_fatal_errors_carry_a_hint():
    err = protocol.error_for_code(67200005)
    assert isinstance(err, errors.FatalApiError) and "balance" in err.hint


@pytest.mark.parametrize(("body", "cls"), [
    ({"status": False, "error_code": 67200007, "error_msg": "too fast"}, errors.ThrottledError),
    ({"status": False}, errors.TransientApiError),
    ([1, 2], errors.TransientApiError),
    ({"status": True, "data": "nope"}, errors.TransientApiError),
])
def test_decode_answer_errors(body, cls):
    assert type(protocol.decode_answer(body).error) is cls


def test_decode_answer_items():
    answer = protocol.decode_answer({"status": True, "error_code": 0, "data": [item("US1B2"), "junk"]})
    assert answer.error is None and len(answer.items) == 1


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), (" 1.5 ", 1.5), ("-4", 0.0), ("99999", 600.0), ("soon", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:05 GMT", 5.0)])
def test_retry_after(value, expected):
    now = 1445412480.0  # 07:28:00
    assert protocol.parse_retry_after(value, now) == expected


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:05", "Wed, 21 Oct 2015 07:28:05 -0000"])
def test_retry_after_date_without_zone_is_gmt(value, monkeypatch):
    """An HTTP date with no zone (or -0000) is GMT, not this machine's local time (here 5 h behind)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    try:
        assert protocol.parse_retry_after(value, 1445412480.0) == 5.0  # 07:28:00 GMT
    finally:
        monkeypatch.undo()
        time.tzset()


def test_split_halves_a_batch():
    left, right = protocol.split(Batch(Kind.NUMBER, ("a", "b", "c")))
    assert left.keys == ("a",) and right.keys == ("b", "c")
