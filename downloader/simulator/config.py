"""The simulator's knobs (changeable while it runs) and its counters (readable by tests)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

API_FAULT_KINDS = ("500", "502", "503", "68300008", "reset", "slow", "not_json")
# Chosen only when asked for (not among the defaults, so seeded runs of the defaults keep their dice):
# "cut" answers and bills a request, then drops the connection halfway through the body.
OPT_IN_API_FAULT_KINDS = ("cut",)
IMAGE_FAULT_KINDS = ("reset", "truncate", "html", "slow")
THROTTLE_MODES = ("code", "429")
DOWN_KINDS = ("500", "502", "503", "reset")
APIKEY_REFUSALS = ("code", "401")


# The config fields that hold tuples and sets: JSON gives lists, and wants lists back.
_TUPLE_FIELDS = ("api_fault_kinds", "image_fault_kinds")
_SET_FIELDS = ("huge_images", "missing_images", "stale_drawings", "dropped_drawings")


@dataclass
class SimulatorConfig:
    """Behaviour of the fake PatSnap API and CDN; every field may be changed at run time.

    `api_key` and `client_id` are both accepted as the `apikey` parameter (PatSnap's apikey
    is the client id; the tool defaults to it with client credentials). An `api_key` of the
    newer platform (`sk-…`) authenticates alone, as `Authorization: Bearer sk-…`; a wrong
    sk- bearer is refused as a bad token (67200003). Image URLs point at
    this server's `/cdn/...` unless `cdn_base` is set: then they are
    `{cdn_base}/{pn}_{num}.{ext}?<signature>`, and the file there must hold
    `Universe(seed).image_bytes(pn, num)` (the benchmark's nginx serves such a folder).
    """

    seed: int = 0
    api_key: str = "demo-key"
    static_token: str | None = "demo-token"
    client_id: str = "demo-client"
    client_secret: str = "demo-secret"
    token_lifetime: float = 1799.0
    url_lifetime: float = 3 * 3600.0
    fulltext_url_lifetime: float = 7 * 86400.0  # P042's sample URL is signed for 7 days
    url_style: str = "cos"
    qps_limit: float | None = None
    throttle_mode: str = "code"
    api_latency: float = 0.0
    # > 0: every answer's body (P021 and P042) goes out in two writes this many seconds apart, as a slow link or a
    # proxy delivers it: a client must read to the end of the body, not take the first piece for all of it.
    api_answer_gap: float = 0.0
    cdn_latency: float = 0.0
    cdn_base: str | None = None
    max_batch: int = 100
    # Faults, all off by default; the random ones draw from a seeded generator.
    api_fault_rate: float = 0.0
    api_fault_kinds: tuple[str, ...] = API_FAULT_KINDS
    image_fault_rate: float = 0.0
    image_fault_kinds: tuple[str, ...] = IMAGE_FAULT_KINDS
    slow_seconds: float = 30.0
    quota_after: int | None = None
    fatal_code: int | None = None
    refuse_credentials: bool = False
    # A wrong apikey: PatSnap's 67200008 ("code"), or HTTP 401 as some gateways in front of it answer.
    apikey_refusal: str = "code"
    # An outage: every API (or CDN) request gets this answer ("502", "reset", ...) until the
    # simulator clock passes `*_down_until` (None: for as long as `*_down` is set).
    api_down: str | None = None
    api_down_until: float | None = None
    cdn_down: str | None = None
    cdn_down_until: float | None = None
    # Requested identifier (any case) -> the raw JSON item answered in its place.
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Full pns (with kind code, as in the image URL) whose image is a huge PNG-headed body...
    huge_images: set[str] = field(default_factory=set)
    huge_image_bytes: int = 60 * 1024 * 1024
    # ...or a 404 NoSuchKey (after the signature check, as S3 does).
    missing_images: set[str] = field(default_factory=set)
    # Drawings of P042 ("{pn}_{figure:04d}", e.g. "CN1234567A_0003") whose next listing gives a URL that
    # has already expired (signed its lifetime and a minute ago), as a URL left too long in a queue;
    # each is taken out of the set when listed so, and is listed fresh the time after.
    stale_drawings: set[str] = field(default_factory=set)
    # Patents of P042 (full pn) whose every listing after the first names only this many drawings (its first
    # ones), as when the API re-indexes a document: a drawing listed once is not listed again.
    fewer_drawings: dict[str, int] = field(default_factory=dict)
    # Drawings of P042 ("{pn}_{figure:04d}", the figure of the first listing) that every listing of their patent
    # after the first leaves out, wherever they stand: the drawings after one move up a place and keep their URL's
    # path (as when the API withdraws a figure from the middle of a document).
    dropped_drawings: set[str] = field(default_factory=set)
    # Identifiers as requested (normalized: numbers upper-cased, ids lower-cased) -> how many more answers to a
    # request naming one are billed and then cut, as the "cut" fault does (P021 and P042): a test chooses which
    # calls lose their answers instead of the dice. Each such answer takes one from every listed key it names
    # (and counts in `api_faults_injected`).
    cut_answers: dict[str, int] = field(default_factory=dict)
    # A CDN that refuses URLs earlier than they say: `url_honoured` seconds after signing, whatever
    # end they carry (a revoked signing key), and a CDN clock `cdn_clock_skew` seconds ahead of the
    # API's (negative: behind); its Date headers and ServerTime say its own time.
    url_honoured: float | None = None
    cdn_clock_skew: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def update(self, changes: dict[str, Any]) -> None:
        """Apply JSON-ish changes (lists become tuples or sets); unknown names raise KeyError."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise KeyError(f"unknown config fields: {sorted(unknown)}")
        for name, value in changes.items():
            if name in _TUPLE_FIELDS:
                value = tuple(value)
            elif name in _SET_FIELDS:
                value = set(value)
            setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError on values the simulator cannot honour."""
        if self.url_style not in ("cos", "sigv4"):
            raise ValueError(f"url_style must be cos or sigv4, not {self.url_style!r}")
        if self.throttle_mode not in THROTTLE_MODES:
            raise ValueError(f"throttle_mode must be code or 429, not {self.throttle_mode!r}")
        if not set(self.api_fault_kinds) <= {*API_FAULT_KINDS, *OPT_IN_API_FAULT_KINDS}:
            raise ValueError(f"api_fault_kinds must be among {API_FAULT_KINDS + OPT_IN_API_FAULT_KINDS}")
        if not set(self.image_fault_kinds) <= set(IMAGE_FAULT_KINDS):
            raise ValueError(f"image_fault_kinds must be among {IMAGE_FAULT_KINDS}")
        for name in ("api_down", "cdn_down"):
            if getattr(self, name) not in (None, *DOWN_KINDS):
                raise ValueError(f"{name} must be one of {DOWN_KINDS} or null")
        if self.apikey_refusal not in APIKEY_REFUSALS:
            raise ValueError(f"apikey_refusal must be one of {APIKEY_REFUSALS}")
        if any(not isinstance(n, int) or n < 0 for n in self.fewer_drawings.values()):
            raise ValueError("fewer_drawings must map pns to drawing counts >= 0")
        if any(not isinstance(n, int) or n < 0 for n in self.cut_answers.values()):
            raise ValueError("cut_answers must map identifiers to counts >= 0")
        if self.url_honoured is not None and self.url_honoured <= 0:
            raise ValueError("url_honoured must be positive or null")

    def as_json(self) -> dict[str, Any]:
        """The config as JSON-serialisable values (sets and tuples become sorted lists)."""
        out = dataclasses.asdict(self)
        for name in _SET_FIELDS:
            out[name] = sorted(out[name])
        for name in _TUPLE_FIELDS:
            out[name] = list(out[name])
        return out


@dataclass
class Counters:
    """What the simulator saw; `asks` counts each normalized identifier in accepted requests, `served`
    each image served whole.

    `requests` counts every API and token request; `first_refusal_at` and `first_throttle_at`
    are its value at the first credential refusal (67200003, 67200008, HTTP 401 from the API or
    the token endpoint) and at the first throttling answer (67200002, 67200007, HTTP 429), so
    `requests - first_refusal_at` is how many requests a client sent after it was first refused.
    `api_with_headers` counts API requests that carried `X-PatSnap-Version: 1.0` and
    `Content-Type: application/json`.
    """

    requests: int = 0
    first_refusal_at: int | None = None
    first_throttle_at: int | None = None
    api_with_headers: int = 0
    api_down_answers: int = 0
    cdn_down_answers: int = 0
    api_requests: int = 0
    api_ok: int = 0
    ids_asked: int = 0
    charged: int = 0
    api_in_flight: int = 0
    api_peak_concurrency: int = 0
    token_requests: int = 0
    tokens_issued: int = 0
    token_refused: int = 0
    auth_refused: int = 0
    throttled: int = 0
    api_faults_injected: int = 0
    quota_refused: int = 0
    fatal_answers: int = 0
    invalid_requests: int = 0
    fulltext_pages: int = 0
    drawings_listed: int = 0
    image_requests: int = 0
    images_served: int = 0
    image_bytes_served: int = 0
    image_403_expired: int = 0
    image_403_signature: int = 0
    image_404: int = 0
    image_faults_injected: int = 0
    cdn_in_flight: int = 0
    cdn_peak_concurrency: int = 0
    asks: Counter[str] = field(default_factory=Counter)
    # Images served whole, by "{pn}_{num}" (a drawing of P042: num is its zero-padded figure).
    served: Counter[str] = field(default_factory=Counter)
    # When each API request arrived (the simulator's clock): an account-wide rate can be checked
    # over any one-second window, whichever process or machine sent the requests.
    api_times: list[float] = field(default_factory=list)

    def busiest_second(self) -> int:
        """The most API requests that arrived within any one-second window."""
        return busiest_second(self.api_times)

    def as_json(self, max_asks: int = 100_000) -> dict[str, Any]:
        """Counters as JSON; `asks` and `served` in full only when each has at most `max_asks` keys."""
        skip = ("asks", "served", "api_times")
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        out["busiest_second"] = self.busiest_second()
        out["api_first_at"] = min(self.api_times, default=None)  # the sustained rate is over this span
        out["api_last_at"] = max(self.api_times, default=None)
        if len(self.api_times) <= max_asks:  # each stamp, to set beside a packet capture's (bench/wire.py)
            out["api_times"] = list(self.api_times)
        out["asks_distinct"] = len(self.asks)
        out["asks_repeated"] = sum(1 for n in self.asks.values() if n > 1)
        if len(self.asks) <= max_asks:
            out["asks"] = dict(self.asks)
        if len(self.served) <= max_asks:
            out["served"] = dict(self.served)
        return out

    def refused(self) -> None:
        """Note a credential refusal (the first one marks `first_refusal_at`)."""
        if self.first_refusal_at is None:
            self.first_refusal_at = self.requests

    def throttled_now(self) -> None:
        """Note a throttling answer (the first one marks `first_throttle_at`)."""
        if self.first_throttle_at is None:
            self.first_throttle_at = self.requests

    def fresh(self) -> Counters:
        """Zeroed counters that keep the live in-flight gauges."""
        return Counters(api_in_flight=self.api_in_flight, cdn_in_flight=self.cdn_in_flight)


def busiest_second(arrivals: Iterable[float]) -> int:
    """The most of `arrivals` (seconds) within any one-second window."""
    times = sorted(arrivals)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most
