"""Telling an outage from a patent's failure; pure (the caller passes the clock).

A transport failure (connection refused, DNS, TLS, a timeout, a reset, HTTP 5xx, an answer that
is not JSON) says nothing about the patent: once its retries are spent the patent is deferred
(left pending, asked or fetched again after `span / 3` seconds; a rerun continues), never
`failed`. When every call to a host fails that way for a while (STREAK calls in a row, and `span`
seconds since the first of them, 30 by default), the host is out of reach and the run stops:
`OutageDetector.error` gives the OutageError (exit 3) whose one line names the host, what it
answered and for how long.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from downloader.core.errors import OutageError

STREAK = 5  # calls in a row that failed...
SPAN = 30.0  # ...over at least this many seconds: the host is out of reach
# Causes that mean no answer came at all ("cannot reach"); others are answers that failed.
_UNREACHABLE = ("refused", "DNS", "TLS", "timed out", "reset", "disconnected", "cannot connect", "lost")

_HTTP = re.compile(r"\bHTTP (\d{3})\b")
_FAILED = re.compile(r"failed: ([^(]+?)\s*(?:\(|$)")


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: never its path, query (a signature, an apikey) or user info."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}"


def reason_of(error: str) -> str:
    """The short cause in an error text: "HTTP 502", "connection refused", "timed out"."""
    http = _HTTP.search(error)
    if http:
        return f"HTTP {http[1]}"
    if "timed out" in error:
        return "timed out"
    failed = _FAILED.search(error)
    if failed:
        return failed[1].strip()
    return error.split(": ", 1)[-1].strip() or "no answer"


@dataclass
class OutageDetector:
    """Counts consecutive transport failures of one host ("the API" or "the CDN")."""

    what: str
    span: float = SPAN
    streak: int = 0
    since: float | None = None
    last: float = 0.0
    reason: str = ""
    host: str = ""

    def failed(self, now: float, error: str, host: str) -> OutageError | None:
        """A call failed in transport: the outage to stop the run with if this failure makes one
        (as `error` says), else None and the next try, if any, follows."""
        if self.streak == 0:
            self.since = now
        self.streak += 1
        self.last, self.reason, self.host = now, reason_of(error), host
        return self.error(now)

    def succeeded(self) -> None:
        """The host answered (any answer that is not a transport failure)."""
        self.streak, self.since = 0, None

    @property
    def defer_seconds(self) -> float:
        """How long a deferred patent waits before it is tried again within the run."""
        return self.span / 3

    def error(self, now: float) -> OutageError | None:
        """The outage to stop the run with, once every call failed for a while; else None."""
        if self.streak < STREAK or self.since is None or now - self.since < self.span:
            return None
        seconds = max(now, self.last) - self.since
        tries = f"{self.streak} tries over {seconds:.0f} s"
        if any(word in self.reason for word in _UNREACHABLE):
            text = f"cannot reach {self.what} at {self.host}: {self.reason} ({tries})"
        else:
            text = f"{self.what} at {self.host} failed every call: {self.reason} ({tries})"
        return OutageError(text, hint="run the same command when it is back", hint_says_rerun=True)
