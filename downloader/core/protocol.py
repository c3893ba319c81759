"""The sans-IO core of the metadata API: requests out, outcomes in, decisions as values.

Nothing here touches the network, the disk or the clock; callers pass `now`. Tested as tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from downloader.core.errors import (
    ApiError,
    FatalApiError,
    InvalidParameterError,
    ThrottledError,
    TokenExpiredError,
    TransientApiError,
)
from downloader.core.expiry import http_date, url_window
from downloader.core.model import Batch, Failed, Kind, NoImage, NotFound, Outcome, PatentKey, Resolved

MAX_BATCH = 100
# PatSnap's gateway refuses very long query strings; stay well under ~8 KB.
MAX_QUERY_CHARS = 7000

# --- error classification -------------------------------------------------------------------

_HINTS = {
    67200001: "the platform's total call limit is reached; wait for it to reset or contact PatSnap",
    67200002: "quota or call rate exceeded; lower --rate or wait for the quota to renew",
    67200003: "the token expired or the key/secret is wrong; check --client-id/--client-secret or --token",
    67200004: "no permission or the API package quota is used up; check the subscription",
    67200005: "the account balance is insufficient; top it up",
    67200006: "the client has expired; renew it in the PatSnap console",
    67200008: "the apikey is missing or wrong; pass --api-key (with OAuth it defaults to the client id)",
    67200009: "the token is invalid; check the credentials",
    401: "the credentials were refused; check --client-id/--client-secret or --token",
    403: "the API refused access; check the apikey and the subscription",
    404: "the API path was not found; check --api-base",
}

CODE_CLASSES: dict[int, type[ApiError]] = {
    67200002: ThrottledError,
    67200007: ThrottledError,
    67200003: TokenExpiredError,
    67200009: TokenExpiredError,
    67200001: FatalApiError,
    67200004: FatalApiError,
    67200005: FatalApiError,
    67200006: FatalApiError,
    67200008: FatalApiError,
    68300004: InvalidParameterError,
    68300007: InvalidParameterError,
    68300005: TransientApiError,
    68300006: TransientApiError,
    68300008: TransientApiError,
    # The spec's table also lists HTTP-like codes inside status:false answers.
    401: TokenExpiredError,
    403: FatalApiError,
    404: FatalApiError,
}


def error_for_code(code: int, message: str = "") -> ApiError:
    """The exception for a `status: false` answer. Unknown codes are retried, then fail the batch."""
    cls = CODE_CLASSES.get(code, TransientApiError)
    text = f"PatSnap error {code}" + (f" ({_clean(message)})" if message else "")
    if cls is FatalApiError:
        return FatalApiError(text, hint=_HINTS.get(code, ""), code=code)
    return cls(text, code=code)


def error_for_http(status: int, retry_after: float | None = None, url: str = "") -> ApiError:
    """The exception for an HTTP error status from the API host (`url`: the endpoint, no query).

    A 404 is a wrong --api-base, not an outage: fatal at once, naming the URL that was not found.
    """
    text = f"HTTP {status} from the API" + (f" at {url}" if url and status == 404 else "")
    if status == 429:
        return ThrottledError(text, status=status, retry_after=retry_after)
    if status == 401:
        return TokenExpiredError(text, status=status)
    if status >= 500 or status in (408, 425):
        return TransientApiError(text, status=status)
    return FatalApiError(text, hint=_HINTS.get(status, "check --api-base and the credentials"), status=status)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped at 10 min."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        when = http_date(value)  # no zone, or "-0000": GMT, as HTTP dates are
        if when is None:
            return None
        seconds = when - now
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), 600.0)


def _clean(text: str) -> str:
    return " ".join(str(text).split())[:200]


# --- requests -------------------------------------------------------------------------------


def batches(keys: Iterable[PatentKey], size: int = MAX_BATCH) -> Iterator[Batch]:
    """Group keys into batches of one kind, at most `size` each and with a short query string.

    Keys keep their order within a kind; a batch is emitted as soon as it is full, so this
    streams over millions of keys holding at most two partial batches.
    """
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}, got {size}")
    pending: dict[Kind, tuple[list[str], list[int]]] = {kind: ([], [0]) for kind in Kind}
    for key in keys:
        current, chars = pending[key.kind]
        cost = len(quote(key.value, safe="")) + 3  # the encoded comma
        if current and chars[0] + cost > MAX_QUERY_CHARS:
            yield Batch(key.kind, tuple(current))
            current.clear()
            chars[0] = 0
        current.append(key.value)
        chars[0] += cost
        if len(current) >= size:
            yield Batch(key.kind, tuple(current))
            current.clear()
            chars[0] = 0
    for kind, (current, _) in pending.items():
        if current:
            yield Batch(kind, tuple(current))


def request_params(batch: Batch, api_key: str) -> dict[str, str]:
    """Query parameters for one call: the ids comma-joined under their kind, plus the apikey."""
    return {batch.kind.value: ",".join(batch.keys), "apikey": api_key}


def split(batch: Batch) -> tuple[Batch, Batch]:
    """Halve a batch (to isolate an identifier the API calls invalid)."""
    mid = len(batch.keys) // 2
    return Batch(batch.kind, batch.keys[:mid]), Batch(batch.kind, batch.keys[mid:])


# --- answers --------------------------------------------------------------------------------

_KIND_CODE = re.compile(r"^(.*\d)([A-Z]\d?)$")
_MAX_FIELD = 200


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """A decoded 200 answer: either data items or an error code."""

    items: tuple[Mapping[str, Any], ...]
    error: ApiError | None = None


def decode_answer(body: Any) -> ApiAnswer:
    """Turn the parsed JSON of a 200 response into items or the error it carries."""
    if not isinstance(body, Mapping):
        return ApiAnswer((), TransientApiError("the API answer is not a JSON object"))
    if body.get("status") is not True:
        code = body.get("error_code")
        if not isinstance(code, int) or isinstance(code, bool):
            return ApiAnswer((), TransientApiError("the API answered status false without a code"))
        return ApiAnswer((), error_for_code(code, str(body.get("error_msg") or "")))
    data = body.get("data") or []
    if not isinstance(data, list):
        return ApiAnswer((), TransientApiError("the API answer's data is not a list"))
    return ApiAnswer(tuple(item for item in data if isinstance(item, Mapping)))


def base_number(pn: str) -> str:
    """A publication number without its kind code: US11205304B2 → US11205304."""
    match = _KIND_CODE.match(pn)
    return match.group(1) if match else pn


def _norm(value: Any, kind: Kind) -> str:
    text = "".join(str(value or "").split())
    return text.lower() if kind is Kind.ID else text.upper()


def map_answer(batch: Batch, items: Sequence[Mapping[str, Any]], answered_at: float) -> list[Outcome]:
    """One outcome per key of the batch, in batch order.

    Items are matched by `patent_id` (ids) or `pn` (numbers), tolerant of case and white space; a
    number sent without its kind code matches an answer that adds one when only one answer can.
    A key nothing matches is `not_found`; several candidates make it `failed` (ambiguous).
    """
    field = "patent_id" if batch.kind is Kind.ID else "pn"
    by_exact: dict[str, Mapping[str, Any]] = {}
    for item in items:
        by_exact.setdefault(_norm(item.get(field), batch.kind), item)
    matched: dict[str, Mapping[str, Any]] = {}
    unmatched: list[str] = []
    for key in dict.fromkeys(batch.keys):
        if key in by_exact:
            matched[key] = by_exact.pop(key)
        else:
            unmatched.append(key)
    ambiguous = _match_by_base(unmatched, by_exact, matched) if batch.kind is Kind.NUMBER else {}
    outcomes: list[Outcome] = []
    for key in batch.keys:
        ref = PatentKey(batch.kind, key)
        if key in ambiguous:
            outcomes.append(Failed(ref, f"AmbiguousNumber: matches {', '.join(ambiguous[key])}; "
                                        "add the kind code"))
        elif key in matched:
            outcomes.append(outcome_for_item(ref, matched[key], answered_at))
        else:
            outcomes.append(NotFound(ref))
    return outcomes


def _match_by_base(unmatched: list[str], left: dict[str, Mapping[str, Any]],
                   matched: dict[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """Pair keys and answers that agree once kind codes are dropped; report the ambiguous ones."""
    candidates: dict[str, list[str]] = {}
    for pn in left:
        candidates.setdefault(base_number(pn), []).append(pn)
    wanted: dict[str, list[str]] = {}
    for key in unmatched:
        wanted.setdefault(base_number(key), []).append(key)
    ambiguous: dict[str, list[str]] = {}
    for base, keys in wanted.items():
        pns = candidates.get(base, [])
        if len(keys) == 1 and len(pns) == 1:
            matched[keys[0]] = left[pns[0]]
        elif pns:
            for key in keys:
                ambiguous[key] = sorted(pns)
    return ambiguous


def outcome_for_item(key: PatentKey, item: Mapping[str, Any], answered_at: float) -> Outcome:
    """Classify one matched result: an image URL, no image, or a hostile answer that fails."""
    pn = field_text(item.get("pn"))
    patent_id = field_text(item.get("patent_id"))
    if pn is None or patent_id is None:
        return Failed(key, "HostileAnswer: pn or patent_id is not a short plain string")
    drawing = item.get("abstract_drawing")
    if not isinstance(drawing, Mapping) or not drawing.get("path"):
        return NoImage(key, pn, patent_id)
    path = drawing.get("path")
    num = field_text(drawing.get("num")) or "0"
    if not isinstance(path, str) or not path.lower().startswith(("http://", "https://")) or len(path) > 8192:
        return Failed(key, "HostileAnswer: abstract_drawing.path is not an http(s) URL")
    signed_at, expires_at = url_window(path, answered_at=answered_at)
    return Resolved(key, pn, patent_id, num, path, expires_at, signed_at)


def field_text(value: Any) -> str | None:
    """A field as a plain string, or None when it is not one we are willing to store."""
    if value is None:
        return ""
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    if len(text) > _MAX_FIELD or "\x00" in text:
        return None
    return text
