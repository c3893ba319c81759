"""The simulator's state: config, universe, counters, tokens, rate windows and fault dice."""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from downloader.simulator import signing
from downloader.simulator.config import Counters, SimulatorConfig
from downloader.simulator.universe import Record, Universe


class Simulator:
    """One fake PatSnap account: what the handlers consult and what tests inspect.

    `clock` (default `time.time`) decides token and URL expiry and the QPS window; tests
    may replace it to jump ahead without sleeping. `base_url` is set once serving.
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.counters = Counters()
        self.clock: Callable[[], float] = time.time
        self.base_url: str | None = None
        self.tokens: dict[str, float] = {}
        self._universe = Universe(self.config.seed)
        self._api_dice = random.Random(f"api-faults\x1f{self.config.seed}")
        self._image_dice = random.Random(f"image-faults\x1f{self.config.seed}")
        self._window: deque[float] = deque()  # one account: apikey and client id are the same

    @property
    def universe(self) -> Universe:
        """The patent universe of the current seed (rebuilt if the seed was changed)."""
        if self._universe.seed != self.config.seed:
            self._universe = Universe(self.config.seed)
        return self._universe

    @property
    def asks(self) -> Counter[str]:
        """How often each normalized identifier was asked in accepted requests."""
        return self.counters.asks

    @property
    def secret(self) -> bytes:
        """The key that signs CDN URLs (derived from the seed, so URLs are reproducible)."""
        return hashlib.sha256(f"simulator-cdn-secret\x1f{self.config.seed}".encode()).digest()

    def reset_counters(self) -> None:
        """Zero every counter (the in-flight gauges keep their live values)."""
        self.counters = self.counters.fresh()

    def expected_image(self, pn: str, num: str) -> bytes:
        """The bytes the CDN serves for this drawing, for comparing hashes in tests."""
        return self.universe.image_bytes(pn, num)

    def issue_token(self) -> tuple[str, float]:
        """A new bearer token and its issue time; it lasts `config.token_lifetime`."""
        now = self.clock()
        if len(self.tokens) > 10_000:  # drop the dead ones now and then, not per request
            self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
        token = secrets.token_urlsafe(24)
        self.tokens[token] = now + self.config.token_lifetime
        self.counters.tokens_issued += 1
        return token, now

    def token_valid(self, token: str) -> bool:
        """True for the static token (if configured) or an issued, unexpired one."""
        if self.config.static_token is not None and token == self.config.static_token:
            return True
        expiry = self.tokens.get(token)
        return expiry is not None and self.clock() < expiry

    def admit(self) -> bool:
        """Count a request in the account's sliding 1 s window; False if over the limit.

        The limit allows max(1, int(qps_limit)) requests per window; refused ones do not count.
        """
        limit = self.config.qps_limit
        if limit is None:
            return True
        now = self.clock()
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= max(1, int(limit)):
            return False
        window.append(now)
        return True

    def down(self, side: str) -> str | None:
        """The outage answer for every request on the "api" or "cdn" side right now, if one is set."""
        kind: str | None = getattr(self.config, f"{side}_down")
        until: float | None = getattr(self.config, f"{side}_down_until")
        if kind is None or (until is not None and self.clock() >= until):
            return None
        return kind

    def api_fault(self) -> str | None:
        """The fault kind to inject into this API request, if the dice say so."""
        return self._roll(self._api_dice, self.config.api_fault_rate, self.config.api_fault_kinds)

    def image_fault(self) -> str | None:
        """The fault kind to inject into this image request, if the dice say so."""
        return self._roll(self._image_dice, self.config.image_fault_rate, self.config.image_fault_kinds)

    @staticmethod
    def _roll(dice: random.Random, rate: float, kinds: tuple[str, ...]) -> str | None:
        if rate <= 0 or not kinds or dice.random() >= rate:
            return None
        return dice.choice(kinds)

    def image_url(self, origin: str, record: Record) -> str:
        """The signed URL of a record's drawing, on this server or on `config.cdn_base`."""
        assert record.num is not None
        name = f"{record.pn}_{record.num}.{record.ext}"
        if self.config.cdn_base:
            base, path = self.config.cdn_base, f"/{name}"
        else:
            base, path = origin, f"/cdn/{record.pn[:2]}/{record.pn}/{name}"
        return signing.sign_url(
            base,
            path,
            style=self.config.url_style,
            start=self.clock(),
            lifetime=self.config.url_lifetime,
            secret=self.secret,
        )

    @contextmanager
    def gauge(self, side: str) -> Iterator[None]:
        """Track requests in flight on the "api" or "cdn" side, and their peak."""
        self._move_gauge(side, +1)
        try:
            yield
        finally:
            self._move_gauge(side, -1)

    def _move_gauge(self, side: str, step: int) -> None:
        counters = self.counters  # looked up each time: reset_counters swaps the object
        level = getattr(counters, f"{side}_in_flight") + step
        setattr(counters, f"{side}_in_flight", level)
        peak = "api_peak_concurrency" if side == "api" else "cdn_peak_concurrency"
        setattr(counters, peak, max(getattr(counters, peak), level))


SIM_KEY = web.AppKey("simulator", Simulator)
