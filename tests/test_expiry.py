"""Expiry of signed URLs, read from the URL itself; and recognizing an expired-URL 403 body."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest

from downloader.core.expiry import is_expired_403, is_usable, parse_url_expiry, url_expiry

SPEC_SAMPLE = (
    "https://patsnap-image.cdn.zhihuiya.com/CN/D/33/07/35/9/00000001_0001.png?response-content-disposition"
    "=attachment%3Bfilename%2A%3DUTF-8%27%2700000001_0001.png&X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Date=20210929T071822Z&X-Amz-SignedHeaders=host&X-Amz-Expires=10800&X-Amz-Credential="
    "AKIAOCKXBMBTRQNHGHMQ%2F20210929%2Fcn-northwest-1%2Fs3%2Faws4_request&X-Amz-Signature="
    "320aeb0eec505670317e998e0635ff01dbca3ea434aa97c7fa744cbb050e24f3"
)
DESIGN_COS = (
    "https://open.patsnap.com/abstract-image/CN/303649457/00000001_0001.png?sign=q-sign-algorithm%3Dsha1"
    "%26q-ak%3DAKIDEXAMPLE%26q-sign-time%3D1700000000%3B1700003600%26q-key-time%3D1700000000%3B1700003600"
    "%26q-header-list%3Dhost%26q-url-param-list%3D%26q-signature%3D0123abcd&response-expires=Tue%2C%2014"
    "%20Nov%202023%2023%3A13%3A20%20GMT"
)
BASE = "https://cdn.example.com/CN/303649457/00000001_0001.png"
HTTP_DATE = "Tue, 14 Nov 2023 23:13:20 GMT"  # = 1700003600


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _cos_sign(sign_time: str, key_time: str | None = None) -> str:
    """The inner, not yet URL-encoded, COS signature string."""
    fields = [("q-sign-algorithm", "sha1"), ("q-ak", "AKIDEXAMPLE"), ("q-sign-time", sign_time),
              ("q-key-time", key_time or sign_time), ("q-header-list", "host"),
              ("q-url-param-list", ""), ("q-signature", "0123abcd")]
    return "&".join(f"{k}={v}" for k, v in fields)


def _p021(sign_time: str, *, expires: str | None = HTTP_DATE, key_time: str | None = None) -> str:
    """A URL in PatSnap's P021 form: the COS signature URL-encoded into `sign`."""
    query = [("sign", _cos_sign(sign_time, key_time))]
    if expires is not None:
        query.append(("response-expires", expires))
    return f"{BASE}?{urlencode(query, quote_via=quote)}"


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param(SPEC_SAMPLE, _epoch("2021-09-29T10:18:22"), id="spec-sigv4-sample"),
    pytest.param(DESIGN_COS, 1700003600.0, id="design-cos-example"),
    pytest.param(_p021("1700000000;1700032400"), 1700032400.0, id="p021-cos-9h-wins-over-response-expires"),
    pytest.param(_p021("1632899902;1632932302", expires=None), 1632932302.0, id="p021-cos-no-response-expires"),
    pytest.param(_p021("garbled", key_time="1700000000;1700007200"), 1700007200.0, id="p021-q-key-time-fallback"),
    pytest.param(f"{BASE}?{_cos_sign('1700000000;1700003600')}", 1700003600.0, id="cos-top-level"),
    pytest.param(f"{BASE}?Q-Sign-Algorithm=sha1&Q-SIGN-TIME=1700000000%3B1700001000", 1700001000.0,
                 id="cos-mixed-case"),
    pytest.param(f"{BASE}?SIGN={quote(quote(_cos_sign('1700000000;1700000600'), safe=''), safe='')}",
                 1700000600.0, id="cos-sign-encoded-twice"),
    pytest.param(f"{BASE}?response-expires={quote(HTTP_DATE)}", 1700003600.0, id="response-expires-only"),
    pytest.param(f"{BASE}?AWSAccessKeyId=AKIA&Expires=1700003600&Signature=abc%3D", 1700003600.0, id="sigv2"),
    pytest.param(f"{BASE}?OSSAccessKeyId=LTAI&expires=1700003600&signature=abc", 1700003600.0, id="oss"),
    pytest.param(f"{BASE}?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Date=20231114T221320Z&X-Goog-Expires=3600"
                 "&X-Goog-Signature=ab", 1700003600.0, id="gcs-v4"),
    pytest.param(f"{BASE}?x-amz-date=20231114T221320Z&X-AMZ-EXPIRES=3600", 1700003600.0, id="sigv4-mixed-case"),
    pytest.param(f"{BASE}?X-Amz-Date=20231114T221320Z&X-Amz-Expires=3600"
                 f"&response-expires={quote('Wed, 15 Nov 2023 00:00:00 GMT')}", 1700003600.0,
                 id="signature-beats-response-expires"),
])
def test_parse_url_expiry_forms(url: str, expected: float) -> None:
    """Each known form yields the expiry it carries."""
    assert parse_url_expiry(url) == expected


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param(_p021("1700003600;1700000000"), 1700003600.0, id="cos-end-before-start-falls-to-response-expires"),
    pytest.param(_p021("abc;def"), 1700003600.0, id="cos-non-numeric"),
    pytest.param(_p021("1700000000;2900000000"), 1700003600.0, id="cos-absurd-lifetime"),
    pytest.param(f"{BASE}?X-Amz-Date=2021-09-29&X-Amz-Expires=10800&Expires=1700003600", 1700003600.0,
                 id="sigv4-bad-date-then-sigv2"),
    pytest.param(f"{BASE}?X-Amz-Date=20210929T071822Z&X-Amz-Expires=-5&Expires=1700003600", 1700003600.0,
                 id="sigv4-negative-then-sigv2"),
    pytest.param(f"{BASE}?X-Amz-Date=20210929T071822Z&X-Amz-Expires=999999999999", None, id="sigv4-absurd"),
    pytest.param(f"{BASE}?Expires=1700003600000", None, id="sigv2-milliseconds"),
    pytest.param(f"{BASE}?Expires=soon", None, id="sigv2-garbled"),
    pytest.param(f"{BASE}?response-expires=tomorrow", None, id="response-expires-garbled"),
    pytest.param(f"{BASE}?X-Goog-Date=20231114T221320Z", None, id="gcs-without-expires"),
    pytest.param(BASE, None, id="no-query"),
    pytest.param(f"{BASE}?width=200&format=png", None, id="unrelated-params"),
    pytest.param("http://[::1/x.png?Expires=1700003600", None, id="unparseable-url"),
    pytest.param("", None, id="empty"),
])
def test_garbled_values_fall_through(url: str, expected: float | None) -> None:
    """A garbled or absurd value skips its form; nothing recognizable gives None."""
    assert parse_url_expiry(url) == expected


def test_url_expiry_uses_the_url_when_it_can() -> None:
    """The parsed expiry wins over the default lifetime."""
    assert url_expiry(DESIGN_COS, answered_at=1_800_000_000.0) == 1700003600.0


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, 1000.0 + 9 * 3600),
    ({"default_lifetime": 60.0}, 1060.0),
])
def test_url_expiry_defaults_to_a_lifetime_after_the_answer(kwargs: dict[str, float], expected: float) -> None:
    """Without a recognizable expiry, the URL is assumed good for 9 hours (or the given lifetime)."""
    assert url_expiry(BASE, answered_at=1000.0, **kwargs) == expected


@pytest.mark.parametrize(("expires_at", "now", "margin", "expected"), [
    (1000.0, 800.0, 120.0, True),
    (1000.0, 880.0, 120.0, False),  # exactly at the margin: too close
    (1000.0, 900.0, 120.0, False),
    (1000.0, 999.0, 0.0, True),
    (1000.0, 1000.0, 0.0, False),
    (1000.0, 1200.0, 0.0, False),
])
def test_is_usable_keeps_a_margin(expires_at: float, now: float, margin: float, expected: bool) -> None:
    """A URL is usable only while `now + margin` is before its expiry."""
    assert is_usable(expires_at, now, margin) is expected


AWS_EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
               b"<Message>Request has expired</Message><X-Amz-Expires>10800</X-Amz-Expires>"
               b"<Expires>2021-09-29T10:18:22Z</Expires><ServerTime>2021-09-29T12:00:00Z</ServerTime>"
               b"<RequestId>4442587FB7D0A2F9</RequestId><HostId>abc=</HostId></Error>")
COS_EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n<Code>AccessDenied</Code>\n'
               b"<Message>Request has expired</Message>\n<Resource>examplebucket-1250000000.cos.ap-beijing"
               b".myqcloud.com/CN/303649457/00000001_0001.png</Resource>\n<RequestId>NWE0ZTk=</RequestId>\n"
               b"<TraceId>OGVmYzZiMmQ=</TraceId>\n</Error>")
OSS_EXPIRED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
               b"<Message>Request has expired.</Message><RequestId>5C3D</RequestId>"
               b"<Expires>2023-11-14T23:13:20.000Z</Expires><ServerTime>2023-11-15T01:00:00.000Z</ServerTime>"
               b"</Error>")
GCS_EXPIRED = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code><Message>Invalid "
               b"argument.</Message><Details>The provided token has expired. Request signature expired at: "
               b"2023-11-14T23:13:20+00:00</Details></Error>")
SIGNATURE_MISMATCH = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch</Code>'
                      b"<Message>The request signature we calculated does not match the signature you "
                      b"provided. Check your key and signing method.</Message><X-Amz-Expires>10800"
                      b"</X-Amz-Expires><Expires>2021-09-29T10:18:22Z</Expires></Error>")
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message><RequestId>1</RequestId></Error>")
SKEWED = (b"<Error><Code>RequestTimeTooSkewed</Code><Message>The difference between the request time and "
          b"the server's time is too large.</Message></Error>")


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param(AWS_EXPIRED, True, id="aws"),
    pytest.param(COS_EXPIRED, True, id="cos"),
    pytest.param(OSS_EXPIRED, True, id="oss"),
    pytest.param(GCS_EXPIRED, True, id="gcs"),
    pytest.param(b"<Error><Message>Signature expired: 20231114T221320Z is now earlier than 20231115T000000Z"
                 b"</Message></Error>", True, id="signature-expired"),
    pytest.param(b'{"error": "REQUEST HAS EXPIRED"}', True, id="json-any-case"),
    pytest.param(SIGNATURE_MISMATCH, False, id="signature-mismatch"),
    pytest.param(ACCESS_DENIED, False, id="plain-access-denied"),
    pytest.param(SKEWED, False, id="clock-skew"),
    pytest.param(b"", False, id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", False, id="binary"),
])
def test_is_expired_403(body: bytes, expected: bool) -> None:
    """Only bodies that say the request or its signature expired count as an expired URL."""
    assert is_expired_403(body) is expected


async def test_an_expired_403_body_split_in_pieces_is_read_whole() -> None:
    """The refusal's body is read across its pieces (not just the first), so a split "Request has expired"
    is still recognised, and it stops at the cap."""
    from downloader.net.cdn import error_body

    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
            b"<Message>Request has expired</Message><ServerTime>2026-12-04T18:00:00Z</ServerTime></Error>")

    async def pieces(*parts: bytes):  # as aiohttp's iter_any hands them over
        for part in parts:
            yield part

    whole = await error_body(pieces(body[:40], body[40:90], body[90:]))
    assert whole == body and is_expired_403(whole) and not is_expired_403(body[:40])
    assert await error_body(pieces(b"x" * 50, b"y" * 50), cap=60) == b"x" * 50 + b"y" * 10
