"""Per-patent problems, counted by kind: one stderr line per kind, never one per patent.

The log file keeps each patent's detail; the person watching reads `37 patents: HTTP 502 from the
CDN (left pending; the next run retries them)`. The kind is the error text without its class name,
with long numbers (sizes, identifiers) folded, so alike problems are counted together.
"""

from __future__ import annotations

import re
from collections import Counter

_LONG_NUMBER = re.compile(r"\d{5,}")
_CLASS = re.compile(r"^[A-Za-z]+: ")
_CLASS_NOTE = re.compile(r"\s*\([A-Z][A-Za-z]+\)$")  # "(ClientConnectorError)" at the end
_OUTCOMES = {"failed": "failed", "deferred": "left pending; the next run retries them",
             "fenced": "left to the worker that holds them now"}


def kind_of(error: str) -> str:
    """What kind of problem an `error` text ("ClassName: detail") describes."""
    text = _CLASS_NOTE.sub("", _CLASS.sub("", error.strip(), count=1))
    return _LONG_NUMBER.sub("N", text)[:160] or "unknown"


class Problems:
    """Counts patents by (outcome, kind) of their latest problem; `lines()` gives one line per kind,
    most frequent first. A patent deferred twice counts once; one deferred, then settled, not at all."""

    def __init__(self) -> None:
        self._latest: dict[str, tuple[str, str]] = {}

    def add(self, key: str, outcome: str, error: str) -> None:
        """Note that patent `key` had `outcome` ("failed" or "deferred") with this `error`."""
        self._latest[key] = (outcome, kind_of(error))

    def settled(self, key: str) -> None:
        """Patent `key` got through after all."""
        self._latest.pop(key, None)

    def lines(self) -> list[str]:
        """`N patents: kind (what happened to them)`, one per kind."""
        counts = Counter(self._latest.values())
        return [f"{n} patent{'s' * (n != 1)}: {kind} ({_OUTCOMES.get(outcome, outcome)})"
                for (outcome, kind), n in counts.most_common()]
