"""What the CDN has shown about its signed URLs: its clock against ours, and how long a URL really lives. Pure.

A signed URL says when it expires, but the CDN decides, and it can refuse earlier than the URL says:
its clock runs ahead of ours (or of the signer's), or it honours URLs for less than they say (a
revoked signing key, a shorter policy). Its refusal is unambiguous, an S3-style 403 "Request has
expired", and carries its own time: S3 puts `ServerTime` in the body; COS has only the `Date` header.
The CDN's clock wins:

- **skew**: the CDN's time minus ours, from `ServerTime`, else `Date` (whole seconds, so a skew under
  SKEW_MIN is taken as none). Each refusal sets it; so does a served image's `Date` now and then
  (DATE_EVERY), so a skewed CDN is known before it refuses anything.
- **lifetime**: a refusal before the URL's own end on the CDN's clock (by more than SKEW_MIN) shows
  that URLs live at most their age at that refusal; the smallest such age is kept. An image served at
  an older age proves more (a key revoked once and replaced) and lifts it.
- **trust**: downloads prove that URLs live at least the oldest age one was served at (`proven`). The
  pacing of the API stage believes a URL's life only up to GROWTH × that (TRUST_START at first): a CDN
  that honours URLs for seconds then costs a few URLs before its first refusal, not every URL of the
  batches asked meanwhile. Where downloads keep up the queue is short and this bound never binds.

Everywhere else in the tool an expiry is a moment on our clock: `expires_at` turns a URL's stated end
into the moment, on our clock, that the CDN will refuse it as far as is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from downloader.core.expiry import http_date

SKEW_MIN = 1.5  # seconds; ServerTime and Date carry whole seconds, so less than this is noise
TRUST_START = 1.0  # seconds of URL life the pacing believes before any download proved more
GROWTH = 2.0  # the pacing believes URLs live this many times the oldest age one was served at
DATE_EVERY = 5.0  # seconds between readings of a served image's Date header
_SERVER_TIME = re.compile(rb"<ServerTime>\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?Z?\s*</ServerTime>")


@dataclass
class UrlClock:
    """One worker's lessons from the CDN; the fetcher teaches it, the fetcher and the pacing consult it."""

    skew: float = 0.0  # the CDN's clock minus ours, seconds
    lifetime: float | None = None  # how long after signing the CDN honours a URL, when shorter than they say
    proven: float = 0.0  # the oldest age (since signing) at which a URL was served
    refusals: int = 0  # "Request has expired" answers seen
    _date_due: float = 0.0

    def expires_at(self, signed_at: float | None, stated: float) -> float:
        """When (our clock) the CDN will refuse a URL signed at `signed_at` that says it ends at `stated`."""
        end = stated if self.lifetime is None or signed_at is None else min(stated, signed_at + self.lifetime)
        return end - self.skew

    def signed_at(self, signed_at: float | None) -> float | None:
        """When a URL's life began on our clock, for its margin. Whose clock the signer keeps (ours or the
        CDN's) is unknown: the later reading gives the shorter life, hence the smaller margin, so a URL
        the CDN would still take is not given up."""
        return None if signed_at is None else max(signed_at, signed_at - self.skew)

    def believable(self, stated_left: float, age: float = 0.0) -> float:
        """How long a URL answered just now may be counted on when pacing: it says it has `stated_left`
        seconds (our clock) and was signed `age` seconds ago; the CDN's clock, the learned lifetime, and
        no more than downloads proved decide."""
        left = stated_left - self.skew
        if self.lifetime is not None:
            left = min(left, self.lifetime - age)
        return min(left, max(TRUST_START, GROWTH * self.proven) - age)

    def refused(self, *, signed_at: float | None, stated: float, now: float, server_time: float | None) -> None:
        """The CDN refused a URL as expired at `now` (our clock); `server_time` is its own time, if it said."""
        self.refusals += 1
        if server_time is not None:
            self._skew_from(server_time, now)
        cdn_now = now + self.skew
        if signed_at is not None and cdn_now < stated - SKEW_MIN:  # earlier than the URL said, on its clock
            age = max(0.0, cdn_now - signed_at)
            self.lifetime = age if self.lifetime is None else min(self.lifetime, age)

    def served(self, *, signed_at: float | None, started: float, now: float, server_time: float | None) -> None:
        """The CDN served a URL whose request left at `started` (our clock); `server_time` from its Date."""
        if server_time is not None:
            self._skew_from(server_time, now)
        if signed_at is None:
            return
        age = started + min(0.0, self.skew) - signed_at  # the younger reading (see signed_at)
        self.proven = max(self.proven, age)
        if self.lifetime is not None and age > self.lifetime:
            self.lifetime = age

    def wants_date(self, now: float) -> bool:
        """Whether to read a served image's Date header now (every DATE_EVERY seconds)."""
        if now < self._date_due:
            return False
        self._date_due = now + DATE_EVERY
        return True

    def _skew_from(self, server_time: float, now: float) -> None:
        measured = server_time - now
        self.skew = measured if abs(measured) >= SKEW_MIN else 0.0


def cdn_time(body: bytes | None, date: str | None) -> float | None:
    """The CDN's time when it answered (epoch seconds): S3's `<ServerTime>` in an error body, else the
    `Date` header; the middle of its whole second. None when neither is readable."""
    found = _SERVER_TIME.search(body[:64 * 1024]) if body else None
    if found:
        try:
            stamp = datetime.strptime(found[1].decode(), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
            return stamp.timestamp() + 0.5
        except ValueError:
            pass
    when = http_date(date)
    return None if when is None else when + 0.5
