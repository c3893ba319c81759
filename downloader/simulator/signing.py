"""Signed, expiring CDN URLs in the two shapes PatSnap hands out (pure: no I/O).

- "cos" (Tencent COS, PatSnap's usual form): `sign=<url-encoded q-sign-algorithm=sha1&q-ak=…
  &q-sign-time=START;END&q-key-time=START;END&q-header-list=host&q-url-param-list=
  &q-signature=HEX>&response-expires=<url-encoded HTTP date of END>`; HMAC-SHA1 as COS does.
- "sigv4" (AWS, as in the P021 sample): `response-content-disposition=…&X-Amz-Algorithm=…
  &X-Amz-Date=…&X-Amz-SignedHeaders=host&X-Amz-Expires=…&X-Amz-Credential=…&X-Amz-Signature=HEX`.

Both signatures cover the path and the validity times, so editing either is caught. The
host header is named but its value is left out of the signed text, so URLs stay valid
behind any host name or port. `verify` can also refuse a genuine URL earlier than it says
(`honoured`: seconds after signing, as a CDN does whose signing key was revoked).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping
from email.utils import formatdate
from urllib.parse import parse_qsl, quote, urlencode

STYLES = ("cos", "sigv4")
COS_ACCESS_KEY = "AKIDSIMULATOR5zX1dQ1HsmGk8Uwm0YxE"
AWS_ACCESS_KEY = "AKIASIMULATOREXAMPLE"
AWS_REGION = "cn-northwest-1"
_AMZ_FIELDS = ("X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-Credential", "X-Amz-Signature")


def sign_url(base: str, path: str, *, style: str, start: float, lifetime: float, secret: bytes) -> str:
    """`base` + `path` + a signed query valid from `start` for `lifetime` seconds (≥ 1)."""
    begin = int(start)
    seconds = max(1, round(lifetime))
    if style == "cos":
        query = _cos_query(path, begin, begin + seconds, secret)
    elif style == "sigv4":
        query = _sigv4_query(path, begin, seconds, secret)
    else:
        raise ValueError(f"unknown URL style {style!r}; expected one of {STYLES}")
    return f"{base.rstrip('/')}{quote(path)}?{query}"


def verify(path: str, query: Mapping[str, str], *, now: float, secret: bytes,
           honoured: float | None = None) -> str | None:
    """None if the URL is genuine and current, else "expired" or "signature".

    `honoured`: a genuine URL is refused as expired once `now` is that many seconds past its
    signing, whatever end it carries."""
    if "sign" in query:
        problem = _cos_verify(path, query["sign"], secret)
    elif "X-Amz-Signature" in query:
        problem = _sigv4_verify(path, query, secret)
    else:
        return "signature"
    if problem is not None:
        return problem
    begin, end = signed_window(query)
    last = end if honoured is None else min(end, begin + honoured)
    return "expired" if now > last else None


def signed_window(query: Mapping[str, str]) -> tuple[int, int]:
    """(signed at, expires at) in epoch seconds of a URL that `verify` found genuine."""
    if "sign" in query:
        start, _, end = dict(parse_qsl(query["sign"]))["q-key-time"].partition(";")
        return int(start), int(end)
    begin = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    return begin, begin + int(query["X-Amz-Expires"])


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that tolerates non-ASCII input (compare_digest on str does not)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _hmac_hex(key: bytes, text: str, digest: str) -> str:
    return hmac.new(key, text.encode(), digest).hexdigest()


def _cos_signature(path: str, key_time: str, secret: bytes) -> str:
    sign_key = _hmac_hex(secret, key_time, "sha1")
    http_string = f"get\n{path}\n\n\n"
    string_to_sign = f"sha1\n{key_time}\n{hashlib.sha1(http_string.encode()).hexdigest()}\n"
    return _hmac_hex(sign_key.encode(), string_to_sign, "sha1")


def _cos_query(path: str, begin: int, end: int, secret: bytes) -> str:
    key_time = f"{begin};{end}"
    auth = (
        f"q-sign-algorithm=sha1&q-ak={COS_ACCESS_KEY}&q-sign-time={key_time}&q-key-time={key_time}"
        f"&q-header-list=host&q-url-param-list=&q-signature={_cos_signature(path, key_time, secret)}"
    )
    return urlencode({"sign": auth, "response-expires": formatdate(end, usegmt=True)}, quote_via=quote)


def _cos_verify(path: str, sign: str, secret: bytes) -> str | None:
    fields = dict(parse_qsl(sign, keep_blank_values=True))
    key_time = fields.get("q-key-time", "")
    if fields.get("q-sign-time") != key_time or not _same(
        fields.get("q-signature", ""), _cos_signature(path, key_time, secret)
    ):
        return "signature"
    begin, _, end = key_time.partition(";")
    return None if begin.isdigit() and end.isdigit() else "signature"


def _sigv4_query(path: str, begin: int, seconds: int, secret: bytes) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(begin))
    filename = path.rsplit("/", 1)[-1]
    params = {
        "response-content-disposition": f"attachment;filename*=UTF-8''{filename}",
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Date": stamp,
        "X-Amz-SignedHeaders": "host",
        "X-Amz-Expires": str(seconds),
        "X-Amz-Credential": f"{AWS_ACCESS_KEY}/{stamp[:8]}/{AWS_REGION}/s3/aws4_request",
    }
    params["X-Amz-Signature"] = _sigv4_signature(path, params, secret)
    return urlencode(params, quote_via=quote)


def _sigv4_signature(path: str, params: Mapping[str, str], secret: bytes) -> str:
    signed = sorted((k, v) for k, v in params.items() if k != "X-Amz-Signature")
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in signed)
    canonical = f"GET\n{quote(path)}\n{canonical_query}\nhost:\n\nhost\nUNSIGNED-PAYLOAD"
    scope = params["X-Amz-Credential"].split("/", 1)[-1]
    string_to_sign = (
        f"AWS4-HMAC-SHA256\n{params['X-Amz-Date']}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    )
    key = b"AWS4" + secret
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    return _hmac_hex(key, string_to_sign, "sha256")


def _sigv4_verify(path: str, query: Mapping[str, str], secret: bytes) -> str | None:
    if any(name not in query for name in _AMZ_FIELDS):
        return "signature"
    if not _same(query["X-Amz-Signature"], _sigv4_signature(path, query, secret)):
        return "signature"
    try:
        time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        int(query["X-Amz-Expires"])
    except ValueError:
        return "signature"
    return None
